# Copyright © 2026 mlx-kyutai-is contributors
"""The fine-tune's decoding protocol and its results: tasks, the batched step decoder, words.

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

Nothing here reads audio or prints: `engine.py` drives the decoder, `stream.py` and
`transcribe.py` present the results.
"""

import math
from dataclasses import dataclass, field
from numbers import Integral, Real

import mlx.core as mx
import numpy as np

# The task prompts of the fine-tune: forced as the first 4 generated text tokens (model card).
TASK_PREFIXES = {
    "is": [9318, 8002, 8003, 9193],  # <is>: Icelandic speech -> Icelandic text
    "en": [9318, 8032, 8015, 9193],  # <en>: Icelandic speech -> English text
}
TASKS = ("is", "en", "both")
DEFAULT_PAD_STEPS = 12
# The fine-tune was trained with a ~5 s text delay (model card); used only to date words.
DEFAULT_TEXT_DELAY_S = 5.0
# The model card's recipe appends 5 s of silence so the delayed words come out.
DEFAULT_TRAILING_SILENCE_S = 5.0
# Kyutai's end-of-padding id, emitted just before a new word: a word boundary (MODEL.md).
WORD_BOUNDARY_ID = 0


def task_list(task: str) -> list[str]:
    """The decoding rows of a task: ["is"], ["en"], or both (one audio, two rows)."""
    if task == "both":
        return ["is", "en"]
    if task not in TASK_PREFIXES:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return [task]


def check_options(pad_steps=DEFAULT_PAD_STEPS, text_delay=DEFAULT_TEXT_DELAY_S, trailing_silence=DEFAULT_TRAILING_SILENCE_S):
    """Validate the stream options; raises ValueError naming the bad one."""
    if isinstance(pad_steps, bool) or not isinstance(pad_steps, Integral) or pad_steps < 0:
        raise ValueError(f"pad_steps must be an integer >= 0, got {pad_steps!r}")
    for name, v in (("text_delay", text_delay), ("trailing_silence", trailing_silence)):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")


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


@dataclass
class Word:
    text: str
    start: float
    end: float
    task: str
    tokens: list[int] = field(default_factory=list)


@dataclass
class Transcript:
    """The result of one task over one input.

    `text` is the decoded transcript (the task prefix left out), `words` carry `start`/`end` in
    seconds of the input audio, `tokens` are every generated text id, the 4 prefix ids included.
    `partial` is True when decoding was stopped before the end of the audio.
    """

    text: str
    words: "list[Word]" = field(default_factory=list)
    task: str = "is"
    duration: float = 0.0
    tokens: list[int] = field(default_factory=list)
    partial: bool = False


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


@dataclass
class _Row:
    prefix: list[int]
    pad_steps: int
    steps: int = 0  # LM steps since the row was (re)primed


