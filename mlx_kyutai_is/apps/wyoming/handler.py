# Copyright © 2026 mlx-kyutai-is contributors
"""One Wyoming connection: an `AsyncEventHandler` whose utterances are rows of the shared engine.

Client events: ``describe`` (answered with ``info``), ``transcribe`` (its ``language`` and ``name``
pick the task), ``audio-start`` (any rate, width, channels), ``audio-chunk``..., ``audio-stop``;
``ping`` (``pong``) and ``select-program`` (this program's name) are understood too.

Server events for an utterance: ``transcript-start`` at ``audio-start``; a ``transcript-chunk`` for
each word of the first task as it becomes final (the chunks' texts, joined, are the transcript);
at ``audio-stop`` the utterance is flushed, then ``transcript`` (one per task: ``both`` gives the
Icelandic then the English one, each naming its ``language``) and ``transcript-stop``.

Bounds: an utterance takes its task's rows (1, or 2 for ``both``) from the server's count at
``audio-start`` and gives them back when its transcript is sent or the client leaves; the audio
the model has not read yet is capped per connection (reading the client's next event waits:
TCP pushes back); a connection with nothing to say for `idle_timeout` seconds is closed; events
are read with a size limit. A bad event gets an ``error`` event: the connection goes on when only
that event is dropped, and is closed when the request cannot go on (see `info.RequestError`).
"""

import asyncio
import json
import logging

from wyoming.asr import (
    Transcribe,
    Transcript,
    TranscriptChunk,
    TranscriptStart,
    TranscriptStop,
)
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error as ErrorEvent
from wyoming.event import Event
from wyoming.info import Describe, SelectProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from ...runtime.live import EngineFull
from ...runtime.protocol import TextDeltas
from ...tasks import task_list
from .info import PROGRAM, RequestError, pick_task
from .pcm import PcmConverter

log = logging.getLogger("mlx_kyutai_is")

CLOSE_FLUSH_S = 5.0  # how long the last events may take to reach a client that is leaving


class BadFrame(Exception):
    """The byte stream is not Wyoming events (framing lost): answered, then the connection closes."""


