# Copyright © 2026 mlx-kyutai-is contributors
"""The Wyoming server: `wyoming.server.AsyncServer.from_uri` listening, one `WyomingHandler` per
connection, every utterance a stream of one shared `LiveEngine`, and a graceful stop."""

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass
from urllib.parse import urlparse

from wyoming.server import AsyncServer, AsyncTcpServer, AsyncUnixServer

from ...errors import Error
from .announce import Announcement, announce
from .handler import WyomingHandler
from .info import DEFAULT_TASK, describe

log = logging.getLogger("mlx_kyutai_is")

DEFAULT_URI = "tcp://127.0.0.1:10300"


class WyomingError(Error):
    """A user-facing error of the Wyoming server (one line)."""


def parse_uri(uri: str):
    """(scheme, host, port) of a ``tcp://HOST:PORT`` or ``unix://PATH`` URI (host = the path for unix)."""
    u = urlparse(uri)
    if u.scheme == "tcp":
        try:
            port = u.port
        except ValueError:
            port = None
        if not u.hostname or port is None:
            raise WyomingError(f"--uri {uri!r}: a tcp URI needs a host and a port, e.g. {DEFAULT_URI}")
        return "tcp", u.hostname, port
    if u.scheme == "unix" and u.path:
        return "unix", u.path, None
    raise WyomingError(f"--uri {uri!r}: use tcp://HOST:PORT (e.g. {DEFAULT_URI}) or unix://PATH")


@dataclass
class Limits:
    """A server's bounds per client and in all.

    max_rows: engine rows in use at once, all connections together (an utterance takes 1, or 2
    for "both"); idle_timeout: seconds a connection may send nothing while no transcript is owed;
    max_unread_seconds: audio a connection may have sent that the model has not read yet (its
    next event waits beyond it); max_event_bytes: the largest event data or payload.
    """

    max_rows: int = 16
    idle_timeout: float = 60.0
    max_unread_seconds: float = 10.0
    max_event_bytes: int = 4 << 20


class WyomingServer:
    """Wyoming speech-to-text on one loaded model.

    Parameters
    ----------
    stt : STT
        The loaded model (`mlx_kyutai_is.load`).
    model_name : str
        What `info` calls the model.
    limits : Limits, optional
    default_task : str
        The task of a connection that sends no `transcribe` (or one naming no language).
    options : StreamOptions, optional
        Passed to `LiveEngine.open` (default: the model's).
    """

    def __init__(
        self, stt, model_name: str, limits: Limits | None = None, default_task: str = DEFAULT_TASK, options=None
    ):
        limits = limits or Limits()
        self.stt, self.model_name, self.limits = stt, model_name, limits
        self.max_rows, self.idle_timeout = limits.max_rows, limits.idle_timeout
        self.max_unread_seconds, self.max_event_bytes = limits.max_unread_seconds, limits.max_event_bytes
        self.default_task, self.options = default_task, options
        self.info = describe(model_name)
        self.rows = 0  # engine rows in use (loop thread only)
        self.handlers: set[WyomingHandler] = set()
        self.engine = None
        self.closing: asyncio.Event | None = None
        self._force = False  # a second signal: stop waiting for connections
        self._server: AsyncServer | None = None

    # -- rows ----------------------------------------------------------------------------------
    def take_rows(self, n: int) -> bool:
        if self.rows + n > self.max_rows:
            return False
        self.rows += n
        return True

    def give_rows(self, n: int):
        self.rows -= n

    def stats(self) -> dict:
        """The engine's figures (steps, rows per step) and the rows and connections in use."""
        engine = self.engine.stats() if self.engine is not None else {}
        return {**engine, "rows_in_use": self.rows, "max_rows": self.max_rows, "connections": len(self.handlers)}

    # -- running -------------------------------------------------------------------------------
    def handler(self, reader, writer) -> WyomingHandler:
        return WyomingHandler(self, reader, writer)

    async def start(self, uri: str):
        """Start the engine and listen on `uri` (returns once listening)."""
        scheme, host, port = parse_uri(uri)
        self.closing = asyncio.Event()
        self.engine = self.stt.live(max_streams=self.max_rows)
        server = AsyncServer.from_uri(uri)
        assert isinstance(server, (AsyncTcpServer, AsyncUnixServer))
        try:
            await server.start(self.handler)
        except OSError as e:
            await asyncio.to_thread(self.engine.close)
            self.engine = None
            where = f"{host}:{port}" if scheme == "tcp" else host
            raise WyomingError(f"cannot listen on {where}: {e.strerror or e}") from None
        self._server = server

    async def drain(self, timeout: float) -> bool:
        """Stop taking work: utterances in progress are ended and answered, then every connection
        closes. False if some were still open after `timeout` seconds."""
        self.closing.set()
        deadline = asyncio.get_running_loop().time() + timeout
        while self.handlers and not self._force and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        return not self.handlers

    async def stop(self):
        """Close the listener and any connection left, then the engine."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.close)

    async def serve(
        self,
        uri: str,
        *,
        banner: str | None = None,
        shutdown_timeout: float = 30.0,
        zeroconf: Announcement | None = None,
    ) -> bool:
        """Serve until SIGTERM or SIGINT, then drain (a second signal stops at once).

        Returns
        -------
        bool
            True when every connection was finished before the shutdown timeout.
        """
        await self.start(uri)
        loop = asyncio.get_running_loop()
        stop, signals = asyncio.Event(), 0

        def on_signal():
            nonlocal signals
            signals += 1
            if signals == 1:
                print(
                    "mlx-kyutai-is wyoming: stopping: finishing in-flight transcripts (again to stop now)",
                    file=sys.stderr,
                    flush=True,
                )
            stop.set()
            if signals > 1:
                self._force = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        zc = None
        try:
            if zeroconf is not None:
                zc = await announce(zeroconf)
            if banner:
                print(banner, flush=True)
            await stop.wait()
            drained = await self.drain(shutdown_timeout)
        finally:
            if zc is not None:
                await zc.async_close()
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return drained
