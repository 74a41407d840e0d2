"""Mimi encoder: codes vs transformers (`MimiModel.encode`, and what `generate` encodes), on the
small test codec and the full-size one; streaming == offline for any chunking; bounded stream
state; input validation; weight conversion."""

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx.utils import tree_flatten

from mlx_kyutai_is.models.config import MimiArgs, ModelArgs
from mlx_kyutai_is.models.mimi import MimiEncoder, WindowKVCache

import checkpoints

SR = checkpoints.SAMPLE_RATE
FRAME = 1920


def load_mlx(weights: dict, args: MimiArgs) -> MimiEncoder:
    m = MimiEncoder(args)
    m.load_weights(list(MimiEncoder.sanitize(weights).items()), strict=True)
    mx.eval(m.parameters())
    return m


def codes_of(m, audio, **kw):
    return np.array(m.encode(mx.array(audio)[None], **kw))[0]


def hf_encode(codec, audio):
    """transformers' `MimiModel.encode` codes (frames, K), plus, per codebook k, the residual it
    quantized (frames, dim) and its codewords, captured by wrapping each codebook's `quantize`."""
    rvqs = [codec.quantizer.semantic_residual_vector_quantizer, codec.quantizer.acoustic_residual_vector_quantizer]
    books = [layer.codebook for rvq in rvqs for layer in rvq.layers]
    residuals = {}
    for k, cb in enumerate(books):

        def quantize(x, k=k, orig=cb.quantize):
            residuals[k] = x.double().numpy().copy()
            return orig(x)

        cb.quantize = quantize
    try:
        with torch.no_grad():
            codes = codec.encode(torch.from_numpy(np.ascontiguousarray(audio))[None, None]).audio_codes
    finally:
        for cb in books:
            del cb.quantize
    embeds = [cb.embed.double().numpy() for cb in books]
    return codes[0].T.numpy(), [residuals[k] for k in range(len(books))], embeds


def check_against_reference(mine, ref, residuals, embeds, n_semantic, rtol=1e-4):
    """Fraction of identical (frame, codebook) pairs; asserts >= 99.9 % and that every mismatch is
    a near-tie in the reference (|d(r, mine) - d(r, ref)| <= rtol * |r| for the residual r the
    reference quantized), or follows one earlier in the same residual chain (then the residual
    itself differs)."""
    assert mine.shape == ref.shape
    agree = float((mine == ref).mean())
    for t, k in zip(*np.nonzero(mine != ref)):
        chain = range(0, k) if k < n_semantic else range(n_semantic, k)
        if any(mine[t, j] != ref[t, j] for j in chain):
            continue
        r = residuals[k][t]
        d = np.linalg.norm(r - embeds[k][[mine[t, k], ref[t, k]]], axis=1)
        assert abs(d[0] - d[1]) <= rtol * np.linalg.norm(r), f"frame {t} codebook {k}: not a near-tie {d}"
    assert agree >= 0.999, f"only {agree:.4%} of codes agree"
    return agree


@pytest.fixture(scope="module")
def clips(speech):
    rng = np.random.default_rng(0)
    out = {f"speech{i}": checkpoints.read_wav(p) for i, p in enumerate(speech)}
    out["noise"] = rng.normal(0, 0.1, int(1.5 * SR)).astype(np.float32)
    out["silence"] = np.zeros(SR, np.float32)
    return out


@pytest.fixture(scope="module")
def small(small_hf):
    from transformers import KyutaiSpeechToTextForConditionalGeneration

    hf = KyutaiSpeechToTextForConditionalGeneration.from_pretrained(small_hf).eval()
    w = {k.removeprefix("codec_model."): v for k, v in mx.load(str(small_hf / "model.safetensors")).items()}
    w = {k: v for k, v in w.items() if not k.startswith(("model.", "lm_head."))}
    return hf, load_mlx(w, ModelArgs.from_file(small_hf).mimi)


