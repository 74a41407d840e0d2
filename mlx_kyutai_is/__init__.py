# Copyright © 2026 mlx-kyutai-is contributors
"""Streaming Icelandic speech-to-text and Icelandic -> English translation with MLX.

    from mlx_kyutai_is import load
    stt = load("mideind/kyutai-stt-1b-is-en")
    print(stt.transcribe("speech.wav", task="is").text)
"""

from ._version import __version__

DEFAULT_MODEL = "mideind/kyutai-stt-1b-is-en"

__all__ = ["__version__", "load", "transcribe", "DEFAULT_MODEL"]


def load(path_or_repo: str = DEFAULT_MODEL, quantize: int | dict | None = None, dtype: str | None = None):
    """Load a model: an MLX directory written by `convert`, a Hugging Face checkpoint directory
    (converted in memory), or a hub repo id (downloaded once into the Hugging Face cache).

    `quantize`: 4 or 8 (bits) or ``{"bits": .., "group_size": ..}`` quantizes the LM's linear
    layers of a float checkpoint on load. `dtype` ("float32", "bfloat16", "float16") sets the
    LM's compute type for a float checkpoint (default: as stored, bf16); Mimi is always float32.
    """
    from .audio import read_preprocessor_config
    from .tokenizer import Tokenizer
    from .transcribe import STT
    from .utils import load_model, resolve_model_path

    path = resolve_model_path(path_or_repo)
    if isinstance(quantize, int):
        quantize = {"bits": quantize, "group_size": 64}
    model = load_model(path, quantize=quantize, dtype=dtype)
    tokenizer = Tokenizer.from_dir(path, model.args.lm)
    return STT(model, tokenizer, read_preprocessor_config(path), path=str(path))


def transcribe(audio, *, model=DEFAULT_MODEL, task: str = "is", **options):
    """Transcribe a file or an array; see `STT.transcribe`."""
    from .transcribe import transcribe as _transcribe

    return _transcribe(audio, model=model, task=task, **options)
