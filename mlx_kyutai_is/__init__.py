# Copyright © 2026 mlx-kyutai-is contributors
"""Streaming Icelandic speech-to-text and Icelandic -> English translation with MLX.

    from mlx_kyutai_is import load
    stt = load("mideind/kyutai-stt-1b-is-en")
    print(stt.transcribe("speech.wav", task="is").text)
"""

import importlib

from ._version import __version__

# The public API, loaded on first use: `import mlx_kyutai_is` (and the CLI's start) stays light,
# MLX and the model code load with the first name used.
_API = {
    "load": "stt",
    "transcribe": "stt",
    "STT": "stt",
    "DEFAULT_MODEL": "stt",
    "Result": "results",
    "Transcript": "results",
    "Word": "results",
    "TASKS": "tasks",
    "StreamOptions": "runtime.protocol",
    "load_codec": "models.codec",
    "MimiCodec": "models.codec",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
