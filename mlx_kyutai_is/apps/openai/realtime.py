# Copyright © 2026 mlx-kyutai-is contributors
"""Realtime transcription over a websocket, in OpenAI's event protocol (``/v1/realtime?intent=transcription``).

One websocket is one stream of the server's shared `LiveEngine` (its utterances still being flushed
hold a slot each, at most the engine's ``max_utterances``). Client events:

- ``session.update`` (GA: ``session.audio.input.transcription``, ``session.audio.input.format``) or
  ``transcription_session.update`` (beta: ``session.input_audio_transcription``,
  ``session.input_audio_format``). The transcription's ``language`` picks the task: ``is`` (the
  default) Icelandic text, ``en`` the English translation, ``both`` (ours) the two at once.
- ``input_audio_buffer.append``: ``audio`` = base64 pcm16 little-endian mono at 24 kHz.
- ``input_audio_buffer.commit``: ends the utterance (the engine flushes it: the pending words come out).
- ``input_audio_buffer.clear``: drops the utterance not yet committed (its engine slot at once).

Turn detection (``session.audio.input.turn_detection``, beta ``session.turn_detection``): by default,
as OpenAI documents for transcription sessions, ``server_vad`` with ``threshold`` 0.5,
``prefix_padding_ms`` 300 and ``silence_duration_ms`` 500. A voice-activity detector (Silero VAD,
`audio.vad`) hears the appended audio: where speech starts (``input_audio_buffer.speech_started``,
``audio_start_ms`` = the first speech chunk less the prefix padding), the utterance's audio starts
going to the engine; audio outside speech is not decoded (the server keeps only the last
``prefix_padding_ms`` + 0.5 s of it). Once ``silence_duration_ms`` of silence has been heard
(``input_audio_buffer.speech_stopped``, ``audio_end_ms`` = the end of the audio the item holds,
silence included, as OpenAI counts it) the item is committed exactly as a client's commit does: it
is flushed as its own utterance, so its ``completed`` comes as soon as the engine has decoded the
flush's padding, and the next utterance is a new engine stream (at most ``max_utterances`` of a
session at once, every one counted against the engine's ``max_streams``). ``semantic_vad`` is
mapped onto the same detector: ``eagerness`` ``high`` waits 0.5 s of silence, ``medium``/``auto``
1 s, ``low`` 2 s (OpenAI's maximum waits of 2, 4 and 8 s, a quarter of each). A client's own commit
still works (during speech it ends the item there and the rest of the speech is the next item);
``turn_detection: null`` turns detection off: the client commits, and all its audio is decoded.

Server events: ``session.created`` / ``session.updated`` (``transcription_session.*`` for beta
clients), ``input_audio_buffer.committed`` / ``.cleared``, ``conversation.item.created``,
``conversation.item.input_audio_transcription.delta`` as each word becomes final (the deltas of an
item add up to its transcript) and ``...completed`` with the whole ``transcript`` after a commit;
``input_audio_buffer.speech_started`` / ``.speech_stopped`` with turn detection on; ``error`` for a
bad client event (wrong JSON, a field of the wrong type, anything the handler could not do), the
connection staying up. A session with more than ``max_unread_seconds`` of audio
waiting for the engine gets an ``error`` event (``input_audio_buffer_overflow``) and is closed (1008).

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
import logging
import secrets

import numpy as np

from ...audio.vad import CHUNK_SECONDS, SpeechParams, SpeechTracker, VoiceActivity
from ...errors import Error
from ...tasks import task_list
from .schemas import TextDeltas

log = logging.getLogger("mlx_kyutai_is.serve")

# OpenAI realtime audio is pcm16 at 24 kHz (its protocol's rate, which is also Mimi's).
PCM_RATE = 24_000
# Commits of one session waiting for their transcripts; one more is refused (an error event).
MAX_PENDING_COMMITS = 16
PARTIAL_INCLUDE = "item.input_audio_transcription.partial"
# language -> task; "both" is ours (Icelandic text and its English translation at once).
LANGUAGE_TASKS = {"is": "is", "en": "en", "both": "both", None: "is", "": "is"}
TRANSCRIPTION = "conversation.item.input_audio_transcription"
# OpenAI's documented default for a transcription session that names no turn detection.
DEFAULT_TURN_DETECTION = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}
# semantic_vad's eagerness -> the silence (ms) that ends an utterance: a quarter of OpenAI's maximum
# waits (high 2 s, medium and auto 4 s, low 8 s), so that "high" is server_vad's default.
EAGERNESS_SILENCE_MS = {"high": 500, "medium": 1000, "auto": 1000, "low": 2000}
MAX_PREFIX_PADDING_MS = 5_000  # bounds the audio a session keeps outside speech
MAX_SILENCE_DURATION_MS = 10_000
# Audio kept beyond the prefix padding outside speech: the detector hears a chunk (32 ms) a little
# after it arrives (the resampler's delay), and a start is the chunk's start less the padding.
HOLD_MARGIN_S = 0.5
VAD_CHUNK = round(CHUNK_SECONDS * PCM_RATE)  # 768 samples at 24 kHz: one detector chunk


class ClientError(Error):
    """A bad client event: sent back as an ``error`` event; the session goes on."""

    def __init__(self, message: str, code: str = "invalid_event", param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


def _object(value, where: str) -> dict:
    """`value` if it is a JSON object (None: an empty one); `ClientError` naming `where` otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClientError(f"{where} must be an object, got {_json_type(value)}", param=where)
    return value


