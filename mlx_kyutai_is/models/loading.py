# Copyright © 2026 mlx-kyutai-is contributors
"""Load and save models: Hugging Face checkpoints (converted in memory), MLX directories written
by `convert`, or hub repo ids (downloaded once into the Hugging Face cache).

The pipeline is mlx_lm's (`mlx_lm/utils.py` `load_model`): config.json -> `ModelArgs` -> build
-> `sanitize` -> quantize where the checkpoint has `.scales` -> strict load. Weights are read
with `mx.load` from safetensors only (never pickle), so neither torch nor transformers is needed.
"""

import json
import math
import struct
from pathlib import Path

import huggingface_hub  # attribute lookup at call time, so tests can stub snapshot_download
import huggingface_hub.constants  # HF_HUB_OFFLINE, ENDPOINT: looked up at call time too
import mlx.core as mx
import mlx.nn as nn
from huggingface_hub.utils import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from mlx.utils import tree_flatten

from .._version import __version__
from ..errors import Error
from .config import ConfigError, ModelArgs
from .model import Model

# The published checkpoint: what every command and `load()` use unless told otherwise.
DEFAULT_MODEL = "mideind/kyutai-stt-1b-is-en"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# The Mimi decoder, written by `convert` beside the model: transcription never opens it (`codec.load_codec` does).
DECODER_WEIGHTS_NAME = "mimi_decoder.safetensors"
# What a hub download fetches: configs, weights, tokenizer (never *.bin / *.pt pickles).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*"]
MARKER = "mlx_kyutai_is"  # config.json block naming the package version that wrote the directory
# The next step after any failed download: the same model from a directory.
LOCAL_INSTEAD = "or pass a local model directory instead (--model DIR: a Hugging Face checkpoint or a `convert` output)"
MAX_FILE_SIZE_GB = 5  # shard size, as mlx_lm (the published model is ~2.1 GB in bf16: one file)
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


class ModelLoadError(Error, ValueError):
    """A model directory that cannot be loaded; the one-line message names the file and the problem."""


def _short(names, n: int = 3) -> str:
    names = sorted(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not s.startswith((".", "~"))
        and all(c.isalnum() or c in "-_." for c in s.replace("/", ""))
    )


def resolve_model_path(path_or_repo: str | Path) -> Path:
    """A local model directory: `path_or_repo` itself if it exists, else the snapshot of the hub
    repo of that id (configs, safetensors and tokenizer files only; cached after the first time).

    Raises
    ------
    ModelLoadError
        Not a directory, or neither a local path nor a repo id that can be downloaded.
    """
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{path}: not a directory (expected a model directory or a Hugging Face repo id)")
        return path
    if not _looks_like_repo_id(str(path_or_repo)):
        raise ModelLoadError(f"{path}: no such directory")

    try:
        return Path(huggingface_hub.snapshot_download(str(path_or_repo), allow_patterns=ALLOW_PATTERNS))
    except Exception as e:  # network, auth, unknown repo: all end here with one line
        raise ModelLoadError(f"{path_or_repo}: not a local directory, and {_download_failure(e)}") from None


def _download_failure(e: Exception) -> str:
    """Why a hub download failed, and what to do next, for the one-line error."""
    cause = e.__cause__ if isinstance(e.__cause__, Exception) else e
    first = (str(cause).strip().splitlines() or [""])[0]
    msg = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    if isinstance(cause, OfflineModeIsEnabled) or huggingface_hub.constants.HF_HUB_OFFLINE:
        return (
            "it is not in the Hugging Face cache and downloads are off (HF_HUB_OFFLINE is set): "
            f"unset HF_HUB_OFFLINE to download it, {LOCAL_INSTEAD}"
        )
    if isinstance(e, GatedRepoError):
        return (
            f"the Hugging Face hub gates it ({msg}): accept its terms on the hub and log in "
            f"(`hf auth login`, or set HF_TOKEN), {LOCAL_INSTEAD}"
        )
    if isinstance(e, (RepositoryNotFoundError, RevisionNotFoundError)):
        return (
            f"the Hugging Face hub has no such repo ({msg}): check the name (a private repo needs "
            f"`hf auth login`), {LOCAL_INSTEAD}"
        )
    if isinstance(e, HfHubHTTPError) and not isinstance(e, LocalEntryNotFoundError):
        return f"downloading it from the Hugging Face hub failed ({msg}): try again later, {LOCAL_INSTEAD}"
    # No answer from the hub (no network, a proxy, DNS) and no copy in the cache.
    return (
        f"the Hugging Face hub ({huggingface_hub.constants.ENDPOINT}) cannot be reached ({msg}): check the "
        f"network (or HF_ENDPOINT, for a mirror), {LOCAL_INSTEAD}"
    )


