# Copyright © 2026 mlx-kyutai-is contributors
"""Model configuration, read from the checkpoint's `config.json` (transformers layout).

Every number the config holds comes from it; nothing here duplicates a value of the
published checkpoint except as a dataclass default for keys that transformers itself defaults.
Every value read is checked against its field's type and range (null, strings, floats or
negatives for sizes, windows and ids; an unknown `model_type`): `ConfigError`, one line naming
the file and the field.
"""

import inspect
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import Error

# What the two halves of a Kyutai STT config.json call themselves (transformers' model_type);
# the key may be absent (configs written from `ModelArgs`), but any other value is refused.
MODEL_TYPE = "kyutai_speech_to_text"
CODEC_MODEL_TYPE = "mimi"


class ConfigError(Error, ValueError):
    """A config.json that is missing or malformed; the message names the file and the field."""


def _describe(v) -> str:
    """A config value as it reads in the JSON file (null, true, "text", 1.5)."""
    try:
        return json.dumps(v, ensure_ascii=False)[:60]
    except (TypeError, ValueError):
        return repr(v)[:60]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _expected(kind, minimum) -> str:
    """What a field of annotation `kind` must hold, in words."""
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    if kind is int:
        return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
    if kind is float:
        return "a finite number" if minimum is None else f"a finite number >= {minimum}"
    return "a non-empty list of positive integers"


def _valid(kind, v, minimum) -> bool:
    if kind is bool:
        return isinstance(v, bool)
    if kind is str:
        return isinstance(v, str)
    if kind is int:
        return _is_int(v) and (minimum is None or v >= minimum)
    if kind is float:
        return _is_number(v) and (minimum is None or v >= minimum)
    if typing.get_origin(kind) is list:
        return isinstance(v, list) and bool(v) and all(_is_int(x) and x >= 1 for x in v)
    return True


def _check_value(kind, v, minimum) -> str | None:
    """Why `v` is not valid for a field annotated `kind` ("must be ..."), or None if it is."""
    optional = False
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        optional, kind = True, next(a for a in typing.get_args(kind) if a is not type(None))
    if v is None and optional or v is not None and _valid(kind, v, minimum):
        return None
    return f"must be {_expected(kind, minimum)}{' or null' if optional else ''}"


class BaseArgs:
    """Base of the config dataclasses: `from_dict` keeps the known keys and checks each one's type
    and range against the field's annotation and `_MINIMUM` (default for integers: 1)."""

    _MINIMUM = {}  # field -> smallest valid value (ints default to 1, floats to no bound)
    _POSITIVE_FLOATS = ()  # float fields that must be > 0

    @classmethod
    def from_dict(cls, params: dict, source: str = "config.json", prefix: str = ""):
        # Keep only the fields we know: configs carry many transformers-only keys.
        names = inspect.signature(cls).parameters
        kept = {k: v for k, v in params.items() if k in names}
        for f in fields(cls):
            if f.name not in kept:
                continue
            v = kept[f.name]
            minimum = cls._MINIMUM.get(f.name, 1 if f.type in (int, int | None) else None)
            why = _check_value(f.type, v, minimum)
            if f.name in cls._POSITIVE_FLOATS and (why is not None or not v > 0):
                why = "must be a positive number"
            if why is not None:
                raise ConfigError(f"{source}: {prefix}{f.name} {why}, got {_describe(v)}")
        return cls(**kept)

    def to_dict(self) -> dict:
        return asdict(self)


def _rope_theta(params: dict, default: float, source: str, prefix: str) -> float:
    rope = params.get("rope_parameters")
    if rope is None:
        rope = {}
    if not isinstance(rope, dict):
        raise ConfigError(f"{source}: {prefix}rope_parameters must be an object, got {_describe(rope)}")
    if "rope_theta" in rope:
        v, name = rope["rope_theta"], "rope_parameters.rope_theta"
    else:
        v, name = params.get("rope_theta", default), "rope_theta"
    if not _is_number(v) or not v > 0:
        raise ConfigError(f"{source}: {prefix}{name} must be a positive number, got {_describe(v)}")
    return float(v)


def _check_model_type(params: dict, expected: str, source: str, prefix: str) -> None:
    if "model_type" in params and params["model_type"] != expected:
        raise ConfigError(
            f"{source}: {prefix}model_type is {_describe(params['model_type'])}, expected \"{expected}\" "
            "(not a Kyutai speech-to-text checkpoint)"
        )


