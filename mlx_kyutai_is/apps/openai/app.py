# Copyright © 2026 mlx-kyutai-is contributors
"""The ASGI app: OpenAI's speech-to-text routes, realtime websocket, the captions page, status.

Every upload and every websocket is one stream (one row) of a single shared `LiveEngine`, whose
thread owns MLX and steps all rows together; the handlers here only feed audio and await words
(as `mlx_lm/server.py` queues requests to one model worker).

Routes: ``POST /v1/audio/transcriptions`` (task is), ``POST /v1/audio/translations`` (task en),
``GET /v1/models``, ``WS /v1/realtime?intent=transcription``, ``GET /v1/status`` (the engine's
stats: rows per step, step time) and ``GET /metrics`` (the same, Prometheus text), ``GET /health``,
and the page: ``GET /`` with ``/static/*``.
"""

import asyncio
import hmac
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

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
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..._version import __version__
from ...audio import AudioError, iter_audio_blocks
from ...runtime.live import EngineFull
from ...runtime.protocol import StreamOptions
from . import schemas
from .realtime import RealtimeSession
from .schemas import ApiError, TranscriptionRequest

STATIC = Path(__file__).parent / "static"
# Uploads are decoded and fed to the engine in blocks this long (seconds).
UPLOAD_BLOCK_SECONDS = 10.0
DEFAULT_MAX_UPLOAD_MB = 25.0  # OpenAI's own limit
# Browsers cannot set headers on a websocket: OpenAI takes the key as a subprotocol.
KEY_PROTOCOL = "openai-insecure-api-key."
# How often a waiting upload checks that its client is still there (seconds).
DISCONNECT_POLL_S = 0.5
# Uploads are kept in memory up to this size, on disk beyond.
SPOOL_BYTES = 8_000_000


class ServerState:
    """What the routes share: the engine, settings, and what is in flight (for status and drain)."""

    def __init__(self, stt, *, model_name, max_streams, api_key, max_upload_bytes, options):
        self.stt = stt
        self.model_name = model_name
        self.max_streams = max_streams
        self.api_key = api_key
        self.max_upload_bytes = max_upload_bytes
        self.options = options
        self.engine = None
        self.loop = None
        self.started = time.time()
        self.draining = False
        self.uploads = 0  # uploads being transcribed now
        self.sessions: dict[RealtimeSession, WebSocket] = {}
        self.counts = {"uploads_total": 0, "realtime_sessions_total": 0, "rejected_busy": 0, "rejected_auth": 0}
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

    def check_idle(self):
        if self.uploads == 0 and all(s.pending == 0 for s in self.sessions):
            self.idle.set()
        else:
            self.idle.clear()


