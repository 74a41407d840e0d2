"""convert -> load round trips (bf16, q8, q4), the loader's errors, the CLI, and the hub-id branch.

One small random checkpoint in the real transformers layout (LM bf16, codec f32), with
`ffn_dim=256` so every LM linear layer has an input size divisible by 64 and the default group
size quantizes all of them, as on the published model (2048 / 5632 inputs).
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from numpy.testing import assert_array_equal

from mlx_kyutai_is import __version__
from mlx_kyutai_is.models.config import ConfigError, ModelArgs
from mlx_kyutai_is.models.convert import convert
from mlx_kyutai_is.models.lm import LM
from mlx_kyutai_is.models.loading import (
    ModelLoadError,
    adapt_to_device,
    load_model,
    load_weights,
)
from mlx_kyutai_is.models.model import Model

from checkpoints import build_checkpoint, small_lm_kwargs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    # init_std 0.02 (transformers' default): logits of a sane scale, so quantization error is
    # measured on a smooth network rather than a chaotic one (0.2 amplifies any perturbation ~4x).
    return build_checkpoint(
        tmp_path_factory.mktemp("hf"), seed=3, lm=small_lm_kwargs(ffn_dim=256), init_std=0.02
    )


@pytest.fixture(scope="module")
def out(tmp_path_factory, hf):
    """Converted directories: bf16 (as stored), q8 and q4 (group size 64)."""
    root = tmp_path_factory.mktemp("mlx")
    return {
        "bf16": convert(str(hf), str(root / "bf16")),
        "q8": convert(str(hf), str(root / "q8"), quantize=True, q_bits=8),
        "q4": convert(str(hf), str(root / "q4"), quantize=True, q_bits=4),
    }


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2048, (2, 40, 33))
    t[..., 0] = rng.integers(4, 9000, (2, 40))
    t[0, :3, 1:] = 2048  # audio BOS, as the first step
    return mx.array(t.astype(np.int32))


@pytest.fixture(scope="module")
def audio():
    return mx.array(np.random.default_rng(1).standard_normal((1, 24_000)).astype(np.float32) * 0.1)


def logits(model, tokens):
    return np.array(model.lm(tokens))


def rel_err(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


# --------------------------------------------------------------------------------------------
# Round trips


def test_bf16_convert_is_lossless(hf, out, tokens, audio):
    ref, conv = load_model(hf), load_model(out["bf16"])
    assert_array_equal(logits(conv, tokens), logits(ref, tokens))
    # ... and the LM alone, built from the checkpoint's LM tensors with LM.sanitize, agrees.
    lm = LM(ModelArgs.from_file(hf).lm)
    raw = {k: v for k, v in load_weights(hf).items() if k.startswith(("model.", "lm_head."))}
    lm.load_weights(list(LM.sanitize(raw).items()), strict=True)
    assert_array_equal(np.array(lm(tokens)), logits(conv, tokens))
    assert_array_equal(np.array(conv.mimi.encode(audio)), np.array(ref.mimi.encode(audio)))
    for model in (ref, conv):
        params = dict(tree_flatten(model.parameters()))
        assert {v.dtype for k, v in params.items() if k.startswith("lm.")} == {mx.bfloat16}
        assert {v.dtype for k, v in params.items() if k.startswith("mimi.")} == {mx.float32}

    d = out["bf16"]
    config = json.loads((d / "config.json").read_text())
    assert "quantization" not in config
    assert config["mlx_kyutai_is"] == {"format": "mlx", "version": __version__}
    source = json.loads((hf / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "mlx_kyutai_is"} == source  # every HF key kept
    assert ModelArgs.from_file(d).lm == ModelArgs.from_file(hf).lm
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "generation_config.json"):
        assert (d / name).read_bytes() == (hf / name).read_bytes()
    _, meta = mx.load(str(d / "model.safetensors"), return_metadata=True)
    assert meta == {"format": "mlx"}
    assert all(k.startswith(("lm.", "mimi.")) for k in load_weights(d))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_round_trip(hf, out, tokens, bits):
    model = load_model(out[f"q{bits}"])
    config = json.loads((out[f"q{bits}"] / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits}
    assert model.args.quantization == {"group_size": 64, "bits": bits}
    kinds = {p: type(m) for p, m in model.named_modules()}
    linears = [p for p, t in kinds.items() if t in (nn.Linear, nn.QuantizedLinear)]
    assert linears and all(kinds[p] is nn.QuantizedLinear for p in linears if p.startswith("lm.layers."))
    assert kinds["lm.lm_head"] is nn.Linear  # text head stays bf16 (see Model.quant_predicate)
    assert all(kinds[p] is nn.Linear for p in linears if p.startswith("mimi."))
    assert kinds["lm.embed_tokens"] is nn.Embedding
    assert all(m.bits == bits for p, m in model.named_modules() if isinstance(m, nn.QuantizedLinear))
    # Saving and loading changes nothing: same logits as quantizing the HF checkpoint on load.
    on_load = load_model(hf, quantize={"bits": bits, "group_size": 64})
    assert_array_equal(logits(model, tokens), logits(on_load, tokens))


def test_quantization_error(hf, out, tokens):
    """Relative logit error ||q - ref|| / ||ref|| of the quantized files on the same inputs.

    Affine quantization with groups of 64 rounds each weight to one of 2**bits levels over the
    group's range (~5 std for 64 Gaussian weights): the rounding error is step / sqrt(12), about
    0.6 % of a weight's std at 8 bits and 9.6 % at 4 bits, i.e. 17x (255 vs 15 steps) apart.
    The converted files compute in bf16, whose own rounding (bf16 vs float32 logits, 0.44 % here)
    is a floor q8 cannot go below: measured q8 0.48 %, q4 1.7 % against bf16, so there q8 is
    "at the bf16 floor" and q4 ~3.6x above it. In float32 the floor is gone and the ratio is the
    weights': q8 0.10 %, q4 1.6 % (16x). Bounds leave ~2x headroom.
    """
    bf16 = logits(load_model(out["bf16"]), tokens)
    f32 = logits(load_model(hf, dtype="float32"), tokens)
    floor = rel_err(bf16, f32)
    q = {bits: logits(load_model(out[f"q{bits}"]), tokens) for bits in (8, 4)}
    err = {bits: rel_err(q[bits], bf16) for bits in (8, 4)}
    assert floor < 0.01, floor
    assert err[8] < 2 * floor, (err, floor)
    assert err[4] < 0.04, err
    assert err[4] > 2.5 * err[8], err
    # Same weights quantized in float32 (scales and activations f32): only the weight rounding.
    e32 = {
        bits: rel_err(logits(load_model(hf, dtype="float32", quantize={"bits": bits}), tokens), f32) for bits in (8, 4)
    }
    assert e32[8] < e32[4] / 8, e32
    assert e32[4] < 0.04, e32
    # The greedy text token mostly survives.
    assert (q[8].argmax(-1) == bf16.argmax(-1)).mean() >= 0.95
    assert (q[4].argmax(-1) == bf16.argmax(-1)).mean() >= 0.85


def test_cpu_adaptation_keeps_quantized_results(out, tokens):
    """On the CPU `load()` makes the quantized layers' scales float32 (MLX's fast CPU kernel);
    the quantized weights are the same and the logits move only by rounding."""
    from mlx_kyutai_is import load

    stored = load_model(out["q4"])
    adapted = adapt_to_device(load_model(out["q4"]), mx.Device(mx.cpu))
    q = [m for _, m in adapted.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert q and all(m.scales.dtype == mx.float32 and m.biases.dtype == mx.float32 for m in q)
    assert all(m.weight.dtype == mx.uint32 for m in q)
    # Same quantized weights, less rounding: closer to an all-float32 run of the file than the
    # stored bf16 path is (measured 0.16 % vs 0.47 %).
    exact = logits(load_model(out["q4"], dtype="float32"), tokens)
    assert rel_err(logits(adapted, tokens), exact) < 0.5 * rel_err(logits(stored, tokens), exact)
    # Other devices keep the stored dtypes; a float model is left alone.
    other = adapt_to_device(load_model(out["q4"]), mx.Device(mx.gpu))
    assert all(m.scales.dtype == mx.bfloat16 for _, m in other.named_modules() if isinstance(m, nn.QuantizedLinear))
    bf16 = load_model(out["bf16"])
    before = {k: v.dtype for k, v in tree_flatten(bf16.parameters())}
    assert {k: v.dtype for k, v in tree_flatten(adapt_to_device(bf16, mx.Device(mx.cpu)).parameters())} == before
    if mx.default_device().type == mx.cpu:
        m = load(str(out["q8"])).model
        assert all(x.scales.dtype == mx.float32 for _, x in m.named_modules() if isinstance(x, nn.QuantizedLinear))


def test_files_get_smaller(out):
    size = {k: (d / "model.safetensors").stat().st_size for k, d in out.items()}
    assert size["bf16"] > size["q8"] > size["q4"], size
    # Only the quantized linear weights shrink (text head and embedding table bf16, Mimi f32 stay):
    # per such weight 16 bits -> bits + 32 / group_size bits (bf16 scale and bias per group of
    # 64). Exact on the tensor bytes; the files also differ by their headers (more names).
    data = {k: sum(v.nbytes for v in load_weights(d).values()) for k, d in out.items()}
    model = load_model(out["bf16"], lazy=True)
    n = sum(m.weight.size for p, m in model.named_modules() if model.quant_predicate(p, m))
    for bits in (8, 4):
        assert data["bf16"] - data[f"q{bits}"] == n * (16 - bits - 0.5) / 8
        assert size["bf16"] - size[f"q{bits}"] == pytest.approx(n * (16 - bits - 0.5) / 8, abs=4096)


def test_load_without_torch_or_transformers(out):
    """The package reads its own safetensors: neither torch nor transformers may be imported
    (note: `import mlx_lm` imports transformers, via mlx_lm/__init__ -> tokenizer_utils)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import mlx.core as mx\n"
        "from mlx_kyutai_is.models.loading import load_model\n"
        "m = load_model(sys.argv[1])\n"
        "t = mx.zeros((1, 3, 33), mx.int32)\n"
        "print(m.lm(t).shape, m.mimi.encode(mx.zeros((1, 4800))).shape)\n"
    )
    for d in (out["bf16"], out["q4"]):
        p = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr.strip().splitlines()[-1:] + p.stderr.strip().splitlines()[-6:-1]
        assert "(1, 3, 9323) (1, 3, 32)" in p.stdout


