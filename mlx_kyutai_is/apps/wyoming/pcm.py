# Copyright © 2026 mlx-kyutai-is contributors
"""Wyoming audio chunks (raw little-endian PCM at the client's rate, width and channels) to the
model's float32 mono, chunk by chunk.

Samples are scaled and downmixed as the package's file reader does (`audio.io`: 16-bit / 32768,
the channels' mean), and resampled by a streaming soxr resampler at the package's quality: the
chunks' output, joined, is what `stt.transcribe()` reads from a WAV file of the same audio, bit for
bit, whatever the chunk sizes.
"""

import numpy as np
import soxr

from ...audio.prepare import MAX_CHANNELS, RESAMPLE_QUALITY
from .info import RequestError

MAX_RATE = 384_000


def check_format(rate, width, channels):
    """`RequestError` (fatal) for an audio format this server cannot read."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1_000 <= rate <= MAX_RATE:
        raise RequestError(
            f"audio-start: rate must be an integer in 1000..{MAX_RATE} Hz, got {rate!r}", "bad-audio", True
        )
    if isinstance(width, bool) or width not in (1, 2, 3, 4):
        raise RequestError(f"audio-start: width must be 1, 2, 3 or 4 bytes, got {width!r}", "bad-audio", True)
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        raise RequestError(f"audio-start: channels must be 1..{MAX_CHANNELS}, got {channels!r}", "bad-audio", True)


def pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian PCM -> float32 mono. 8-bit is unsigned (as in WAV), wider is signed."""
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        x = (((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)) >> 8).astype(np.float32) / 8388608.0
    else:
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    if channels == 1:
        return x
    return x.reshape(-1, channels).mean(axis=1, dtype=np.float32)


class PcmConverter:
    """One utterance's audio, converted as it arrives.

    Parameters
    ----------
    rate, width, channels : int
        The format `audio-start` announced.
    model_rate : int
        The model's sample rate.
    """

    def __init__(self, rate: int, width: int, channels: int, model_rate: int):
        check_format(rate, width, channels)
        self.rate, self.width, self.channels = rate, width, channels
        self.frame_bytes = width * channels
        self.frames = 0  # input frames seen
        self._rs = None
        if rate != model_rate:  # stateful: chunkwise output == one-shot resampling
            self._rs = soxr.ResampleStream(rate, model_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def __call__(self, raw: bytes) -> np.ndarray:
        """The model-rate samples of one chunk (possibly none yet: the resampler's delay)."""
        if len(raw) % self.frame_bytes:
            raise RequestError(
                f"audio-chunk: {len(raw)} bytes is not a whole number of frames "
                f"({self.width} bytes x {self.channels} channels); chunk dropped",
                "bad-audio",
            )
        x = pcm_to_float(raw, self.width, self.channels)
        self.frames += len(x)
        return self._rs.resample_chunk(x) if self._rs is not None else x

    def finish(self) -> np.ndarray:
        """What the resampler still holds, at the end of the audio."""
        if self._rs is None:
            return np.zeros(0, np.float32)
        return self._rs.resample_chunk(np.zeros(0, np.float32), last=True)
