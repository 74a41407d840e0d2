"""The MLX language model against transformers on the same weights.

The reference is transformers stepping one token at a time through `DynamicCache(config=...)`,
which holds sliding-window layers: each step attends exactly the last `sliding_window` positions,
itself included (that is what `generate` does). Note that transformers' multi-token forward
applies a plain causal mask, no window (checked below): it is not a reference past the window.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mlx_kyutai_is.models.config import ModelArgs  # noqa: E402
from mlx_kyutai_is.models.lm import LM  # noqa: E402

from checkpoints import TEXT_BOS, build_checkpoint, small_lm_kwargs  # noqa: E402

WINDOW = 16
AUDIO_BOS = 2048


def load_lm(ckpt, dtype=mx.float32):
    from safetensors import safe_open

    weights = {}
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        for k in f.keys():
            if k.startswith(("model.", "lm_head.")):
                weights[k] = mx.array(f.get_tensor(k).float().numpy()).astype(dtype)
    lm = LM(ModelArgs.from_file(ckpt).lm)
    lm.load_weights(list(LM.sanitize(weights).items()), strict=True)
    mx.eval(lm.parameters())
    return lm


def load_hf(ckpt, dtype=torch.float32, attn="sdpa"):
    """transformers' model as `from_pretrained` gives it. Not `.to(torch.bfloat16)`: that also
    rounds the float32 RoPE `inv_freq` buffer to bf16, which the real pipeline never does."""
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    return KyutaiSpeechToTextForConditionalGeneration.from_pretrained(
        ckpt, dtype=dtype, attn_implementation=attn
    ).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("lm"), seed=1, lm=small_lm_kwargs(sliding_window=WINDOW))


@pytest.fixture(scope="module")
def hf(ckpt):
    return load_hf(ckpt)


@pytest.fixture(scope="module")
def lm(ckpt):
    return load_lm(ckpt)


def random_tokens(T, batch=1, seed=0, vocab=9000):
    """Step 0 is BOS (text BOS, audio BOS on every codebook) as in generate; then random text ids
    and codes, with some audio-pad ids (the zero row) and audio BOS mixed in."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 2048, (batch, T, 33), generator=g)
    ids[..., 0] = torch.randint(4, vocab, (batch, T), generator=g)
    r = torch.rand(ids.shape, generator=g)
    ids[..., 1:][r[..., 1:] < 0.05] = small_lm_kwargs()["audio_pad_token_id"]
    ids[..., 1:][r[..., 1:] > 0.97] = AUDIO_BOS
    ids[:, 0, 0], ids[:, 0, 1:] = TEXT_BOS, AUDIO_BOS
    return ids


def hf_steps(model, ids):
    """Per-step float32 logits from transformers stepping through its own sliding-window cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out.append(model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits[:, 0].float())
    assert cache.layers[0].get_max_length() == WINDOW  # a sliding layer, not a growing one
    return torch.stack(out, 1).numpy()


def mlx_steps(lm, ids):
    cache = lm.make_cache()
    x = mx.array(np.asarray(ids).astype(np.int32))
    out = []
    for t in range(x.shape[1]):
        y = lm(x[:, t : t + 1], cache)
        mx.eval(y)
        out.append(np.array(y[:, 0]))
    return np.stack(out, 1)


def bf16_ulp(x):
    """Spacing of bfloat16 numbers (8 significant bits) at magnitude x."""
    return 2.0 ** (np.floor(np.log2(x)) - 7)


def test_step_logits_match_transformers_f32(ckpt, hf, lm):
    ids = random_tokens(3 * WINDOW + 12)
    ref = hf_steps(hf, ids)
    ours = mlx_steps(lm, ids)
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    # Measured 1.4e-6 to 3.5e-6 of the scale: float32 rounding only.
    assert err <= 1e-4 * scale, (err, scale)
    assert np.abs(ref[:, WINDOW:] - ref[:, -1:]).max() > 1.0  # logits really vary with the input


def test_step_logits_match_transformers_bf16(ckpt):
    """Both sides bf16 (the checkpoint's dtype). Our LM rounds where torch does (SiLU and the
    embedding sum in float32, RMSNorm in float32, RoPE angles from transformers' float32
    wavelengths), so on CPU it matches transformers' eager attention bit for bit until the ring
    wraps (key order then changes the summation order): over 8 seeds 83-100 % of logits identical,
    max 0-2 bf16 ulps of the logit scale (1 ulp = 0.4-0.8 % of it). transformers' default sdpa
    kernel rounds differently: eager vs sdpa 2-6.3 ulps, and ours vs sdpa the same +-0.5 ulp.
    Bound: within 4 ulps of one transformers kernel, and no further from either than
    transformers' two kernels are from each other, plus 4 ulps."""
    ids = random_tokens(3 * WINDOW + 12, seed=7)
    ours = mlx_steps(load_lm(ckpt, mx.bfloat16), ids)
    eager = hf_steps(load_hf(ckpt, torch.bfloat16, "eager"), ids)
    sdpa = hf_steps(load_hf(ckpt, torch.bfloat16, "sdpa"), ids)
    ulp = bf16_ulp(np.abs(eager).max())
    err_eager, err_sdpa, gap = (np.abs(a - b).max() for a, b in ((ours, eager), (ours, sdpa), (eager, sdpa)))
    assert min(err_eager, err_sdpa) <= 4 * ulp, (err_eager, err_sdpa, ulp)
    assert max(err_eager, err_sdpa) <= gap + 4 * ulp, (err_eager, err_sdpa, gap, ulp)
    if mx.default_device() == mx.cpu:
        # Same rounding points as torch: most logits are bit-identical (measured 83-100 %; 20 % when
        # SiLU is rounded twice in bf16 instead of computed in float32). Metal kernels round otherwise.
        assert (ours == eager).mean() >= 0.5
    # Guard against bounds so loose that they prove nothing: float32 logits are further away.
    f32 = mlx_steps(load_lm(ckpt), ids)
    assert np.abs(f32 - eager).max() > 4 * ulp


