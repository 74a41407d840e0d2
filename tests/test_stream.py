"""Streaming decoding: chunking, batch 'both', reset, flush and the timestamp rule."""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from mlx_kyutai_is.models.config import ModelArgs
from mlx_kyutai_is.models.tokenizer import Tokenizer
from mlx_kyutai_is.runtime.engine import MAX_FRAMES_PER_CALL
from mlx_kyutai_is.runtime.protocol import WORD_BOUNDARY_ID, StreamOptions
from mlx_kyutai_is.runtime.stream import Stream
from mlx_kyutai_is.tasks import TASK_PREFIXES

from checkpoints import read_wav

SR, FRAME = 24000, 1920


@pytest.fixture(scope="module")
def stt(small_hf):
    from mlx_kyutai_is import load

    return load(str(small_hf))


@pytest.fixture(scope="module")
def audio(speech):
    return read_wav(speech[0])


def run_stream(stt, audio, chunk, task="is"):
    with stt.stream(task) as s:
        for i in range(0, len(audio), chunk):
            s.feed(audio[i : i + chunk])
    return s.transcripts()


@pytest.mark.parametrize("chunk", [240, 1920, 7777])
def test_chunked_stream_equals_offline(stt, audio, chunk):
    offline = stt.transcribe(audio, task="is")
    streamed = run_stream(stt, audio, chunk)["is"]
    assert streamed.tokens == offline.tokens
    assert streamed.text == offline.text
    assert [(w.text, w.start, w.end) for w in streamed.words] == [(w.text, w.start, w.end) for w in offline.words]
    assert offline.tokens[:4] == TASK_PREFIXES["is"]


def test_both_equals_two_single_task_runs(stt, audio):
    both = stt.transcribe(audio, task="both")
    for task in ("is", "en"):
        single = stt.transcribe(audio, task=task)
        assert both[task].tokens == single.tokens
        assert both[task].text == single.text
    assert both["is"].tokens != both["en"].tokens


def test_reset_starts_a_fresh_utterance(stt, audio):
    s = stt.stream("en")
    s.feed(audio)
    s.flush()
    first = s.transcripts()["en"].tokens
    s.reset()
    s.feed(audio)
    s.flush()
    assert s.transcripts()["en"].tokens == first


def test_both_streamed_in_chunks_equals_offline_both(stt, audio):
    offline = stt.transcribe(audio, task="both")
    streamed = run_stream(stt, audio, 3000, task="both")
    for task in ("is", "en"):
        assert streamed[task].tokens == offline[task].tokens
        assert [(w.text, w.start, w.end, w.task) for w in streamed[task].words] == [
            (w.text, w.start, w.end, task) for w in offline[task].words
        ]


def test_feed_returns_each_word_once_when_final(stt, audio):
    s = stt.stream("is")
    got, partials = [], []
    for i in range(0, len(audio), 4800):
        got += s.feed(audio[i : i + 4800])
        partials.append(s.partial)
        assert s.partials == {"is": s.partial}
        # what is final so far plus the partial word is the text so far
        assert got == s.words["is"]
    got += s.flush()
    assert got == s.words["is"] and s.partial == ""
    t = s.transcripts()["is"]
    assert t.words == got and t.task == "is" and t.duration == pytest.approx(len(audio) / SR)
    assert any(partials), "no partial word was ever shown"
    # the words are the transcript cut at word boundaries
    assert "".join(w.text for w in got).replace(" ", "") == t.text.replace(" ", "")
    assert len(got) >= 3


def test_shorter_flush_gives_a_prefix_of_the_tokens(stt, audio):
    """Decoding is causal: flushing with less trailing silence stops earlier on the same path.
    With no extra silence the steps are those of the processor's padding alone."""
    full = stt.transcribe(audio, task="is")
    short = stt.transcribe(audio, task="is", trailing_silence=0.0)
    padded = int(stt.options.silence_prefix * SR) + len(audio) + int((stt.options.delay + 1.0) * SR)
    assert len(short.tokens) == padded // FRAME
    assert len(full.tokens) == (padded + 5 * SR) // FRAME
    assert short.tokens == full.tokens[: len(short.tokens)]