@dataclass
class MimiArgs(BaseArgs):
    """The codec (Mimi) half of the checkpoint: `codec_config` in config.json."""

    _MINIMUM = {"num_semantic_quantizers": 0, "trim_right_ratio": 0.0, "layer_scale_initial_scale": 0.0}
    _POSITIVE_FLOATS = ("norm_eps",)

    sampling_rate: int = 24_000
    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: list[int] = field(default_factory=lambda: [8, 6, 5, 4])
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    compress: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    use_conv_shortcut: bool = False
    vector_quantization_hidden_dimension: int = 256
    num_semantic_quantizers: int = 1
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8000
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    sliding_window: int = 250
    layer_scale_initial_scale: float = 0.01
    attention_bias: bool = False
    # The decoder's upsample (a depthwise transposed conv by default); the encoder never reads it.
    upsample_groups: int = 512

    @classmethod
    def from_dict(cls, params: dict, source: str = "config.json", prefix: str = "codec_config."):
        if not isinstance(params, dict):
            raise ConfigError(f"{source}: {prefix.rstrip('.')} must be an object, got {_describe(params)}")
        _check_model_type(params, CODEC_MODEL_TYPE, source, prefix)
        params = {**params, "rope_theta": _rope_theta(params, 10_000.0, source, prefix)}
        args = super().from_dict(params, source, prefix)
        _check_heads(args, source, prefix)
        if args.num_semantic_quantizers > args.num_quantizers:
            raise ConfigError(
                f"{source}: {prefix}num_semantic_quantizers ({args.num_semantic_quantizers}) is more than "
                f"num_quantizers ({args.num_quantizers})"
            )
        if args.trim_right_ratio > 1:
            raise ConfigError(f"{source}: {prefix}trim_right_ratio must be <= 1, got {args.trim_right_ratio}")
        return args

    @property
    def hop_length(self) -> int:
        """Samples per encoder-transformer step (960 at 24 kHz -> 25 Hz)."""
        return math.prod(self.upsampling_ratios)

    @property
    def encodec_frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def frame_size(self) -> int:
        """Samples per codec frame = per LM step (1920 at 24 kHz -> 12.5 Hz), after the stride-2 downsample."""
        return self.hop_length * 2

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.frame_size


def _check_heads(args, source: str, prefix: str) -> None:
    """Attention heads that divide the width (or an explicit head_dim), KV heads that divide the heads."""
    if args.head_dim is None:
        if args.hidden_size % args.num_attention_heads:
            raise ConfigError(
                f"{source}: {prefix}hidden_size ({args.hidden_size}) is not a multiple of num_attention_heads "
                f"({args.num_attention_heads}) and there is no head_dim"
            )
        args.head_dim = args.hidden_size // args.num_attention_heads
    kv = args.num_key_value_heads
    if kv is not None and args.num_attention_heads % kv:
        raise ConfigError(
            f"{source}: {prefix}num_attention_heads ({args.num_attention_heads}) is not a multiple of "
            f"num_key_value_heads ({kv})"
        )


@dataclass
class LmArgs(BaseArgs):
    """The language-model half: the top level of config.json."""

    _MINIMUM = {"audio_bos_token_id": 0, "audio_pad_token_id": 0, "bos_token_id": 0, "pad_token_id": 0}
    _POSITIVE_FLOATS = ("rms_norm_eps",)

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    ffn_dim: int
    sliding_window: int
    num_codebooks: int
    codebook_vocab_size: int
    audio_bos_token_id: int
    audio_pad_token_id: int
    bos_token_id: int
    pad_token_id: int = 3
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-8
    rope_theta: float = 100_000.0
    max_position_embeddings: int = 750
    hidden_act: str = "silu"

    @classmethod
    def from_dict(cls, params: dict, source: str = "config.json", prefix: str = ""):
        _check_model_type(params, MODEL_TYPE, source, prefix)
        params = {**params, "rope_theta": _rope_theta(params, 100_000.0, source, prefix)}
        args = super().from_dict(params, source, prefix)
        if args.num_key_value_heads is None:
            args.num_key_value_heads = args.num_attention_heads
        _check_heads(args, source, prefix)
        for name, limit, what in [
            ("bos_token_id", args.vocab_size, "vocab_size"),
            ("pad_token_id", args.vocab_size, "vocab_size"),
            ("audio_bos_token_id", args.codebook_vocab_size, "codebook_vocab_size"),
            ("audio_pad_token_id", args.embedding_rows, "the embedding table's rows"),
        ]:
            if getattr(args, name) >= limit:
                raise ConfigError(f"{source}: {prefix}{name} ({getattr(args, name)}) must be below {what} ({limit})")
        return args

    @property
    def embedding_rows(self) -> int:
        """Rows of the fused text + audio embedding table: text vocab, 32 x 2049 audio, 1 zero pad."""
        return self.vocab_size + self.num_codebooks * self.codebook_vocab_size + 1


@dataclass
class ModelArgs:
    lm: LmArgs
    mimi: MimiArgs
    quantization: dict | None = None

    @classmethod
    def from_dict(cls, config: dict, source: str = "config.json") -> "ModelArgs":
        required = [n for n in inspect.signature(LmArgs).parameters.values() if n.default is inspect.Parameter.empty]
        missing = [p.name for p in required if p.name not in config]
        if "codec_config" not in config:
            missing.append("codec_config")
        if missing:
            raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")
        lm = LmArgs.from_dict(config, source)
        mimi = MimiArgs.from_dict(config["codec_config"], source)
        if mimi.num_quantizers < lm.num_codebooks:
            raise ConfigError(
                f"{source}: the LM reads {lm.num_codebooks} codebooks but the codec has {mimi.num_quantizers}"
            )
        return cls(lm=lm, mimi=mimi, quantization=config.get("quantization"))

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelArgs":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"{path}: no such file (a model directory needs a config.json)")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid JSON (nested too deeply)") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(config, source=str(path))

    @property
    def frame_size(self) -> int:
        return self.mimi.frame_size

    @property
    def sample_rate(self) -> int:
        return self.mimi.sampling_rate