@pytest.mark.parametrize("offset", [0, 375, 10_000, 200_000])
def test_rope_matches_transformers_at_long_positions(lm, hf, offset):
    """Positions grow for hours of audio; mx.fast.rope's default `base` path drifts from
    transformers (3e-3 at 10 000, 5e-2 at 200 000), the transformers wavelengths do not."""
    from transformers.models.kyutai_speech_to_text.modeling_kyutai_speech_to_text import (
        apply_rotary_pos_emb,
    )

    attn, hf_attn = lm.layers[0].self_attn, hf.model.layers[0].self_attn
    g = torch.Generator().manual_seed(offset)
    x = torch.randn(2, attn.n_heads, 8, attn.head_dim, generator=g)
    cos, sin = hf_attn.rotary_emb(x, torch.arange(offset, offset + 8)[None])
    ref, _ = apply_rotary_pos_emb(x, x, cos, sin)
    ours = attn.rope(mx.array(x.numpy()), offset)
    np.testing.assert_allclose(np.array(ours), ref.numpy(), rtol=0, atol=2e-6)
    # Same through an array offset (what a compiled step would pass).
    np.testing.assert_array_equal(np.array(attn.rope(mx.array(x.numpy()), mx.array(offset))), np.array(ours))


def test_greedy_tokens_identical_past_three_windows(ckpt, hf, lm):
    """Greedy decoding fed back as the text token, audio codes random and fixed: the same token
    ids for 4 sliding windows of steps, so the rolling cache has wrapped several times."""
    from transformers import DynamicCache

    T = 4 * WINDOW
    audio = random_tokens(T, seed=3)[..., 1:]
    cache_ref, cache = DynamicCache(config=hf.config), lm.make_cache()
    tok_ref = tok = TEXT_BOS
    ref_tokens, tokens = [], []
    with torch.no_grad():
        for t in range(T):
            x = torch.cat([torch.tensor([[[tok_ref]]]), audio[:, t : t + 1]], -1)
            tok_ref = int(hf(input_ids=x, cache=cache_ref, use_cache=True).logits[0, -1].argmax())
            ref_tokens.append(tok_ref)
            y = mx.array(np.concatenate([[[[tok]]], audio[:, t : t + 1].numpy()], -1).astype(np.int32))
            tok = mx.argmax(lm(y, cache)[0, -1]).item()
            tokens.append(tok)
    assert tokens == ref_tokens
    assert len(set(tokens[WINDOW:])) > 5  # the random model is not stuck on one token
    assert cache[0].offset == T and cache[0].keys.shape[2] == WINDOW


def test_step_by_step_equals_multi_step_forward(lm):
    """The chunk mask reproduces the per-step window: offline forward, prefill + steps, and chunks
    after the ring has wrapped all give the per-step logits. Float32, different summation order
    only (measured ~1e-6 of the scale): bound 1e-4 of the scale."""
    ids = random_tokens(3 * WINDOW + 5, seed=4)
    steps = mlx_steps(lm, ids)
    tol = 1e-4 * np.abs(steps).max()
    x = mx.array(ids.numpy().astype(np.int32))
    np.testing.assert_allclose(np.array(lm(x)), steps, rtol=0, atol=tol)
    for chunks in ([20] + [1] * (x.shape[1] - 20), [3, 1, 1, 17, 1, 9, 2, 1, 1, 17]):
        cache, out, t = lm.make_cache(), [], 0
        for n in chunks:
            out.append(np.array(lm(x[:, t : t + n], cache)))
            t += n
        assert t == x.shape[1] and cache[0].offset == t
        np.testing.assert_allclose(np.concatenate(out, 1), steps, rtol=0, atol=tol)