def test_dtype_option(hf, tmp_path):
    m = load_model(hf, dtype="float32")
    params = dict(tree_flatten(m.parameters()))
    assert {v.dtype for v in params.values()} == {mx.float32}
    d = convert(str(hf), str(tmp_path / "f16"), dtype="float16")
    params = dict(tree_flatten(load_model(d).parameters()))
    assert {v.dtype for k, v in params.items() if k.startswith("lm.")} == {mx.float16}
    assert {v.dtype for k, v in params.items() if k.startswith("mimi.")} == {mx.float32}


def test_sanitize_and_quant_predicate(hf):
    weights = load_weights(hf)
    args = ModelArgs.from_file(hf)
    model = Model(args)
    once = Model.sanitize(weights)
    assert set(once) == {k for k, _ in tree_flatten(model.parameters())}
    assert set(Model.sanitize(once)) == set(once)  # idempotent: MLX names pass through
    preds = {p: model.quant_predicate(p, m) for p, m in model.named_modules()}
    chosen = {p for p, q in preds.items() if q}
    linears = {p for p, m in model.named_modules() if p.startswith("lm.") and isinstance(m, nn.Linear)}
    assert chosen == linears - {"lm.lm_head"}
    # An input size that is not a multiple of the group stays float (ffn 192 -> fc2 input 96).
    small = Model(ModelArgs.from_dict({**json.loads((hf / "config.json").read_text()), "ffn_dim": 192}))
    assert not small.quant_predicate("lm.layers.0.mlp.fc2", small.lm.layers[0].mlp.fc2, 64)
    assert small.quant_predicate("lm.layers.0.mlp.fc2", small.lm.layers[0].mlp.fc2, 32)


