# Copyright © 2026 mlx-kyutai-is contributors
"""The ASGI app: OpenAI's speech-to-text routes, realtime websocket, the captions page, status.

Every upload and every websocket is one stream (one row) of a single shared `LiveEngine`, whose
thread owns MLX and steps all rows together; the handlers here only feed audio and await words
(as `mlx_lm/server.py` queues requests to one model worker).

Routes: ``POST /v1/audio/transcriptions`` (task is), ``POST /v1/audio/translations`` (task en),
``GET /v1/models``, ``WS /v1/realtime?intent=transcription``, ``GET /v1/status`` (the engine's
stats: rows per step, step time) and ``GET /metrics`` (the same, Prometheus text), ``GET /health``,
``GET /openapi.json`` (with the key), and the page: ``GET /`` with ``/static/*``.

A client's memory is bounded: an upload is decoded as the engine reads it (a block ahead), up to
``max_audio_minutes``; a realtime session may have at most ``max_unread_seconds`` of audio waiting
for the engine; every engine stream a client holds counts against ``max_streams``. The server
answers only to its own host names (DNS rebinding) and, for uploads and websockets from a browser,
to its own page's origin (`LocalOnly`); bodies must keep arriving (`BodyLimits`).
"""

import asyncio
import hmac
import logging
import shutil
import tempfile
import threading
import time
import warnings
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import soundfile as sf
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from ..._version import __version__
from ...audio import AudioError, AudioWarning, iter_audio_blocks
from ...runtime.live import EngineFull, LiveEngine
from ...runtime.protocol import StreamOptions
from . import schemas
from .realtime import RealtimeSession
from .schemas import ApiError, TranscriptionRequest

log = logging.getLogger("mlx_kyutai_is.serve")

STATIC = Path(__file__).parent / "static"
# Uploads are decoded and fed to the engine in blocks this long (seconds); the next block is decoded
# once the engine has less than this left to read, so an upload holds about two blocks of samples.
UPLOAD_BLOCK_SECONDS = 10.0
DEFAULT_MAX_UPLOAD_MB = 25.0  # OpenAI's own limit
DEFAULT_MAX_AUDIO_MINUTES = 120.0
DEFAULT_MAX_UNREAD_SECONDS = 60.0
DEFAULT_READ_TIMEOUT_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 300.0
# The names a local server answers to, whatever it is bound to.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Browsers cannot set headers on a websocket: OpenAI takes the key as a subprotocol.
KEY_PROTOCOL = "openai-insecure-api-key."
# How often a waiting upload checks that its client is still there (seconds).
DISCONNECT_POLL_S = 0.5
# Uploads are kept in memory up to this size, on disk beyond.
SPOOL_BYTES = 1_000_000


class ServerState:
    """What the routes share: the engine, settings, and what is in flight (for status and drain)."""

    def __init__(self, stt, *, model_name, max_streams, api_key, max_upload_bytes, options, limits):
        self.stt = stt
        self.model_name = model_name
        self.max_streams = max_streams
        self.api_key = api_key
        self.max_upload_bytes = max_upload_bytes
        self.options = options
        self.limits: Limits = limits
        self.engine = None
        self.loop = None
        self.started = time.time()
        self.draining = False
        self.stopping = asyncio.Event()  # the shutdown deadline passed: what is in flight is dropped
        self.uploads = 0  # uploads being transcribed now
        self.sessions: dict[RealtimeSession, WebSocket] = {}
        self.counts = {
            "uploads_total": 0,
            "realtime_sessions_total": 0,
            "rejected_busy": 0,
            "rejected_auth": 0,
            "rejected_host": 0,
            "rejected_origin": 0,
            "rejected_too_long": 0,
            "closed_unread": 0,
            "closed_idle": 0,
        }
        self.idle = asyncio.Event()

    def authorized(self, headers, protocols=()) -> bool | None:
        """True when no key is set or the right one is given, None when none is given, else False."""
        if self.api_key is None:
            return True
        given = None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        for p in protocols:
            if p.startswith(KEY_PROTOCOL):
                given = p[len(KEY_PROTOCOL) :]
        if given is None:
            return None
        return hmac.compare_digest(given.encode(), self.api_key.encode())

    def status(self) -> dict:
        return {
            "model": self.model_name,
            "version": __version__,
            "uptime_s": round(time.time() - self.started, 1),
            "draining": self.draining,
            "uploads_in_flight": self.uploads,
            "realtime_sessions": len(self.sessions),
            **self.counts,
            "engine": self.engine.stats() if self.engine is not None else None,
        }

    @property
    def busy(self) -> bool:
        """Work in flight: an upload, or a commit not answered yet."""
        return self.uploads > 0 or any(s.pending for s in self.sessions)

    def check_idle(self):
        if not self.busy:
            self.idle.set()
        else:
            self.idle.clear()


