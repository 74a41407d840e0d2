# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is wyoming`: a Wyoming speech-to-text server for Home Assistant and Wyoming satellites.

    mlx-kyutai-is wyoming                                   # tcp://127.0.0.1:10300
    mlx-kyutai-is wyoming --uri tcp://0.0.0.0:10300 --zeroconf

Every utterance is a stream of one shared batched engine; words stream as `transcript-chunk` events
while the person speaks (`apps/wyoming/`). SIGTERM or Ctrl-C stops taking work, finishes the
utterances in progress (their transcripts are sent), then exits 0; a second signal exits at once.
"""

import argparse
import asyncio
import socket
import sys
from pathlib import Path

from ..apps.wyoming import DEFAULT_URI, Limits, WyomingServer, announcement, parse_uri
from ..apps.wyoming.server import WyomingError
from ..stt import DEFAULT_MODEL
from .common import (
    add_model_args,
    load_model,
    parser,
    positive_float,
    positive_int,
    run,
)


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "wyoming",
        description="Serve speech-to-text over the Wyoming protocol (Home Assistant: Settings -> Devices & "
        "services -> Add integration -> Wyoming Protocol, then this host and port). Languages: 'is' "
        "(Icelandic text), 'en' (English translation of Icelandic speech), 'both'.",
    )
    add_model_args(p, task=False, dtype=True)
    p.add_argument(
        "--uri", default=DEFAULT_URI, help="where to listen: tcp://HOST:PORT (0.0.0.0: every interface) or unix://PATH"
    )
    p.add_argument(
        "--max-streams",
        type=positive_int,
        default=16,
        metavar="N",
        help="engine rows in use at once, all clients together (an utterance takes 1, or 2 for 'both'); "
        "one more is refused with an error event",
    )
    p.add_argument(
        "--zeroconf",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="announce the server on the network (mDNS) so Home Assistant finds it (needs the [zeroconf] extra "
        "and a --uri on the network); NAME defaults to mlx-kyutai-is-<hostname>",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="close a connection that sends nothing this long (while no transcript is owed)",
    )
    p.add_argument(
        "--max-unread-seconds",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="audio a client may be ahead of the model; its next event waits beyond it",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM/Ctrl-C, wait at most this long for the transcripts in progress",
    )
    return p


def _check_free(scheme: str, host: str, port):
    """Refuse a port in use before the model loads (the server binds it again once loaded)."""
    if scheme != "tcp":
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise WyomingError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def serve(args) -> int:
    scheme, host, port = parse_uri(args.uri)
    zeroconf = None
    if args.zeroconf is not None:
        if scheme != "tcp":
            raise WyomingError(f"--zeroconf announces a tcp:// server, not {args.uri}")
        zeroconf = announcement(host, port, args.zeroconf or None)
    _check_free(scheme, host, port)
    stt = load_model(args, always_say=True)
    name = str(args.model) if args.model == DEFAULT_MODEL or not Path(args.model).exists() else Path(args.model).name
    server = WyomingServer(
        stt,
        model_name=name,
        limits=Limits(
            max_rows=args.max_streams, idle_timeout=args.idle_timeout, max_unread_seconds=args.max_unread_seconds
        ),
    )
    where = f"{args.uri}" + (f", announced as {zeroconf.name!r} at {zeroconf.address}" if zeroconf else "")
    banner = (
        f"mlx-kyutai-is wyoming: {where}  (model {name}; languages is, en, both; "
        f"{args.max_streams} engine rows; streaming transcript chunks)"
    )
    drained = asyncio.run(
        server.serve(args.uri, banner=banner, shutdown_timeout=args.shutdown_timeout, zeroconf=zeroconf)
    )
    if not drained:
        print("mlx-kyutai-is wyoming: stopped with transcripts unfinished", file=sys.stderr, flush=True)
        return 1
    print("mlx-kyutai-is wyoming: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1)."""
    p = configure_parser()
    args = p.parse_args(argv)
    return run(p.prog, lambda: serve(args))