def test_full_size_quantization_plan():
    """The published shapes (lazily, nothing evaluated): every transformer linear layer quantizes at the
    default group size (inputs 2048 and 5632 = 88 x 64), nothing else does, and the files come to
    2111 MiB (bf16), 1376 MiB (q8), 983 MiB (q4): the embedding table (293 MiB bf16), the text
    head (36 MiB bf16) and Mimi (f32) stay as they are."""
    from mlx_kyutai_is.models.loading import quantize_model

    from checkpoints import full_codec_kwargs, full_lm_kwargs

    config = {**full_lm_kwargs(), "codec_config": full_codec_kwargs()}
    sizes = {}
    for bits in (None, 8, 4):
        model = Model(ModelArgs.from_dict(config))
        if bits:
            quantize_model(model, bits=bits, group_size=64)
            q = [p for p, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
            # per layer: qkv_proj (q, k, v fused at load), o_proj, fc1, fc2
            assert len(q) == 16 * 4 and all(p.startswith("lm.layers.") for p in q)
            assert all(m.bits == bits for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear))
        params = dict(tree_flatten(model.parameters()))
        # on disk: Mimi float32, LM float weights / scales / biases bf16, packed weights uint32
        sizes[bits] = sum(
            v.size * (4 if k.startswith("mimi.") or v.dtype == mx.uint32 else 2) for k, v in params.items()
        )
    assert sizes[None] / 2**20 == pytest.approx(2111, abs=5)
    assert sizes[8] / 2**20 == pytest.approx(1376, abs=5)
    assert sizes[4] / 2**20 == pytest.approx(983, abs=5)


