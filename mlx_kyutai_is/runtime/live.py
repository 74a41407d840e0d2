# Copyright © 2026 mlx-kyutai-is contributors
"""`LiveEngine`: many concurrent live streams on one `Engine` running on a background thread.

For a server or many microphones: `open()` returns a `LiveStream` whose `feed`, `flush` and
`close` are thread-safe and never wait for the device; words come back as `Event`s. Clients talk
to the engine thread through small typed commands (`_Feed`, `_Flush`, `_Clear`, `_Task`, `_Close`).

Every engine stream counts against `max_streams`: a `LiveStream` holds one slot, and one more for
each earlier utterance still being flushed while the next one is fed (at most `max_utterances`
utterances at once). A stream that would need more waits, its commands kept in order, until its
oldest flush is done. `LiveStream.unread()` is the audio fed that the engine has not read yet, so
that a server can decode as the engine reads (`when_unread_below`) and bound what a client queues.
"""

import concurrent.futures
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..audio.prepare import prepare_array
from ..errors import Error
from ..results import Result, Word
from ..tasks import task_list
from .engine import Engine, StreamState
from .protocol import StreamOptions

log = logging.getLogger("mlx_kyutai_is")


class EngineFull(Error, RuntimeError):
    """Every stream slot of a `LiveEngine` is taken."""


@dataclass
class Event:
    """Something a live stream produced.

    type: "word" (a final `word`), "partial" (the pending word of `task` is now `text`),
    "done" (the utterance was flushed: `transcripts` is its `Result`), "error" (`text`).
    `utterance` counts the stream's utterances from 0; `audio_time` is the seconds of the
    utterance's audio the model had read when the event was made.
    """

    type: str
    task: str | None = None
    word: Word | None = None
    text: str = ""
    transcripts: Result | None = None
    utterance: int = 0
    audio_time: float = 0.0


@dataclass
class _Feed:
    stream: "LiveStream"
    samples: np.ndarray


@dataclass
class _Flush:
    stream: "LiveStream"
    future: concurrent.futures.Future


@dataclass
class _Clear:
    stream: "LiveStream"


@dataclass
class _Task:
    stream: "LiveStream"
    task: str


@dataclass
class _Close:
    stream: "LiveStream"


