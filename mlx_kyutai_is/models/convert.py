# Copyright © 2026 mlx-kyutai-is contributors
"""Convert a Hugging Face Kyutai STT checkpoint to an MLX directory, optionally quantized
(as `mlx_lm/convert.py`):

    mlx-kyutai-is convert --hf-path mideind/kyutai-stt-1b-is-en --mlx-path kyutai-is-q4 -q --q-bits 4

The output holds `model.safetensors` (MLX parameter names), `config.json` (the source config plus
a `quantization` block when quantized), and the tokenizer and processor files, so `load()` and
the CLI read it like the original, without torch or transformers; and, where the source has them,
the Mimi decoder's weights in `mimi_decoder.safetensors` (float32), which only the codec reads.
"""

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..atomic import make_temp_dir, replace_dir
from .loading import (
    DECODER_WEIGHTS_NAME,
    DEFAULT_MODEL,
    DTYPES,
    INDEX_NAME,
    MAX_FILE_SIZE_GB,
    WEIGHTS_NAME,
    ModelLoadError,
    _load_file,
    load_model,
    load_weights,
    quantize_model,
    resolve_model_path,
    save_model,
)
from .mimi_decoder import MimiDecoder

# Besides the weights and config.json, the files `load()` reads (tokenizer, padding, generation).
COPY_PATTERNS = [
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def convert(
    hf_path_or_repo: str = DEFAULT_MODEL,
    mlx_path: str = "mlx_model",
    dtype: str | None = None,
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    force: bool = False,
    max_file_size_gb: float = MAX_FILE_SIZE_GB,
) -> Path:
    """Convert `hf_path_or_repo` (a Hugging Face checkpoint directory or repo id) into `mlx_path`.

    Parameters
    ----------
    hf_path_or_repo : str
        Source checkpoint: a local directory or a hub repo id (downloaded into the Hugging Face
        cache: configs, safetensors and tokenizer files only).
    mlx_path : str
        Output directory; must not exist or be empty, unless `force`.
    dtype : str, optional
        "bfloat16", "float16" or "float32" for the language model's float weights (by default as
        stored: bf16). Mimi stays float32.
    quantize : bool
        Quantize the language model's linear layers to `q_bits` with groups of `q_group_size`.
    force : bool
        Replace the model in an existing non-empty `mlx_path` (its other files are kept). The
        new model is built beside it and swapped in only once complete, so a failed or
        interrupted convert leaves the old one as it was.
    max_file_size_gb : float
        Weights above this size are split into shards with a `model.safetensors.index.json`.

    Returns
    -------
    Path
        `mlx_path`.
    """
    out = Path(mlx_path).expanduser()
    if out.is_symlink():
        out = out.resolve()
    if out.exists() and not out.is_dir():
        raise ModelLoadError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ModelLoadError(f"{out}: output directory exists and is not empty (use --force to overwrite)")

    print(f"[INFO] Loading {hf_path_or_repo}", flush=True)
    src = resolve_model_path(hf_path_or_repo)
    if out.exists() and out.resolve() == src.resolve():
        raise ModelLoadError(f"{out}: the output directory is the source checkpoint")
    model = load_model(src, dtype=dtype, lazy=True)
    config = json.loads((src / "config.json").read_text())  # valid: load_model read it; all keys kept
    print(
        f"[INFO] Loaded {src}: LM {_count(model.lm) / 1e6:,.1f} M parameters ({_lm_dtype(model)}), "
        f"Mimi encoder {_count(model.mimi) / 1e6:,.1f} M (float32)",
        flush=True,
    )
    if quantize:
        if model.args.quantization is not None:
            q = model.args.quantization
            raise ModelLoadError(f"{src}: already quantized (bits={q['bits']}, group_size={q['group_size']})")
        print(f"[INFO] Quantizing the language model to {q_bits} bits (group size {q_group_size})", flush=True)
        quantize_model(model, bits=q_bits, group_size=q_group_size)
        n = sum(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())
        print(f"[INFO] Quantized {n} linear layers; text head, embedding table and Mimi stay float", flush=True)

    # Built beside `out` and swapped in only when complete: a failed, interrupted or killed convert
    # leaves an existing model at `out` as it was (and loadable), never half-replaced.
    tmp = make_temp_dir(out)
    try:
        print(f"[INFO] Saving to {out}", flush=True)
        files = save_model(model, tmp, config, max_file_size_gb=max_file_size_gb)
        decoder = _save_decoder(src, model, tmp)
        copied = []
        for pattern in COPY_PATTERNS:
            for f in sorted(src.glob(pattern)):
                if f.is_file():
                    shutil.copy(f, tmp / f.name)
                    copied.append(f.name)
        if out.is_dir():
            _keep_other_files(out, tmp)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [out / f.name for f in files]

    weights_size = sum(f.stat().st_size for f in files)
    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    q = model.args.quantization
    kind = f"{q['bits']}-bit LM (group size {q['group_size']})" if q else f"{_lm_dtype(model)} LM"
    shards = f" in {len(files)} shards" if len(files) > 1 else ""
    print(f"[INFO] Copied {', '.join(copied) or 'no tokenizer/processor files'}", flush=True)
    if decoder:
        print(f"[INFO] Mimi decoder (float32, for `codec decode`): {DECODER_WEIGHTS_NAME}, {_mb(decoder)}", flush=True)
    else:
        print(f"[INFO] {src} has no Mimi decoder weights: the directory transcribes and encodes, but cannot decode", flush=True)
    print(
        f"[INFO] Wrote {out}: {kind}, Mimi float32; weights {_mb(weights_size)}{shards}, total {_mb(total)}",
        flush=True,
    )
    return out


def _keep_other_files(old: Path, new: Path) -> None:
    """`--force`: what the old directory holds besides a model (notes, a README, ...) moves along
    into the new one; its model files (weights, index, config) are the ones replaced."""
    stale = {WEIGHTS_NAME, INDEX_NAME, DECODER_WEIGHTS_NAME, "config.json"}
    for f in old.iterdir():
        if (new / f.name).exists() or f.name in stale or (f.name.startswith("model") and f.suffix == ".safetensors"):
            continue
        if f.is_dir() and not f.is_symlink():
            shutil.copytree(f, new / f.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(f, new / f.name)


def _save_decoder(src: Path, model, out: Path) -> int:
    """Write the source's Mimi decoder weights (float32, MLX names) to `out / DECODER_WEIGHTS_NAME`,
    apart from the model so that transcription never reads them; returns the bytes written, 0 when
    the source has none (a checkpoint saved without its decoder, or a directory converted before
    the decoder was kept)."""
    try:
        decoder = MimiDecoder(model.args.mimi)
    except ValueError as e:  # a codec config the decoder does not support: the model still converts
        print(f"[INFO] Mimi decoder not kept: {e}", flush=True)
        return 0
    file = src / DECODER_WEIGHTS_NAME
    weights = decoder.sanitize(_load_file(file) if file.is_file() else load_weights(src))
    if not weights:
        return 0
    weights = {k: v.astype(mx.float32) for k, v in sorted(weights.items())}
    try:  # names and shapes checked before writing
        decoder.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        where = file if file.is_file() else src
        raise ModelLoadError(f"{where}: the Mimi decoder's weights do not fit its config ({str(e).strip()[:200]})") from None
    mx.save_safetensors(str(out / DECODER_WEIGHTS_NAME), weights, metadata={"format": "mlx"})
    return sum(v.nbytes for v in weights.values())


def _link_or_copy(src, dst):
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _count(module) -> int:
    return sum(v.size for _, v in tree_flatten(module.parameters()))


def _lm_dtype(model) -> str:
    w = model.lm.embed_tokens.weight.dtype
    return next((name for name, d in DTYPES.items() if d == w), str(w))