# --------------------------------------------------------------------------------------------
# Command line


def test_module_help():
    p = subprocess.run(
        [sys.executable, "-m", "mlx_kyutai_is", "convert", "--help"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    for opt in ("--hf-path", "--mlx-path", "--quantize", "--q-bits", "--q-group-size", "--dtype", "--force"):
        assert opt in p.stdout


def test_cli_convert(hf, tmp_path, tokens):
    exe = shutil.which("mlx-kyutai-is")
    cmd = [exe] if exe else [sys.executable, "-m", "mlx_kyutai_is"]
    dst = tmp_path / "cli-q8"
    args = [*cmd, "convert", "--hf-path", str(hf), "--mlx-path", str(dst), "-q", "--q-bits", "8"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Wrote" in p.stdout and "MB" in p.stdout
    model = load_model(dst)
    assert model.args.quantization == {"group_size": 64, "bits": 8}
    assert_array_equal(logits(model, tokens), logits(load_model(hf, quantize={"bits": 8}), tokens))

    # An existing output directory is refused, one line, nothing touched; --force overwrites.
    before = (dst / "model.safetensors").stat().st_mtime_ns
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "not empty" in p.stderr and "--force" in p.stderr
    assert (dst / "model.safetensors").stat().st_mtime_ns == before
    p = subprocess.run([*args[:-3], "--force"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert load_model(dst).args.quantization is None


# --------------------------------------------------------------------------------------------
# Errors: one line naming the file or directory and the problem


def _variant(src: Path, dst: Path, edit_weights=None, edit_config=None) -> Path:
    shutil.copytree(src, dst)
    if edit_weights is not None:
        w = dict(mx.load(str(src / "model.safetensors")))
        edit_weights(w)
        mx.save_safetensors(str(dst / "model.safetensors"), w, metadata={"format": "mlx"})
    if edit_config is not None:
        c = json.loads((src / "config.json").read_text())
        edit_config(c)
        (dst / "config.json").write_text(json.dumps(c))
    return dst


def _truncate(d):
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garble(d):
    (d / "model.safetensors").write_bytes(os.urandom(4096))


def _no_weights(d):
    (d / "model.safetensors").unlink()


def _bad_json(d):
    (d / "config.json").write_text("{not json")


def _no_config(d):
    (d / "config.json").unlink()


def _shape(w):
    w["lm.norm.weight"] = mx.ones((63,), mx.bfloat16)


def _drop_layer(w):
    for k in [k for k in w if k.startswith("model.layers.1.")]:
        del w[k]


CASES = {
    "missing dir": (None, "no such directory"),
    "no weights": (dict(after=_no_weights), "no weights (model.safetensors"),
    "no config": (dict(after=_no_config), "config.json: no such file"),
    "bad config": (dict(after=_bad_json), "config.json: not valid JSON"),
    "config fields": (
        dict(edit_config=lambda c: [c.pop("vocab_size"), c.pop("codec_config")]),
        "config.json: missing field(s) vocab_size, codec_config",
    ),
    "missing tensors": (dict(edit_weights=lambda w: w.pop("lm.norm.weight")), "missing 1 tensor(s): lm.norm.weight"),
    "unexpected tensors": (dict(edit_weights=lambda w: w.update(extra=mx.zeros(2))), "unexpected 1 tensor(s): extra"),
    "wrong shape": (dict(edit_weights=_shape), "lm.norm.weight has shape (63,), expected (64,)"),
    "truncated": (dict(after=_truncate), "truncated safetensors file"),
    "corrupt": (dict(after=_garble), "not a valid safetensors file"),
    # A Hugging Face checkpoint is checked after sanitize: the names are the MLX ones.
    "hf missing layer": (
        dict(src="hf", edit_weights=_drop_layer),
        # 6: q/k/v are one qkv_proj after sanitize
        "missing 6 tensor(s): lm.layers.1.input_layernorm.weight, lm.layers.1.mlp.fc1.weight, "
        "lm.layers.1.mlp.fc2.weight and 3 more",
    ),
    "hf wrong shape": (
        dict(src="hf", edit_weights=lambda w: w.update({"model.norm.weight": mx.ones((65,), mx.bfloat16)})),
        "lm.norm.weight has shape (65,), expected (64,)",
    ),
    "bits mismatch": (
        dict(src="q4", edit_config=lambda c: c.update(quantization={"group_size": 64, "bits": 8})),
        "quantization (bits=8, group_size=64) does not match the weights",
    ),
    "group mismatch": (
        dict(src="q4", edit_config=lambda c: c.update(quantization={"group_size": 32, "bits": 4})),
        "does not match the weights",
    ),
    "quantized, no block": (
        dict(src="q4", edit_config=lambda c: c.pop("quantization")),
        "weights are quantized",
    ),
    "block, float weights": (
        dict(edit_config=lambda c: c.update(quantization={"group_size": 64, "bits": 4})),
        "holds none",
    ),
    "bad block": (
        dict(src="q4", edit_config=lambda c: c.update(quantization={"bits": 3.5})),
        "unsupported quantization bits=3.5",
    ),
}


def _make_bad(case: str, sources: dict, tmp_path: Path) -> Path:
    spec, _ = CASES[case]
    bad = tmp_path / "bad"
    if spec is not None:
        spec = dict(spec)
        src, after = sources[spec.pop("src", "bf16")], spec.pop("after", None)
        _variant(src, bad, **spec)
        if after is not None:
            after(bad)
    return bad


@pytest.mark.parametrize("case", list(CASES))
def test_load_errors(case, hf, out, tmp_path):
    bad, expected = _make_bad(case, {**out, "hf": hf}, tmp_path), CASES[case][1]
    with pytest.raises((ModelLoadError, ConfigError)) as e:
        load_model(bad)
    msg = str(e.value)
    assert expected in msg and str(bad) in msg and "\n" not in msg, msg

    # The convert command reports the same line, exit status 1, and leaves no output behind.
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "convert", "--hf-path", str(bad), "--mlx-path", str(tmp_path / "never")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    code, err = p.returncode, p.stderr
    assert code == 1
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("case", ["missing dir", "truncated", "config fields", "hf missing layer", "bits mismatch"])
def test_cli_errors(case, hf, out, tmp_path):
    """As a user sees them: `python -m mlx_kyutai_is.convert` prints one line, no traceback."""
    bad, expected = _make_bad(case, {**out, "hf": hf}, tmp_path), CASES[case][1]
    cmd = [sys.executable, "-m", "mlx_kyutai_is", "convert", "--hf-path", str(bad), "--mlx-path", str(tmp_path / "o")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("mlx-kyutai-is convert: error: ") and expected in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def test_sharded_round_trip(out, tmp_path, tokens, capsys):
    """Above --max-file-size-gb the weights go to shards + index; a later save replaces them."""
    d = convert(str(out["q4"]), str(tmp_path / "s"), max_file_size_gb=0.004)  # ~4 MB shards
    shards = sorted(p.name for p in d.glob("model*.safetensors"))
    n = len(shards)
    assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert f"in {n} shards" in capsys.readouterr().out
    index = json.loads((d / "model.safetensors.index.json").read_text())
    weights = load_weights(out["q4"])
    assert set(index["weight_map"]) == set(weights)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in weights.values())
    assert_array_equal(logits(load_model(d), tokens), logits(load_model(out["q4"]), tokens))

    (d / shards[2]).unlink()
    with pytest.raises(ModelLoadError, match=f"index.json: lists {shards[2]}, which is missing"):
        load_model(d)

    convert(str(out["q4"]), str(d), force=True)  # one file again: no stale shards or index left
    assert sorted(p.name for p in d.glob("model*")) == ["model.safetensors"]
    assert_array_equal(logits(load_model(d), tokens), logits(load_model(out["q4"]), tokens))


def test_convert_refuses_existing_output(hf, out, tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ModelLoadError, match="not empty"):
        convert(str(hf), str(tmp_path))
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(ModelLoadError, match="already quantized"):
        convert(str(out["q4"]), str(tmp_path / "qq"), quantize=True)
    with pytest.raises(ModelLoadError, match="already quantized"):
        load_model(out["q4"], quantize={"bits": 8})
    assert load_model(out["q4"], quantize={"bits": 4, "group_size": 64}).args.quantization["bits"] == 4


# --------------------------------------------------------------------------------------------
# --force: the old model stays loadable until the new one is complete


def _convert_cmd(src, dst, *extra):
    return [sys.executable, "-m", "mlx_kyutai_is", "convert", "--hf-path", str(src), "--mlx-path", str(dst), *extra]


def _no_temps(parent: Path):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] == []


def test_force_keeps_other_files_and_replaces_the_model(hf, out, tmp_path, tokens):
    dst = tmp_path / "model"
    shutil.copytree(out["q4"], dst)
    (dst / "notes.md").write_text("mine")
    (dst / "model-00001-of-00002.safetensors").write_bytes(b"stale shard")  # a model file: goes
    convert(str(hf), str(dst), force=True, quantize=True, q_bits=8)
    assert (dst / "notes.md").read_text() == "mine"
    assert not (dst / "model-00001-of-00002.safetensors").exists()
    assert load_model(dst).args.quantization["bits"] == 8
    assert _no_temps(tmp_path)


def test_failed_force_leaves_the_old_model(hf, out, tmp_path, tokens):
    """A convert --force that fails while writing (a full disk, here a file-size limit that the
    weights exceed) leaves the old model as it was, loadable, and nothing else behind."""
    import resource
    import signal

    dst = tmp_path / "model"
    shutil.copytree(out["q4"], dst)
    before = {f.name: f.read_bytes() for f in dst.iterdir()}

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # the float weights need ~19 MB

    p = subprocess.run(_convert_cmd(hf, dst, "--force"), capture_output=True, text=True, timeout=120,
                       preexec_fn=limit)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert {f.name: f.read_bytes() for f in dst.iterdir()} == before
    assert _no_temps(tmp_path)
    assert_array_equal(logits(load_model(dst), tokens), logits(load_model(out["q4"]), tokens))


def test_interrupted_force_leaves_a_loadable_model(hf, out, tmp_path, tokens):
    """SIGKILL and SIGINT at several moments after "Saving": the directory always loads, as the old
    model or the complete new one."""
    import signal

    dst = tmp_path / "model"
    shutil.copytree(out["q4"], dst)
    old, new = logits(load_model(out["q4"]), tokens), logits(load_model(hf), tokens)
    seen = set()
    for sig, delay in [(signal.SIGKILL, 0.0), (signal.SIGINT, 0.0), (signal.SIGKILL, 0.3)]:
        p = subprocess.Popen(_convert_cmd(hf, dst, "--force"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        for line in p.stdout:
            if line.startswith("[INFO] Saving"):
                break
        time.sleep(delay)
        p.send_signal(sig)
        p.communicate(timeout=60)
        got = logits(load_model(dst), tokens)
        assert np.array_equal(got, old) or np.array_equal(got, new), (sig, delay)
        seen.add(np.array_equal(got, new))
        if sig == signal.SIGINT and p.returncode == 130:
            assert _no_temps(tmp_path)  # an interrupted convert cleans up after itself
    assert False in seen  # some stop landed before the swap, and the old model survived it


# --------------------------------------------------------------------------------------------
# Hub ids


def test_hub_id(out, monkeypatch, tokens, tmp_path):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(out["q8"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    model = load_model("someone/kyutai-q8")
    assert calls == [("someone/kyutai-q8", {"allow_patterns": ["*.json", "*.safetensors", "tokenizer*"]})]
    assert_array_equal(logits(model, tokens), logits(load_model(out["q8"]), tokens))

    def offline(repo_id, **kw):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nsecond line")

    # convert reads hub ids the same way
    d = convert("someone/kyutai-q8", str(tmp_path / "from-hub"))
    assert calls[-1][0] == "someone/kyutai-q8"
    assert_array_equal(logits(load_model(d), tokens), logits(model, tokens))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelLoadError) as e:
        load_model("someone/missing")
    assert "someone/missing" in str(e.value) and "couldn't connect" in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# Maintainer script


def test_publish_script(hf, tmp_path, monkeypatch, capsys):
    import importlib.util

    import huggingface_hub

    spec = importlib.util.spec_from_file_location("publish", ROOT / "convert" / "publish.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    uploads = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo, **kw: uploads.append(("create", repo)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: uploads.append(("upload", kw["repo_id"])))
    argv = ["--hf-path", str(hf), "--out-dir", str(tmp_path), "--variants", "bf16", "q4", "--repo-prefix", "me/k"]
    assert publish.main([*argv, "--upload", "--license", "cc-by-4.0"]) == 0
    for v, bits in (("bf16", None), ("q4", 4)):
        d = tmp_path / f"k-{v}"
        card = (d / "README.md").read_text(encoding="utf-8")
        assert card.startswith("---\nbase_model: mideind/kyutai-stt-1b-is-en\n") and "license: cc-by-4.0" in card
        assert f'load("me/k-{v}")' in card
        assert (load_model(d).args.quantization or {}).get("bits") == bits
    assert uploads == [("create", "me/k-bf16"), ("upload", "me/k-bf16"), ("create", "me/k-q4"), ("upload", "me/k-q4")]
    capsys.readouterr()
    assert publish.main(argv) == 1  # outputs exist: refused, one line
    assert capsys.readouterr().err.count("\n") == 1