def reference_words(tok, tokens, time_of_step, n_prefix=4):
    """The word rule of stream.py, restated: "▁" pieces start a word, id 0 closes one, other
    special ids are skipped; start = time(first piece step), end = time(last piece step + 1)."""
    words, cur = [], []
    for step, t in enumerate(tokens):
        if step < n_prefix:
            continue
        if (t == WORD_BOUNDARY_ID or tok.is_word_start(t)) and cur:
            words.append(cur)
            cur = []
        if not tok.is_special(t):
            cur.append((t, step))
    words += [cur] if cur else []
    return [
        ([t for t, _ in w], time_of_step(w[0][1]), max(time_of_step(w[0][1]), time_of_step(w[-1][1] + 1)))
        for w in words
    ]


def test_timestamps_of_two_utterances_follow_the_rule(stt, speech):
    """Two sentences with 1.5 s of silence between: word times are the documented function of
    the steps at which the pieces were emitted, monotonic and inside the input audio."""
    a, b = read_wav(speech[0]), read_wav(speech[2])
    audio = np.concatenate([a, np.zeros(int(1.5 * SR), np.float32), b])
    dur = len(audio) / SR
    text_delay = 0.5
    t = stt.transcribe(audio, task="is", text_delay=text_delay)

    def time_of_step(step):
        return min(max(step * FRAME / SR - text_delay - stt.options.silence_prefix, 0.0), dur)

    expected = reference_words(stt.tokenizer, t.tokens, time_of_step)
    got = [(w.tokens, w.start, w.end) for w in t.words]
    assert got == [(k, pytest.approx(s), pytest.approx(e)) for k, s, e in expected]
    assert len(t.words) >= 3
    starts = [w.start for w in t.words]
    assert starts == sorted(starts)
    assert all(0.0 <= w.start <= w.end <= dur for w in t.words)
    assert all(x.end <= y.start + 1e-9 for x, y in zip(t.words, t.words[1:]))
    # the default (5 s, the fine-tune's trained delay) shifts every unclamped time by 4.5 s
    t5 = stt.transcribe(audio, task="is")
    assert t5.tokens == t.tokens
    for w, w5 in zip(t.words, t5.words):
        if 4.5 <= w.start < dur:  # not clamped by either
            assert w5.start == pytest.approx(w.start - 4.5)


@pytest.mark.slow
def test_mimi_encodes_in_bounded_chunks(stt, audio, monkeypatch):
    """A long array and the flush padding reach Mimi in calls of at most MAX_FRAMES_PER_CALL
    frames: Mimi's activations, not the input length, set the peak memory."""
    sizes, step = [], stt.model.mimi.step

    def spy(chunk, state, active=None):
        sizes.append(chunk.shape[-1])
        return step(chunk, state, active)

    monkeypatch.setattr(stt.model.mimi, "step", spy)
    long = np.tile(audio, 3)
    s = stt.stream("is")
    s.feed(long)
    s.flush()
    limit = MAX_FRAMES_PER_CALL * FRAME
    assert max(sizes) == limit and sum(sizes) >= len(long) + 5 * stt.sample_rate
    monkeypatch.undo()
    assert s.transcripts()["is"].tokens == stt.transcribe(long, task="is").tokens


def test_a_dropped_stream_is_freed_at_once(stt, audio):
    """No reference cycle: a stream (its LM and Mimi caches) is freed when the last reference goes,
    not whenever the garbage collector runs (it held ~100 MB of caches per stream at full size)."""
    import gc
    import weakref

    gc.disable()
    try:
        s = stt.stream("both", watchdog=True)
        s.feed(audio[:24000])
        s.flush()
        ref = weakref.ref(s)
        del s
        assert ref() is None
    finally:
        gc.enable()


def test_feed_after_flush_is_an_error(stt, audio):
    s = stt.stream("is")
    s.feed(audio[:4000])
    s.flush()
    with pytest.raises(RuntimeError, match="reset"):
        s.feed(audio[:100])


# -- timestamps on a scripted model -------------------------------------------------------------


class ScriptedLM:
    """Emits chosen text tokens at chosen steps (pad elsewhere), so word times are known."""

    layers = [None]  # one (unused) KV ring: the decoder's positions arrive through it

    def __init__(self, args, script):
        self.args, self.script = args, script

    def __call__(self, x, cache):
        steps = np.array(cache[0].offset).reshape(-1)
        logits = np.full((x.shape[0], 1, self.args.vocab_size), -1.0, np.float32)
        for b, step in enumerate(steps):
            logits[b, :, self.script.get(int(step), self.args.pad_token_id)] = 1.0
        return mx.array(logits)