def _json_type(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def parse_session(event: dict) -> dict:
    """The settings a ``session.update`` / ``transcription_session.update`` asks for.

    Returns
    -------
    dict
        ``task`` (only if the event names a language), ``include`` (only if given),
        ``model`` (only if given). Raises `ClientError` for a field of the wrong type or what this
        server cannot do.
    """
    if not isinstance(event.get("session"), dict):
        raise ClientError(f"{event['type']}: 'session' must be an object", param="session")
    session = event["session"]
    out = {}
    if session.get("type") not in (None, "transcription"):
        raise ClientError(
            f"session.type: {str(session['type'])[:50]!r} is not supported: this server only transcribes "
            "(connect to /v1/realtime?intent=transcription and use type 'transcription')",
            code="unsupported_session_type",
            param="session.type",
        )
    audio_in = _object(_object(session.get("audio"), "session.audio").get("input"), "session.audio.input")
    transcription = audio_in.get("transcription", session.get("input_audio_transcription"))
    fmt = audio_in.get("format", session.get("input_audio_format"))
    if fmt is not None:
        _check_format(fmt)
    if transcription is not None:
        transcription = _object(transcription, "session.transcription")
        language = transcription.get("language")
        if not isinstance(language, (str, type(None))) or language not in LANGUAGE_TASKS:
            raise ClientError(
                f"transcription.language: {str(language)[:50]!r} is not supported: 'is' (Icelandic text), "
                "'en' (English translation) or 'both'",
                code="unsupported_language",
                param="transcription.language",
            )
        out["task"] = LANGUAGE_TASKS[language]
        model = transcription.get("model")
        if model is not None and not isinstance(model, str):
            raise ClientError("transcription.model must be a string", param="transcription.model")
        if model:
            out["model"] = model
    if "turn_detection" in audio_in or "turn_detection" in session:
        out["turn_detection"] = parse_turn_detection(audio_in.get("turn_detection", session.get("turn_detection")))
    if "include" in session:
        include = session["include"] or []
        if not isinstance(include, list) or not all(isinstance(x, str) for x in include):
            raise ClientError("session.include must be a list of strings", param="session.include")
        out["include"] = include
    return out


def parse_turn_detection(value) -> dict | None:
    """The turn detection a session asks for, as the session reports it (None: off); fields left
    out take OpenAI's defaults. Raises `ClientError` for a wrong type, range or kind."""
    if value is None:
        return None
    value = _object(value, "turn_detection")
    kind = value.get("type", "server_vad")
    if kind == "server_vad":
        threshold = value.get("threshold", DEFAULT_TURN_DETECTION["threshold"])
        if type(threshold) not in (int, float) or not 0 < threshold < 1:
            raise ClientError(
                f"turn_detection.threshold must be a number between 0 and 1, got {str(threshold)[:50]}",
                param="turn_detection.threshold",
            )
        return {
            "type": "server_vad",
            "threshold": float(threshold),
            "prefix_padding_ms": _milliseconds(value, "prefix_padding_ms", MAX_PREFIX_PADDING_MS),
            "silence_duration_ms": _milliseconds(value, "silence_duration_ms", MAX_SILENCE_DURATION_MS),
        }
    if kind == "semantic_vad":
        eagerness = value.get("eagerness") or "auto"
        if not isinstance(eagerness, str) or eagerness not in EAGERNESS_SILENCE_MS:
            raise ClientError(
                f"turn_detection.eagerness: {str(eagerness)[:50]!r} is not one of low, medium, high, auto",
                param="turn_detection.eagerness",
            )
        return {"type": "semantic_vad", "eagerness": eagerness}
    raise ClientError(
        f"turn_detection.type: {str(kind)[:50]!r} is not supported: 'server_vad', 'semantic_vad' or null",
        code="unsupported_turn_detection",
        param="turn_detection.type",
    )


def _milliseconds(value: dict, name: str, most: int) -> int:
    ms = value.get(name, DEFAULT_TURN_DETECTION[name])
    if type(ms) not in (int, float) or not 0 <= ms <= most:
        raise ClientError(
            f"turn_detection.{name} must be a number of milliseconds from 0 to {most}, got {str(ms)[:50]}",
            param=f"turn_detection.{name}",
        )
    return int(ms)


def speech_settings(turn_detection: dict) -> tuple[SpeechParams, float]:
    """The detector's parameters and the prefix padding (seconds) for a turn detection."""
    if turn_detection["type"] == "semantic_vad":
        silence = EAGERNESS_SILENCE_MS[turn_detection["eagerness"]]
        turn_detection = {**DEFAULT_TURN_DETECTION, "silence_duration_ms": silence}
    params = SpeechParams(
        threshold=turn_detection["threshold"], min_silence=turn_detection["silence_duration_ms"] / 1000
    )
    return params, turn_detection["prefix_padding_ms"] / 1000


def _check_format(fmt):
    if isinstance(fmt, str):  # beta: "pcm16"
        ok = fmt == "pcm16"
    elif isinstance(fmt, dict):  # GA: {"type": "audio/pcm", "rate": 24000}
        rate = fmt.get("rate", PCM_RATE)
        ok = fmt.get("type") == "audio/pcm" and type(rate) in (int, float) and rate == PCM_RATE
    else:
        ok = False
    if not ok:
        raise ClientError(
            f"input audio format {str(fmt)[:100]} is not supported: send pcm16 (audio/pcm) mono at {PCM_RATE} Hz",
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
    """One utterance: its conversation item, its tasks, the text sent so far per task."""

    def __init__(self, tasks, decode):
        self.id = new_id("item")
        self.tasks = tasks
        self.deltas = {t: TextDeltas(decode) for t in tasks}
        self.samples = 0


class RealtimeSession:
    """One websocket's transcription session on the shared engine: one `LiveStream`, whose
    utterances are the session's items.

    `handle()` takes each client message and queues the server events on `outbox`;
    `on_engine_event()` turns an engine event into server events. The websocket loop in `app.py`
    sends what they return, in order, from one task; a ``("close", code, reason)`` entry on the
    outbox ends the connection after what was queued before it (`closing` is then set).

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
    max_unread_seconds : float, optional
        Audio the session may have sent that the engine has not read yet; past it, an ``error``
        event and the connection is closed (None: no bound).
    debug : bool
        Log the traceback of a failure in a handler (one line otherwise).
    """

    def __init__(
        self, engine, decode, model_name: str, beta: bool = False, options=None, max_unread_seconds=None, debug=False
    ):
        self.engine = engine
        self.decode = decode
        self.model_name = model_name
        self.beta = beta
        self.options = options
        self.max_unread_seconds = max_unread_seconds
        self.debug = debug
        self.id = new_id("sess")
        self.task = "is"
        self.include: list[str] = []
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.stream = None  # the session's LiveStream
        self.items: dict[int, _Item] = {}  # utterance index (the engine's) -> item
        self.utterance = 0  # the utterance appended audio goes to
        self.pending = 0  # commits whose transcript has not come back yet
        self.closing: tuple[int, str] | None = None  # (code, reason) once the session is ending
        self.previous_item_id = None
        self.audio_seconds = 0.0  # audio received, all utterances
        self._event_serial = 0
        # Turn detection: the detector and its tracker (None: off), the samples received this
        # session (the clock of audio_start_ms / audio_end_ms), where the detector's clock starts,
        # and the audio outside speech not given to the engine (`held`, from sample `held_start`).
        self.turn_detection: dict | None = None
        self.detector: VoiceActivity | None = None
        self.tracker: SpeechTracker | None = None
        self.hold_samples = 0
        self.received = 0
        self.vad_origin = 0
        self.held = np.zeros(0, np.int16)
        self.held_start = 0
        self.speaking = False
        # With `listen_later`, appended audio waits in `unheard` for `listen()`, which runs the
        # detector on a worker thread (the websocket loop calls it after each message): a fast
        # client's detector does not hold up the other sessions.
        self.listen_later = False
        self.unheard: list[np.ndarray] = []
        self.set_turn_detection(dict(DEFAULT_TURN_DETECTION))

    # -- the engine stream -------------------------------------------------------------------
    def open(self):
        """Take a stream of the engine (raises `EngineFull`)."""
        loop, outbox = self.loop, self.outbox

        def on_event(ev):  # called on the engine thread
            try:
                loop.call_soon_threadsafe(outbox.put_nowait, ("engine", ev))
            except RuntimeError:  # the loop is closed: the server has stopped
                pass

        self.stream = self.engine.open(task=self.task, on_event=on_event, options=self.options)

    def close(self):
        """Leave the engine at once (the client is gone): every slot of the session is freed."""
        if self.stream is not None:
            self.stream.close()

    def end(self, code: int, reason: str):
        """Close the connection once the events queued so far are sent."""
        if self.closing is None:
            self.closing = (code, reason)
            self.outbox.put_nowait(("close", code, reason))

    def close_idle(self, seconds: float):
        self.emit_error(
            f"the session was idle for {seconds:g} s (nothing sent, nothing pending) and is closed",
            "session_idle_timeout",
        )
        self.end(1000, "idle timeout")

    @property
    def uncommitted_samples(self) -> int:
        item = self.items.get(self.utterance)
        return item.samples if item is not None else 0

    def _item(self) -> _Item:
        if self.utterance not in self.items:
            self.items[self.utterance] = _Item(task_list(self.task), self.decode)
        return self.items[self.utterance]

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
        turn_detection = dict(self.turn_detection) if self.turn_detection else None
        if self.beta:
            return {
                "id": self.id,
                "object": "realtime.transcription_session",
                "modalities": ["text"],
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": turn_detection,
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
                    "turn_detection": turn_detection,
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
        """Handle one client message; a bad one gives an ``error`` event and changes nothing, and
        so does a failure of the handler itself (logged in one line; with `debug`, its traceback)."""
        client_event_id = None
        try:
            if self.closing:
                return
            if not isinstance(text, str):
                raise ClientError("send events as JSON text frames, not binary", code="invalid_event")
            try:
                event = json.loads(text)
            except (ValueError, RecursionError) as e:  # too deep, or a number too long, is not JSON here
                raise ClientError(f"message is not valid JSON ({str(e)[:200]})", code="invalid_json") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ClientError("message must be a JSON object with a string 'type'", param="type")
            client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            handler = self.HANDLERS.get(event["type"])
            if handler is None:
                raise ClientError(f"unsupported event type {event['type'][:100]!r}", code="unknown_event", param="type")
            handler(self, event)
        except ClientError as e:
            self.emit_error(e.message, e.code, e.param, client_event_id)
        except Exception as e:  # a bug must not end the session: the client hears of it, the log too
            log.warning("realtime session %s: %s: %s", self.id, type(e).__name__, e, exc_info=self.debug)
            self.emit_error(
                f"the server failed to handle this event ({type(e).__name__})",
                "server_error",
                client_event_id=client_event_id,
                type_="server_error",
            )

    def on_session_update(self, event: dict):
        if event["type"] == "transcription_session.update":
            self.beta = True
        settings = parse_session(event)
        task = settings.get("task", self.task)
        if task != self.task:
            # An utterance is decoded for one task set: audio not committed yet is committed
            # first, so nothing said is lost; the next utterance has the new task.
            if self.uncommitted_samples:
                self.commit()
            self.task = task
            self.stream.set_task(task)
        if "turn_detection" in settings and settings["turn_detection"] != self.turn_detection:
            if self.uncommitted_samples:  # as for a task change: what was said is committed first
                self.commit()
            self.set_turn_detection(settings["turn_detection"])
        if "include" in settings:
            self.include = settings["include"]
        self.emit_session("updated")

    def set_turn_detection(self, turn_detection: dict | None):
        """Start detecting turns afresh (None: stop); audio held outside speech is dropped."""
        self.turn_detection = turn_detection
        self.held, self.held_start, self.speaking = self.held[:0], self.received, False
        if turn_detection is None:
            self.detector = self.tracker = None
            return
        params, prefix = speech_settings(turn_detection)
        self.detector = VoiceActivity(PCM_RATE)
        self.tracker = SpeechTracker(params, prefix=prefix)
        self.vad_origin = self.received
        self.hold_samples = round((prefix + HOLD_MARGIN_S) * PCM_RATE)

    def on_append(self, event: dict):
        audio = event.get("audio")
        if isinstance(audio, str) and self.max_unread_seconds is not None:
            # Checked before decoding: base64 is 4 characters per 3 bytes, 2 bytes a sample.
            seconds = len(audio) * 3 / 8 / PCM_RATE
            if self.stream.unread() + seconds > self.max_unread_seconds:
                self.emit_error(
                    f"input_audio_buffer.append: more than {self.max_unread_seconds:g} s of audio is waiting "
                    "for the model (sent faster than it reads); the session is closed",
                    "input_audio_buffer_overflow",
                    param="audio",
                )
                self.end(1008, "too much audio waiting")
                return
        samples = decode_audio(event)
        if len(samples) == 0:
            return
        self.audio_seconds += len(samples) / PCM_RATE
        if self.detector is None:
            self.received += len(samples)
            self._item().samples += len(samples)
            self.stream.feed(samples)
            return
        self.held = np.concatenate([self.held, samples])
        self.received += len(samples)
        if self.listen_later:
            self.unheard.append(samples)
        else:
            self.hear(self.detector.feed(samples.astype(np.float32) / 32768.0))

    async def listen(self):
        """Run the detector on the audio appended since the last call, on a worker thread, then act
        on what it heard (as `handle` does; a failure is an ``error`` event)."""
        while self.unheard and self.detector is not None and not self.closing:
            samples, self.unheard = np.concatenate(self.unheard), []
            detector = self.detector
            try:
                probs = await asyncio.to_thread(detector.feed, samples.astype(np.float32) / 32768.0)
                if detector is self.detector:  # (not replaced meanwhile)
                    self.hear(probs)
            except Exception as e:
                log.warning("realtime session %s: %s: %s", self.id, type(e).__name__, e, exc_info=self.debug)
                self.emit_error(f"the server failed to detect speech ({type(e).__name__})", "server_error",
                                type_="server_error")  # fmt: skip
        self.unheard = []

    def hear(self, probs):
        """Act on the detector's speech probabilities of the audio received so far."""
        for p in probs:
            for kind, t in self.tracker.update(p[None]):
                if kind == "start":
                    self._speech_started(self.vad_origin + round(t * PCM_RATE))
                else:  # heard at the end of the chunk just given: the item's audio ends there
                    self._speech_stopped(min(self.received, self.vad_origin + self.tracker.chunks * VAD_CHUNK))
        if self.speaking:
            self._feed_held(self.received)
        elif len(self.held) > self.hold_samples:  # outside speech: only what a start may reach back to
            self.held_start += len(self.held) - self.hold_samples
            self.held = self.held[-self.hold_samples :]

    def _feed_held(self, upto: int):
        """Give the held audio before sample `upto` to the engine, as the current item's."""
        n = upto - self.held_start
        if n > 0:
            chunk, self.held, self.held_start = self.held[:n], self.held[n:], upto
            self._item().samples += len(chunk)
            self.stream.feed(chunk)

    def _speech_started(self, start: int):
        start = max(start, self.held_start)  # never before audio already decoded or dropped
        self.held, self.held_start = self.held[start - self.held_start :], start
        self.speaking = True
        self.emit("input_audio_buffer.speech_started", audio_start_ms=_ms(start), item_id=self._item().id)

    def _speech_stopped(self, end: int):
        self._feed_held(end)
        self.speaking = False
        item = self._item()
        self.emit("input_audio_buffer.speech_stopped", audio_end_ms=_ms(end), item_id=item.id)
        if item.samples:  # (none if the client committed or cleared it during the speech)
            self.commit()

    def on_commit(self, event: dict):
        if self.detector is not None and not self.speaking:  # outside speech: what is held
            self._feed_held(self.received)
        if not self.uncommitted_samples:
            raise ClientError(
                "input_audio_buffer.commit: the buffer is empty (append audio first)",
                code="input_audio_buffer_commit_empty",
            )
        if self.pending >= MAX_PENDING_COMMITS:
            raise ClientError(
                f"input_audio_buffer.commit: {self.pending} commits are still being transcribed; "
                "wait for their transcripts (the buffer is kept)",
                code="too_many_commits",
            )
        self.commit()

    def commit(self):
        """End the utterance: the engine flushes it and answers with its transcript."""
        item = self._item()
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
        self.pending += 1
        self.utterance += 1
        self.stream.flush()  # answered by the engine's "done" event, after the utterance's words

    def on_clear(self, event: dict):
        if self.uncommitted_samples:  # the audio is in the engine: its slot is freed at once
            self.stream.clear()
            del self.items[self.utterance]
            self.utterance += 1
        self.held, self.held_start = self.held[:0], self.received
        self.emit("input_audio_buffer.cleared")

    HANDLERS = {
        "session.update": on_session_update,
        "transcription_session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
    }

    # -- engine events -----------------------------------------------------------------------
    def on_engine_event(self, ev) -> list[dict]:
        """The server events for one engine event."""
        item = self.items.get(ev.utterance)
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
            for task in item.tasks:
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
            del self.items[ev.utterance]
            self.pending -= 1
            return out
        if ev.type == "error":
            return [self.event("error", error=error_object(ev.text, "engine_error", type_="server_error"))]
        return []


def _ms(samples: int) -> int:
    return round(samples * 1000 / PCM_RATE)


def error_object(message: str, code: str, param=None, event_id=None, type_="invalid_request_error") -> dict:
    return {"type": type_, "code": code, "message": message, "param": param, "event_id": event_id}
