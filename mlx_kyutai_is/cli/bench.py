# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is bench`: speed figures (the measuring is in `tools/bench.py`)."""

import argparse
import json

from ..atomic import atomic_write
from ..tools import bench
from .common import parser, positive_float, positive_int, run


def _batch_list(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return sorted(set(out))


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "bench",
        description="Measure ms per 80 ms step, real-time factor, memory and load time for bf16, q8 "
        "and q4, batch 1 and 2, beside transformers (and moshi_mlx where installed). Without "
        "--model it builds the full-size architecture with random weights: no download.",
    )
    p.add_argument("--model", help="benchmark this model directory or hub id instead of random weights")
    p.add_argument("--quick", action="store_true", help="tiny model and a few steps (seconds; checks the code path)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--steps", type=int, help="timed steps per measurement (default 30; 4 with --quick)")
    p.add_argument("--warmup", type=int, help="untimed steps before each measurement (default 5; 2 with --quick)")
    p.add_argument("--offline-seconds", type=float, help="audio length for the offline RTF (default 60; 0 skips)")
    p.add_argument(
        "--precisions", nargs="+", choices=list(bench.PRECISIONS), default=list(bench.PRECISIONS), help="precisions to measure"
    )
    p.add_argument(
        "--budget", type=float, default=30.0, help="seconds per measurement before it stops early"
    )
    p.add_argument(
        "--max-offline-minutes",
        type=float,
        default=15.0,
        help="skip the offline run of a precision whose estimate is longer",
    )
    p.add_argument("--length-steps", type=int, help="steps of the cost-over-length run (default 10100)")
    p.add_argument("--no-reference", action="store_true", help="skip transformers and moshi_mlx")
    p.add_argument(
        "--batch",
        type=_batch_list,
        metavar="B,B,...",
        help="engine step for B streams at once (e.g. 1,2,4,8,16,32,64): ms per step, audio seconds per "
        "second, real-time capacity; runs only the sections asked for (--batch, --bulk, --kernels)",
    )
    p.add_argument(
        "--bulk",
        action="store_true",
        help="wall time of transcribe([files]) with batch_size 1 and the default batch size, in one run",
    )
    p.add_argument("--bulk-files", type=positive_int, default=16, metavar="N", help="files for --bulk")
    p.add_argument(
        "--bulk-seconds", type=positive_float, default=60.0, metavar="S", help="seconds per --bulk file"
    )
    p.add_argument(
        "--kernels",
        action="store_true",
        help="kernels per steady-state frame (LM step, Mimi frame, whole frame) by type, and host syncs",
    )
    p.add_argument(
        "--long",
        action="store_true",
        help="a long Icelandic recording with pauses transcribed with --segment vad and with none, in one run: "
        "wall time ratio, segments, rows per step, the detector's share (default model: the full-size "
        "structure with small widths)",
    )
    p.add_argument("--long-minutes", type=positive_float, default=5.0, metavar="MIN", help="length of --long's recording")
    p.add_argument("--long-audio", default=None, metavar="FILE", help="use this recording for --long instead")
    p.add_argument(
        "--codec",
        action="store_true",
        help="the Mimi codec alone (float32, 32 codebooks): streaming decode and encode ms per 80 ms frame, "
        "whole-signal decode and encode RTF over --offline-seconds (default 20)",
    )
    p.add_argument("-o", "--output", help="also write the JSON results to this file")
    return p


def measure(args) -> int:
    result = bench.run(args)
    text = json.dumps(result, indent=2)
    if args.output:
        atomic_write(args.output, text + "\n")
    print(text if args.json else bench.format_table(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = configure_parser()
    args = p.parse_args(argv)
    return run(p.prog, lambda: measure(args))
