# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve`: an OpenAI-compatible speech server with live captions in the browser.

    mlx-kyutai-is serve                          # http://127.0.0.1:8000, open it in a browser
    mlx-kyutai-is serve --max-streams 16 --api-key secret

Every upload and websocket is a row of one shared batched engine (`runtime.live.LiveEngine`); the routes
are in `apps/openai/app.py`. SIGTERM or Ctrl-C stops taking requests, finishes what is in flight (uploads,
and every websocket's audio, committed and answered), then exits 0; a second signal exits at once.
"""

import argparse
import os
import sys

import uvicorn

from ..apps.openai.app import DEFAULT_MAX_UPLOAD_MB, create_app
from ..apps.openai.server import Server, bind, display_host
from .common import (
    add_model_args,
    load_model,
    parser,
    positive_float,
    positive_int,
    run,
)

KEY_ENV = "MLX_KYUTAI_IS_API_KEY"


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "serve",
        description="Serve OpenAI's speech-to-text API (/v1/audio/transcriptions, /v1/audio/translations, "
        "realtime transcription at /v1/realtime?intent=transcription) and a live-captions page at /, "
        "all streams batched on one engine.",
    )
    add_model_args(p, task=False, dtype=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", "-p", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--max-streams",
        type=positive_int,
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
        type=positive_float,
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
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, wait at most this long for in-flight work",
    )
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    return p


def serve(args) -> int:
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    stt = load_model(args, always_say=True)
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
    url = f"http://{display_host(args.host)}:{port}"
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


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1)."""
    p = configure_parser()
    args = p.parse_args(argv)
    # KeyboardInterrupt here is one before the server ran (while loading): it handles its own.
    return run(p.prog, lambda: serve(args))
