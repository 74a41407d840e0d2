import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import checkpoints  # noqa: E402


@pytest.fixture(scope="session")
def small_hf(tmp_path_factory):
    """A small random checkpoint in the exact transformers layout (LM bf16, codec f32), with processor."""
    return checkpoints.build_checkpoint(tmp_path_factory.mktemp("small_hf"), audio_silence_prefix_seconds=1.0)


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """Icelandic sentences spoken by espeak-ng: a list of 24 kHz mono wav paths."""
    d = tmp_path_factory.mktemp("speech")
    return [checkpoints.espeak(s, d / f"s{i}.wav") for i, s in enumerate(checkpoints.SENTENCES)]