def _check_safetensors(path: Path) -> None:
    """Fail early, with the file's name, on a truncated or corrupt safetensors file: its header
    must be JSON and name tensors that fit in the file (mx.load reads data lazily, later)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{path}: not a valid safetensors file ({e})") from None
    if 8 + n + end > size:
        raise ModelLoadError(f"{path}: truncated safetensors file ({size} bytes, the header needs {8 + n + end})")


def _load_file(path: Path) -> dict:
    _check_safetensors(path)
    try:
        return mx.load(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: cannot read safetensors ({str(e).strip()[:200]})") from None


def load_weights(path: str | Path) -> dict[str, mx.array]:
    """All tensors of a model directory: `model.safetensors`, or the shards listed in
    `model.safetensors.index.json`. Safetensors only; arrays stay lazy until evaluated.

    Raises
    ------
    ModelLoadError
        No weights, a missing shard, or an unreadable / truncated file.
    """
    path = Path(path)
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({e})") from None
        weights = {}
        for name in files:
            shard = path / name
            if not shard.is_file():
                raise ModelLoadError(f"{index}: lists {name}, which is missing")
            weights.update(_load_file(shard))
        return weights
    single = path / WEIGHTS_NAME
    if single.is_file():
        return _load_file(single)
    pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt*")]
    hint = f" ({_short(pickles)} found: only safetensors are read)" if pickles else ""
    raise ModelLoadError(f"{path}: no weights ({WEIGHTS_NAME} or {INDEX_NAME}){hint}")


def _as_dtype(dtype) -> mx.Dtype | None:
    if dtype is None or isinstance(dtype, mx.Dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    return DTYPES[dtype]


def _check_quantization(q, source) -> dict:
    if not isinstance(q, dict):
        raise ModelLoadError(f"{source}: quantization must be an object with bits and group_size, got {q!r}")
    bits, group_size = q.get("bits"), q.get("group_size")
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (bits, group_size))  # not 4.0, not true
    if not ints or bits not in (2, 3, 4, 5, 6, 8) or group_size not in (32, 64, 128):
        raise ModelLoadError(
            f"{source}: unsupported quantization bits={bits!r}, group_size={group_size!r} "
            "(bits 2, 3, 4, 5, 6 or 8; group_size 32, 64 or 128)"
        )
    return {"group_size": group_size, "bits": bits}


def _check_weights(model: nn.Module, weights: dict, source: Path, quantization: dict | None) -> None:
    """Names and shapes against the model; one line naming what does not fit."""
    expected = dict(tree_flatten(model.parameters()))
    missing = expected.keys() - weights.keys()
    unexpected = weights.keys() - expected.keys()
    if quantization is None and any(k.endswith(".scales") for k in unexpected):
        raise ModelLoadError(
            f"{source}: the weights are quantized ({_short(k for k in unexpected if k.endswith('.scales'))}) "
            "but config.json has no quantization block"
        )
    if missing:
        raise ModelLoadError(f"{source}: missing {len(missing)} tensor(s): {_short(missing)}")
    if unexpected:
        raise ModelLoadError(f"{source}: unexpected {len(unexpected)} tensor(s): {_short(unexpected)}")
    for k, v in expected.items():
        if weights[k].shape != v.shape:
            got, want = tuple(weights[k].shape), tuple(v.shape)
            if quantization is not None and (k.endswith((".scales", ".biases")) or f"{k[:-7]}.scales" in weights):
                raise ModelLoadError(
                    f"{source}: config.json's quantization (bits={quantization['bits']}, "
                    f"group_size={quantization['group_size']}) does not match the weights: {k} has shape "
                    f"{got}, expected {want}"
                )
            raise ModelLoadError(f"{source}: {k} has shape {got}, expected {want}")


def quantize_model(model: Model, bits: int = 4, group_size: int = 64) -> Model:
    """Quantize the LM's linear layers in place (`Model.quant_predicate`); records the setting in
    `model.args.quantization` so `save_model` writes it to config.json."""
    q = _check_quantization({"bits": bits, "group_size": group_size}, "quantize")
    nn.quantize(model, **q, class_predicate=lambda p, m: model.quant_predicate(p, m, q["group_size"]))
    model.args.quantization = q
    return model


def adapt_to_device(model: Model, device: mx.Device | None = None) -> Model:
    """Tune a loaded model for the device it runs on; weights and results are unchanged but for
    rounding. Used by `load()`, not by `convert` (files keep the standard layout).

    On the CPU, the quantized layers' scales and biases are made float32: MLX's CPU
    `quantized_matmul` has a fast kernel only when the activations or the scales are float32;
    bf16 activations with bf16 scales fall to a generic one ~9x slower (MLX 0.32: a full-size q4
    step 8.5 s -> 0.84 s on 2 cores). The activations then run in float32 after the first
    quantized layer (the KV cache too: +49 MB). Metal and CUDA keep the stored dtypes.
    """
    device = device or mx.default_device()
    if device.type != mx.cpu:
        return model
    for _, module in model.named_modules():
        if isinstance(module, nn.QuantizedLinear) and module.scales.dtype != mx.float32:
            module.scales = module.scales.astype(mx.float32)
            if module.get("biases") is not None:
                module.biases = module.biases.astype(mx.float32)
    mx.eval(model.parameters())
    return model


def load_model(
    path_or_repo: str | Path,
    quantize: dict | None = None,
    dtype: str | mx.Dtype | None = None,
    lazy: bool = False,
) -> Model:
    """Load a `Model` from an MLX directory written by `convert`, a Hugging Face checkpoint
    directory, or a hub repo id.

    Parameters
    ----------
    path_or_repo : str or Path
        A local directory, or a repo id such as ``"mideind/kyutai-stt-1b-is-en"``.
    quantize : dict, optional
        ``{"bits": 4 | 8, "group_size": 64}``: quantize the LM's linear layers after loading a
        float checkpoint. A checkpoint that is already quantized loads as it is.
    dtype : str or mx.Dtype, optional
        Float type of the LM's weights ("bfloat16", "float16", "float32"); by default as stored
        (bf16 in the published checkpoint). Mimi always runs in float32.
    lazy : bool
        Leave the weights unevaluated (they load on first use).

    Raises
    ------
    ModelLoadError, ConfigError
        One line naming the directory or file and the problem.
    """
    path = resolve_model_path(path_or_repo)
    args = ModelArgs.from_file(path)
    dtype = _as_dtype(dtype)
    stored_q = None
    if args.quantization is not None:
        stored_q = _check_quantization(args.quantization, path / "config.json")
        args.quantization = stored_q
    if quantize is not None:
        quantize = _check_quantization({"group_size": 64, **quantize}, "quantize")
        if stored_q is not None and quantize != stored_q:
            raise ModelLoadError(
                f"{path}: already quantized (bits={stored_q['bits']}, group_size={stored_q['group_size']}); "
                "load it without quantize, or quantize the float checkpoint"
            )
    try:
        model = Model(args)
    except ValueError as e:
        raise ModelLoadError(f"{path}: {e}") from None

    weights = Model.sanitize(load_weights(path))

    def cast(k, v):
        if not mx.issubdtype(v.dtype, mx.floating):
            return v
        if k.startswith("mimi."):
            return v.astype(mx.float32)
        return v.astype(dtype) if dtype is not None else v

    weights = {k: cast(k, v) for k, v in weights.items()}

    if stored_q is not None:
        if not any(k.endswith(".scales") for k in weights):
            raise ModelLoadError(
                f"{path}: config.json says the weights are quantized (bits={stored_q['bits']}, "
                f"group_size={stored_q['group_size']}) but {WEIGHTS_NAME} holds none"
            )
        nn.quantize(model, **stored_q, class_predicate=lambda p, m: f"{p}.scales" in weights)
    _check_weights(model, weights, path, stored_q)
    model.load_weights(list(weights.items()), strict=True)
    if quantize is not None and stored_q is None:
        quantize_model(model, **quantize)
    model.eval()
    if not lazy:
        mx.eval(model.parameters())
    return model


def model_config(model: Model, config: dict | None = None) -> dict:
    """The config.json of `model`: `config` (the source checkpoint's, all keys kept) or one made
    from `model.args`, with `quantization` set to the model's (or removed when it is float) and
    an `mlx_kyutai_is` block (format, package version) marking a directory written by `convert`."""
    if config is None:
        config = {**model.args.lm.to_dict(), "codec_config": model.args.mimi.to_dict()}
    drop = ("quantization", "quantization_config", MARKER)
    config = {k: v for k, v in config.items() if k not in drop}
    if model.args.quantization is not None:
        config["quantization"] = dict(model.args.quantization)
    config[MARKER] = {"format": "mlx", "version": __version__}
    return dict(sorted(config.items()))


def make_shards(weights: dict, max_file_size_gb: float = MAX_FILE_SIZE_GB) -> list[dict]:
    """Split `weights` into dicts of at most `max_file_size_gb` each (as mlx_lm's `make_shards`;
    a tensor larger than that gets a shard of its own)."""
    max_bytes = max_file_size_gb * 2**30
    shards, shard, size = [], {}, 0
    for k, v in weights.items():
        if shard and size + v.nbytes > max_bytes:
            shards.append(shard)
            shard, size = {}, 0
        shard[k] = v
        size += v.nbytes
    if shard:
        shards.append(shard)
    return shards


def save_model(
    model: Model, path: str | Path, config: dict | None = None, max_file_size_gb: float = MAX_FILE_SIZE_GB
) -> list[Path]:
    """Write `model` to directory `path` and return the weight files written.

    Weights go to `model.safetensors` (MLX names, `{"format": "mlx"}` metadata), or, above
    `max_file_size_gb`, to `model-0000i-of-0000n.safetensors` shards listed in
    `model.safetensors.index.json`; any weight files already there are removed first (a stale
    index would shadow the new file). `config.json`: see `model_config`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in [*path.glob("model*.safetensors"), path / INDEX_NAME]:
        stale.unlink(missing_ok=True)
    weights = dict(sorted(tree_flatten(model.parameters())))
    shards = make_shards(weights, max_file_size_gb)
    files = []
    if len(shards) == 1:
        files.append(path / WEIGHTS_NAME)
        mx.save_safetensors(str(files[0]), shards[0], metadata={"format": "mlx"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            mx.save_safetensors(str(path / name), shard, metadata={"format": "mlx"})
            weight_map.update(dict.fromkeys(shard, name))
            files.append(path / name)
        index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": weight_map}
        (path / INDEX_NAME).write_text(json.dumps(index, indent=4) + "\n")
    (path / "config.json").write_text(json.dumps(model_config(model, config), indent=4) + "\n")
    return files


__all__ = [
    "ConfigError",
    "DECODER_WEIGHTS_NAME",
    "adapt_to_device",
    "ModelLoadError",
    "load_model",
    "load_weights",
    "make_shards",
    "model_config",
    "quantize_model",
    "resolve_model_path",
    "save_model",
]


_PREPROCESSOR_KEYS = {"audio_silence_prefix_seconds": 0.0, "audio_delay_seconds": 0.0}


def read_preprocessor_config(model_dir) -> dict:
    """The feature extractor's padding settings of a checkpoint directory.

    Looks where transformers does, in its order: the `feature_extractor` (or `audio_processor`) block of
    `processor_config.json`, then `preprocessor_config.json`. Missing files or keys give 0.0.

    Returns
    -------
    dict
        `audio_silence_prefix_seconds`, `audio_delay_seconds` (floats), and `sampling_rate` (int or None).

    Raises
    ------
    ConfigError
        A file that exists but is not valid JSON, a padding value that is not a non-negative number,
        or a sampling_rate that is not a positive integer.
    """
    model_dir = Path(model_dir)
    found, source = None, None
    for fname in ("processor_config.json", "preprocessor_config.json"):
        path = model_dir / fname
        if not path.is_file():
            continue
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        if fname == "processor_config.json":
            d = d.get("feature_extractor", d.get("audio_processor"))
            if not isinstance(d, dict):
                continue
        found, source = d, path
        break
    found = found or {}
    out = {}
    for key, default in _PREPROCESSOR_KEYS.items():
        v = found.get(key)
        v = default if v is None else v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"{source}: {key} must be a non-negative number, got {v!r}")
        out[key] = float(v)
    rate = found.get("sampling_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0):
        raise ConfigError(f"{source}: sampling_rate must be a positive integer, got {json.dumps(rate)[:40]}")
    out["sampling_rate"] = rate
    return out
