# Copyright © 2026 mlx-kyutai-is contributors
"""Running the app: the listening socket and uvicorn's server with a graceful stop."""

import asyncio
import socket
import sys

import uvicorn

from ...errors import Error
from .app import drain


def display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class ServeError(Error):
    """A user-facing error of the command (one line)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


class Server(uvicorn.Server):
    """uvicorn's Server with a graceful stop: the first SIGTERM/SIGINT drains (`app.drain`:
    new requests 503, in-flight uploads and websocket audio finished and answered), then stops;
    a second one stops at once."""

    def __init__(self, config, app, *, shutdown_timeout: float, banner: str):
        super().__init__(config)
        self.app, self.shutdown_timeout, self.banner, self.draining = app, shutdown_timeout, banner, False

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            print(self.banner, flush=True)

    def handle_exit(self, sig, frame):
        # Not uvicorn's own: it would re-raise the signal once stopped (and exit non-zero).
        if self.draining or not self.started:
            self.should_exit = self.force_exit = True
            return
        self.draining = True
        print(
            "mlx-kyutai-is serve: stopping: finishing in-flight work (again to stop now)", file=sys.stderr, flush=True
        )
        self.app.state.server.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self):
        try:
            if not await drain(self.app, self.shutdown_timeout):
                print("mlx-kyutai-is serve: shutdown timeout: unfinished work dropped", file=sys.stderr, flush=True)
        finally:
            self.should_exit = True