async def read_event(reader: asyncio.StreamReader, max_bytes: int) -> Event | None:
    """`wyoming.event.async_read_event`, with limits: a header line is at most the reader's limit
    (64 KiB), `data_length` and `payload_length` at most `max_bytes`, so one event cannot make the
    server buffer without bound. None at the end of the stream."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: a header line over the limit
        raise BadFrame("event header line too long") from None
    if not line:
        return None
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise BadFrame(f"event header is not JSON ({type(e).__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise BadFrame("event header must be a JSON object with a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise BadFrame("event 'data' must be an object")
    lengths = []
    for key in ("data_length", "payload_length"):
        n = header.get(key) or 0
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= max_bytes:
            raise BadFrame(f"event {key} must be an integer in 0..{max_bytes}, got {n!r}")
        lengths.append(n)
    try:
        if lengths[0]:
            try:
                extra = json.loads(await reader.readexactly(lengths[0]))
            except (ValueError, RecursionError) as e:
                raise BadFrame(f"event data is not JSON ({type(e).__name__})") from None
            if not isinstance(extra, dict):
                raise BadFrame("event data must be a JSON object")
            data.update(extra)
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        return None
    return Event(type=header["type"], data=data, payload=payload)


class Utterance:
    """audio-start .. transcript-stop: one stream of the engine and the rows it holds."""

    def __init__(self, task: str, stream, converter: PcmConverter, decode):
        self.task = task
        self.tasks = task_list(task)
        self.rows = len(self.tasks)
        self.stream = stream
        self.converter = converter
        self.deltas = TextDeltas(decode)
        self.stopped = False  # audio-stop seen: flushing
        self.finished = asyncio.Event()  # transcript sent, or abandoned


class WyomingHandler(AsyncEventHandler):
    """A connection's event handler (one per client, made by `WyomingServer`).

    Parameters
    ----------
    server : WyomingServer
        The shared engine, the row count, the limits and the `info` answer.
    reader, writer : asyncio streams
    """

    def __init__(self, server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        super().__init__(reader, writer)
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()  # events to the client, in order; None ends
        self.task = server.default_task
        self.utterance: Utterance | None = None

    # -- the connection ----------------------------------------------------------------------
    async def run(self):
        """Read events until the client leaves, goes idle, sends garbage, or the server stops."""
        self.server.handlers.add(self)
        sender = asyncio.create_task(self._send_loop())
        reading = None
        closing = asyncio.create_task(self.server.closing.wait())
        try:
            if self.server.closing.is_set():
                self.send(ErrorEvent("the server is shutting down", "shutting-down").event())
                return
            while True:
                reading = reading or asyncio.create_task(read_event(self.reader, self.server.max_event_bytes))
                done, _ = await asyncio.wait(
                    {reading, closing}, timeout=self.server.idle_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if closing in done:
                    await self._finish_for_shutdown()
                    return
                if reading not in done:
                    if self.utterance is not None and self.utterance.stopped:
                        continue  # waiting for the engine, not for the client
                    self.send(
                        ErrorEvent(f"no event for {self.server.idle_timeout:g} s: closing", "idle-timeout").event()
                    )
                    return
                try:
                    event = reading.result()
                except BadFrame as e:
                    self.send(ErrorEvent(f"bad event: {e}; closing", "bad-event").event())
                    return
                except (ConnectionError, OSError):
                    return
                reading = None
                if event is None or not await self.handle_event(event):
                    return
        finally:
            for t in (reading, closing):
                if t is not None:
                    t.cancel()
            await self.disconnect()
            self.outbox.put_nowait(None)
            try:
                await asyncio.wait_for(sender, CLOSE_FLUSH_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
            self.writer.close()
            self.server.handlers.discard(self)

    async def disconnect(self):
        """The client is gone (or is being closed): its rows are freed at once."""
        if self.utterance is not None:
            self._end(self.utterance)

    def send(self, event: Event):
        self.outbox.put_nowait(event)

    async def _send_loop(self):
        while (event := await self.outbox.get()) is not None:
            try:
                await self.write_event(event)
            except (ConnectionError, OSError):
                return

    async def _finish_for_shutdown(self):
        """Shutting down: the utterance in progress is ended as if the client had stopped, and its
        transcript sent; then the connection closes."""
        u = self.utterance
        if u is None:
            return
        if not u.stopped:
            self._stop(u)
        await u.finished.wait()

    # -- client events -----------------------------------------------------------------------
    async def handle_event(self, event: Event) -> bool:
        """Handle one client event; False closes the connection."""
        try:
            await self._dispatch(event)
        except RequestError as e:
            self.send(ErrorEvent(e.text, e.code).event())
            if e.fatal and self.utterance is not None:
                self._end(self.utterance)
            return not e.fatal
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a known event of the wrong shape
            self.send(ErrorEvent(f"{event.type}: malformed event ({type(e).__name__}: {e})", "bad-event").event())
        except Exception as e:  # a bug: this connection ends with an error event, the server goes on
            log.error("wyoming: %s failed: %s: %s", event.type, type(e).__name__, e)
            self.send(ErrorEvent(f"{event.type}: server error ({type(e).__name__})", "server-error").event())
            return False
        return True

    async def _dispatch(self, event: Event):
        kind = event.type
        if AudioChunk.is_type(kind):
            await self._audio_chunk(event)
        elif AudioStart.is_type(kind):
            self._audio_start(AudioStart.from_event(event))
        elif AudioStop.is_type(kind):
            if self.utterance is None or self.utterance.stopped:
                raise RequestError("audio-stop without audio-start", "audio-before-start")
            self._stop(self.utterance)
        elif Transcribe.is_type(kind):
            if self.utterance is not None and not self.utterance.stopped:
                raise RequestError("transcribe during an utterance (send it before audio-start)", "bad-order")
            t = Transcribe.from_event(event)
            self.task = pick_task(t.language, t.name, self.server.model_name, self.server.default_task)
        elif Describe.is_type(kind):
            self.send(self.server.info.event())
        elif Ping.is_type(kind):
            self.send(Pong(text=Ping.from_event(event).text).event())
        elif SelectProgram.is_type(kind):
            name = SelectProgram.from_event(event).name
            if name != PROGRAM:
                raise RequestError(f"program {name!r} is not served here: {PROGRAM!r}", "unknown-program", True)
        else:
            raise RequestError(
                f"unsupported event type {kind!r} (this is a speech-to-text server: describe, transcribe, "
                "audio-start, audio-chunk, audio-stop)",
                "unknown-event",
            )

    def _audio_start(self, start: AudioStart):
        if self.utterance is not None:
            # One utterance at a time per connection: its rows are bounded by the task's.
            raise RequestError("audio-start before the previous utterance's transcript-stop", "bad-order")
        converter = PcmConverter(start.rate, start.width, start.channels, self.server.stt.sample_rate)
        rows = len(task_list(self.task))
        if not self.server.take_rows(rows):
            raise RequestError(
                f"all {self.server.max_rows} engine rows are busy ({rows} needed): try again shortly", "busy", True
            )
        holder = {}

        def on_event(ev):  # on the engine thread: words, the end of the utterance, failures
            if ev.type == "partial":
                return
            try:
                self.loop.call_soon_threadsafe(self._on_engine_event, holder["u"], ev)
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        try:
            stream = self.server.engine.open(self.task, on_event=on_event, options=self.server.options)
        except (EngineFull, RuntimeError) as e:
            self.server.give_rows(rows)
            raise RequestError(f"cannot start a stream: {e}", "busy", True) from None
        u = holder["u"] = Utterance(self.task, stream, converter, self.server.stt.tokenizer.decode)
        self.utterance = u
        self.send(TranscriptStart(language=u.tasks[0]).event())

    async def _audio_chunk(self, event: Event):
        u = self.utterance
        if u is None or u.stopped:
            raise RequestError("audio-chunk before audio-start: chunk dropped", "audio-before-start")
        c = u.converter
        rate, width, channels = (event.data.get(k) for k in ("rate", "width", "channels"))
        if (rate, width, channels) != (c.rate, c.width, c.channels):
            raise RequestError(
                f"audio-chunk format {rate} Hz x {width} bytes x {channels} ch differs from audio-start's "
                f"({c.rate} x {c.width} x {c.channels}): chunk dropped",
                "bad-audio",
            )
        samples = c(event.payload or b"")
        if len(samples):
            u.stream.feed(samples)
        # Backpressure: the client's next event waits while the model is behind by more than the
        # cap, so a client sending faster than the engine reads holds a bounded amount of audio.
        await asyncio.wrap_future(u.stream.when_unread_below(self.server.max_unread_seconds))

    def _stop(self, u: Utterance):
        u.stopped = True
        rest = u.converter.finish()
        if len(rest):
            u.stream.feed(rest)
        u.stream.flush()  # answered by the engine's "done" event after the utterance's last words

    # -- engine events (on the event loop) ---------------------------------------------------
    def _on_engine_event(self, u: Utterance, ev):
        if u is not self.utterance:  # an utterance abandoned (client gone, fatal error)
            return
        if ev.type == "word":
            if ev.task == u.tasks[0] and (delta := u.deltas.add(ev.word)):
                self.send(TranscriptChunk(delta).event())
        elif ev.type == "done":
            transcripts = ev.transcripts.transcripts
            first = transcripts[u.tasks[0]].text
            if rest := u.deltas.finish(first):
                self.send(TranscriptChunk(rest).event())
            for task in u.tasks:
                self.send(Transcript(transcripts[task].text, language=task).event())
            self.send(TranscriptStop().event())
            self._end(u)
        elif ev.type == "error":
            self.send(ErrorEvent(f"transcription failed: {ev.text}", "engine-error").event())
            self._end(u)

    def _end(self, u: Utterance):
        """The utterance is over (answered, abandoned or failed): its stream and rows are freed."""
        if self.utterance is u:
            self.utterance = None
        if not u.finished.is_set():
            u.stream.close()
            self.server.give_rows(u.rows)
            u.finished.set()