class Limits:
    """What one client may hold, and how long the server waits for it.

    Parameters
    ----------
    max_audio_minutes : float
        Decoded audio per upload; longer gets 413.
    max_unread_seconds : float
        Audio a realtime session may have sent that the engine has not read yet; past it the
        session gets an ``error`` event and is closed.
    max_utterances : int
        Utterances of one session in the engine at once (the one being fed and those flushing).
    read_timeout : float
        Seconds within which a request's headers, and each part of its body, must arrive.
    idle_timeout : float
        Seconds a websocket may stay silent (nothing sent, nothing pending) before it is closed.
    debug : bool
        Log the traceback of a failure in a websocket handler (one line otherwise).
    """

    def __init__(
        self,
        max_audio_minutes: float = DEFAULT_MAX_AUDIO_MINUTES,
        max_unread_seconds: float = DEFAULT_MAX_UNREAD_SECONDS,
        max_utterances: int = 2,
        read_timeout: float = DEFAULT_READ_TIMEOUT_S,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        debug: bool = False,
    ):
        self.max_audio_minutes = max_audio_minutes
        self.max_unread_seconds = max_unread_seconds
        self.max_utterances = max_utterances
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.debug = debug


def create_app(
    stt,
    *,
    model_name: str,
    max_streams: int = 64,
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    options: StreamOptions | None = None,
    limits: Limits | None = None,
    allowed_hosts=(),
    allow_origins=(),
) -> FastAPI:
    """The server app on a loaded model; its lifespan starts and stops the shared `LiveEngine`.

    Parameters
    ----------
    stt : STT
        From `mlx_kyutai_is.load`.
    model_name : str
        The id `/v1/models` lists.
    max_streams : int
        Streams of the engine (uploads, websockets, and utterances still being flushed) at once;
        a client that finds none free gets 503.
    api_key : str, optional
        Require ``Authorization: Bearer KEY`` (websockets: also the ``openai-insecure-api-key.KEY``
        subprotocol) on every ``/v1`` route.
    max_upload_mb : float
        Uploads over this many megabytes get 413.
    options : StreamOptions, optional
        How every stream is decoded (default: the model's, `STT.options`).
    limits : Limits, optional
        Per-client bounds and timeouts (default: `Limits()`).
    allowed_hosts : iterable of str
        Host names answered besides localhost, 127.0.0.1 and ::1 (``*``: any).
    allow_origins : iterable of str
        Web origins (``https://app.example``) whose pages may use the API, besides the server's
        own page (``*``: any); they also get CORS headers.
    """
    limits = limits or Limits()
    state = ServerState(
        stt,
        model_name=model_name,
        max_streams=max_streams,
        api_key=api_key or None,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        options=stt.options if options is None else options,
        limits=limits,
    )

    @asynccontextmanager
    async def lifespan(app):
        state.loop = asyncio.get_running_loop()
        state.engine = await run_in_threadpool(
            LiveEngine, stt, max_streams=max_streams, max_utterances=limits.max_utterances
        )
        try:
            yield
        finally:
            # Runs after the server stopped taking requests: finish in-flight flushes, stop the thread.
            for session in list(state.sessions):
                session.close()
            await run_in_threadpool(state.engine.close)
            state.engine = None

    app = FastAPI(
        title="mlx-kyutai-is", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.server = state
    # The last added runs first: the host and origin checks, CORS for the origins allowed, then
    # the body's size and pace.
    app.add_middleware(BodyLimits, max_bytes=state.max_upload_bytes, read_timeout=limits.read_timeout)
    origins = [o.rstrip("/") for o in allow_origins]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
    app.add_middleware(LocalOnly, state=state, allowed_hosts=[*LOCAL_HOSTS, *allowed_hosts], allow_origins=origins)

    # -- errors: OpenAI's JSON shape everywhere -------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e):
        return JSONResponse(schemas.error_body(str(e.detail)), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        err = e.errors()[0] if e.errors() else {}
        param = ".".join(str(x) for x in err.get("loc", ())[1:]) or None
        return JSONResponse(schemas.error_body(f"{param}: {err.get('msg', 'invalid')}", param=param), status_code=400)

    def require_key(request: Request):
        ok = state.authorized(request.headers)
        if not ok:
            state.counts["rejected_auth"] += 1
            raise schemas.unauthorized(given=ok is False)

    # -- page, health, models, status ---------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "draining" if state.draining else "ok"}

    @app.get("/v1/models")
    async def models(request: Request):
        require_key(request)
        return {"object": "list", "data": [_model_card(state)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        require_key(request)
        if model_id != state.model_name:
            raise ApiError(
                404,
                f"model {model_id!r} does not exist; this server has {state.model_name!r}",
                param="model",
                code="model_not_found",
            )
        return _model_card(state)

    @app.get("/v1/status")
    async def status(request: Request):
        require_key(request)
        return state.status()

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        require_key(request)
        return app.openapi()

    @app.get("/metrics")
    async def metrics(request: Request):
        require_key(request)
        return PlainTextResponse(_prometheus(state.status()), media_type="text/plain; version=0.0.4")

    # -- uploads ------------------------------------------------------------------------------
    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        return await _upload(state, request, "is", require_key)

    @app.post("/v1/audio/translations")
    async def translations(request: Request):
        return await _upload(state, request, "en", require_key)

    # -- realtime -----------------------------------------------------------------------------
    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket):
        await _realtime(state, websocket)

    return app


def _model_card(state) -> dict:
    return {"id": state.model_name, "object": "model", "created": int(state.started), "owned_by": "mlx-kyutai-is"}


def _prometheus(status: dict) -> str:
    lines = []
    flat = {k: v for k, v in status.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    flat.update({f"engine_{k}": v for k, v in (status.get("engine") or {}).items() if isinstance(v, (int, float))})
    for k, v in flat.items():
        lines.append(f"mlx_kyutai_is_{k} {v}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Uploads: /v1/audio/transcriptions and /v1/audio/translations


async def _upload(state: ServerState, request: Request, task: str, require_key):
    require_key(request)
    if state.draining:
        raise ApiError(503, "the server is shutting down", type="server_error", code="shutting_down")
    try:
        form = await request.form(max_files=1)
    except (ApiError, _TooLarge, _ReadTimeout):  # the latter two: BodyLimits answers 413 / 408
        raise
    except Exception as e:  # a malformed multipart body
        raise ApiError(400, f"the request body is not a valid multipart form ({e})") from None
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise ApiError(400, "file: an audio file is required (multipart field 'file')", param="file")
    req = TranscriptionRequest.from_form(task, form)
    name = file.filename or "file"
    # A copy the route owns: the form's file is closed once the handler returns, while a
    # streamed response still reads it.
    audio_file = await run_in_threadpool(_own_copy, file.file)
    try:
        # Opened and its first block decoded before taking a row: unreadable, empty or too long
        # audio is answered at once.
        audio = await run_in_threadpool(
            UploadAudio, audio_file, name, state.stt.sample_rate, state.limits.max_audio_minutes
        )
    except ApiError as e:
        audio_file.close()
        if e.status == 413:
            state.counts["rejected_too_long"] += 1
        raise

    loop = asyncio.get_running_loop()
    events: asyncio.Queue | None = asyncio.Queue() if req.stream else None

    def on_event(ev):  # engine thread
        if events is not None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, ev)
            except RuntimeError:
                pass

    try:
        stream = state.engine.open(task=task, on_event=on_event, options=state.options)
    except EngineFull:
        audio_file.close()
        state.counts["rejected_busy"] += 1
        raise schemas.overloaded(state.max_streams) from None
    state.uploads += 1
    state.counts["uploads_total"] += 1
    state.check_idle()
    finished = False

    def done():
        nonlocal finished
        if not finished:
            finished = True
            audio_file.close()
            state.uploads -= 1
            state.check_idle()

    async def run() -> "object":
        """Feed the file as the engine reads it, flush; the transcript of `task`."""
        block = audio.first
        while block is not None:
            stream.feed(block)
            # Backpressure: the next block is decoded once the engine is less than a block behind.
            await asyncio.wrap_future(stream.when_unread_below(UPLOAD_BLOCK_SECONDS))
            block = await run_in_threadpool(audio.next_block)
        result = await asyncio.wrap_future(stream.flush())
        if audio.warnings:
            log.warning("upload %s", "; ".join(audio.warnings))
        return result[task]

    stopping = asyncio.ensure_future(state.stopping.wait())
    if not req.stream:
        try:
            job = asyncio.ensure_future(run())
            while True:  # a client that hangs up frees its row at once
                finished_set, _ = await asyncio.wait(
                    [job, stopping], timeout=DISCONNECT_POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if job in finished_set:
                    transcript = job.result()
                    break
                if stopping in finished_set:
                    job.cancel()
                    raise _dropped()
                if await request.is_disconnected():
                    job.cancel()
                    return Response(status_code=499)
        finally:
            stopping.cancel()
            stream.close()
            done()
        body, media_type = schemas.render(transcript, req)
        headers = {"X-Audio-Warning": _header_text("; ".join(audio.warnings))} if audio.warnings else None
        return Response(body, media_type=media_type, headers=headers)

    async def sse():
        deltas = schemas.TextDeltas(state.stt.tokenizer.decode)
        job = asyncio.ensure_future(run())
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                # Until the audio is all in, a failure to read it ends the response too.
                waits = [get, stopping] if job.done() else [get, job, stopping]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    if stopping.done():
                        yield schemas.sse_error(_dropped())
                        return
                    if (e := job.exception()) is not None:
                        yield schemas.sse_error(e if isinstance(e, ApiError) else ApiError(500, str(e), "server_error"))
                        return
                    continue
                ev = get.result()
                if ev.type == "word" and (delta := deltas.add(ev.word)):
                    yield schemas.sse_delta(delta)
                elif ev.type == "done":
                    text = ev.transcripts[task].text
                    if rest := deltas.finish(text):
                        yield schemas.sse_delta(rest)
                    yield schemas.sse_done(text)
                    return
                elif ev.type == "error":
                    yield schemas.sse_error(ApiError(500, ev.text, "server_error"))
                    return
        finally:
            job.cancel()
            stopping.cancel()
            stream.close()
            done()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _dropped() -> ApiError:
    return ApiError(
        503,
        "the server stopped before this request was finished (shutdown timeout); send it again",
        type="server_error",
        code="shutting_down",
    )


def _error_response(e: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if e.status in (429, 503) else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _header_text(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode()[:1000]


def _own_copy(src):
    dst = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    src.seek(0)
    shutil.copyfileobj(src, dst)
    dst.seek(0)
    return dst


# The audio module reports what it repaired (a truncated file) as an `AudioWarning` naming a file
# object "<stdin>"; the uploads' blocks are decoded one at a time under this lock so that each
# upload's warnings are caught for it (warnings.catch_warnings is process-wide).
_DECODE_LOCK = threading.Lock()


class UploadAudio:
    """An upload's audio, decoded a block at a time (on a worker thread) as the engine needs it.

    Raises `ApiError`: 400 for audio that cannot be read, 413 past `max_minutes` (from the file's
    header when it says, else as the blocks are decoded). `warnings` are what the decoder repaired,
    naming the upload.
    """

    def __init__(self, file, name: str, sr: int, max_minutes: float):
        self.name = name
        self.sr = sr
        self.max_minutes = max_minutes
        self.max_samples = int(max_minutes * 60 * sr)
        self.samples = 0
        self.warnings: list[str] = []
        declared = _declared_seconds(file)
        if declared is not None and declared > max_minutes * 60:
            raise self._too_long(declared)
        self._blocks = self._decode(lambda: iter_audio_blocks(file, block_seconds=UPLOAD_BLOCK_SECONDS, sr=sr))
        self.first = self.next_block()
        if self.first is None:
            raise ApiError(400, f"file: {name}: empty audio", param="file", code="invalid_audio")

    def next_block(self):
        """The next block of samples, None at the end."""
        block = self._decode(lambda: next(self._blocks, None))
        if block is not None:
            self.samples += len(block)
            if self.samples > self.max_samples:
                raise self._too_long(None)
        return block

    def _decode(self, fn):
        with _DECODE_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AudioWarning)
            try:
                return fn()
            except AudioError as e:
                raise ApiError(
                    400, f"file: {self.name}: {_audio_message(e)}", param="file", code="invalid_audio"
                ) from None
            finally:
                for w in caught:
                    if issubclass(w.category, AudioWarning):
                        self.warnings.append(f"{self.name}: {_audio_message(w.message)}")
                    else:  # not ours: as it would have been shown
                        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    def _too_long(self, declared: float | None) -> ApiError:
        what = f"{declared / 60:.1f} minutes of audio" if declared is not None else "the audio goes on"
        return ApiError(
            413,
            f"file: {self.name}: {what}, over the server's limit of {self.max_minutes:g} minutes per request",
            param="file",
            code="audio_too_long",
        )


def _declared_seconds(file) -> float | None:
    """The duration the file's header declares, None if it does not say (or cannot be read here)."""
    try:
        info = sf.info(file)
        return info.frames / info.samplerate if 0 < info.frames < 2**62 and info.samplerate > 0 else None
    except Exception:  # unreadable: the decoder says why
        return None
    finally:
        file.seek(0)


def _audio_message(e: Exception) -> str:
    msg = (str(e).strip().splitlines() or ["unreadable audio"])[0]
    # audio.py names the source ("<file object>: ..."); the route names the upload itself.
    return msg.split(": ", 1)[1] if ": " in msg and msg.startswith("<") else msg


# --------------------------------------------------------------------------------------------
# Realtime: /v1/realtime?intent=transcription


async def _realtime(state: ServerState, websocket: WebSocket):
    protocols = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    ok = state.authorized(websocket.headers, protocols)
    if not ok:
        state.counts["rejected_auth"] += 1
        return await _deny(websocket, schemas.unauthorized(given=ok is False))
    intent = websocket.query_params.get("intent", "transcription")
    if intent != "transcription":
        return await _deny(
            websocket, ApiError(400, f"intent: {intent!r} is not supported; use intent=transcription", param="intent")
        )
    if state.draining:
        return await _deny(
            websocket, ApiError(503, "the server is shutting down", "server_error", code="shutting_down")
        )
    beta = websocket.headers.get("openai-beta", "").startswith("realtime")
    limits = state.limits
    session = RealtimeSession(
        state.engine,
        state.stt.tokenizer.decode,
        state.model_name,
        beta=beta,
        options=state.options,
        max_unread_seconds=limits.max_unread_seconds,
        debug=limits.debug,
    )
    session.listen_later = True
    try:
        session.open()
    except EngineFull:
        state.counts["rejected_busy"] += 1
        return await _deny(websocket, schemas.overloaded(state.max_streams))
    # Answer with a subprotocol the client offered (a browser drops the connection otherwise),
    # never the one carrying the key.
    chosen = next((p for p in protocols if not p.startswith(KEY_PROTOCOL)), None)
    try:
        await websocket.accept(subprotocol=chosen)
    except Exception:
        session.close()
        raise
    state.sessions[session] = websocket
    state.counts["realtime_sessions_total"] += 1
    session.emit_session("created")
    sender = asyncio.ensure_future(_send_loop(state, session, websocket))
    try:
        while not session.closing:
            try:
                msg = await asyncio.wait_for(websocket.receive(), limits.idle_timeout)
            except asyncio.TimeoutError:
                if session.pending:  # waiting for its transcripts is not idle
                    continue
                state.counts["closed_idle"] += 1
                session.close_idle(limits.idle_timeout)
                break
            if msg["type"] == "websocket.disconnect":
                break
            session.handle(msg.get("text") if msg.get("text") is not None else msg.get("bytes"))
            await session.listen()  # the voice-activity detector, off the event loop; the next message waits
            if session.closing and session.closing[0] == 1008:
                state.counts["closed_unread"] += 1
            state.check_idle()
        if session.closing:  # the send loop sends what is queued, then the close frame
            await asyncio.wait_for(asyncio.shield(sender), 10)
    except (WebSocketDisconnect, asyncio.TimeoutError):
        pass
    finally:
        session.close()  # the rows are freed at once
        state.sessions.pop(session, None)
        sender.cancel()
        state.check_idle()


async def _send_loop(state: ServerState, session: RealtimeSession, websocket: WebSocket):
    """Send the session's events in order: its own replies and the engine's words; a ``close``
    entry ends the connection after what was queued before it."""
    try:
        while True:
            kind, *rest = await session.outbox.get()
            if kind == "close":
                code, reason = rest
                await websocket.close(code=code, reason=reason)
                return
            if kind == "send":
                events = rest
            else:
                try:
                    events = session.on_engine_event(*rest)
                except Exception as e:  # one event lost, not the session
                    log.warning("realtime session %s: %s: %s", session.id, type(e).__name__, e, exc_info=session.debug)
                    events = []
                state.check_idle()
            for event in events:
                await websocket.send_json(event)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass


async def _deny(websocket: WebSocket, err: ApiError):
    """Refuse the handshake with an HTTP status and OpenAI's error JSON (close code 1008 where
    the server cannot send a denial response)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(_error_response(err))
    else:
        await websocket.close(code=1008, reason=err.message[:120])


async def drain(app, timeout: float) -> bool:
    """Finish in-flight work before the server stops: new requests get 503, each websocket's
    audio not yet committed is committed, then wait (at most `timeout` s) for every upload and
    commit to be answered; the websockets are then closed (1001). True if all finished; if not,
    the uploads still running are answered 503 (OpenAI's error JSON) and the websockets get an
    ``error`` event first."""
    state: ServerState = app.state.server
    state.draining = True
    for session in list(state.sessions):
        if session.stream is not None and session.uncommitted_samples:
            session.commit()
    state.check_idle()
    try:
        await asyncio.wait_for(state.idle.wait(), timeout)
        finished = True
    except asyncio.TimeoutError:
        finished = False
        state.stopping.set()
    await asyncio.sleep(0.05)  # let the send loops and the uploads pass the last answers on
    for session, websocket in list(state.sessions.items()):
        try:
            if session.pending:
                err = _dropped()
                session.emit_error(err.message, err.code, type_=err.type)
            for _ in range(100):
                if session.outbox.empty():
                    break
                await asyncio.sleep(0.01)
            await websocket.close(code=1001, reason="server shutting down")
        except Exception:
            pass
    return finished


# --------------------------------------------------------------------------------------------
# Middleware


async def _refuse(scope, receive, send, err: ApiError):
    """Answer an HTTP request or refuse a websocket handshake with OpenAI's error JSON."""
    if scope["type"] == "websocket":
        await _deny(WebSocket(scope, receive, send), err)
    else:
        await _error_response(err)(scope, receive, send)


def _host_name(value: str | None) -> str | None:
    """The host of a Host header or an origin's netloc, lowercased, without port or brackets."""
    if not value:
        return None
    try:
        return urlsplit(f"//{value}").hostname
    except ValueError:
        return None


class LocalOnly:
    """ASGI middleware that keeps the server local to the machine unless told otherwise.

    - The Host header must name this server: localhost, 127.0.0.1, ::1, the address it is bound to,
      or one of `allowed_hosts` (``*``: any). A web page that rebinds its own DNS name to 127.0.0.1
      sends its own name, and is refused.
    - A browser's request that is not a plain read (an upload: multipart is a CORS "simple request"
      that browsers send anywhere) and every websocket must come from the server's own page (its
      Origin is the Host asked for) or one of `allow_origins` (``*``: any). Clients that are not
      browsers send no Origin and are not concerned.

    Refusals are OpenAI's error JSON: 400 ``invalid_host``, 403 ``origin_not_allowed``.
    """

    def __init__(self, app, state: ServerState, allowed_hosts, allow_origins):
        self.app = app
        self.state = state
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.strip().strip("[]").lower() for h in allowed_hosts}
        self.any_origin = "*" in allow_origins
        self.origins = {o.lower() for o in allow_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if not self.any_host and _host_name(host) not in self.hosts:
            self.state.counts["rejected_host"] += 1
            return await _refuse(
                scope,
                receive,
                send,
                ApiError(
                    400,
                    f"Host {host[:100]!r} is not a name of this server (start it with --allowed-hosts to add one)",
                    param="host",
                    code="invalid_host",
                ),
            )
        origin = headers.get("origin")
        checked = scope["type"] == "websocket" or scope["method"] not in ("GET", "HEAD", "OPTIONS")
        if origin is not None and checked and not self._origin_ok(origin, host, scope):
            self.state.counts["rejected_origin"] += 1
            return await _refuse(
                scope,
                receive,
                send,
                ApiError(
                    403,
                    f"Origin {origin[:100]!r} may not use this server: only its own page may "
                    "(start it with --allow-origin to allow another)",
                    param="origin",
                    code="origin_not_allowed",
                ),
            )
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str, host: str, scope) -> bool:
        if self.any_origin or origin.rstrip("/").lower() in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        own = {"http": "http", "https": "https", "ws": "http", "wss": "https"}.get(scope.get("scheme", "http"))
        return parts.scheme == own and parts.netloc.lower() == host.lower()


class BodyLimits:
    """ASGI middleware for request bodies, answered in OpenAI's error JSON:

    - over `max_bytes`: 413, at once when Content-Length says so (before the body is read; the
      body is then read and dropped, up to a bound, so that a client still sending gets the answer
      rather than a reset), else as soon as the body passes it;
    - a body that stops arriving for `read_timeout` seconds: 408, and the connection is closed.
    """

    DRAIN_LIMIT = 256_000_000

    def __init__(self, app, max_bytes: int, read_timeout: float):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            return await self._reject(scope, receive, send, self._too_large(), drain_from=0)
        received, started, body_done = 0, False, False

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # after the body: waiting for a disconnect is not a read
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                raise _ReadTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(message.get("more_body", False))
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge as e:
            if started:
                raise
            await self._reject(scope, receive, send, self._too_large(), drain_from=received if e.more_body else None)
        except _ReadTimeout:
            if started:
                raise
            err = ApiError(
                408, f"the request body stopped arriving for {self.read_timeout:g} s", code="request_timeout"
            )
            await self._reject(scope, receive, send, err, drain_from=None)

    def _too_large(self) -> ApiError:
        mb = self.max_bytes / 1_000_000
        return ApiError(
            413, f"file: the upload is over the server's limit of {mb:g} MB", param="file", code="request_too_large"
        )

    async def _reject(self, scope, receive, send, err: ApiError, drain_from: int | None):
        """The answer goes out at once (Connection: close); its end waits until the rest of the body
        is read and dropped (`drain_from` bytes seen so far; None: nothing more to read)."""
        body = _error_response(err).body
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": drain_from is not None})
        if drain_from is None:
            return
        seen = drain_from
        try:
            while seen < self.DRAIN_LIMIT:
                message = await asyncio.wait_for(receive(), self.read_timeout)
                if message["type"] != "http.request":
                    break
                seen += len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except asyncio.TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _TooLarge(Exception):
    def __init__(self, more_body: bool):
        self.more_body = more_body


class _ReadTimeout(Exception):
    pass
