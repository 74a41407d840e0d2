"""config.json checks: wrong types and ranges give one line naming the file and the field; a
property test: no config (nor any bytes as config.json) fails with anything but that one line."""

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlx_kyutai_is.models import presets
from mlx_kyutai_is.models.config import ConfigError, LmArgs, MimiArgs, ModelArgs
from mlx_kyutai_is.models.loading import read_preprocessor_config

SRC = "ckpt/config.json"


def base_config() -> dict:
    """The test model's config as transformers writes it (model types included)."""
    c = copy.deepcopy(presets.TINY)
    c["model_type"] = "kyutai_speech_to_text"
    c["codec_config"]["model_type"] = "mimi"
    return c


def edited(path: str, value) -> dict:
    c = base_config()
    *parents, key = path.split(".")
    d = c
    for p in parents:
        d = d[p]
    d[key] = value
    return c


def test_base_config_loads():
    args = ModelArgs.from_dict(base_config(), SRC)
    assert args.lm.sliding_window == 16 and args.mimi.sliding_window == 20
    assert args.lm.rope_theta == 100_000.0 and args.lm.head_dim == 16


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("sliding_window", None, "sliding_window must be a positive integer, got null"),
        ("sliding_window", "16", 'sliding_window must be a positive integer, got "16"'),
        ("sliding_window", 16.0, "sliding_window must be a positive integer, got 16.0"),
        ("sliding_window", -1, "sliding_window must be a positive integer, got -1"),
        ("sliding_window", 0, "sliding_window must be a positive integer, got 0"),
        ("hidden_size", True, "hidden_size must be a positive integer, got true"),
        ("num_hidden_layers", [2], "num_hidden_layers must be a positive integer, got [2]"),
        ("bos_token_id", -3, "bos_token_id must be a non-negative integer, got -3"),
        ("bos_token_id", 9323, "bos_token_id (9323) must be below vocab_size (9323)"),
        ("audio_bos_token_id", 2049, "audio_bos_token_id (2049) must be below codebook_vocab_size (2049)"),
        ("num_key_value_heads", 3, "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"),
        ("rms_norm_eps", 0, "rms_norm_eps must be a positive number, got 0"),
        ("rms_norm_eps", "1e-8", 'rms_norm_eps must be a positive number, got "1e-8"'),
        ("rope_parameters", [1], "rope_parameters must be an object, got [1]"),
        ("rope_parameters.rope_theta", -1.0, "rope_parameters.rope_theta must be a positive number, got -1.0"),
        ("hidden_act", 3, "hidden_act must be a string, got 3"),
        ("model_type", "llama", 'model_type is "llama", expected "kyutai_speech_to_text"'),
        ("codec_config", None, "codec_config must be an object, got null"),
        ("codec_config.sliding_window", None, "codec_config.sliding_window must be a positive integer, got null"),
        ("codec_config.upsampling_ratios", [8, 0, 5], "codec_config.upsampling_ratios must be a non-empty list"),
        ("codec_config.upsampling_ratios", "8654", "codec_config.upsampling_ratios must be a non-empty list"),
        ("codec_config.use_causal_conv", 1, "codec_config.use_causal_conv must be true or false, got 1"),
        ("codec_config.head_dim", -16, "codec_config.head_dim must be a positive integer or null, got -16"),
        ("codec_config.norm_eps", math.inf, "codec_config.norm_eps must be a positive number, got Infinity"),
        ("codec_config.num_semantic_quantizers", 33, "num_semantic_quantizers (33) is more than num_quantizers (32)"),
        ("codec_config.model_type", "encodec", 'codec_config.model_type is "encodec", expected "mimi"'),
    ],
)
def test_bad_values_name_the_file_and_the_field(path, value, message):
    with pytest.raises(ConfigError) as e:
        ModelArgs.from_dict(edited(path, value), SRC)
    msg = str(e.value)
    assert msg.startswith(f"{SRC}: ") and message in msg and "\n" not in msg, msg


def test_optional_fields_may_be_null():
    for path in ("head_dim", "num_key_value_heads", "codec_config.head_dim"):
        ModelArgs.from_dict(edited(path, None), SRC)
    c = base_config()
    del c["model_type"], c["codec_config"]["model_type"]  # configs written from ModelArgs have none
    ModelArgs.from_dict(c, SRC)


def test_from_file_errors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(edited("sliding_window", None)))
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'config.json'}: sliding_window must be"):
        ModelArgs.from_file(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelArgs.from_file(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelArgs.from_file(tmp_path)


# --------------------------------------------------------------------------------------------
# Properties

special = st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 1, 0.5, 16.0, 2**31, 2**64, 1e308, "", "16"])
json_values = st.recursive(
    special | st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
FIELDS = (
    [f for f in LmArgs.__dataclass_fields__]
    + [f"codec_config.{f}" for f in MimiArgs.__dataclass_fields__]
    + ["model_type", "codec_config.model_type", "rope_parameters", "codec_config.rope_parameters",
       "rope_parameters.rope_theta", "codec_config", "quantization"]
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), min_size=1, max_size=3))
def test_any_config_loads_or_fails_with_one_line(edits):
    c = base_config()
    for path, value in edits:
        *parents, key = path.split(".")
        d = c
        for p in parents:
            if not isinstance(d.get(p), dict):
                d[p] = {}
            d = d[p]
        d[key] = value
    try:
        args = ModelArgs.from_dict(c, SRC)
    except ConfigError as e:
        assert str(e).startswith(f"{SRC}: ") and "\n" not in str(e), str(e)
        return
    # what loads is usable: sizes are positive integers, the heads divide the width
    for a in (args.lm, args.mimi):
        assert a.hidden_size >= 1 and a.sliding_window >= 1 and a.num_attention_heads % a.num_key_value_heads == 0
        assert isinstance(a.head_dim, int) and a.head_dim >= 1
    assert args.lm.bos_token_id < args.lm.vocab_size and args.mimi.num_quantizers >= args.lm.num_codebooks


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_config_file_loads_or_fails_with_one_line(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("cfg", numbered=True)
    (d / "config.json").write_bytes(data)
    try:
        ModelArgs.from_file(d)
    except ConfigError as e:
        assert str(e).startswith(str(d / "config.json")) and "\n" not in str(e), str(e)


@settings(max_examples=200, deadline=None, database=None)
@given(value=json_values, key=st.sampled_from(["audio_silence_prefix_seconds", "audio_delay_seconds", "sampling_rate"]),
       wrap=st.booleans())
def test_any_preprocessor_config_loads_or_fails_with_one_line(tmp_path_factory, value, key, wrap):
    d = tmp_path_factory.mktemp("pre", numbered=True)
    block = {key: value}
    name = "processor_config.json" if wrap else "preprocessor_config.json"
    (d / name).write_text(json.dumps({"feature_extractor": block} if wrap else block))
    try:
        pre = read_preprocessor_config(d)
    except ConfigError as e:
        assert str(e).startswith(str(d / name)) and "\n" not in str(e), str(e)
        return
    assert all(math.isfinite(pre[k]) and pre[k] >= 0 for k in ("audio_silence_prefix_seconds", "audio_delay_seconds"))
    assert pre["sampling_rate"] is None or isinstance(pre["sampling_rate"], int)
