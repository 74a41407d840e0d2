# Copyright © 2026 mlx-kyutai-is contributors
"""Realtime transcription over a websocket, in OpenAI's event protocol (``/v1/realtime?intent=transcription``).

One websocket is one stream (one row) of the server's shared `LiveEngine`. Client events:

- ``session.update`` (GA: ``session.audio.input.transcription``, ``session.audio.input.format``) or
  ``transcription_session.update`` (beta: ``session.input_audio_transcription``,
  ``session.input_audio_format``). The transcription's ``language`` picks the task: ``is`` (the
  default) Icelandic text, ``en`` the English translation, ``both`` (ours) the two at once.
- ``input_audio_buffer.append``: ``audio`` = base64 pcm16 little-endian mono at 24 kHz.
- ``input_audio_buffer.commit``: ends the utterance (the engine flushes it: the pending words come out).
- ``input_audio_buffer.clear``: drops the utterance not yet committed.

Server events: ``session.created`` / ``session.updated`` (``transcription_session.*`` for beta
clients), ``input_audio_buffer.committed`` / ``.cleared``, ``conversation.item.created``,
``conversation.item.input_audio_transcription.delta`` as each word becomes final (the deltas of an
item add up to its transcript) and ``...completed`` with the whole ``transcript`` after a commit;
``error`` for a bad client event, the connection staying up. There is no server VAD: the client
commits (``turn_detection`` is reported as null).

Our additions, which OpenAI's clients ignore: every delta/completed event names its ``language``
(``is``/``en``), a delta carries the word's ``start``/``end`` (seconds into the utterance) and the
``audio_time`` the engine had read when the word came out, a completed event the ``duration`` of
audio the transcript covers; with ``"include":
["item.input_audio_transcription.partial"]`` in the session, ``...partial`` events carry the words
still being decided (``text``) whenever they change.
"""

import asyncio
import base64
import binascii
import json
import secrets

import numpy as np

from ...errors import Error
from ...runtime.live import EngineFull
from ...tasks import task_list
from .schemas import TextDeltas

# OpenAI realtime audio is pcm16 at 24 kHz (its protocol's rate, which is also Mimi's).
PCM_RATE = 24_000
PARTIAL_INCLUDE = "item.input_audio_transcription.partial"
# language -> task; "both" is ours (Icelandic text and its English translation at once).
LANGUAGE_TASKS = {"is": "is", "en": "en", "both": "both", None: "is", "": "is"}
TRANSCRIPTION = "conversation.item.input_audio_transcription"


