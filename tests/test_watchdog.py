"""Stall recovery: a stream that stops emitting words (or loops) is re-primed, not reloaded."""

from types import SimpleNamespace

import numpy as np
from test_stream import ScriptedLM, SilentMimi

from mlx_kyutai_is.models.config import ModelArgs
from mlx_kyutai_is.models.tokenizer import Tokenizer
from mlx_kyutai_is.runtime.protocol import StreamOptions
from mlx_kyutai_is.runtime.stream import Stream
from mlx_kyutai_is.runtime.watchdog import StallWatchdog
from mlx_kyutai_is.tasks import TASK_PREFIXES


def make_stream(ckpt, script):
    args = ModelArgs.from_file(ckpt)
    tok = Tokenizer.from_dir(ckpt, args.lm)
    lm = ScriptedLM(args.lm, script)
    model = SimpleNamespace(args=args, lm=lm, mimi=SilentMimi())
    dog = StallWatchdog(max_silent_speech=3.0, max_repeats=4)
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
