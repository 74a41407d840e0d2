# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve`: an OpenAI-compatible speech server with live captions in the browser.

    mlx-kyutai-is serve                          # http://127.0.0.1:8000, open it in a browser
    mlx-kyutai-is serve --max-streams 16 --api-key secret

Every upload and websocket is a row of one shared batched engine (`engine.LiveEngine`); the routes
are in `server/app.py`. SIGTERM or Ctrl-C stops taking requests, finishes what is in flight (uploads,
and every websocket's audio, committed and answered), then exits 0; a second signal exits at once.
"""

import argparse
import asyncio
import os
import socket
import sys

import uvicorn

from . import DEFAULT_MODEL
from .errors import run_command

KEY_ENV = "MLX_KYUTAI_IS_API_KEY"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (the help says what happens then)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def configure_parser() -> argparse.ArgumentParser:
    from .server.app import DEFAULT_MAX_UPLOAD_MB

    p = argparse.ArgumentParser(
        prog="mlx-kyutai-is serve",
        description="Serve OpenAI's speech-to-text API (/v1/audio/transcriptions, /v1/audio/translations, "
        "realtime transcription at /v1/realtime?intent=transcription) and a live-captions page at /, "
        "all streams batched on one engine.",
        formatter_class=_Formatter,
    )
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="Hugging Face repo id or a local model directory")
    p.add_argument("--quantize", "-q", type=int, choices=(4, 8), default=None, help="quantize the LM when loading")
    p.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        default=None,
        help="compute type of the LM (default: as stored)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", "-p", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--max-streams",
        type=_positive(int),
        default=64,
        metavar="N",
        help="uploads and websockets served at once (rows of the batched engine); one more gets 503",
    )
    p.add_argument(
        "--api-key",
        default=None,  # read from the environment in serve(), so --help never shows it
        metavar="KEY",
        help=f"require 'Authorization: Bearer KEY' on /v1 (default: ${KEY_ENV}; unset: no key)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=_positive(float),
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help="uploads over this size get 413",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="the model id /v1/models lists (default: the --model value); clients may send any model name",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_positive(float),
        default=60.0,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, wait at most this long for in-flight work",
    )
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    return p


def _positive(kind):
    def parse(s: str):
        v = kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    parse.__name__ = kind.__name__
    return parse


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


class ServeError(Exception):
    """A user-facing error of the command (one line)."""


def _bind(host: str, port: int) -> socket.socket:
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


def serve(args) -> int:
    from . import load
    from .server.app import create_app

    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    stt = load(args.model, quantize=args.quantize, dtype=args.dtype)
    app = create_app(
        stt,
        model_name=args.model_name or str(args.model),
        max_streams=args.max_streams,
        api_key=api_key,
        max_upload_mb=args.max_upload_mb,
    )
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        # the sans-I/O websockets protocol where this uvicorn has it (the legacy one is deprecated)
        ws="websockets-sansio" if "websockets-sansio" in uvicorn.config.WS_PROTOCOLS else "websockets",
        timeout_graceful_shutdown=args.shutdown_timeout,
    )
    url = f"http://{_display_host(args.host)}:{port}"
    server = Server(
        config,
        app,
        shutdown_timeout=args.shutdown_timeout,
        banner=f"mlx-kyutai-is serve: {url}  (live captions: open it in a browser; OpenAI API base: {url}/v1; "
        f"{args.max_streams} streams{'; API key required' if api_key else ''})",
    )
    server.run(sockets=[sock])
    print("mlx-kyutai-is serve: stopped", file=sys.stderr, flush=True)
    return 0


class Server(uvicorn.Server):
    """uvicorn's Server with a graceful stop: the first SIGTERM/SIGINT drains (`server.app.drain`:
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
        from .server.app import drain

        try:
            if not await drain(self.app, self.shutdown_timeout):
                print("mlx-kyutai-is serve: shutdown timeout: unfinished work dropped", file=sys.stderr, flush=True)
        finally:
            self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1)."""
    parser = configure_parser()
    args = parser.parse_args(argv)
    # KeyboardInterrupt here is one before the server ran (while loading): it handles its own.
    return run_command(parser.prog, lambda: serve(args))


if __name__ == "__main__":
    sys.exit(main())
