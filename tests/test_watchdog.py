"""Stall recovery: a stream that stops emitting words (or loops) is re-primed, not reloaded."""

from types import SimpleNamespace

import numpy as np
import pytest
from test_stream import ScriptedLM, SilentMimi

from mlx_kyutai_is.models.config import ModelArgs
from mlx_kyutai_is.models.tokenizer import Tokenizer
from mlx_kyutai_is.runtime.protocol import StreamOptions
from mlx_kyutai_is.runtime.stream import Stream
from mlx_kyutai_is.runtime.watchdog import StallWatchdog
from mlx_kyutai_is.tasks import TASK_PREFIXES


def make_stream(ckpt, script, **dog_kw):
    args = ModelArgs.from_file(ckpt)
    tok = Tokenizer.from_dir(ckpt, args.lm)
    lm = ScriptedLM(args.lm, script)
    model = SimpleNamespace(args=args, lm=lm, mimi=SilentMimi())
    dog = StallWatchdog(max_silent_speech=3.0, max_repeats=4, **dog_kw)
    return Stream(model, tok, "is", options=StreamOptions(text_delay=0.0, trailing_silence=0.0), watchdog=dog), tok, lm


def noise(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * 24000)) * 0.1).astype(np.float32)


def test_pad_only_stall_on_speech_is_recovered(small_hf):
    s, tok, lm = make_stream(small_hf, {})  # the LM only ever says pad
    for i in range(10):
        s.feed(noise(0.5, i))
    assert len(s.recoveries) == 1 and "no words" in s.recoveries[0][1]
    tokens = s.transcripts()["is"].tokens
    # re-primed: the task prefix was sent a second time, by the same LM object (no reload)
    prefix = TASK_PREFIXES["is"]
    starts = [i for i in range(len(tokens) - 3) if tokens[i : i + 4] == prefix]
    assert len(starts) == 2 and s.engine.decoder.lm is lm


def test_silence_is_not_a_stall(small_hf):
    s, _, _ = make_stream(small_hf, {})
    for _ in range(10):
        s.feed(np.zeros(12000, np.float32))
    assert s.recoveries == []


def test_repeated_word_loop_is_recovered(small_hf):
    args = ModelArgs.from_file(small_hf)
    tok = Tokenizer.from_dir(small_hf, args.lm)
    w = next(i for i in range(100, 9000) if tok.is_word_start(i))
    script = {step: w for step in range(20, 200)}  # the same word at every step
    s, _, _ = make_stream(small_hf, script)
    s.feed(noise(4.0))
    assert s.recoveries and "repeated" in s.recoveries[0][1]
    words = s.words["is"]
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))  # the clock goes on


def looping_stream(ckpt, **dog_kw):
    """A stream whose LM says the same word at every step from step 20 (a loop, found at ~1.8 s)."""
    args = ModelArgs.from_file(ckpt)
    tok = Tokenizer.from_dir(ckpt, args.lm)
    w = next(i for i in range(100, 9000) if tok.is_word_start(i))
    s, _, _ = make_stream(ckpt, {step: w for step in range(20, 400)}, **dog_kw)
    return s


def feed_frames(s, seconds, seed=0):
    for chunk in np.split(noise(seconds, seed), round(seconds / 0.08)):
        s.feed(chunk)


def test_stall_while_speaking_waits_for_a_pause(small_hf):
    """Told that someone speaks (a voice-activity detector's view), the watchdog re-primes at the
    first frame of the next pause, not mid-word; the reason says how long it waited."""
    s = looping_stream(small_hf)
    s.watchdog.set_speaking(True)
    feed_frames(s, 4.0)
    assert s.recoveries == [] and s.watchdog.deferred > 1.5  # found at ~1.8 s, still waiting at 4 s
    s.watchdog.set_speaking(False)
    feed_frames(s, 0.16)
    assert len(s.recoveries) == 1
    at, reason = s.recoveries[0]
    assert at == pytest.approx(4.08) and "repeated" in reason and "waited" in reason
    assert s.watchdog.deferred == 0.0  # reset with the re-prime


def test_no_pause_within_max_defer(small_hf):
    s = looping_stream(small_hf, max_defer=1.0)
    s.watchdog.set_speaking(True)
    feed_frames(s, 4.0)
    assert s.recoveries, "a loop in speech that never pauses is still re-primed"
    at, reason = s.recoveries[0]
    assert 2.5 < at < 3.5 and "no pause came" in reason  # found at ~1.8 s, 1 s of waiting


def test_unknown_speech_state_recovers_at_once(small_hf):
    s = looping_stream(small_hf)  # set_speaking never called: the behaviour before it existed
    feed_frames(s, 4.0)
    assert s.recoveries and s.recoveries[0][0] < 2.5 and "waited" not in s.recoveries[0][1]


def test_a_stall_that_ends_while_waiting_is_forgotten():
    dog = StallWatchdog(max_repeats=3)
    dog.attach(1920, 24000)
    frame = np.zeros(1920, np.float32)
    ja, nei = SimpleNamespace(text="já"), SimpleNamespace(text="nei")
    dog.set_speaking(True)
    assert [dog.observe(frame, [ja]) for _ in range(3)] == [None] * 3  # stalled, waiting
    assert dog.deferred > 0
    assert dog.observe(frame, [nei]) is None and dog.deferred == 0.0  # the loop broke
    dog.set_speaking(False)
    assert dog.observe(frame, []) is None