class SilentMimi:
    """Codes of all zeros for any audio, in the fixed-layout batch interface the engine uses."""

    class State(SimpleNamespace):
        arrays = []

        def resize(self, n):
            self.batch_size = n

        def reset_rows(self, rows):
            pass

    def make_state(self, batch_size=1, fixed=True):
        return self.State(batch_size=batch_size)

    def step(self, audio, state, active=None):
        return mx.zeros((audio.shape[0], audio.shape[1] // 1920, 32), mx.int32)


def test_word_timestamps_follow_the_documented_rule(small_hf):
    args = ModelArgs.from_file(small_hf)
    tok = Tokenizer.from_dir(small_hf, args.lm)
    starts = [i for i in range(100, 9000) if tok.is_word_start(i)][:2]
    cont = next(i for i in range(100, 9000) if not tok.is_word_start(i) and not tok.is_special(i))
    # word 1 = pieces at steps 30, 31, 33 (a pad at 32 does not split it); word 2 at step 55.
    script = {30: starts[0], 31: cont, 33: cont, 55: starts[1]}
    model = SimpleNamespace(args=args, lm=ScriptedLM(args.lm, script), mimi=SilentMimi())
    s = Stream(model, tok, "is", options=StreamOptions(silence_prefix=1.0, delay=0.5, text_delay=0.5, trailing_silence=0.0))
    s.feed(np.zeros(24000 * 4, np.float32))
    s.flush()
    words = s.words["is"]
    # time(step) = step * 0.08 - text_delay - silence_prefix; end = time(last piece step + 1).
    assert [w.tokens for w in words] == [[starts[0], cont, cont], [starts[1]]]
    assert words[0].start == pytest.approx(30 * 0.08 - 1.5)
    assert words[0].end == pytest.approx(34 * 0.08 - 1.5)
    assert words[1].start == pytest.approx(55 * 0.08 - 1.5)
    assert words[1].end == pytest.approx(56 * 0.08 - 1.5)
    assert words[0].text == tok.decode([starts[0], cont, cont]).strip()
    # 4 s + 1.0 s prefix + (0.5 + 1) s right pad -> floor(6.5 s / 80 ms) = 81 steps, as generate.
    assert s.steps == int(6.5 * 24000) // 1920
    assert s.transcripts()["is"].text == tok.decode([starts[0], cont, cont, starts[1]])


def test_words_become_final_at_the_next_word_or_a_boundary(small_hf):
    args = ModelArgs.from_file(small_hf)
    tok = Tokenizer.from_dir(small_hf, args.lm)
    w1, w2 = [i for i in range(100, 9000) if tok.is_word_start(i)][:2]
    cont = next(i for i in range(100, 9000) if not tok.is_word_start(i) and not tok.is_special(i))
    # w1 at 20; the boundary id 0 at 25 closes it; a piece at 30 after the boundary is a word of
    # its own; w2 at 40 closes that one; w2 stays partial until flush.
    script = {20: w1, 25: WORD_BOUNDARY_ID, 30: cont, 40: w2}
    model = SimpleNamespace(args=args, lm=ScriptedLM(args.lm, script), mimi=SilentMimi())
    s = Stream(model, tok, "is", options=StreamOptions(silence_prefix=0.0, delay=0.5, text_delay=0.0, trailing_silence=0.0))
    final_at = {}
    for i in range(60):  # one frame per feed: step i + 1 runs on feed i (step 0 on the first)
        for w in s.feed(np.zeros(FRAME, np.float32)):
            final_at[tuple(w.tokens)] = i + 1
    assert final_at == {(w1,): 25, (cont,): 40}
    assert s.partial == tok.decode([w2]).strip()
    last = s.flush()
    assert [w.tokens for w in last] == [[w2]] and s.partial == ""
    assert [(w.start, w.end) for w in s.words["is"]] == [
        pytest.approx((20 * 0.08, 21 * 0.08)),
        pytest.approx((30 * 0.08, 31 * 0.08)),
        pytest.approx((40 * 0.08, 41 * 0.08)),
    ]
