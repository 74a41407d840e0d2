# Copyright © 2026 mlx-kyutai-is contributors
"""Streaming decoding: audio chunks -> Mimi codes -> one LM step per 80 ms frame -> words.

The fine-tune's protocol (model card):
- step 0 reads the text BOS and the audio BOS on every codebook; step t > 0 reads the text token
  chosen at step t-1 and the codes of audio frame t-1;
- the first 4 generated tokens are forced to the task prefix, the next `pad_steps` to pad
  (otherwise the model may end the utterance early and go silent); then greedy argmax;
- text comes out ~5 s after the audio it transcribes, so the end of a stream is flushed by
  feeding silence as fast as compute allows.

Words: a piece starting with "▁" begins a new word; id 0 (Kyutai's end-of-padding marker, sent
just before a word) also closes the word being built, pad (3) does not (a word's pieces may be
spread over several steps). A word becomes final when it is closed, or at `flush()`.

Timestamps: the token chosen at step s (the LM has then read audio frames 0..s-1, i.e. the first
``s * frame_s`` seconds of the padded audio) is dated ``s * frame_s - text_delay - silence_prefix``
seconds of the input audio (frame_s = 0.08 s), clamped to [0, duration]. A word starts at its first
piece's step and ends one step after its last piece. This is the rule of Kyutai's Rust server
(`rust/moshi-core/src/asr.rs`: ``(step_idx - asr_delay_in_tokens) / 12.5``, step_idx = steps done,
dated at the id 0 sent the step before a word's first piece, so the same start) with the silence
prefix we add taken off; the Rust server ends a word at the next id 0 instead (the next word's start).
`text_delay` defaults to the 5 s the fine-tune was trained with (model card; no config file holds
it: the processor's `audio_delay_seconds` is the base model's right padding, not this delay).
"""

import logging
import weakref
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from .watchdog import StallWatchdog

log = logging.getLogger("mlx_kyutai_is")

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
# Mimi encodes at most this much audio in one call. Its activations grow with the chunk: at full
# size 1 s takes ~135 MB above the weights and caches (10 s: 1.2 GB), and longer chunks are no
# faster (CPU: 1 s 38 s, 2 s 34 s, 10 s 42 s for 10 s of audio), so 1 s keeps the peak near
# weights + 250 MB for files and arrays of any length.
MIMI_CHUNK_SECONDS = 1.0
# Release MLX's buffer cache this often (steps), as mlx-lm's generate does.
CLEAR_CACHE_EVERY = 256


def task_list(task: str) -> list[str]:
    if task == "both":
        return ["is", "en"]
    if task not in TASK_PREFIXES:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return [task]


@dataclass
class Word:
    text: str
    start: float
    end: float
    task: str
    tokens: list[int] = field(default_factory=list)


class Decoder:
    """The LM half of the protocol for a batch of tasks sharing one audio stream."""

    def __init__(self, lm, tasks: list[str], pad_steps: int = DEFAULT_PAD_STEPS):
        self.lm = lm
        self.args = lm.args
        self.tasks = tasks
        self.pad_steps = pad_steps
        self._prefixes = mx.array([TASK_PREFIXES[t] for t in tasks], dtype=mx.int32)
        self._audio_bos = mx.full((len(tasks), self.args.num_codebooks), self.args.audio_bos_token_id, mx.int32)
        self.reset()

    def reset(self):
        self.cache = self.lm.make_cache()
        self.step_index = 0
        self._prev = mx.full((len(self.tasks),), self.args.bos_token_id, mx.int32)

    def step(self, codes: mx.array | None) -> mx.array:
        """Run one LM step on the codes of the previous frame (None at step 0); returns the chosen
        text token of each task, lazily (B,) int32 — the caller decides when to sync."""
        B = len(self.tasks)
        if codes is None:
            audio = self._audio_bos
        else:
            n = self.args.num_codebooks
            audio = mx.broadcast_to(codes[None, :n].astype(mx.int32), (B, n))
        x = mx.concatenate([self._prev[:, None], audio], axis=1)[:, None]
        logits = self.lm(x, self.cache)[:, -1]
        t = self.step_index
        if t < self._prefixes.shape[1]:
            token = self._prefixes[:, t]
        elif t < self._prefixes.shape[1] + self.pad_steps:
            token = mx.full((B,), self.args.pad_token_id, mx.int32)
        else:
            token = mx.argmax(logits, axis=-1).astype(mx.int32)
        # Forced steps still fill the cache: evaluate it with the token.
        self._pending = [token] + [c.keys for c in self.cache]
        self._prev = token
        self.step_index += 1
        return token

    def schedule(self):
        mx.async_eval(self._pending)

    @property
    def prefix_len(self) -> int:
        return self._prefixes.shape[1]