class BatchDecoder:
    """The LM half of the protocol for B independent rows, one LM call per step for all.

    Each row has its own task prefix, protocol phase (prefix, forced pad, free), position and KV
    ring (`cache.BatchRotatingKVCache`); rows are added and removed at any step, and a freed row
    is reused without attending its old keys. A step computes every row (a fixed-shape batch);
    rows that are not `ready` get their results thrown away and their state left as it was.
    """

    def __init__(self, lm):
        from .cache import BatchRotatingKVCache

        self.lm = lm
        self.args = lm.args
        self.rows: list[_Row | None] = []
        self.cache = [BatchRotatingKVCache(self.args.sliding_window) for _ in lm.layers]
        self._prev = mx.zeros((0,), mx.int32)
        self._bos = None

        @mx.compile
        def choose(free, forced, is_forced, ready, prev):
            # The row's token (forced or argmax) and the text input of its next step: one kernel.
            token = mx.where(is_forced, forced, free.astype(mx.int32))
            return token, mx.where(ready, token, prev)

        self._choose = choose

    @property
    def capacity(self) -> int:
        return len(self.rows)

    def add(self, task: str, pad_steps: int = DEFAULT_PAD_STEPS) -> int:
        """A new row (the lowest free index); its first step reads the BOS inputs."""
        row = _Row(list(TASK_PREFIXES[task]), pad_steps)
        for i, r in enumerate(self.rows):
            if r is None:
                self.rows[i] = row
                return i
        self.rows.append(row)
        self._resize(len(self.rows))
        return len(self.rows) - 1

    def remove(self, i: int):
        self.rows[i] = None
        n = len(self.rows)
        while n and self.rows[n - 1] is None:
            n -= 1
        if n < len(self.rows):
            del self.rows[n:]
            self._resize(n)

    def reprime(self, i: int):
        """Start row `i` over (same task): its next step reads the BOS inputs at position 0."""
        self.rows[i].steps = 0

    def steps(self, i: int) -> int:
        return self.rows[i].steps

    def _resize(self, n: int):
        for c in self.cache:
            c.resize(n)
        old = self._prev.shape[0]
        if n > old:
            self._prev = mx.concatenate([self._prev, mx.zeros((n - old,), mx.int32)])
        else:
            self._prev = self._prev[:n]

    def _bos_inputs(self, n: int) -> "mx.array":
        a = self.args
        bos = [a.bos_token_id] + [a.audio_bos_token_id] * a.num_codebooks
        return mx.broadcast_to(mx.array(bos, mx.int32)[None], (n, 1 + a.num_codebooks))

    def step(self, ready: "np.ndarray", audio: "mx.array | None") -> "tuple[mx.array, list[tuple[int, bool]]]":
        """One LM step for every row; only `ready` rows advance.

        Parameters
        ----------
        ready : np.ndarray
            bool (capacity,): the rows that take this step.
        audio : mx.array or None
            int32 (capacity, num_codebooks): each ready row's codes of the frame it reads; None
            for a step where every ready row is at its first step (BOS inputs).

        Returns
        -------
        (tokens, info)
            tokens: lazy int32 (capacity,), the chosen text token of each row (garbage where not
            ready); info: for each ready row, (row, prefix) where prefix tells a forced task-prefix
            token. The caller syncs on `tokens` when it chooses (`schedule()` queues the work).
        """
        n = self.capacity
        positions = np.zeros(n, np.int32)
        forced = np.full(n, -1, np.int32)
        info = []
        for i, r in enumerate(self.rows):
            if r is None:
                continue
            positions[i] = r.steps
            if not ready[i]:
                continue
            if r.steps < len(r.prefix):
                forced[i] = r.prefix[r.steps]
            elif r.steps < len(r.prefix) + r.pad_steps:
                forced[i] = self.args.pad_token_id
            info.append((i, r.steps < len(r.prefix)))
        if audio is None:
            x = self._bos_inputs(n)
        else:
            x = mx.concatenate([self._prev[:, None], audio.astype(mx.int32)], axis=1)
        # Positions, slots and masks are made on the host: arrays the graph reads, not kernels.
        window = self.args.sliding_window
        positions_mx = mx.array(positions)
        slots = mx.array(positions % window)
        mask = None
        if positions.size and positions.min() < window - 1:
            # Young rows: only the slots written since the row started (the step's own included).
            mask = mx.array((np.arange(window)[None] <= positions[:, None])[:, None, None, :])
        for c in self.cache:
            c.seek(positions_mx, mask, slots)
        logits = self.lm(x[:, None], self.cache)[:, -1]
        free = mx.argmax(logits, axis=-1)
        token, self._prev = self._choose(free, mx.array(forced), mx.array(forced >= 0), mx.array(ready[:n]), self._prev)
        # The caches need no undo: a row that was not ready wrote into the slot its next real step
        # overwrites (the oldest key, which that step no longer attends).
        for i, _ in info:
            self.rows[i].steps += 1
        self._pending = [token, self._prev] + [a for c in self.cache for a in c.state]
        return token, info

    def schedule(self):
        """Queue the last step's work on the device (mx.async_eval) without waiting for it."""
        mx.async_eval(self._pending)

    @property
    def state(self) -> "list[mx.array]":
        return [self._prev] + [a for c in self.cache for a in c.state]