@pytest.fixture(scope="module")
def full():
    """The published codec's shape (MimiConfig defaults: 512 hidden, 8 layers, window 250) with
    random weights; codebooks at the scale of the projected latents so that codes vary."""
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(0)
    config = MimiConfig(**checkpoints.full_codec_kwargs())
    config.decoder_config = None  # encoder only: faster to build
    hf = MimiModel(config).eval()
    checkpoints.randomize_codebooks(hf, seed=0, scale=6.0)
    w = {k: mx.array(v.numpy()) for k, v in hf.state_dict().items()}  # transformers' in-memory names
    return hf, load_mlx(w, MimiArgs.from_dict(config.to_dict()))


def test_small_codec_matches_transformers(small, clips):
    hf, m = small
    codec = hf.codec_model
    n_sem = codec.config.num_semantic_quantizers
    lengths = {"frame multiple": 40 * FRAME, "one partial frame": 100}
    cases = dict(clips, **{k: clips["speech0"][:n] for k, n in lengths.items()})
    for name, audio in cases.items():
        ref, residuals, embeds = hf_encode(codec, audio)
        mine = codes_of(m, audio)
        assert mine.shape == (-(-len(audio) // FRAME), 32), name
        agree = check_against_reference(mine, ref, residuals, embeds, n_sem)
        print(f"small codec, {name}: {agree:.4%} of {mine.size} codes agree")
        # Only complete frames (what generate and streaming get): the same frames, minus a partial last one.
        complete = codes_of(m, audio, pad_last=False)
        assert complete.shape[0] == len(audio) // FRAME
        np.testing.assert_array_equal(complete, mine[: len(complete)])
    # A batch gives each item's codes.
    a, b = clips["speech0"][: 2 * SR], clips["speech1"][: 2 * SR]
    both = np.array(m.encode(mx.array(np.stack([a, b]))))
    np.testing.assert_array_equal(both[0], codes_of(m, a))
    np.testing.assert_array_equal(both[1], codes_of(m, b))


@pytest.mark.slow
def test_full_size_codec_matches_transformers(full, clips):
    hf, m = full
    results = {}
    cases = [("speech", clips["speech0"][: 3 * SR]), ("noise", clips["noise"][:SR]), ("silence", clips["silence"][:SR])]
    for name, audio in cases:
        ref, residuals, embeds = hf_encode(hf, audio)
        mine = codes_of(m, audio)
        agree = check_against_reference(mine, ref, residuals, embeds, hf.config.num_semantic_quantizers)
        print(f"full-size codec, {name}: {agree:.4%} of {mine.size} codes agree")
        results[name] = mine
    speech, other = results["speech"], codes_of(m, clips["speech1"][: 3 * SR])
    for k in range(32):
        assert (speech[:, k] != other[:, k]).any(), f"codebook {k} is the same for different sentences"
        assert len(set(speech[:, k])) > 3, f"codebook {k} barely varies over a sentence"
    # Streaming the first 1.5 s in odd chunks gives the same first frames.
    audio = mx.array(clips["speech0"][: int(1.5 * SR)])[None]
    state = m.make_state()
    steps = [m.encode_step(audio[:, i : i + 1234], state) for i in range(0, audio.shape[1], 1234)]
    got = np.concatenate([np.array(c) for c in steps], 1)
    np.testing.assert_array_equal(got[0], speech[: audio.shape[1] // FRAME])


def test_generate_encodes_complete_frames_only(small, clips):
    """`generate` calls `codec_model.encode` with a conv padding cache: it gets floor(samples / 1920)
    frames, where `MimiModel.encode(x)` zero-pads a last partial one; shared frames are identical."""
    from transformers import KyutaiSpeechToTextProcessor

    hf, m = small
    processor = KyutaiSpeechToTextProcessor.from_pretrained(hf.name_or_path)
    inputs = processor(audio=clips["speech1"], sampling_rate=SR, return_tensors="pt")
    seen, encode = [], hf.codec_model.encode

    def spy(x, *a, **kw):
        out = encode(x, *a, **kw)
        seen.append((x[0, 0].numpy().copy(), out.audio_codes[0].T.numpy()))
        return out

    hf.codec_model.encode = spy
    try:
        with torch.no_grad():
            hf.generate(**inputs)
    finally:
        del hf.codec_model.encode
    assert len(seen) == 1  # the whole (padded) input in one call
    x, gen_codes = seen[0]
    assert len(x) % FRAME, "pick audio whose padded length leaves a partial frame"
    np.testing.assert_array_equal(codes_of(m, x, pad_last=False), gen_codes)
    plain = codes_of(m, x)
    assert len(plain) == len(gen_codes) + 1
    np.testing.assert_array_equal(plain[:-1], gen_codes)


def test_different_speech_gives_different_codes(small, clips):
    _, m = small
    a, b = codes_of(m, clips["speech0"]), codes_of(m, clips["speech1"])
    n = min(len(a), len(b))
    for k in range(32):
        assert (a[:n, k] != b[:n, k]).any(), f"codebook {k} is the same for different sentences"
        assert len(set(a[:, k])) > 1, f"codebook {k} is constant over a sentence"


def test_window_cache_attends_exactly_the_window():
    """Per query position q, the keys it may attend are exactly q - window < k <= q, whatever the
    step sizes; the cache never holds more than window - 1 positions between steps."""
    window, cache, pos = 5, WindowKVCache(5), 0
    for T in [1, 3, 1, 1, 7, 2, 1, 12, 1, 4]:
        new = mx.arange(pos, pos + T, dtype=mx.float32).reshape(1, 1, T, 1)
        mask = cache.make_mask(T)
        keys, _ = cache.update_and_fetch(new, new)
        keys = np.array(keys).ravel().astype(int)
        m = np.ones((T, len(keys)), bool) if mask is None else np.array(mask)
        for i in range(T):
            q = pos + i
            assert sorted(keys[m[i]]) == list(range(max(0, q - window + 1), q + 1)), (T, q)
        pos += T
        assert cache.offset == pos and cache.keys.shape[2] == min(pos, window - 1)


@pytest.mark.parametrize("chunk", [240, 1920, 24000, 1234, "random"])
def test_streaming_equals_offline(small, clips, chunk):
    _, m = small
    audio = clips["speech1"]  # ~4 s: 100 transformer steps, 5x the small codec's window
    x = mx.array(audio)[None]
    rng = np.random.default_rng(1)
    state, out, i = m.make_state(), [], 0
    while i < len(audio):
        n = int(rng.choice([0, 1, 7, 960, 1919, 1921, 5000])) if chunk == "random" else chunk
        codes = m.encode_step(x[:, i : i + n], state)
        assert codes.dtype == mx.int32 and codes.shape[1] == min(i + n, len(audio)) // FRAME - i // FRAME
        out.append(np.array(codes))
        i += n
    streamed = np.concatenate(out, 1)[0]
    np.testing.assert_array_equal(streamed, codes_of(m, audio, pad_last=False))
    # flush() ends the stream as MimiModel.encode ends a file: the zero-padded partial frame.
    last = np.array(m.flush(state))[0]
    np.testing.assert_array_equal(np.concatenate([streamed, last]), codes_of(m, audio))


def test_streaming_batch(small, clips):
    _, m = small
    x = np.stack([clips["speech0"][: 3 * SR], clips["speech2"][: 3 * SR]])
    state = m.make_state(2)
    out = [np.array(m.encode_step(mx.array(x[:, i : i + 999]), state)) for i in range(0, x.shape[1], 999)]
    np.testing.assert_array_equal(np.concatenate(out, 1), np.array(m.encode(mx.array(x), pad_last=False)))


def _fit(a, n):
    return np.pad(a[:n], (0, max(0, n - len(a))))


def _fixed_steps(m, x, plan):
    """`MimiEncoder.step` on a fixed-layout batch: plan = [(frames, active rows, rows reset)]; returns
    each row's codes, concatenated over the calls it was active in (restarting at a reset)."""
    B = x.shape[0]
    state, out, fed = m.make_state(B, fixed=True), [[] for _ in range(B)], np.zeros(B, int)
    for k, active, reset in plan:
        for r in reset:
            state.reset_rows([r])
            out[r], fed[r] = [], 0
        audio = np.zeros((B, k * FRAME), np.float32)
        for r in active:
            audio[r] = x[r, fed[r] * FRAME : (fed[r] + k) * FRAME]
        mask = np.isin(np.arange(B), active)
        codes = m.step(mx.array(audio), state, mask)
        mx.eval(codes, state.arrays)
        for r in active:
            out[r].append(np.array(codes)[r])
            fed[r] += k
    return [np.concatenate(o) if o else np.zeros((0, 32), np.int32) for o in out]


@pytest.mark.slow
def test_fixed_layout_steps_equal_encode_step(small, clips):
    """The engine's layout (KV rings, rows joining late, idle, reset, calls of 1 to 12 frames) gives
    each row exactly the codes a stream of its own gives, across several windows."""
    _, m = small
    x = np.stack([_fit(clips[f"speech{i}"], 4 * SR) for i in range(3)])
    rng = np.random.default_rng(2)
    plan, fed = [], np.zeros(3, int)
    for t in range(40):
        k = int(rng.choice([1, 1, 1, 2, 12])) if t != 5 else 12
        active = [r for r in range(3) if (r != 1 or t >= 3) and rng.random() < 0.7 and fed[r] + k <= 50]
        reset = [2] if t == 20 else []
        if reset:
            fed[2] = 0
        plan.append((k, active, reset))
        fed[active] += k
    got = _fixed_steps(m, x, plan)
    restart = sum(k for k, a, _ in plan[20:] if 2 in a)
    for r, codes in enumerate(got):
        n = codes.shape[0]
        assert n >= 20, n
        np.testing.assert_array_equal(codes, codes_of(m, x[r, : n * FRAME], pad_last=False), err_msg=f"row {r}")
    assert got[2].shape[0] == restart


@pytest.mark.slow
def test_full_size_fixed_layout_equals_encode_step(full, clips):
    """The published codec's shapes, one-frame calls (the live engine's), two rows at different
    positions (one starts 3 frames late, idles now and then); ring wraps: the small codec above."""
    _, m = full
    x = np.stack([_fit(clips["speech0"], 40 * FRAME), _fit(clips["speech2"], 40 * FRAME)])
    plan = [(1, [0] if t < 3 else ([0] if t % 17 == 5 else [0, 1]), []) for t in range(40)]
    got = _fixed_steps(m, x, plan)
    for r, codes in enumerate(got):
        np.testing.assert_array_equal(codes, codes_of(m, x[r, : codes.shape[0] * FRAME], pad_last=False))


def test_stream_state_is_bounded(small):
    _, m = small
    rng = np.random.default_rng(0)
    state, sizes = m.make_state(), []
    for _ in range(60):  # 30 s in 0.5 s chunks; the small codec's window is 0.8 s
        m.encode_step(mx.array(rng.normal(0, 0.1, (1, SR // 2)).astype(np.float32)), state)
        sizes.append(state.nbytes)
    assert max(sizes[30:]) <= max(sizes[4:30]), sizes  # no growth after the window filled
    assert state.kv[0].offset == 30 * 25 and state.frames == 30 * 25 // 2 and state.samples == 30 * SR


BAD = [
    (lambda a: a.astype(np.int16), "int16"),
    (lambda a: a.astype(np.int32), "int32"),
    (lambda a: a > 0, "bool"),
    (lambda a: a[0], "shape"),
    (lambda a: a[:, None], "shape"),
    (lambda a: np.repeat(a.T, 2, axis=1), "channels"),
    (lambda a: np.where(np.arange(a.shape[1]) == 50, np.nan, a).astype(np.float32), "NaN"),
    (lambda a: np.where(np.arange(a.shape[1]) == 50, np.inf, a).astype(np.float32), "infinite"),
    (lambda a: a[:, :0], "empty"),
    (lambda a: a[:0], "empty"),
    (lambda a: a.tolist(), "mx.array"),
]


@pytest.mark.parametrize("bad", range(len(BAD)))
def test_bad_input_raises_one_line_value_error(small, bad):
    _, m = small
    make, match = BAD[bad]
    audio = (np.random.default_rng(0).normal(0, 0.1, (1, 2 * FRAME))).astype(np.float32)
    x = make(audio)
    for arr in [x, mx.array(x)] if isinstance(x, np.ndarray) else [x]:
        with pytest.raises(ValueError, match=match) as e:
            m.encode(arr)
        assert "\n" not in str(e.value) and str(e.value).startswith("encode:")


def test_encode_step_input_checks(small):
    _, m = small
    state = m.make_state(1)
    with pytest.raises(ValueError, match="batch 2 but the state was made for 1"):
        m.encode_step(mx.zeros((2, 100)), state)
    with pytest.raises(ValueError, match="not float"):
        m.encode_step(np.zeros((1, 100), np.int16), state)
    with pytest.raises(ValueError, match="NaN"):
        m.encode_step(mx.array([[0.0, float("nan")]]), state)
    assert m.encode_step(mx.zeros((1, 0)), state).shape == (1, 0, 32)  # an empty chunk is fine
    # float64 / float16 are converted.
    assert m.encode_step(np.zeros((1, FRAME), np.float64), state).shape == (1, 1, 32)
    assert m.encode_step(mx.zeros((1, FRAME), mx.float16), state).shape == (1, 1, 32)
    m.flush(state)
    with pytest.raises(ValueError, match="flushed"):
        m.encode_step(mx.zeros((1, 100)), state)


def test_sanitize(small_hf):
    raw = {k: v for k, v in mx.load(str(small_hf / "model.safetensors")).items() if k.startswith("codec_model.")}
    ours = MimiEncoder.sanitize({k.removeprefix("codec_model."): v for k, v in raw.items()})
    m = load_mlx(ours, ModelArgs.from_file(small_hf).mimi)  # strict: every parameter, nothing else
    assert set(ours) == {k for k, _ in tree_flatten(m.parameters())}
    assert not any(k.startswith(("decoder", "upsample")) or "initialized" in k or "output_proj" in k for k in ours)
    assert ours["encoder.layers.0.weight"].shape == (8, 7, 1)  # torch (out, in, k) -> (out, k, in)
    again = MimiEncoder.sanitize(ours)  # idempotent
    assert set(again) == set(ours) and all(again[k] is ours[k] or mx.array_equal(again[k], ours[k]) for k in ours)
    assert set(MimiEncoder.sanitize(raw)) == set(ours)  # tolerates the codec_model. prefix
    # Derived codewords follow any reload of the codebooks.
    cb = m.quantizer.acoustic_residual_vector_quantizer.layers[3].codebook
    key = "quantizer.acoustic_residual_vector_quantizer.layers.3.codebook.embed_sum"
    emb, _ = cb.codewords()
    m.load_weights([(key, ours[key] * 2)], strict=False)
    np.testing.assert_allclose(np.array(cb.codewords()[0]), 2 * np.array(emb), rtol=1e-6)
    m.load_weights([(key, ours[key])], strict=False)
    np.testing.assert_allclose(np.array(cb.codewords()[0]), np.array(emb), rtol=1e-6)
