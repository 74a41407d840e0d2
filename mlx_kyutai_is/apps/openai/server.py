# Copyright © 2026 mlx-kyutai-is contributors
"""Running the app: the listening socket, uvicorn's HTTP protocol with read timeouts, and uvicorn's
server with a graceful stop."""

import asyncio
import json
import logging
import signal
import socket
import sys
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ...errors import Error
from .app import drain
from .schemas import error_body

log = logging.getLogger("mlx_kyutai_is.serve")

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def display_host(host: str) -> str:
    """The host to put in a URL a browser on this machine opens."""
    if host in WILDCARD_HOSTS:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class ServeError(Error):
    """A user-facing error of the command (one line)."""


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the protocol says
    # TCP, and without it every keep-alive request and back-to-back websocket event waits ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def read_timeout_protocol(read_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline for a request's headers, and one line in the log (not
    uvicorn's "Invalid HTTP request received") for a TLS client on this plain-HTTP port. (The body's
    pace is `app.BodyLimits`'s.)"""

    class HttpProtocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.header_deadline = None
            self.first_data = True
            self._arm()

        def data_received(self, data: bytes):
            if self.first_data:
                self.first_data = False
                if data[:1] == b"\x16" and data[1:2] == b"\x03":  # a TLS ClientHello record
                    client = f"{self.client[0]}:{self.client[1]} " if self.client else ""
                    log.warning(
                        "%sa TLS (https:// or wss://) connection reached this plain-HTTP port: connect with "
                        "http:// and ws://, or start the server with --ssl-certfile and --ssl-keyfile",
                        client,
                    )
                    self.transport.close()
                    return
            super().data_received(data)
            self._arm()

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            """A deadline while a request's headers are awaited (after the first byte: uvicorn's
            keep-alive timeout covers an idle connection between requests)."""
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                if self.header_deadline is None and (self.cycle is None or self.cycle.response_complete):
                    self.header_deadline = self.loop.call_later(read_timeout, self._headers_timed_out)
            else:
                self._disarm()

        def _disarm(self):
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def _headers_timed_out(self):
            self.header_deadline = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            body = json.dumps(
                error_body(f"the request headers did not arrive within {read_timeout:g} s", code="request_timeout")
            ).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()

    return HttpProtocol


class Server(uvicorn.Server):
    """uvicorn's Server with a graceful stop: the first SIGTERM/SIGINT drains (`app.drain`:
    new requests 503, in-flight uploads and websocket audio finished and answered, at most
    `shutdown_timeout` seconds in all, then what is left answered with an error), then stops;
    a second one stops at once. `exit_status()` is 0, or 128 + the signal when work was dropped."""

    def __init__(self, config, app, *, shutdown_timeout: float, banner: str):
        super().__init__(config)
        self.app, self.shutdown_timeout, self.banner, self.draining = app, shutdown_timeout, banner, False
        self.signal = None
        self.dropped = False

    async def startup(self, sockets=None):
        await super().startup(sockets)
        if self.started:
            print(self.banner, flush=True)

    def handle_exit(self, sig, frame):
        # Not uvicorn's own: it would re-raise the signal once stopped (and exit non-zero).
        self.signal = self.signal or sig
        if self.draining or not self.started:
            if self.app.state.server.busy:
                self.dropped = True
            self.should_exit = self.force_exit = True
            return
        self.draining = True
        print(
            "mlx-kyutai-is serve: stopping: finishing in-flight work (again to stop now)", file=sys.stderr, flush=True
        )
        self.app.state.server.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))

    async def _drain(self):
        t0 = time.monotonic()
        try:
            if not await drain(self.app, self.shutdown_timeout):
                self.dropped = True
                print("mlx-kyutai-is serve: shutdown timeout: unfinished work dropped", file=sys.stderr, flush=True)
        finally:
            # The deadline is one: uvicorn's own wait for the connections gets what is left of it
            # (a moment at least, for the answers just queued to go out).
            self.config.timeout_graceful_shutdown = max(0.5, self.shutdown_timeout - (time.monotonic() - t0))
            self.should_exit = True

    def exit_status(self) -> int:
        if not self.dropped:
            return 0
        return 128 + int(self.signal or signal.SIGTERM)
