"""The protocol's rules, each implemented once in decoding.py: tasks, options, padding, timestamps,
and the batched step decoder's rows."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_kyutai_is.runtime.decoder import BatchDecoder
from mlx_kyutai_is.runtime.protocol import StreamOptions, padding, step_time
from mlx_kyutai_is.tasks import task_list


def test_tasks():
    assert task_list("is") == ["is"] and task_list("en") == ["en"] and task_list("both") == ["is", "en"]
    with pytest.raises(ValueError, match="unknown task 'de'"):
        task_list("de")


def test_padding_is_the_processors_plus_the_trailing_silence():
    # transformers' feature extractor: int(prefix * sr) left, int((delay + 1) * sr) right.
    assert padding(24000, 1.0, 0.5, 0.0) == (24000, 36000)
    assert padding(24000, 0.0, 0.0, 5.0) == (0, 5 * 24000 + 24000)
    assert padding(24000, 0.3333, 0.0, 0.0) == (7999, 24000)  # truncated, as int() does


def test_step_time_is_dated_from_the_frames_read_and_clamped():
    assert step_time(100, 1920, 24000, 5.0, 1.0, 10.0) == pytest.approx(100 * 0.08 - 6.0)
    assert step_time(10, 1920, 24000, 5.0, 1.0, 10.0) == 0.0
    assert step_time(10_000, 1920, 24000, 5.0, 1.0, 10.0) == 10.0


@pytest.mark.parametrize(
    "options, name",
    [
        ({"pad_steps": -1}, "pad_steps"),
        ({"pad_steps": 2.5}, "pad_steps"),
        ({"pad_steps": True}, "pad_steps"),
        ({"text_delay": -0.1}, "text_delay"),
        ({"text_delay": float("nan")}, "text_delay"),
        ({"trailing_silence": "5"}, "trailing_silence"),
    ],
)
def test_bad_options_name_the_option(options, name):
    with pytest.raises(ValueError, match=name):
        StreamOptions(**options)


def test_good_options_pass():
    StreamOptions(0, 0, 0)
    StreamOptions(np.int64(3), 0.5, np.float32(2.0))


@pytest.fixture(scope="module")
def lm(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf), dtype="float32").model.lm


def run_rows(decoder, rows, codes, steps):
    """Step `rows` of `decoder` (all ready) for `steps` steps on `codes`; their tokens per step."""
    out = []
    for t in range(steps):
        ready = np.zeros(decoder.capacity, bool)
        ready[rows] = True
        first = all(decoder.steps(r) == 0 for r in rows)
        audio = None if first else mx.broadcast_to(codes[t % len(codes)][None], (decoder.capacity, codes.shape[1]))
        tokens, info = decoder.step(ready, audio)
        out.append([tokens.tolist()[r] for r in rows])
    return out


def test_rows_follow_the_protocol_and_a_reused_row_starts_clean(lm):
    rng = np.random.default_rng(0)
    codes = mx.array(rng.integers(0, lm.args.codebook_vocab_size - 1, (50, lm.args.num_codebooks)))
    alone = BatchDecoder(lm)
    alone.add("en", pad_steps=3)
    ref = [t[0] for t in run_rows(alone, [0], codes, 40)]
    assert ref[:4] == [9318, 8032, 8015, 9193] and ref[4:7] == [lm.args.pad_token_id] * 3

    batch = BatchDecoder(lm)
    a = batch.add("is")
    b = batch.add("en", pad_steps=3)
    run_rows(batch, [a, b], codes, 25)  # wraps the tiny window (16) and fills both rings
    batch.remove(a)
    assert batch.capacity == 2  # row 0 is free, row 1 still in use
    c = batch.add("en", pad_steps=3)
    assert c == a
    # The new row sees none of the old row's keys: it decodes exactly as alone, beside row b.
    got = run_rows(batch, [c], codes, 40)
    assert [t[0] for t in got] == ref
    batch.remove(b)
    batch.remove(c)
    assert batch.capacity == 0
