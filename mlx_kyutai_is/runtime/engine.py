# Copyright © 2026 mlx-kyutai-is contributors
"""One engine, many streams: B audio streams decoded together, one Mimi call and one LM call per
80 ms frame for every stream that has a frame ready.

`Engine` is the synchronous core (one thread drives it): streams `open`, `push`, `finish` and
`close` at any time; `step()` runs one tick:

1. one LM step on the BOS inputs for the rows that (re)start;
2. one Mimi call for every stream with at least one whole frame of audio waiting (k frames each,
   k the same for all, at most about 1 s);
3. k LM steps, each row reading its stream's next frame; a stream's last frame is never read
   (the model card's recipe runs floor(samples / frame) steps).

Each LM row has its own task, protocol phase, position and KV ring (`runtime.decoder.BatchDecoder`);
`both` is two rows sharing one Mimi row. Rows and Mimi slots are reused once freed, and memory
grows with the number of active rows, never with stream length. The token of each step is read
on the host once, after the next step has been queued (one host sync per step).

`live.LiveEngine` runs an `Engine` on a background thread for many concurrent live streams.
"""

import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from ..results import Transcript, Word
from ..tasks import task_list
from .decoder import BatchDecoder
from .protocol import StreamOptions, WordAssembler, step_time

# Mimi frames per row in one call: at most ~1 s (its activations grow with the chunk: ~135 MB per
# second of audio per row at full size), and at most this many row-frames in all.
MAX_FRAMES_PER_CALL = 12
MAX_ROW_FRAMES_PER_CALL = 48
# Release MLX's buffer cache this often (steps), as mlx-lm's generate does.
CLEAR_CACHE_EVERY = 256


class _SampleQueue:
    """A FIFO of float32 samples; appending a few samples at a time is cheap."""

    def __init__(self):
        self._buf = np.zeros(4096, np.float32)
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def append(self, x: np.ndarray):
        n = len(x)
        if self._end + n > len(self._buf):
            live = self._buf[self._start : self._end]
            size = len(self._buf)
            while size < len(live) + n:
                size *= 2
            buf = self._buf if size == len(self._buf) else np.zeros(size, np.float32)
            buf[: len(live)] = live
            self._buf, self._start, self._end = buf, 0, len(live)
        self._buf[self._end : self._end + n] = x
        self._end += n

    def append_zeros(self, n: int):
        self.append(np.zeros(n, np.float32))

    def take(self, n: int) -> np.ndarray:
        out = self._buf[self._start : self._start + n].copy()
        self._start += n
        return out


@dataclass
class StreamState:
    """The engine's state for one stream (one audio, 1 or 2 LM rows). Read-only for callers."""

    id: int
    task: str
    tasks: list[str]
    sample_rate: int
    frame_size: int
    options: StreamOptions
    assemblers: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)  # LM row per task
    mimi_row: int = -1
    samples_in: int = 0  # input samples fed
    frames: int = 0  # Mimi frames produced
    frames_read: int = 0  # frames read by the LM (the stream clock)
    steps: int = 0  # LM steps run (re-primes included)
    finishing: bool = False
    done: bool = False
    closed: bool = False
    words: list = field(default_factory=list)  # final words not yet collected by the caller
    _queue: _SampleQueue = field(default_factory=_SampleQueue)
    _inflight: int = 0  # LM steps whose tokens are not read yet
    _last_frame_out: bool = False  # every frame made; the words follow once the tokens are read

    @property
    def duration(self) -> float:
        """Seconds of input audio fed so far (padding not counted)."""
        return self.samples_in / self.sample_rate

    def time_of_step(self, step: int) -> float:
        o = self.options
        return step_time(step, self.frame_size, self.sample_rate, o.text_delay, o.silence_prefix, self.duration)

    @property
    def audio_time(self) -> float:
        """Seconds of input audio the LM has read."""
        t = self.frames_read * self.frame_size / self.sample_rate - self.options.silence_prefix
        return float(min(max(t, 0.0), self.duration))

    @property
    def queued(self) -> int:
        """Samples fed (or padding) not yet encoded."""
        return len(self._queue)

    def take_words(self) -> list[Word]:
        words, self.words = self.words, []
        return words

    def transcripts(self, partial: bool = False) -> dict[str, Transcript]:
        """Each task's transcript; a partial one covers the audio decoded so far (`audio_time`)."""
        duration = self.audio_time if partial else self.duration
        return {t: a.transcript(duration, partial) for t, a in self.assemblers.items()}