class ClientError(Error):
    """A bad client event: sent back as an ``error`` event; the session goes on."""

    def __init__(self, message: str, code: str = "invalid_event", param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def parse_session(event: dict) -> dict:
    """The settings a ``session.update`` / ``transcription_session.update`` asks for.

    Returns
    -------
    dict
        ``task`` (only if the event names a language), ``include`` (only if given),
        ``model`` (only if given). Raises `ClientError` for what this server cannot do.
    """
    session = event.get("session")
    if not isinstance(session, dict):
        raise ClientError(f"{event['type']}: 'session' must be an object", param="session")
    out = {}
    if session.get("type") not in (None, "transcription"):
        raise ClientError(
            f"session.type: {session['type']!r} is not supported: this server only transcribes "
            "(connect to /v1/realtime?intent=transcription and use type 'transcription')",
            code="unsupported_session_type",
            param="session.type",
        )
    audio_in = (session.get("audio") or {}).get("input") or {}
    if not isinstance(audio_in, dict):
        raise ClientError("session.audio.input must be an object", param="session.audio.input")
    transcription = audio_in.get("transcription", session.get("input_audio_transcription"))
    fmt = audio_in.get("format", session.get("input_audio_format"))
    if fmt is not None:
        _check_format(fmt)
    if transcription is not None:
        if not isinstance(transcription, dict):
            raise ClientError("session: the transcription settings must be an object", param="transcription")
        language = transcription.get("language")
        if language not in LANGUAGE_TASKS:
            raise ClientError(
                f"transcription.language: {language!r} is not supported: 'is' (Icelandic text), "
                "'en' (English translation) or 'both'",
                code="unsupported_language",
                param="transcription.language",
            )
        out["task"] = LANGUAGE_TASKS[language]
        if transcription.get("model"):
            out["model"] = str(transcription["model"])
    if "include" in session:
        include = session["include"] or []
        if not isinstance(include, list):
            raise ClientError("session.include must be a list", param="session.include")
        out["include"] = [str(x) for x in include]
    return out


def _check_format(fmt):
    if isinstance(fmt, str):  # beta: "pcm16"
        ok = fmt == "pcm16"
    elif isinstance(fmt, dict):  # GA: {"type": "audio/pcm", "rate": 24000}
        ok = fmt.get("type") == "audio/pcm" and fmt.get("rate", PCM_RATE) == PCM_RATE
    else:
        ok = False
    if not ok:
        raise ClientError(
            f"input audio format {fmt!r} is not supported: send pcm16 (audio/pcm) mono at {PCM_RATE} Hz",
            code="unsupported_audio_format",
            param="format",
        )


def decode_audio(event: dict) -> np.ndarray:
    """The int16 samples of an ``input_audio_buffer.append``; `ClientError` for bad base64 or an
    odd byte count."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ClientError("input_audio_buffer.append: 'audio' must be a base64 string", param="audio")
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ClientError(
            f"input_audio_buffer.append: 'audio' is not valid base64 ({e})", code="invalid_base64", param="audio"
        ) from None
    if len(raw) % 2:
        raise ClientError(
            f"input_audio_buffer.append: {len(raw)} bytes is not whole pcm16 samples (2 bytes each)",
            code="invalid_audio",
            param="audio",
        )
    return np.frombuffer(raw, dtype="<i2")


class _Item:
    """One utterance: its conversation item and the text sent so far per task."""

    def __init__(self, tasks, decode):
        self.id = new_id("item")
        self.deltas = {t: TextDeltas(decode) for t in tasks}
        self.samples = 0


class _SessionStream:
    """The session's stream on the engine (one `LiveStream`, one row per task) and its utterances."""

    def __init__(self, serial: int, stream, tasks: list[str]):
        self.serial = serial
        self.stream = stream
        self.tasks = tasks
        self.items: dict[int, _Item] = {}  # utterance index (the engine's) -> item
        self.utterance = 0  # the utterance appended audio goes to
        self.pending = 0  # commits whose transcript has not come back yet


class RealtimeSession:
    """One websocket's transcription session on the shared engine.

    `handle()` takes each client message and queues the server events on `outbox`;
    `on_engine_event()` turns an engine event into server events. The websocket loop in `app.py`
    sends what they return, in order, from one task.

    Parameters
    ----------
    engine : LiveEngine
    decode : callable
        The tokenizer's ``decode(ids) -> str``.
    model_name : str
    beta : bool
        Name the session events ``transcription_session.*`` (beta clients) rather than ``session.*``.
    options : StreamOptions, optional
        Passed to `LiveEngine.open` (default: the model's).
    """

    def __init__(self, engine, decode, model_name: str, beta: bool = False, options=None):
        self.engine = engine
        self.decode = decode
        self.model_name = model_name
        self.beta = beta
        self.options = options
        self.id = new_id("sess")
        self.task = "is"
        self.include: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.row: _SessionStream | None = None
        self.retiring: dict[int, _SessionStream] = {}  # old rows finishing their committed utterances
        self.previous_item_id = None
        self.audio_seconds = 0.0  # audio received, all utterances
        self._serial = 0
        self._event_serial = 0

    # -- engine rows -------------------------------------------------------------------------
    def open(self):
        """Take a row of the engine for the current task (raises `EngineFull`)."""
        self.row = self._new_row()

    def _new_row(self) -> _SessionStream:
        self._serial += 1
        serial, loop, outbox = self._serial, self.loop, self.outbox

        def on_event(ev):  # called on the engine thread
            try:
                loop.call_soon_threadsafe(outbox.put_nowait, ("engine", serial, ev))
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        stream = self.engine.open(task=self.task, on_event=on_event, options=self.options)
        return _SessionStream(serial, stream, task_list(self.task))

    def _replace_row(self, why: str):
        """A fresh row for the session; the old one is left once its commits are answered.
        Audio appended to the old row but not committed is dropped."""
        try:
            new = self._new_row()
        except EngineFull:
            raise ClientError(f"all stream slots are busy: {why}", code="engine_overloaded") from None
        old, self.row = self.row, new
        old.items.pop(old.utterance, None)
        if old.pending:
            self.retiring[old.serial] = old
        else:
            old.stream.close()

    def close(self):
        """Leave the engine at once (the client is gone): every row's slot is freed."""
        for row in [self.row, *self.retiring.values()]:
            if row is not None:
                row.stream.close()
        self.row, self.retiring = None, {}

    @property
    def pending(self) -> int:
        """Commits not answered yet, on every row."""
        return sum(r.pending for r in [self.row, *self.retiring.values()] if r is not None)

    @property
    def uncommitted_samples(self) -> int:
        item = self.row.items.get(self.row.utterance) if self.row is not None else None
        return item.samples if item is not None else 0

    def _item(self) -> _Item:
        row = self.row
        if row.utterance not in row.items:
            row.items[row.utterance] = _Item(row.tasks, self.decode)
        return row.items[row.utterance]

    # -- events out --------------------------------------------------------------------------
    def event(self, type_: str, **fields) -> dict:
        self._event_serial += 1
        return {"type": type_, "event_id": f"event_{self.id[5:15]}{self._event_serial:06d}", **fields}

    def emit(self, type_: str, **fields):
        self.outbox.put_nowait(("send", self.event(type_, **fields)))

    def emit_error(self, message: str, code: str, param=None, client_event_id=None, type_="invalid_request_error"):
        self.emit("error", error=error_object(message, code, param, client_event_id, type_))

    def session_object(self) -> dict:
        transcription = {"model": self.model_name, "language": self.task, "prompt": ""}
        if self.beta:
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "modalities": ["text"],
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": None,
                "input_audio_noise_reduction": None,
                "include": self.include,
            }
        return {
            "id": self.id,
            "object": "realtime.transcription_session",
            "type": "transcription",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": PCM_RATE},
                    "transcription": transcription,
                    "turn_detection": None,
                    "noise_reduction": None,
                }
            },
            "include": self.include,
        }

    def emit_session(self, what: str):
        """``session.created`` / ``session.updated`` (``transcription_session.*`` for beta clients)."""
        prefix = "transcription_session" if self.beta else "session"
        self.emit(f"{prefix}.{what}", session=self.session_object())

    # -- client events -----------------------------------------------------------------------
    def handle(self, text):
        """Handle one client message; a bad one gives an ``error`` event and changes nothing."""
        client_event_id = None
        try:
            if not isinstance(text, str):
                raise ClientError("send events as JSON text frames, not binary", code="invalid_event")
            try:
                event = json.loads(text)
            except json.JSONDecodeError as e:
                raise ClientError(f"message is not valid JSON ({e})", code="invalid_json") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ClientError("message must be a JSON object with a string 'type'", param="type")
            client_event_id = event.get("event_id")
            handler = self.HANDLERS.get(event["type"])
            if handler is None:
                raise ClientError(f"unsupported event type {event['type']!r}", code="unknown_event", param="type")
            handler(self, event)
        except ClientError as e:
            self.emit_error(e.message, e.code, e.param, client_event_id)

    def on_session_update(self, event: dict):
        if event["type"] == "transcription_session.update":
            self.beta = True
        settings = parse_session(event)
        task = settings.get("task", self.task)
        if task != self.task:
            # A row decodes one task set, so a new task takes a new row; audio not committed
            # yet is committed first, so nothing said is lost.
            if self.uncommitted_samples:
                self.commit()
            old_task, self.task = self.task, task
            try:
                self._replace_row("the language was not changed")
            except ClientError:
                self.task = old_task
                raise
        if "include" in settings:
            self.include = settings["include"]
        self.emit_session("updated")

    def on_append(self, event: dict):
        samples = decode_audio(event)
        if len(samples) == 0:
            return
        self._item().samples += len(samples)
        self.audio_seconds += len(samples) / PCM_RATE
        self.row.stream.feed(samples)

    def on_commit(self, event: dict):
        if not self.uncommitted_samples:
            raise ClientError(
                "input_audio_buffer.commit: the buffer is empty (append audio first)",
                code="input_audio_buffer_commit_empty",
            )
        self.commit()

    def commit(self):
        """End the utterance: the engine flushes it and answers with its transcript."""
        row, item = self.row, self._item()
        self.emit("input_audio_buffer.committed", previous_item_id=self.previous_item_id, item_id=item.id)
        self.emit(
            "conversation.item.created",
            previous_item_id=self.previous_item_id,
            item={
                "id": item.id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            },
        )
        self.previous_item_id = item.id
        row.pending += 1
        row.utterance += 1
        row.stream.flush()  # answered by the engine's "done" event, after the utterance's words

    def on_clear(self, event: dict):
        if self.uncommitted_samples:  # the audio is in the engine already: leave the row
            self._replace_row("the buffer could not be cleared")
        self.emit("input_audio_buffer.cleared")

    HANDLERS = {
        "session.update": on_session_update,
        "transcription_session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
    }

    # -- engine events -----------------------------------------------------------------------
    def on_engine_event(self, serial: int, ev) -> list[dict]:
        """The server events for one engine event of row `serial` (none for a row left)."""
        row = self.row if self.row is not None and self.row.serial == serial else self.retiring.get(serial)
        if row is None:
            return []
        item = row.items.get(ev.utterance)
        if item is None:  # an utterance cleared away
            return []
        if ev.type == "word":
            delta = item.deltas[ev.task].add(ev.word)
            if not delta:
                return []
            return [
                self.event(
                    f"{TRANSCRIPTION}.delta",
                    item_id=item.id,
                    content_index=0,
                    delta=delta,
                    language=ev.task,
                    start=round(float(ev.word.start), 3),
                    end=round(float(ev.word.end), 3),
                    audio_time=round(float(ev.audio_time), 3),
                )
            ]
        if ev.type == "partial":
            if PARTIAL_INCLUDE not in self.include:
                return []
            return [
                self.event(
                    f"{TRANSCRIPTION}.partial",
                    item_id=item.id,
                    content_index=0,
                    text=ev.text,
                    language=ev.task,
                    audio_time=round(float(ev.audio_time), 3),
                )
            ]
        if ev.type == "done":
            out = []
            for task in row.tasks:
                transcript = (ev.transcripts or {}).get(task)
                text = transcript.text if transcript is not None else item.deltas[task].sent
                if rest := item.deltas[task].finish(text):
                    out.append(
                        self.event(
                            f"{TRANSCRIPTION}.delta", item_id=item.id, content_index=0, delta=rest, language=task
                        )
                    )
                duration = round(float(transcript.duration), 3) if transcript is not None else None
                out.append(
                    self.event(
                        f"{TRANSCRIPTION}.completed",
                        item_id=item.id,
                        content_index=0,
                        transcript=text,
                        language=task,
                        duration=duration,
                    )
                )
            del row.items[ev.utterance]
            row.pending -= 1
            if row.serial in self.retiring and row.pending == 0:
                self.retiring.pop(row.serial).stream.close()
            return out
        if ev.type == "error":
            return [self.event("error", error=error_object(ev.text, "engine_error", type_="server_error"))]
        return []


def error_object(message: str, code: str, param=None, event_id=None, type_="invalid_request_error") -> dict:
    return {"type": type_, "code": code, "message": message, "param": param, "event_id": event_id}
