"""The MLX language model against transformers on the same weights."""

import numpy as np
import pytest

import mlx.core as mx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from checkpoints import build_checkpoint, small_lm_kwargs  # noqa: E402

from mlx_kyutai_is.config import ModelArgs  # noqa: E402
from mlx_kyutai_is.lm import LM  # noqa: E402

WINDOW = 16


def load_lm(ckpt, dtype=mx.float32):
    from safetensors import safe_open

    weights = {}
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        for k in f.keys():
            if k.startswith(("model.", "lm_head.")):
                weights[k] = mx.array(f.get_tensor(k).float().numpy()).astype(dtype)
    lm = LM(ModelArgs.from_file(ckpt).lm)
    lm.load_weights(list(LM.sanitize(weights).items()), strict=True)
    return lm


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("lm"), seed=1, lm=small_lm_kwargs(sliding_window=WINDOW))


@pytest.fixture(scope="module")
def hf(ckpt):
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    return KyutaiSpeechToTextForConditionalGeneration.from_pretrained(ckpt).eval()


def random_tokens(T, batch=1, seed=0, vocab=9000):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 2048, (batch, T, 33), generator=g)
    ids[..., 0] = torch.randint(4, vocab, (batch, T), generator=g)
    return ids


def hf_steps(model, ids):
    """Per-step logits from transformers stepping through its own (sliding-window) cache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    out = []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out.append(model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits[:, 0].float())
    return torch.stack(out, 1).numpy()


def mlx_steps(lm, ids):
    cache = lm.make_cache()
    x = mx.array(ids.numpy().astype(np.int32))
    return np.stack([np.array(lm(x[:, t : t + 1], cache)[:, 0]) for t in range(x.shape[1])], 1)


def test_step_logits_match_transformers_f32(ckpt, hf):
    ids = random_tokens(3 * WINDOW + 12)
    ref = hf_steps(hf.float(), ids)
    ours = mlx_steps(load_lm(ckpt), ids)
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    # Measured ~2e-6 of the scale: float32 rounding only.
    assert err <= 1e-4 * scale, (err, scale)


def test_step_logits_match_transformers_bf16(ckpt, hf):
    """Both sides in bf16: rounding differs (HF rounds RoPE cos/sin to bf16, kernels differ), so the
    bound is a few bf16 ulps of the logit scale; measured 2.4e-2 of the scale on this random model
    (float32 on both sides: 1.8e-6)."""
    ids = random_tokens(2 * WINDOW)
    ref = hf_steps(hf.to(torch.bfloat16), ids)
    hf.float()
    ours = mlx_steps(load_lm(ckpt, mx.bfloat16), ids)
    scale = np.abs(ref).max()
    err = np.abs(ours - ref).max()
    assert err <= 5e-2 * scale, (err, scale)


def test_greedy_tokens_identical_past_three_windows(ckpt, hf):
    """Greedy decoding fed back as the text token, audio codes fixed: the same token ids over
    4 sliding windows of steps, so the rolling cache has wrapped several times."""
    hf.float()
    from transformers import DynamicCache

    T = 4 * WINDOW
    audio = random_tokens(T, seed=3)[..., 1:]
    lm = load_lm(ckpt)
    cache_ref, cache = DynamicCache(config=hf.config), lm.make_cache()
    tok_ref = tok = 9322
    ref_tokens, tokens = [], []
    with torch.no_grad():
        for t in range(T):
            x = torch.cat([torch.tensor([[[tok_ref]]]), audio[:, t : t + 1]], -1)
            tok_ref = int(hf(input_ids=x, cache=cache_ref, use_cache=True).logits[0, -1].argmax())
            ref_tokens.append(tok_ref)
            y = mx.array(np.concatenate([[[[tok]]], audio[:, t : t + 1].numpy()], -1).astype(np.int32))
            tok = int(mx.argmax(lm(y, cache)[0, -1]))
            tokens.append(tok)
    assert tokens == ref_tokens
    assert len(set(tokens)) > 5  # the random model is not stuck on one token


def test_step_by_step_equals_multi_step_forward(ckpt):
    lm = load_lm(ckpt)
    ids = random_tokens(3 * WINDOW + 5, seed=4)
    steps = mlx_steps(lm, ids)
    x = mx.array(ids.numpy().astype(np.int32))
    full = np.array(lm(x))
    np.testing.assert_allclose(full, steps, atol=1e-4 * np.abs(steps).max())
    # A prefill of 20 steps through the cache, then single steps, agrees too.
    cache = lm.make_cache()
    a = np.array(lm(x[:, :20], cache))
    b = np.stack([np.array(lm(x[:, t : t + 1], cache)[:, 0]) for t in range(20, x.shape[1])], 1)
    np.testing.assert_allclose(np.concatenate([a, b], 1), steps, atol=1e-4 * np.abs(steps).max())


def test_batch_of_two_equals_two_single_runs(ckpt):
    lm = load_lm(ckpt)
    ids = random_tokens(WINDOW + 8, batch=2, seed=5)
    both = mlx_steps(lm, ids)
    for b in range(2):
        single = mlx_steps(lm, ids[b : b + 1])
        np.testing.assert_allclose(both[b : b + 1], single, atol=1e-5 * np.abs(single).max())


def test_ten_thousand_steps_constant_cache():
    """moshi_mlx stops at 4096 steps; a stream of 10 000 steps must run with a fixed-size cache."""
    args = ModelArgs.from_dict(
        {**small_lm_kwargs(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=2, ffn_dim=32, sliding_window=8),
         "codec_config": {}}
    ).lm
    lm = LM(args)
    mx.eval(lm.parameters())
    cache = lm.make_cache()
    step = lambda x: lm(x, cache)  # noqa: E731
    x = mx.zeros((1, 1, 33), dtype=mx.int32)
    sizes = set()
    for t in range(10_000):
        logits = step(x)
        if t % 50 == 0:
            mx.eval(logits)
            if t >= 8:
                sizes.add(cache[0].nbytes)
    mx.eval(logits)
    assert np.isfinite(np.array(logits)).all()
    assert len(sizes) == 1
    assert cache[0].offset == 10_000
    assert cache[0].keys.shape[2] == 8
