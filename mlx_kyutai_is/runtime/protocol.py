# Copyright © 2026 mlx-kyutai-is contributors
"""The fine-tune's decoding protocol: stream options, padding, timestamps, and words from tokens.

Protocol (model card):
- step 0 reads the text BOS and the audio BOS on every codebook; step t > 0 reads the text token
  chosen at step t-1 and the codes of audio frame t-1;
- the first 4 generated tokens are forced to the task prefix, the next `pad_steps` to pad
  (otherwise the model may end the utterance early and go silent); then greedy argmax;
- text comes out ~5 s after the audio it transcribes, so the end of a stream is flushed by
  feeding silence (`padding`) as fast as compute allows; the last frame is never read, so a
  stream of N frames runs N steps, as transformers' `generate` on the recipe's input.

Words: a piece starting with "▁" begins a new word; id 0 (Kyutai's end-of-padding marker, sent
just before a word) also closes the word being built, pad (3) does not (a word's pieces may be
spread over several steps). A word becomes final when it is closed, or when the stream ends.

Timestamps (`step_time`): the token chosen at step s (the LM has then read audio frames 0..s-1,
i.e. the first ``s * frame_s`` seconds of the padded audio) is dated ``s * frame_s - text_delay -
silence_prefix`` seconds of the input audio (frame_s = 0.08 s), clamped to [0, duration]. A word
starts at its first piece's step and ends one step after its last piece. This is the rule of
Kyutai's Rust server (`rust/moshi-core/src/asr.rs`: ``(step_idx - asr_delay_in_tokens) / 12.5``,
dated at the id 0 sent the step before a word's first piece, so the same start) with the silence
prefix we add taken off; the Rust server ends a word at the next id 0 instead. `text_delay`
defaults to the 5 s the fine-tune was trained with (model card; no config file holds it).

Nothing here reads audio or prints: `decoder.py` runs the LM rows, `engine.py` drives them,
`stream.py`, `live.py` and `batch.py` present the results. The tasks and their prefixes are in
`tasks.py`, the result types in `results.py`.
"""

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real

from ..results import Transcript, Word

DEFAULT_PAD_STEPS = 12
# The fine-tune was trained with a ~5 s text delay (model card); used only to date words.
DEFAULT_TEXT_DELAY_S = 5.0
# The model card's recipe appends 5 s of silence so the delayed words come out.
DEFAULT_TRAILING_SILENCE_S = 5.0
# Kyutai's end-of-padding id, emitted just before a new word: a word boundary (MODEL.md).
WORD_BOUNDARY_ID = 0


@dataclass(frozen=True)
class StreamOptions:
    """How one stream is decoded: validated once, passed whole.

    Parameters
    ----------
    pad_steps : int
        Steps forced to pad after the 4 task-prefix tokens (model card: 12).
    text_delay : float
        Seconds the text lags the audio; used only to date words (the fine-tune's 5 s).
    trailing_silence : float
        Seconds of silence fed at the end of a stream before the processor's right padding
        (the model card's recipe appends 5 s, so that the delayed words come out).
    silence_prefix, delay : float
        The processor's `audio_silence_prefix_seconds` (zeros before the first sample, taken
        off timestamps) and `audio_delay_seconds` (``delay + 1`` s of zeros end a stream): the
        model's, from its preprocessor_config.json (`STT.options`).
    """

    pad_steps: int = DEFAULT_PAD_STEPS
    text_delay: float = DEFAULT_TEXT_DELAY_S
    trailing_silence: float = DEFAULT_TRAILING_SILENCE_S
    silence_prefix: float = 0.0
    delay: float = 0.0

    def __post_init__(self):
        if isinstance(self.pad_steps, bool) or not isinstance(self.pad_steps, Integral) or self.pad_steps < 0:
            raise ValueError(f"pad_steps must be an integer >= 0, got {self.pad_steps!r}")
        for name in ("text_delay", "trailing_silence", "silence_prefix", "delay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")

    def replace(self, **changes) -> "StreamOptions":
        """A copy with `changes` (None values ignored), validated."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes) if changes else self

    def padding(self, sample_rate: int) -> tuple[int, int]:
        """Samples of zeros before and after a stream's audio (see `padding`)."""
        return padding(sample_rate, self.silence_prefix, self.delay, self.trailing_silence)