class Engine:
    """Batched decoding of many streams with one model; not thread-safe (see `LiveEngine`).

    Parameters
    ----------
    model : Model
    tokenizer : Tokenizer
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.sample_rate = model.args.sample_rate
        self.frame_size = model.args.frame_size
        self.decoder = BatchDecoder(model.lm)
        self.mimi_state = model.mimi.make_state(0, fixed=True)
        self.streams: dict[int, StreamState] = {}
        self._mimi_rows: list[StreamState | None] = []
        self._row_stream: list[StreamState | None] = []
        self._next_id = 0
        self._pending: list = []  # (tokens, [(stream, task, clock, prefix)]) not read yet
        self.steps = 0  # LM steps run
        self.rows_stepped = 0  # sum over LM steps of the rows that took them
        self.last_rows = 0
        self.max_rows = 0
        self.step_seconds = 0.0

    # -- streams --------------------------------------------------------------------------------
    def open(self, task: str = "is", options: StreamOptions = StreamOptions()) -> StreamState:
        """A new stream; its rows join the batch at the next `step()`."""
        tasks = task_list(task)
        s = StreamState(self._next_id, task, tasks, self.sample_rate, self.frame_size, options)
        self._next_id += 1
        s.assemblers = {t: WordAssembler(self.tokenizer, t, s.time_of_step) for t in tasks}
        s.rows = [self.decoder.add(t, options.pad_steps) for t in tasks]
        for r in s.rows:
            if r >= len(self._row_stream):
                self._row_stream += [None] * (r + 1 - len(self._row_stream))
            self._row_stream[r] = s
        s.mimi_row = self._add_mimi_row(s)
        left, _ = options.padding(self.sample_rate)
        s._queue.append_zeros(left)
        self.streams[s.id] = s
        return s

    def _add_mimi_row(self, s: StreamState) -> int:
        for i, other in enumerate(self._mimi_rows):
            if other is None:
                self._mimi_rows[i] = s
                self.mimi_state.reset_rows([i])
                return i
        self._mimi_rows.append(s)
        self.mimi_state.resize(len(self._mimi_rows))
        return len(self._mimi_rows) - 1

    def push(self, s: StreamState, samples: np.ndarray):
        """Queue float32 mono samples at the model rate (already prepared: `audio.prepare_array`)."""
        if s.finishing or s.closed:
            raise RuntimeError("stream already flushed: open a new one for the next utterance")
        s.samples_in += len(samples)
        s._queue.append(samples)

    def finish(self, s: StreamState):
        """End the stream's audio: the trailing silence and the processor's right padding follow,
        decoded as fast as compute allows; `s.done` once every word is out."""
        if s.finishing or s.closed:
            return
        _, right = s.options.padding(self.sample_rate)
        s._queue.append_zeros(right)
        s.finishing = True

    def reprime(self, s: StreamState) -> list[Word]:
        """Re-prime the stream's LM rows after a stall: close the pending words, then the rows start
        over (BOS, task prefix) at the next step; the Mimi state and the clock go on."""
        self.drain()
        words = [w for a in s.assemblers.values() for w in a.flush()]
        for r in s.rows:
            self.decoder.reprime(r)
        return words

    def close(self, s: StreamState):
        """Leave now: the stream's rows and Mimi slot are free for the next stream."""
        if s.closed:
            return
        s.closed = True
        # Its audio goes now, not when the garbage collector breaks the stream <-> word assembler
        # cycle (the assemblers date words with the stream's clock): GiBs after big clients left.
        s._queue = _SampleQueue()
        self.streams.pop(s.id, None)
        for r in s.rows:
            self.decoder.remove(r)
            self._row_stream[r] = None
        del self._row_stream[self.decoder.capacity :]
        self._mimi_rows[s.mimi_row] = None
        n = len(self._mimi_rows)
        while n and self._mimi_rows[n - 1] is None:
            n -= 1
        if n < len(self._mimi_rows):
            del self._mimi_rows[n:]
            self.mimi_state.resize(n)

    # -- stepping -------------------------------------------------------------------------------
    def step(self) -> bool:
        """One tick for every stream that can go on; returns whether anything ran. Words become
        final in `StreamState.words` as their tokens are read (all are read by `drain()`)."""
        t0 = time.perf_counter()
        ran = False
        starting = [r for s in self.streams.values() if not s.done for r in s.rows if self.decoder.steps(r) == 0]
        if starting:
            ready = np.zeros(self.decoder.capacity, bool)
            ready[starting] = True
            self._lm_step(ready, None)
            ran = True
        live = [s for s in self.streams.values() if not s.done and len(s._queue) >= self.frame_size]
        if live:
            k = min(
                MAX_FRAMES_PER_CALL,
                max(1, MAX_ROW_FRAMES_PER_CALL // len(live)),
                min(len(s._queue) // self.frame_size for s in live),
            )
            n = k * self.frame_size
            audio = np.zeros((len(self._mimi_rows), n), np.float32)
            active = np.zeros(len(self._mimi_rows), bool)
            for s in live:
                audio[s.mimi_row] = s._queue.take(n)
                active[s.mimi_row] = True
            codes = self.model.mimi.step(mx.array(audio), self.mimi_state, active)
            codes = codes[..., : self.model.args.lm.num_codebooks]
            mimi_of_row = np.zeros(self.decoder.capacity, np.int32)
            last = {}
            for s in live:
                s.frames += k
                mimi_of_row[s.rows] = s.mimi_row
                # The last frame of a stream is never read.
                last[s.id] = k - 1 if s.finishing and len(s._queue) < self.frame_size else None
            index = mx.array(mimi_of_row)
            for j in range(k):
                ready = np.zeros(self.decoder.capacity, bool)
                for s in live:
                    if last[s.id] != j:
                        ready[s.rows] = True
                        s.frames_read += 1
                if ready.any():
                    self._lm_step(ready, mx.take(codes[:, j], index, axis=0), extra=self.mimi_state.arrays if j == 0 else [])
            for s in live:
                if last[s.id] is not None:
                    s._last_frame_out = True
            ran = True
        if ran:
            self.step_seconds += time.perf_counter() - t0
        return ran

    def _lm_step(self, ready: np.ndarray, audio: mx.array | None, extra=()):
        tokens, info = self.decoder.step(ready, audio)
        mx.async_eval([tokens, *self.decoder.state, *extra])
        self.steps += 1
        self.last_rows = len(info)
        self.rows_stepped += len(info)
        self.max_rows = max(self.max_rows, len(info))
        if self.steps % CLEAR_CACHE_EVERY == 0:
            mx.clear_cache()
        items = []
        for row, prefix in info:
            s = self._row_stream[row]
            task = s.tasks[s.rows.index(row)]
            if row == s.rows[0]:
                s.steps += 1
            s._inflight += 1
            items.append((s, task, row, s.frames_read, prefix))
        # Read the previous step's tokens only now that this one is queued.
        self.drain(keep_last=True)
        self._pending.append((tokens, items))

    def drain(self, keep_last: bool = False):
        """Read every queued step's tokens (all but the newest with `keep_last`) and assemble words."""
        n = len(self._pending) - (1 if keep_last else 0)
        for _ in range(max(0, n)):
            tokens, items = self._pending.pop(0)
            values = tokens.tolist()
            for s, task, row, clock, prefix in items:
                s._inflight -= 1
                if s.closed:
                    continue
                s.words += s.assemblers[task].push(values[row], clock, prefix)
        for s in list(self.streams.values()):
            if s._last_frame_out and s._inflight == 0 and not s.done:
                for a in s.assemblers.values():
                    s.words += a.flush()
                s.done = True

    def run(self):
        """Step until no stream can go on, then read every token."""
        while self.step():
            pass
        self.drain()

    # -- figures --------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Streams, rows, LM steps run, rows per step (how many stepped together), ms per tick."""
        return dict(
            active_streams=len(self.streams),
            rows=sum(r is not None for r in self.decoder.rows),
            steps=self.steps,
            rows_last_step=self.last_rows,
            max_rows_per_step=self.max_rows,
            mean_rows_per_step=self.rows_stepped / self.steps if self.steps else 0.0,
            mean_step_ms=1e3 * self.step_seconds / self.steps if self.steps else 0.0,
        )
