# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is serve`: an OpenAI-compatible speech server with live captions in the browser.

    mlx-kyutai-is serve                          # http://127.0.0.1:8000, open it in a browser
    mlx-kyutai-is serve --max-streams 16 --api-key secret

Every upload and websocket is a row of one shared batched engine (`runtime.live.LiveEngine`); the routes
are in `apps/openai/app.py`. SIGTERM or Ctrl-C stops taking requests, finishes what is in flight (uploads,
and every websocket's audio, committed and answered), then exits 0 (128 + the signal if the shutdown
timeout or a second signal dropped work).
"""

import argparse
import logging
import os
import ssl
import sys
from pathlib import Path

import uvicorn

from ..apps.openai.app import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_AUDIO_MINUTES,
    DEFAULT_MAX_UNREAD_SECONDS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_READ_TIMEOUT_S,
    LOCAL_HOSTS,
    Limits,
    create_app,
)
from ..apps.openai.server import (
    WILDCARD_HOSTS,
    ServeError,
    Server,
    bind,
    display_host,
    read_timeout_protocol,
)
from .common import (
    add_model_args,
    debug,
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
        help="streams of the batched engine at once: each upload and websocket holds one, and a websocket one "
        "more while its last utterance is flushed; a client finding none free gets 503",
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
        "--max-audio-minutes",
        type=positive_float,
        default=DEFAULT_MAX_AUDIO_MINUTES,
        metavar="MIN",
        help="decoded audio per upload; longer gets 413 (uploads are decoded as the model reads them)",
    )
    p.add_argument(
        "--max-unread-seconds",
        type=positive_float,
        default=DEFAULT_MAX_UNREAD_SECONDS,
        metavar="SECONDS",
        help="audio a realtime session may have sent that the model has not read yet; "
        "past it the session gets an error event and is closed",
    )
    p.add_argument(
        "--allowed-hosts",
        action="append",
        default=None,
        metavar="HOST[,HOST...]",
        help="host names the server answers to besides localhost, 127.0.0.1, ::1 and --host "
        "(requests naming another host are refused: DNS rebinding); '*' for any",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="a web origin (https://app.example) whose pages may upload and open websockets, besides "
        "the server's own page; gets CORS headers; '*' for any",
    )
    p.add_argument(
        "--read-timeout",
        type=positive_float,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="SECONDS",
        help="a request's headers, and each part of its body, must arrive within this (else 408)",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=DEFAULT_IDLE_TIMEOUT_S,
        metavar="SECONDS",
        help="a websocket that sends nothing for this long, with nothing pending, is closed",
    )
    p.add_argument(
        "--ssl-certfile", default=None, metavar="PEM", help="serve https:// and wss:// with this certificate"
    )
    p.add_argument("--ssl-keyfile", default=None, metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--model-name",
        default=None,
        help="the model id /v1/models lists (default: the model's directory name or hub id); "
        "clients may send any model name",
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


def model_name(model) -> str:
    """What /v1/models lists: a local model's directory name, else the hub id (never a local path)."""
    path = Path(str(model)).expanduser()
    return path.resolve().name if path.exists() else str(model)


def check_tls(args):
    """Both TLS files or neither, and a certificate that loads: a one-line error before the model loads."""
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ServeError("--ssl-certfile and --ssl-keyfile go together")
    if args.ssl_certfile:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        except (OSError, ssl.SSLError) as e:
            raise ServeError(f"cannot use {args.ssl_certfile} / {args.ssl_keyfile}: {e.strerror or e}") from None


def serve(args) -> int:
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None
    check_tls(args)
    hosts = [h.strip() for value in args.allowed_hosts or () for h in value.split(",") if h.strip()]
    wildcard = args.host in WILDCARD_HOSTS
    if not wildcard:
        hosts.append(args.host)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    stt = load_model(args, always_say=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mlx-kyutai-is serve: %(message)s"))
    logging.getLogger("mlx_kyutai_is").addHandler(handler)
    app = create_app(
        stt,
        model_name=args.model_name or model_name(args.model),
        max_streams=args.max_streams,
        api_key=api_key,
        max_upload_mb=args.max_upload_mb,
        limits=Limits(
            max_audio_minutes=args.max_audio_minutes,
            max_unread_seconds=args.max_unread_seconds,
            read_timeout=args.read_timeout,
            idle_timeout=args.idle_timeout,
            debug=debug(),
        ),
        allowed_hosts=hosts,
        allow_origins=args.allow_origin or (),
    )
    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        http=read_timeout_protocol(args.read_timeout),
        # the sans-I/O websockets protocol where this uvicorn has it (the legacy one is deprecated)
        ws="websockets-sansio" if "websockets-sansio" in uvicorn.config.WS_PROTOCOLS else "websockets",
        timeout_graceful_shutdown=args.shutdown_timeout,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
    scheme = "https" if args.ssl_certfile else "http"
    url = f"{scheme}://{display_host(args.host)}:{port}"
    where = f"listening on every interface ({args.host or '*'}:{port}); on this machine: " if wildcard else ""
    streams = f"{args.max_streams} stream{'s' if args.max_streams != 1 else ''}"
    warnings = []
    if wildcard:
        names = ", ".join([*LOCAL_HOSTS, *hosts])
        warnings.append(f"listening on every interface: other machines reach it by a name given with --allowed-hosts "
                        f"(answered now: {names})")  # fmt: skip
    if not api_key and args.host not in ("localhost", "::1") and not args.host.startswith("127."):
        warnings.append(f"--host {args.host or '*'} without --api-key: anyone who can reach this machine may use it")
    for warning in warnings:
        print(f"mlx-kyutai-is serve: warning: {warning}", file=sys.stderr, flush=True)
    server = Server(
        config,
        app,
        shutdown_timeout=args.shutdown_timeout,
        banner=f"mlx-kyutai-is serve: {where}{url}  (live captions: open it in a browser; OpenAI API base: "
        f"{url}/v1; {streams}{'; API key required' if api_key else ''})",
    )
    server.run(sockets=[sock])
    status = server.exit_status()
    print(
        "mlx-kyutai-is serve: stopped" + ("; unfinished work was dropped" if status else ""),
        file=sys.stderr,
        flush=True,
    )
    return status


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1)."""
    p = configure_parser()
    args = p.parse_args(argv)
    # KeyboardInterrupt here is one before the server ran (while loading): it handles its own.
    return run(p.prog, lambda: serve(args))