class LiveStream:
    """A client's handle on a `LiveEngine` stream; every method is thread-safe and returns at once.

    Events go to the `on_event` callback given to `LiveEngine.open` (called on the engine thread),
    or queue up for `get_event()`.
    """

    def __init__(self, engine: "LiveEngine", task: str, options: StreamOptions, on_event):
        self.engine = engine
        self.task = task
        self.tasks = task_list(task)
        self.options = options
        self.utterance = 0
        self.closed = False
        self._events: queue.Queue = queue.Queue()
        self._on_event = on_event or self._events.put
        # Audio accounting (`unread`): samples fed (client side) and, of them, read by the model or
        # dropped (engine side).
        self._lock = threading.Lock()
        self._fed = 0
        self._read = 0
        self._waiters: list = []  # (samples, Future) of when_unread_below
        # Engine-thread state: the current utterance's engine stream, partial texts sent, the task
        # of the next utterance, slots held, engine streams held, commands waiting for a slot.
        self._current: StreamState | None = None
        self._partials: dict = {}
        self._task = task
        self._slots = 1
        self._held = 0
        self._deferred: deque = deque()
        self._read_of: dict = {}  # StreamState id -> its samples counted in _read

    def feed(self, samples):
        """Queue audio of the current utterance: float32 in [-1, 1] or int16 PCM, mono, 24 kHz
        (see `audio.prepare_array`); a feed after `flush()` or `clear()` starts the next utterance."""
        x = prepare_array(samples, allow_empty=True)
        if len(x) and not self.closed:
            with self._lock:
                self._fed += len(x)
            self.engine._submit(_Feed(self, x))

    def unread(self) -> float:
        """Seconds of audio fed that the model has not read yet, audio waiting for a slot included
        (a server caps this per client)."""
        with self._lock:
            return (self._fed - self._read) / self.engine.stt.sample_rate

    def when_unread_below(self, seconds: float) -> concurrent.futures.Future:
        """A future done (result None) once `unread()` is below `seconds`, or the stream is closed:
        feed the next block then, and audio is decoded only as fast as the engine reads it."""
        samples = seconds * self.engine.stt.sample_rate
        future = concurrent.futures.Future()
        with self._lock:
            if self.closed or self._fed - self._read < samples:
                future.set_result(None)
            else:
                self._waiters.append((samples, future))
        return future

    def flush(self) -> concurrent.futures.Future:
        """End the current utterance; the future's result is its `Result` once every word is out."""
        future = concurrent.futures.Future()
        self.engine._submit(_Flush(self, future))
        return future

    def clear(self):
        """Drop the current utterance (its audio, words and engine slot, at once): it gets no
        `done` event, and the next `feed()` starts utterance `utterance + 1`. Utterances already
        flushed go on."""
        self.engine._submit(_Clear(self))

    def set_task(self, task: str):
        """Decode the utterances that start after this call as `task` ("is", "en" or "both")."""
        self.tasks = task_list(task)
        self.task = task
        self.engine._submit(_Task(self, task))

    def close(self):
        """Leave now: the stream's slots are free at once and its pending work dropped."""
        if self.engine._release(self):
            self.engine._submit(_Close(self))

    def _count_read(self, samples: int):
        """`samples` more were read or dropped (engine thread); wake the waiters this satisfies."""
        with self._lock:
            self._read += samples
            unread = self._fed - self._read
            ready = [f for n, f in self._waiters if self.closed or unread < n]
            self._waiters = [(n, f) for n, f in self._waiters if not (self.closed or unread < n)]
        for f in ready:
            if not f.done():
                f.set_result(None)

    def get_event(self, timeout: float | None = None) -> Event | None:
        """The next event (when no `on_event` callback was given), or None after `timeout` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def _emit(self, event: Event):
        try:
            self._on_event(event)
        except Exception:  # a client's callback must not stop the engine
            log.exception("live stream event callback failed")


class LiveEngine:
    """Many concurrent live streams decoded together by one `Engine` on a background thread.

    The thread owns MLX: clients only queue audio and commands, so `feed()` never waits for the
    device, and the streams with a frame ready step together. Use as a context manager, or call
    `close()`.

    Parameters
    ----------
    stt : STT
        The loaded model (`mlx_kyutai_is.load`).
    max_streams : int
        Engine streams at once, utterances still being flushed included; `open()` raises
        `EngineFull` when none is free.
    max_utterances : int
        Utterances of one `LiveStream` in the engine at once (the one fed and those being flushed);
        the stream's next utterance waits beyond it.
    """

    def __init__(self, stt, max_streams: int = 64, max_utterances: int = 2):
        for name, value in (("max_streams", max_streams), ("max_utterances", max_utterances)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.stt = stt
        self.max_streams = max_streams
        self.max_utterances = max_utterances
        self.engine: Engine | None = None  # built on the engine thread, which owns every MLX array
        self._lock = threading.Lock()
        self._open = 0
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closing = False
        self._stopped = threading.Event()
        self._flushing: dict = {}  # StreamState id -> (LiveStream, Future, utterance)
        self._owners: dict = {}  # StreamState id -> LiveStream
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlx-kyutai-is-engine", daemon=True)
        self._thread.start()
        self._started.wait()

    # -- client side ----------------------------------------------------------------------------
    def open(self, task: str = "is", *, on_event=None, options: StreamOptions | None = None) -> LiveStream:
        """A new live stream ("is", "en" or "both") decoded with `options` (default: the model's,
        `STT.options`); raises `EngineFull` when every slot is taken."""
        task_list(task)
        options = self.stt.options if options is None else options
        with self._lock:
            if self._closing:
                raise RuntimeError("the engine is shutting down")
            if self._open >= self.max_streams:
                raise EngineFull(f"all {self.max_streams} stream slots are busy")
            self._open += 1
        return LiveStream(self, task, options, on_event)

    def _release(self, s: LiveStream) -> bool:
        """Give back every slot of `s` (client side, at once); False if it was closed already."""
        with self._lock:
            if s.closed:
                return False
            s.closed = True
            self._open -= s._slots
            s._slots = 0
        s._count_read(0)  # wakes its waiters
        return True

    def _take_slot(self, s: LiveStream) -> bool:
        """A slot for one more engine stream of `s` (engine thread)."""
        if s._held < s._slots:
            return True
        if s._held >= self.max_utterances:
            return False
        with self._lock:
            if s.closed or self._open >= self.max_streams:
                return False
            self._open += 1
            s._slots += 1
        return True

    def _submit(self, command):
        self._commands.put(command)
        self._wake.set()

    def stats(self) -> dict:
        """Streams open, engine steps, rows per step (how many streams stepped together)."""
        e = self.engine
        stats = e.stats() if e is not None else dict(steps=0)
        return {
            **stats,
            "active_streams": self._open,  # slots held
            "engine_streams": stats.get("active_streams", 0),  # streams in the engine now
            "max_streams": self.max_streams,
        }

    def close(self, timeout: float | None = None):
        """Finish the utterances being flushed, then stop the engine thread."""
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- engine thread --------------------------------------------------------------------------
    def _apply(self, command: "_Feed | _Flush | _Clear | _Task | _Close"):
        s = command.stream
        if isinstance(command, _Close):
            return self._close_stream(s)
        if s.closed:
            return
        if s._deferred:  # waiting for a slot: keep the stream's order
            return self._defer(command)
        if isinstance(command, _Task):
            s._task = command.task
            return
        if isinstance(command, _Clear):
            return self._clear(s)
        e = self.engine
        if s._current is None or s._current.finishing:
            if not self._take_slot(s):
                return self._defer(command)
            s._current = e.open(s._task, s.options)  # the stream's next utterance
            s._held += 1
            self._owners[s._current.id] = s
        if isinstance(command, _Feed):
            e.push(s._current, command.samples)
        else:
            e.finish(s._current)
            self._flushing[s._current.id] = (s, command.future, s.utterance)
            s.utterance += 1

    def _defer(self, command):
        s = command.stream
        if isinstance(command, _Clear):  # the audio of the utterance cleared is dropped now
            while s._deferred and isinstance(s._deferred[-1], _Feed):
                s._count_read(len(s._deferred.pop().samples))
            if not s._deferred:
                return self._clear(s)
        s._deferred.append(command)

    def _clear(self, s: LiveStream):
        if s._current is not None and not s._current.finishing:
            self._drop(s, s._current)
        s._current = None
        s.utterance += 1

    def _drop(self, s: LiveStream, es: StreamState):
        """Take `es` out of the engine: its slot goes back, and `s`'s waiting commands go on."""
        self._count(s, es, everything=True)
        self._owners.pop(es.id, None)
        for task in es.tasks:
            s._partials.pop((es.id, task), None)
        if es.id in self.engine.streams:
            self.engine.close(es)
        s._held -= 1
        with self._lock:
            if not s.closed and s._slots > max(1, s._held):
                s._slots -= 1
                self._open -= 1
        if s._deferred and not s.closed:
            waiting, s._deferred = s._deferred, deque()
            while waiting:
                self._apply(waiting.popleft())
                if s._deferred:  # waits again: the rest stays behind it
                    s._deferred.extend(waiting)
                    break

    def _count(self, s: LiveStream, es: StreamState, everything: bool = False):
        """Count the samples of `es` that Mimi has read (all of them once it is done or dropped)."""
        if everything:
            read = es.samples_in
        else:
            left, _ = es.options.padding(es.sample_rate)
            read = min(es.samples_in, max(0, es.frames * es.frame_size - left))
        new = read - s._read_of.get(es.id, 0)
        if everything:
            s._read_of.pop(es.id, None)
        else:
            s._read_of[es.id] = read
        if new:
            s._count_read(new)

    def _close_stream(self, s: LiveStream):
        for command in s._deferred:
            if isinstance(command, _Flush):
                command.future.cancel()
        s._deferred.clear()
        for es_id, owner in list(self._owners.items()):
            if owner is s:
                if es_id in self._flushing:
                    self._flushing.pop(es_id)[1].cancel()
                self._drop(s, self.engine.streams[es_id])
        s._current = None

    def _deliver(self):
        """Hand the new words, partials and finished utterances to their clients."""
        e = self.engine
        for es in list(e.streams.values()):
            entry = self._flushing.get(es.id)
            owner = self._owners.get(es.id)
            if owner is None:
                continue
            self._count(owner, es)
            utt = entry[2] if entry else owner.utterance
            for w in es.take_words():
                owner._emit(Event("word", w.task, w, w.text, utterance=utt, audio_time=es.audio_time))
            if entry is None or not es.done:
                for task, a in es.assemblers.items():
                    text = a.partial
                    if owner._partials.get((es.id, task), "") != text:
                        owner._partials[es.id, task] = text
                        owner._emit(Event("partial", task, text=text, utterance=utt, audio_time=es.audio_time))
            if es.done and entry is not None:
                transcripts = Result(es.task, es.transcripts())
                self._flushing.pop(es.id)
                if owner._current is es:
                    owner._current = None
                owner._emit(Event("done", transcripts=transcripts, utterance=utt, audio_time=es.duration))
                if not entry[1].cancelled():
                    entry[1].set_result(transcripts)
                self._drop(owner, es)  # after its done event: the next utterance's events follow it

    def _loop(self):
        try:
            # MLX streams belong to the thread that makes them: this thread gets its own, and the
            # engine's arrays are all made here.
            mx.set_default_stream(mx.new_stream(mx.default_device()))
            self.engine = Engine(self.stt.model, self.stt.tokenizer)
            self._started.set()
            while True:
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    self._apply(command)
                if self._closing and not self._flushing and not any(s._deferred for s in self._owners.values()):
                    break
                ran = self.engine.step()
                self.engine.drain()
                self._deliver()
                if not ran:
                    self._wake.wait(0.05)
                    self._wake.clear()
        except BaseException as exc:  # report to every waiting client, then stop
            log.exception("engine thread failed")
            for s, future, utt in self._flushing.values():
                s._emit(Event("error", text=f"engine failed: {exc}", utterance=utt))
                if not future.done():
                    future.set_exception(exc)
            for s in set(self._owners.values()):
                for command in s._deferred:
                    if isinstance(command, _Flush) and not command.future.done():
                        command.future.set_exception(exc)
            raise
        finally:
            # Everything MLX made on this thread goes with it: left to the interpreter's exit,
            # the thread's stream and the arrays still on it abort the process (MLX 0.32).
            self.engine = None
            try:
                mx.synchronize()
            finally:
                mx.clear_streams()
                self._started.set()
                self._stopped.set()
