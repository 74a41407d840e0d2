# Copyright © 2026 mlx-kyutai-is contributors
"""Model configuration, read from the checkpoint's `config.json` (transformers layout).

Every number the config holds comes from it; nothing here duplicates a value of the
published checkpoint except as a dataclass default for keys that transformers itself defaults.
"""

import inspect
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A config.json that is missing or malformed; the message names the file and the field."""


@dataclass
class BaseArgs:
    @classmethod
    def from_dict(cls, params: dict):
        # Keep only the fields we know: configs carry many transformers-only keys.
        names = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in params.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


def _rope_theta(params: dict, default: float) -> float:
    rope = params.get("rope_parameters") or {}
    return float(rope.get("rope_theta", params.get("rope_theta", default)))


@dataclass
class MimiArgs(BaseArgs):
    """The codec (Mimi) half of the checkpoint: `codec_config` in config.json."""

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

    @classmethod
    def from_dict(cls, params: dict):
        params = {**params, "rope_theta": _rope_theta(params, 10_000.0)}
        args = super().from_dict(params)
        if args.head_dim is None:
            args.head_dim = args.hidden_size // args.num_attention_heads
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


@dataclass
class LmArgs(BaseArgs):
    """The language-model half: the top level of config.json."""

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
    def from_dict(cls, params: dict):
        params = {**params, "rope_theta": _rope_theta(params, 100_000.0)}
        args = super().from_dict(params)
        if args.num_key_value_heads is None:
            args.num_key_value_heads = args.num_attention_heads
        if args.head_dim is None:
            args.head_dim = args.hidden_size // args.num_attention_heads
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
        try:
            lm = LmArgs.from_dict(config)
            mimi = MimiArgs.from_dict(config["codec_config"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: {e}") from None
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
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: expected a JSON object")
        return cls.from_dict(config, source=str(path))

    @property
    def frame_size(self) -> int:
        return self.mimi.frame_size

    @property
    def sample_rate(self) -> int:
        return self.mimi.sampling_rate