class WordAssembler:
    """Groups one task's text tokens into words as they are emitted."""

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


class Stream:
    """Live transcription of one audio stream: `feed()` chunks, read words, `flush()` at the end.

    Use as ``with stt.stream(task="en") as s: words = s.feed(samples)``; leaving the block flushes.
    `task="both"` decodes Icelandic and English as a batch of 2 sharing the same Mimi codes (one LM
    call per step). Feeding a whole file and flushing gives exactly `STT.transcribe`'s tokens,
    whatever the chunk sizes.

    Parameters
    ----------
    model : Model
        `.lm`, `.mimi` and `.args` (`sample_rate`, `frame_size`) are used.
    tokenizer : Tokenizer
    task : {"is", "en", "both"}
    silence_prefix, delay : float
        The processor's `audio_silence_prefix_seconds` (zeros fed before the first sample, taken
        off timestamps) and `audio_delay_seconds` (`flush()` feeds ``delay + 1`` s of zeros).
    pad_steps : int
        Steps forced to pad after the 4 prefix tokens (model card: 12).
    text_delay : float
        Seconds the text lags the audio; only used to date words (see the module docstring).
    trailing_silence : float
        Seconds of silence `flush()` feeds before the processor's padding (model card: 5).
    watchdog : StallWatchdog, optional
        Re-primes the LM when it stalls; None (default) keeps the reference protocol exactly.
    """

    def __init__(
        self,
        model,
        tokenizer,
        task: str = "is",
        *,
        silence_prefix: float = 0.0,
        delay: float = 0.0,
        pad_steps: int = DEFAULT_PAD_STEPS,
        text_delay: float = DEFAULT_TEXT_DELAY_S,
        trailing_silence: float = DEFAULT_TRAILING_SILENCE_S,
        watchdog: "StallWatchdog | None" = None,
    ):
        self.model = model
        self.watchdog = watchdog
        self.tokenizer = tokenizer
        self.task = task
        self.tasks = task_list(task)
        self.sample_rate = model.args.sample_rate
        self.frame_size = model.args.frame_size
        self.silence_prefix = silence_prefix
        self.delay = delay
        self.text_delay = text_delay
        self.trailing_silence = trailing_silence
        self.decoder = Decoder(model.lm, self.tasks, pad_steps)
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self):
        """Start a fresh utterance: new Mimi and LM state, same weights."""
        self.decoder.reset()
        self.mimi_state = self.model.mimi.make_state(1)
        self.samples_in = 0  # input samples fed by the user
        self._padded_in = 0  # samples fed to Mimi, the silence prefix and flush padding included
        self._frames = 0  # Mimi frames received
        self._started = False
        self._flushed = False
        self._frames_read = 0  # Mimi frames the LM has read
        self._steps = 0
        self.recoveries: list[tuple[float, str]] = []
        # The assemblers date words through a weak reference: a bound method would make a cycle,
        # and a dropped stream (with its KV caches, ~100 MB at full size) would wait for the GC.
        this = weakref.ref(self)
        self.assemblers = {
            t: WordAssembler(self.tokenizer, t, lambda step: this()._time_of_step(step)) for t in self.tasks
        }
        if self.watchdog is not None:
            self.watchdog.reset()

    def recover(self, reason: str) -> list[Word]:
        """Re-prime the LM after a stall: finish the pending word, reset the LM state and send the
        task prefix again. Weights and the audio (Mimi) state are kept; the clock goes on."""
        words = [w for a in self.assemblers.values() for w in a.flush()]
        self.decoder.reset()
        self._started = False
        self.recoveries.append((self.duration, reason))
        log.warning("stream stalled at %.1f s (%s): LM state reset and re-primed", self.duration, reason)
        return words

    def _time_of_step(self, step: int) -> float:
        # `step` is the stream clock: the number of frames read by the LM when it chose the token
        # (+1 for the frame it just read); without a recovery it equals the LM step index.
        t = step * self.frame_size / self.sample_rate - self.text_delay - self.silence_prefix
        return float(min(max(t, 0.0), self.duration))

    @property
    def duration(self) -> float:
        """Seconds of input audio fed so far (padding not counted)."""
        return self.samples_in / self.sample_rate

    @property
    def audio_seconds(self) -> float:
        """Same as `duration`: seconds of input audio fed so far."""
        return self.duration

    @property
    def steps(self) -> int:
        """LM steps run on this stream (watchdog re-primes included)."""
        return self._steps

    @property
    def words(self) -> dict[str, list[Word]]:
        return {t: a.words for t, a in self.assemblers.items()}

    @property
    def partials(self) -> dict[str, str]:
        return {t: a.partial for t, a in self.assemblers.items()}

    @property
    def partial(self) -> str:
        return self.assemblers[self.tasks[0]].partial

    # -- decoding ----------------------------------------------------------------------------
    def _encode(self, samples: np.ndarray) -> mx.array:
        self._padded_in += len(samples)
        if len(samples) == 0:
            return mx.zeros((0, self.model.args.mimi.num_quantizers), mx.int32)
        codes = self.model.mimi.encode_step(mx.array(samples, dtype=mx.float32)[None], self.mimi_state)
        return codes[0]

    def _encode_chunks(self, samples: np.ndarray):
        """Codes of the frames completed by `samples`, one (frames, codebooks) array per Mimi
        chunk of at most `MIMI_CHUNK_SECONDS`."""
        block = int(MIMI_CHUNK_SECONDS * self.sample_rate)
        for i in range(0, len(samples), block):
            codes = self._encode(samples[i : i + block])
            self._frames += codes.shape[0]
            yield codes

    def _run(self, codes: mx.array, n_steps: int) -> list[Word]:
        """LM steps for the first `n_steps` frames of `codes` (frame f feeds step f + 1; step 0,
        the first time, reads the BOS inputs). One host sync per step, taken only after the next
        step has been queued (mx.async_eval), so the device never waits for Python."""
        inputs = [codes[i] for i in range(min(max(n_steps, 0), codes.shape[0]))]
        if not self._started:
            inputs.insert(0, None)
            self._started = True
        out, prev = [], None
        for c in inputs:
            if c is not None:
                self._frames_read += 1
            prefix = self.decoder.step_index < self.decoder.prefix_len
            current = (self._frames_read, self.decoder.step(c), prefix)
            self._steps += 1
            self.decoder.schedule()
            if self._steps % CLEAR_CACHE_EVERY == 0:
                mx.clear_cache()
            if prev is not None:
                out += self._emit(*prev)
            prev = current
        if prev is not None:
            out += self._emit(*prev)
        return out

    def _emit(self, clock: int, token: mx.array, prefix: bool) -> list[Word]:
        out = []
        for task, tok in zip(self.tasks, token.tolist()):
            out += self.assemblers[task].push(tok, clock, prefix)
        return out

    def feed(self, samples) -> list[Word]:
        """Feed audio; run one LM step per completed 80 ms frame.

        Parameters
        ----------
        samples : array_like
            Mono float32 samples at the model rate (24 kHz), any length (even 0); non-finite
            values are replaced by 0.

        Returns
        -------
        list[Word]
            The words that became final during this call (each with `.task` set), in order.
        """
        if self._flushed:
            raise RuntimeError("stream already flushed: call reset() to start a new utterance")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
        self.samples_in += len(samples)
        padded = samples
        if self._padded_in == 0:
            padded = np.concatenate([np.zeros(int(self.silence_prefix * self.sample_rate), np.float32), samples])
        words = []
        for codes in self._encode_chunks(padded):
            words += self._run(codes, codes.shape[0])
        if self.watchdog is not None and (reason := self.watchdog.observe(samples, words)):
            words += self.recover(reason)
            self.watchdog.reset()
        return words

    def flush(self) -> list[Word]:
        """End the stream: feed `trailing_silence` plus the processor's right padding
        (``delay + 1`` s) of zeros at full speed, then close every pending word.

        The stream then has run floor(padded samples / frame size) LM steps in all, as
        transformers' `generate` on the model card's recipe input. Calling it again does nothing;
        `feed()` after it raises until `reset()`.

        Returns
        -------
        list[Word]
            The words that became final, the last (pending) ones included.
        """
        if self._flushed:
            return []
        tail = int(self.trailing_silence * self.sample_rate) + int((self.delay + 1.0) * self.sample_rate)
        if self._padded_in == 0:
            tail += int(self.silence_prefix * self.sample_rate)
        # Codes are small; encode chunk by chunk (each evaluated before the next, bounding Mimi's
        # memory) and run the LM over all of them but the last frame: every frame so far fed one
        # step after the BOS step, and generate runs floor(padded samples / frame size) steps.
        chunks = []
        for c in self._encode_chunks(np.zeros(tail, np.float32)):
            mx.eval(c)
            chunks.append(c)
        codes = mx.concatenate(chunks) if chunks else mx.zeros((0, self.model.args.mimi.num_quantizers), mx.int32)
        words = self._run(codes, codes.shape[0] - 1)
        self._flushed = True
        for a in self.assemblers.values():
            words += a.flush()
        return words

    # -- results -----------------------------------------------------------------------------
    def transcripts(self) -> dict:
        from .transcribe import Transcript

        return {
            t: Transcript(
                text=a.text.strip(), words=list(a.words), task=t, duration=self.duration, tokens=list(a.tokens)
            )
            for t, a in self.assemblers.items()
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.flush()
        return False
