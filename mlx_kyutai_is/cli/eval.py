# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is eval`: WER/CER and BLEU/chrF of models on a manifest, as the model card reports them."""

import argparse
from pathlib import Path

from ..atomic import atomic_write, check_writable_dir
from ..evaluation.evaluate import (
    Console,
    EvalError,
    evaluate,
    format_table,
    model_specs,
    to_csv,
    to_json,
)
from ..evaluation.manifest import read_manifest
from ..models.loading import DTYPES
from ..stt import DEFAULT_BATCH_SIZE, DEFAULT_MODEL
from ..tasks import TASKS, task_list
from .common import add_segment_args, parser, positive_int, run, segment_options

PROG = "mlx-kyutai-is eval"


def _quantize_list(s: str) -> list[int]:
    bits = []
    for part in s.split(","):
        part = part.strip()
        if part not in ("4", "8"):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of 4 and 8, got {s!r}")
        bits.append(int(part))
    return bits


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "eval",
        description="Word and character error rate (Icelandic transcript) and BLEU/chrF (English "
        "translation) of one or more models on a manifest, raw and normalised as the model card "
        "reports them, with a row per model and its difference to the first.",
        epilog="manifest: .jsonl, .csv or .tsv with fields audio (relative to the manifest), text "
        "(is) and translation (en).\n\nexamples:\n"
        "  mlx-kyutai-is eval test.jsonl --task both\n"
        "  mlx-kyutai-is eval test.tsv --quantize 8,4 -o report.json --csv utterances.csv\n"
        "  mlx-kyutai-is eval test.jsonl --model hf_dir --dtype float32 --reference transformers",
    )
    p.add_argument("manifest", help="JSONL, CSV or TSV file: audio, text and/or translation")
    p.add_argument("--task", "-t", choices=TASKS, default="is", help="is: WER/CER; en: BLEU/chrF; both (default is)")
    p.add_argument(
        "--model",
        "-m",
        nargs="+",
        default=[DEFAULT_MODEL],
        metavar="M",
        help=f"models to compare, a row each: hub ids or directories (default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--quantize",
        "-q",
        type=_quantize_list,
        default=[],
        metavar="BITS",
        help="extra rows: the first model quantized on load to these bits, e.g. 8,4",
    )
    p.add_argument("--dtype", choices=DTYPES, default=None, help="LM compute type (default: as stored, bf16)")
    p.add_argument(
        "--batch-size", "-b", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
        help=f"utterances decoded together (default {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="only the first N entries")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="write the JSON report here")
    p.add_argument("--csv", default=None, metavar="FILE", help="write per-utterance texts and metrics here")
    p.add_argument(
        "--reference",
        choices=("transformers",),
        default=None,
        help="also run the model card's transformers recipe on the first model's Hugging Face "
        "checkpoint (needs the test extra): its figures and the token agreement",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_segment_args(p)
    return p


def _check_output(path: str | None, flag: str) -> None:
    """Before any model runs: the output's directory exists (made if needed) and is writable."""
    if path is None:
        return
    if Path(path).is_dir():
        raise EvalError(f"{flag} {path}: is a directory")
    check_writable_dir(Path(path).expanduser().parent)


def evaluate_manifest(args) -> int:
    _check_output(args.output, "-o")
    _check_output(args.csv, "--csv")
    utterances = read_manifest(args.manifest, task_list(args.task))
    if args.limit is not None:
        utterances = utterances[: args.limit]
    console = Console(not args.no_progress, prefix=PROG)
    report = evaluate(
        utterances,
        args.task,
        model_specs(args.model, args.quantize),
        dtype=args.dtype,
        batch_size=args.batch_size,
        **segment_options(args),
        reference=args.reference,
        console=console,
    )
    if args.output:  # atomic: a reader never sees half a report, an interrupted run leaves the old one
        atomic_write(args.output, to_json(report))
    if args.csv:
        atomic_write(args.csv, to_csv(report))
    print(format_table(report), end="", flush=True)
    failed = len(utterances) - report["n"]
    if failed:
        console.warn(f"warning: {failed} of {len(utterances)} utterances failed and are left out of every row")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit status (errors: one line on stderr, status 1; a
    failed utterance is reported and counted, and makes the status 1 once the report is out)."""
    p = configure_parser()
    args = p.parse_args(argv)
    return run(p.prog, lambda: evaluate_manifest(args))
