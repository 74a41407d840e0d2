# Copyright © 2026 mlx-kyutai-is contributors
"""Streaming Icelandic speech-to-text and Icelandic -> English translation with MLX.

    from mlx_kyutai_is import load
    stt = load("mideind/kyutai-stt-1b-is-en")
    print(stt.transcribe("speech.wav", task="is").text)
"""

from ._version import __version__

# Light imports only (no mlx/numpy): the model code loads on the first `load()`. Importing the
# `transcribe` submodule here, before anyone else does, keeps `mlx_kyutai_is.transcribe` the
# function (a later first import of the submodule would rebind the name to the module).
from .transcribe import DEFAULT_MODEL, STT, transcribe

__all__ = ["__version__", "load", "transcribe", "DEFAULT_MODEL", "STT", "Transcript", "Word"]


def __getattr__(name):
    # The results live in `decoding` (with the step decoder, which needs MLX): loaded on first use.
    if name in ("Transcript", "Word"):
        from . import decoding

        return getattr(decoding, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path_or_repo: str = DEFAULT_MODEL, quantize: int | dict | None = None, dtype: str | None = None):
    """Load a model for `transcribe()` and `stream()`.

    Parameters
    ----------
    path_or_repo : str or Path
        An MLX directory written by `convert`, a Hugging Face checkpoint directory (converted in
        memory), or a hub repo id (downloaded once into the Hugging Face cache).
    quantize : int or dict, optional
        4 or 8 (bits), or ``{"bits": .., "group_size": ..}``: quantize the LM's linear layers of a
        float checkpoint on load (Mimi and the embeddings stay float).
    dtype : str, optional
        "float32", "bfloat16" or "float16": the LM's compute type for a float checkpoint
        (default: as stored, bf16). Mimi is always float32.

    Returns
    -------
    STT
    """
    from .audio import read_preprocessor_config
    from .tokenizer import Tokenizer
    from .utils import adapt_to_device, load_model, resolve_model_path

    path = resolve_model_path(path_or_repo)
    quantize = _quantization(quantize)
    model = adapt_to_device(load_model(path, quantize=quantize, dtype=dtype))
    tokenizer = Tokenizer.from_dir(path, model.args.lm)
    return STT(model, tokenizer, read_preprocessor_config(path), path=str(path))



def _quantization(quantize) -> dict | None:
    """`load`'s quantize argument as {"bits", "group_size"}: 4, 8, "4", "8" or such a dict."""
    if quantize is None or isinstance(quantize, dict):
        return quantize
    bits = quantize
    if isinstance(bits, str) and bits.strip().isdigit():
        bits = int(bits)
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"quantize must be 4 or 8 (bits), or {{'bits': ..., 'group_size': ...}}; got {quantize!r}")
    return {"bits": int(bits), "group_size": 64}
