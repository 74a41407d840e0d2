"""Streaming decoding: chunking, batch 'both', reset, flush and the timestamp rule."""

from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from checkpoints import read_wav

from mlx_kyutai_is.config import ModelArgs
from mlx_kyutai_is.stream import TASK_PREFIXES, Stream
from mlx_kyutai_is.tokenizer import Tokenizer


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


def test_feed_after_flush_is_an_error(stt, audio):
    s = stt.stream("is")
    s.feed(audio[:4000])
    s.flush()
    with pytest.raises(RuntimeError, match="reset"):
        s.feed(audio[:100])


# -- timestamps on a scripted model -------------------------------------------------------------


class ScriptedLM:
    """Emits chosen text tokens at chosen steps (pad elsewhere), so word times are known."""

    def __init__(self, args, script):
        self.args, self.script = args, script

    def make_cache(self):
        return [SimpleNamespace(offset=0, keys=mx.zeros((1,)))]

    def __call__(self, x, cache):
        step = cache[0].offset
        cache[0].offset += 1
        logits = np.full((x.shape[0], 1, self.args.vocab_size), -1.0, np.float32)
        logits[:, :, self.script.get(step, self.args.pad_token_id)] = 1.0
        return mx.array(logits)


class SilentMimi:
    def make_state(self, batch_size=1):
        return {"n": 0, "frames": 0}

    def encode_step(self, chunk, state):
        state["n"] += chunk.shape[1]
        n = state["n"] // 1920 - state["frames"]
        state["frames"] += n
        return mx.zeros((1, n, 32), mx.int32)


def test_word_timestamps_follow_the_documented_rule(small_hf):
    args = ModelArgs.from_file(small_hf)
    tok = Tokenizer.from_dir(small_hf, args.lm)
    starts = [i for i in range(100, 9000) if tok.is_word_start(i)][:2]
    cont = next(i for i in range(100, 9000) if not tok.is_word_start(i) and not tok.is_special(i))
    # word 1 = pieces at steps 30, 31; a pad at 32; word 2 at step 55.
    script = {30: starts[0], 31: cont, 55: starts[1]}
    model = SimpleNamespace(args=args, lm=ScriptedLM(args.lm, script), mimi=SilentMimi())
    s = Stream(model, tok, "is", silence_prefix=1.0, delay=0.5, text_delay=0.5, trailing_silence=0.0)
    s.feed(np.zeros(24000 * 4, np.float32))
    s.flush()
    words = s.words["is"]
    # time(step) = step * 0.08 - text_delay - silence_prefix; end = time(last piece step + 1).
    assert [w.tokens for w in words] == [[starts[0], cont], [starts[1]]]
    assert words[0].start == pytest.approx(30 * 0.08 - 1.5)
    assert words[0].end == pytest.approx(32 * 0.08 - 1.5)
    assert words[1].start == pytest.approx(55 * 0.08 - 1.5)
    assert words[0].text == tok.decode([starts[0], cont]).strip()
    # 4 s + 1.0 s prefix + (0.5 + 1) s right pad -> floor(6.5 s / 80 ms) = 81 steps, as generate.
    assert s.steps == int(6.5 * 24000) // 1920
    # The words become final when the next word starts, the last one at flush.
    assert s.transcripts()["is"].text == tok.decode([starts[0], cont, starts[1]])