def create_app(
    stt,
    *,
    model_name: str,
    max_streams: int = 64,
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    options: StreamOptions | None = None,
) -> FastAPI:
    """The server app on a loaded model; its lifespan starts and stops the shared `LiveEngine`.

    Parameters
    ----------
    stt : STT
        From `mlx_kyutai_is.load`.
    model_name : str
        The id `/v1/models` lists.
    max_streams : int
        Rows of the engine: uploads and websockets served at once; one more gets 503.
    api_key : str, optional
        Require ``Authorization: Bearer KEY`` (websockets: also the ``openai-insecure-api-key.KEY``
        subprotocol) on every ``/v1`` route.
    max_upload_mb : float
        Uploads over this many megabytes get 413.
    options : StreamOptions, optional
        How every stream is decoded (default: the model's, `STT.options`).
    """
    state = ServerState(
        stt,
        model_name=model_name,
        max_streams=max_streams,
        api_key=api_key or None,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        options=stt.options if options is None else options,
    )

    @asynccontextmanager
    async def lifespan(app):
        state.loop = asyncio.get_running_loop()
        state.engine = await run_in_threadpool(stt.live, max_streams=max_streams)
        try:
            yield
        finally:
            # Runs after the server stopped taking requests: finish in-flight flushes, stop the thread.
            for session in list(state.sessions):
                session.close()
            await run_in_threadpool(state.engine.close)
            state.engine = None

    app = FastAPI(title="mlx-kyutai-is", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    app.add_middleware(UploadLimit, max_bytes=state.max_upload_bytes)

    # -- errors: OpenAI's JSON shape everywhere -------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        headers = {"Retry-After": "1"} if e.status in (429, 503) else None
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

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
    except (ApiError, _TooLarge):  # the latter: UploadLimit answers 413
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
        # Decode the first block before taking a row: unreadable or empty audio is a 400.
        blocks = await run_in_threadpool(_first_block, audio_file, state.stt.sample_rate)
    except AudioError as e:
        audio_file.close()
        raise ApiError(400, f"file: {name}: {_audio_message(e)}", param="file", code="invalid_audio") from None

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
        """Feed the file, flush; the transcript of `task`."""
        try:
            await run_in_threadpool(_feed_all, stream, blocks)
        except AudioError as e:
            raise ApiError(400, f"file: {name}: {_audio_message(e)}", param="file", code="invalid_audio") from None
        result = await asyncio.wrap_future(stream.flush())
        return result[task]

    if not req.stream:
        try:
            job = asyncio.ensure_future(run())
            while True:  # a client that hangs up frees its row at once
                finished_set, _ = await asyncio.wait([job], timeout=DISCONNECT_POLL_S)
                if finished_set:
                    transcript = job.result()
                    break
                if await request.is_disconnected():
                    job.cancel()
                    return Response(status_code=499)
        finally:
            stream.close()
            done()
        body, media_type = schemas.render(transcript, req)
        return Response(body, media_type=media_type)

    async def sse():
        deltas = schemas.TextDeltas(state.stt.tokenizer.decode)
        job = asyncio.ensure_future(run())
        try:
            while True:
                get = asyncio.ensure_future(events.get())
                # Until the audio is all in, a failure to read it ends the response too.
                await asyncio.wait([get] if job.done() else [get, job], return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
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
            stream.close()
            done()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _own_copy(src):
    dst = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    src.seek(0)
    shutil.copyfileobj(src, dst)
    dst.seek(0)
    return dst


def _first_block(file, sr: int):
    """An iterator over the upload's blocks whose first block is already decoded (so that an
    unreadable file fails here, before the engine is involved)."""
    it = iter_audio_blocks(file, block_seconds=UPLOAD_BLOCK_SECONDS, sr=sr)
    first = next(it)
    return first, it


def _feed_all(stream, blocks):
    first, rest = blocks
    stream.feed(first)
    for block in rest:
        stream.feed(block)


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
    session = RealtimeSession(
        state.engine, state.stt.tokenizer.decode, state.model_name, beta=beta, options=state.options
    )
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
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                break
            session.handle(msg.get("text") if msg.get("text") is not None else msg.get("bytes"))
            state.check_idle()
    except WebSocketDisconnect:
        pass
    finally:
        session.close()  # the row is freed at once
        state.sessions.pop(session, None)
        sender.cancel()
        state.check_idle()


async def _send_loop(state: ServerState, session: RealtimeSession, websocket: WebSocket):
    """Send the session's events in order: its own replies and the engine's words."""
    try:
        while True:
            kind, *rest = await session.outbox.get()
            if kind == "send":
                events = rest
            else:
                events = session.on_engine_event(*rest)
                state.check_idle()
            for event in events:
                await websocket.send_json(event)
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _deny(websocket: WebSocket, err: ApiError):
    """Refuse the handshake with an HTTP status and OpenAI's error JSON (close code 1008 where
    the server cannot send a denial response)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(err.body(), status_code=err.status))
    else:
        await websocket.close(code=1008, reason=err.message[:120])


async def drain(app, timeout: float) -> bool:
    """Finish in-flight work before the server stops: new requests get 503, each websocket's
    audio not yet committed is committed, then wait (at most `timeout` s) for every upload and
    commit to be answered; the websockets are then closed (1001). True if all finished."""
    state: ServerState = app.state.server
    state.draining = True
    for session in list(state.sessions):
        if session.row is not None and session.uncommitted_samples:
            session.commit()
    state.check_idle()
    try:
        await asyncio.wait_for(state.idle.wait(), timeout)
        finished = True
    except asyncio.TimeoutError:
        finished = False
    await asyncio.sleep(0.05)  # let the send loops pass the last events on
    for session, websocket in list(state.sessions.items()):
        try:
            while not session.outbox.empty():
                await asyncio.sleep(0.01)
            await websocket.close(code=1001, reason="server shutting down")
        except Exception:
            pass
    return finished


class UploadLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 (OpenAI's error JSON), decided
    from Content-Length when given, else as the body arrives; the body is read to its end first
    (up to a bound) so that the client, still sending, gets the answer rather than a reset."""

    DRAIN_LIMIT = 256_000_000

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > self.max_bytes:
            await self._drain(receive, 0)
            return await self._reject(scope, send)
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(message.get("more_body", False))
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
            if e.more_body:
                await self._drain(receive, received)
            await self._reject(scope, send)

    async def _drain(self, receive, seen: int):
        while seen < self.DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _reject(self, scope, send):
        mb = self.max_bytes / 1_000_000
        err = ApiError(
            413, f"file: the upload is over the server's limit of {mb:g} MB", param="file", code="request_too_large"
        )
        await JSONResponse(err.body(), status_code=413)(scope, None, send)


class _TooLarge(Exception):
    def __init__(self, more_body: bool):
        self.more_body = more_body