def test_multi_step_matches_transformers_within_the_window_only(hf, lm):
    """transformers' full-sequence forward masks causally but not by window: it agrees with ours
    for the first `sliding_window` positions and departs right after, while its own stepping
    (the generate path) agrees with ours everywhere (test above)."""
    ids = random_tokens(2 * WINDOW, seed=6)
    with torch.no_grad():
        full_ref = hf(input_ids=ids).logits.float().numpy()
    ours = np.array(lm(mx.array(ids.numpy().astype(np.int32))))
    tol = 1e-4 * np.abs(full_ref).max()
    np.testing.assert_allclose(ours[:, :WINDOW], full_ref[:, :WINDOW], rtol=0, atol=tol)
    assert np.abs(ours[:, WINDOW] - full_ref[:, WINDOW]).max() > 100 * tol


def test_batch_of_two_equals_two_single_runs(lm):
    ids = random_tokens(WINDOW + 8, batch=2, seed=5)
    both = mlx_steps(lm, ids)
    assert np.abs(both[0] - both[1]).max() > 1.0
    for b in range(2):
        single = mlx_steps(lm, ids[b : b + 1])
        np.testing.assert_allclose(both[b : b + 1], single, rtol=0, atol=1e-5 * np.abs(single).max())


def test_audio_pad_is_the_zero_row(lm):
    """Codebooks set to audio_pad add nothing: the same as the text embedding alone."""
    pad = lm.args.audio_pad_token_id
    ids = mx.array([[[123] + [pad] * 32]], dtype=mx.int32)
    np.testing.assert_array_equal(np.array(lm.embed(ids)), np.array(lm.embed_tokens.weight[None, None, 123]))


def test_sanitize_is_idempotent_and_quantization_keeps_the_embedding(ckpt, lm):
    from safetensors import safe_open

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        hf_keys = [k for k in f.keys() if k.startswith(("model.", "lm_head."))]
    names = LM.sanitize(dict.fromkeys(hf_keys))
    assert LM.sanitize(names) == names
    assert set(names) == {k for k, _ in nn.utils.tree_flatten(lm.parameters())}

    q = load_lm(ckpt)
    nn.quantize(q, group_size=32, bits=8, class_predicate=q.quant_predicate)
    assert type(q.embed_tokens) is nn.Embedding
    assert isinstance(q.lm_head, nn.QuantizedLinear) and isinstance(q.layers[0].mlp.fc1, nn.QuantizedLinear)
    ids = random_tokens(WINDOW + 4, seed=8)
    ref, got = mlx_steps(lm, ids), mlx_steps(q, ids)
    # 8-bit weights: a few per mille of relative error per matmul, far below the logit spread.
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


@pytest.mark.slow
def test_ten_thousand_steps_constant_cache():
    """moshi_mlx stops at 4096 steps; a stream of 10 000 steps must run with a fixed-size cache."""
    config = {
        **small_lm_kwargs(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, ffn_dim=32,
            sliding_window=8,
        ),
        "codec_config": {},
    }
    lm = LM(ModelArgs.from_dict(config).lm)
    mx.eval(lm.parameters())
    cache = lm.make_cache()
    x = mx.zeros((1, 1, 33), dtype=mx.int32)
    sizes = set()
    for t in range(10_000):
        logits = lm(x, cache)
        if t % 50 == 49:
            mx.eval(logits)
            sizes.add((cache[0].nbytes, cache[0].keys.shape))
    mx.eval(logits)
    assert np.isfinite(np.array(logits)).all()
    assert sizes == {(2 * 8 * 16 * 4, (1, 2, 8, 8))}
    assert cache[0].offset == 10_000


@pytest.mark.parametrize("bits", [None, 4])
def test_mlx_directories_with_q_k_v_apart_still_load(ckpt, tmp_path, bits):
    """Directories converted before q/k/v were fused hold `q_proj`/`k_proj`/`v_proj` (quantized:
    weight, scales, biases each); they load into the fused layer with the same results."""
    from mlx_kyutai_is.models.convert import convert
    from mlx_kyutai_is.models.loading import load_model

    fused = convert(str(ckpt), str(tmp_path / "fused"), quantize=bits is not None, q_bits=bits or 4)
    weights = mx.load(str(fused / "model.safetensors"))
    assert not any(".q_proj." in k for k in weights)
    apart = {}
    for k, v in weights.items():
        if ".qkv_proj." not in k:
            apart[k] = v
            continue
        # q, k, v of equal width here (as many kv heads as heads)
        for name, part in zip("qkv", mx.split(v, 3, axis=0)):
            apart[k.replace(".qkv_proj.", f".{name}_proj.")] = part
    old = tmp_path / "apart"
    old.mkdir()
    for f in fused.iterdir():
        if f.name != "model.safetensors":
            (old / f.name).write_bytes(f.read_bytes())
    mx.save_safetensors(str(old / "model.safetensors"), apart, metadata={"format": "mlx"})
    a, b = load_model(fused, dtype="float32"), load_model(old, dtype="float32")
    ids = random_tokens(WINDOW + 4, seed=5)
    np.testing.assert_array_equal(mlx_steps(b.lm, ids), mlx_steps(a.lm, ids))
    audio = mx.array(np.random.default_rng(0).normal(0, 0.1, (1, 8 * 1920)).astype(np.float32))
    np.testing.assert_array_equal(np.array(b.mimi.encode(audio)), np.array(a.mimi.encode(audio)))
