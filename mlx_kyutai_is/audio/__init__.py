# Copyright © 2026 mlx-kyutai-is contributors
"""Audio in and out: the input door for arrays (`prepare`), reading files and pipes (`io`),
writing recordings (`record`). Knows nothing of the model: rates are arguments."""

from .io import audio_duration, iter_audio_blocks, load_audio
from .prepare import SAMPLE_RATE, AudioError, AudioWarning, prepare_array
from .record import AudioWriter, recording_format, write_wav

__all__ = [
    "SAMPLE_RATE",
    "AudioError",
    "AudioWarning",
    "AudioWriter",
    "audio_duration",
    "iter_audio_blocks",
    "load_audio",
    "prepare_array",
    "recording_format",
    "write_wav",
]
