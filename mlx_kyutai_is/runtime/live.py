# Copyright © 2026 mlx-kyutai-is contributors
"""`LiveEngine`: many concurrent live streams on one `Engine` running on a background thread.

For a server or many microphones: `open()` returns a `LiveStream` whose `feed`, `flush` and
`close` are thread-safe and never wait for the device; words come back as `Event`s. Clients talk
to the engine thread through small typed commands (`_Feed`, `_Flush`, `_Close`).
"""

import concurrent.futures
import logging
import queue
import threading
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
        # Engine-thread state: the current utterance's engine stream, partial texts sent.
        self._current: StreamState | None = None
        self._partials: dict = {}

    def feed(self, samples):
        """Queue audio of the current utterance: float32 in [-1, 1] or int16 PCM, mono, 24 kHz
        (see `audio.prepare_array`); a feed after `flush()` starts the next utterance."""
        x = prepare_array(samples, allow_empty=True)
        if len(x):
            self.engine._submit(_Feed(self, x))

    def flush(self) -> concurrent.futures.Future:
        """End the current utterance; the future's result is its `Result` once every word is out."""
        future = concurrent.futures.Future()
        self.engine._submit(_Flush(self, future))
        return future

    def close(self):
        """Leave now: the stream's slot is free at once and its pending work dropped."""
        if not self.closed:
            self.closed = True
            self.engine._release(self)
            self.engine._submit(_Close(self))

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
        Streams open at once; `open()` raises `EngineFull` beyond it.
    """

    def __init__(self, stt, max_streams: int = 64):
        if isinstance(max_streams, bool) or not isinstance(max_streams, int) or max_streams < 1:
            raise ValueError(f"max_streams must be a positive integer, got {max_streams!r}")
        self.stt = stt
        self.max_streams = max_streams
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

    def _release(self, s: LiveStream):
        with self._lock:
            self._open -= 1

    def _submit(self, command):
        self._commands.put(command)
        self._wake.set()

    def stats(self) -> dict:
        """Streams open, engine steps, rows per step (how many streams stepped together)."""
        e = self.engine
        stats = e.stats() if e is not None else dict(steps=0)
        return {**stats, "active_streams": self._open, "max_streams": self.max_streams}

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
    def _apply(self, command: "_Feed | _Flush | _Close"):
        s = command.stream
        if s.closed and not isinstance(command, _Close):
            return
        e = self.engine
        if not isinstance(command, _Close) and (s._current is None or s._current.finishing):
            s._current = e.open(s.task, s.options)  # the stream's next utterance
            s._partials = {}
            self._owners[s._current.id] = s
        if isinstance(command, _Feed):
            e.push(s._current, command.samples)
        elif isinstance(command, _Flush):
            e.finish(s._current)
            self._flushing[s._current.id] = (s, command.future, s.utterance)
            s.utterance += 1
        else:
            for es_id, owner in list(self._owners.items()):
                if owner is s:
                    if es_id in self._flushing:
                        self._flushing.pop(es_id)[1].cancel()
                    if es_id in e.streams:
                        e.close(e.streams[es_id])
                    del self._owners[es_id]
            s._current = None

    def _deliver(self):
        """Hand the new words, partials and finished utterances to their clients."""
        e = self.engine
        for es in list(e.streams.values()):
            entry = self._flushing.get(es.id)
            owner = self._owners.get(es.id)
            if owner is None:
                continue
            utt = entry[2] if entry else owner.utterance
            for w in es.take_words():
                owner._emit(Event("word", w.task, w, w.text, utterance=utt, audio_time=es.audio_time))
            if entry is None or not es.done:
                for task, a in es.assemblers.items():
                    text = a.partial
                    if owner._partials.get(task, "") != text:
                        owner._partials[task] = text
                        owner._emit(Event("partial", task, text=text, utterance=utt, audio_time=es.audio_time))
            if es.done and entry is not None:
                transcripts = Result(es.task, es.transcripts())
                self._flushing.pop(es.id)
                self._owners.pop(es.id)
                e.close(es)
                if owner._current is es:
                    owner._current = None
                owner._partials = {}
                owner._emit(Event("done", transcripts=transcripts, utterance=utt, audio_time=es.duration))
                if not entry[1].cancelled():
                    entry[1].set_result(transcripts)

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
                if self._closing and not self._flushing:
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