def padding(sample_rate: int, silence_prefix: float, delay: float, trailing_silence: float) -> tuple[int, int]:
    """Samples of zeros before and after the input audio: the processor's padding
    (KyutaiSpeechToTextFeatureExtractor: ``int(prefix * sr)`` left, ``int((delay + 1) * sr)`` right,
    the extra second lets the delayed text out) plus the recipe's trailing silence."""
    left = int(silence_prefix * sample_rate)
    right = int(trailing_silence * sample_rate) + int((delay + 1.0) * sample_rate)
    return left, right


def step_time(step: int, frame_size: int, sample_rate: int, text_delay: float, silence_prefix: float, duration: float) -> float:
    """Seconds of input audio that the token chosen at stream clock `step` is dated at."""
    t = step * frame_size / sample_rate - text_delay - silence_prefix
    return float(min(max(t, 0.0), duration))


class WordAssembler:
    """Groups one task's text tokens into words as they are emitted.

    `time_of_step(step)` dates a stream clock value in seconds (see `step_time`)."""

    def __init__(self, tokenizer, task: str, time_of_step):
        self.tokenizer = tokenizer
        self.task = task
        self.time_of_step = time_of_step
        self.tokens: list[int] = []  # every generated token, task prefix included
        self.text_tokens: list[int] = []  # the transcript's tokens: prefixes left out
        self.words: list[Word] = []
        self._current: list[tuple[int, int]] = []  # (token, clock) of the word being built

    def push(self, token: int, step: int, prefix: bool = False) -> list[Word]:
        self.tokens.append(token)
        if prefix:
            return []
        self.text_tokens.append(token)
        if token == WORD_BOUNDARY_ID:
            return [self._close()] if self._current else []
        if self.tokenizer.is_special(token):
            return []
        done = []
        if self.tokenizer.is_word_start(token) and self._current:
            done.append(self._close())
        self._current.append((token, step))
        return done

    def _close(self) -> Word:
        toks = [t for t, _ in self._current]
        start = self.time_of_step(self._current[0][1])
        end = max(start, self.time_of_step(self._current[-1][1] + 1))
        self._current = []
        word = Word(self.tokenizer.decode(toks).strip(), start, end, self.task, toks)
        self.words.append(word)
        return word

    def flush(self) -> list[Word]:
        return [self._close()] if self._current else []

    @property
    def partial(self) -> str:
        return self.tokenizer.decode([t for t, _ in self._current]).strip()

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.text_tokens)

    def transcript(self, duration: float, partial: bool = False) -> Transcript:
        return Transcript(
            text=self.text.strip(),
            words=list(self.words),
            task=self.task,
            duration=duration,
            tokens=list(self.tokens),
            partial=partial,
        )


class TextDeltas:
    """Turns final words into text deltas whose concatenation is the transcript's text.

    The transcript's text is the tokenizer's decoding of all its tokens (`Transcript.text`), which
    may join two words the assembler split (a piece after a word boundary that has no word
    marker), so deltas are the growth of the decoded text, not the words themselves.

    Parameters
    ----------
    decode : callable
        ``decode(token_ids) -> str`` (the model's tokenizer).
    """

    def __init__(self, decode):
        self.decode = decode
        self.tokens: list[int] = []
        self.sent = ""

    def add(self, word) -> str:
        """The delta for a word that just became final ("" if it adds no text)."""
        self.tokens += list(word.tokens)
        text = self.decode(self.tokens).strip()
        if text.startswith(self.sent):
            delta = text[len(self.sent) :]
        else:  # decoding is not prefix-stable here (rare): send the word on its own
            delta = (" " if self.sent else "") + word.text
        self.sent += delta
        return delta

    def finish(self, text: str) -> str:
        """The last delta so that the deltas add up to `text` (the final transcript), when they can."""
        if text.startswith(self.sent) and len(text) > len(self.sent):
            delta = text[len(self.sent) :]
            self.sent = text
            return delta
        return ""
