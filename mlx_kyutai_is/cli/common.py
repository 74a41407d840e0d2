# Copyright © 2026 mlx-kyutai-is contributors
"""What every command shares, defined once: the help formatter, the shared options, positive
numbers, signal handling, and how errors, warnings and notes are printed (one line each)."""

import argparse
import os
import signal
import sys
import traceback
import warnings
from contextlib import contextmanager

from ..errors import DEBUG_ENV, one_line
from ..models.loading import DTYPES
from ..runtime.segments import DEFAULT_MAX_SEGMENT
from ..stt import DEFAULT_MODEL, load
from ..tasks import TASKS

PROG = "mlx-kyutai-is"
# The command running (`run` sets it): every error, warning and note of a command starts with
# ``mlx-kyutai-is COMMAND:``, as argparse's usage errors do.
_current = PROG


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout; shows defaults, except None and those of on/off flags."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:  # flags: the help says what they do
            return action.help
        return super()._get_help_string(action)


def parser(command: str, **kwargs) -> argparse.ArgumentParser:
    """A command's parser: ``mlx-kyutai-is COMMAND`` in its usage lines, the house formatter."""
    return argparse.ArgumentParser(prog=f"{PROG} {command}", formatter_class=Formatter, **kwargs)


def positive(kind):
    """An argparse type: a `kind` (int or float) > 0."""

    def parse(s: str):
        v = kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


positive_int, positive_float = positive(int), positive(float)


def add_model_args(p: argparse.ArgumentParser, *, task: bool = True, dtype: bool = False):
    """--model, --quantize, (--dtype) and (--task): how every command that runs the model names it."""
    p.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help="Hugging Face repo id, or a local directory (a Hugging Face checkpoint or one made by `convert`)",
    )
    p.add_argument(
        "--quantize",
        "-q",
        type=int,
        choices=(4, 8),
        default=None,
        help="quantize the language model to this many bits when loading (faster, less memory)",
    )
    if dtype:
        p.add_argument("--dtype", choices=list(DTYPES), default=None, help="compute type of the LM (default: as stored)")
    if task:
        p.add_argument(
            "--task",
            "-t",
            default="is",
            choices=TASKS,
            help="is: Icelandic transcript; en: English translation; both: the two at once",
        )


def add_segment_args(p: argparse.ArgumentParser):
    """--segment and --max-segment: long recordings cut at pauses and decoded side by side."""
    p.add_argument(
        "--segment",
        choices=("vad", "none"),
        default="vad",
        help="vad: cut recordings longer than --max-segment at pauses and decode the pieces side by side, "
        "where this machine's batching makes that faster; none: one unbroken stream per file",
    )
    p.add_argument(
        "--max-segment",
        type=positive_float,
        default=DEFAULT_MAX_SEGMENT,
        metavar="SECONDS",
        help="the longest piece; shorter recordings are never cut",
    )


def segment_options(args) -> dict:
    """`transcribe_iter`'s segment arguments from `add_segment_args`' options."""
    return {"segment": None if args.segment == "none" else args.segment, "max_segment": args.max_segment}


def load_model(args, always_say: bool = False):
    """The model the options name; says so on stderr when a terminal watches (the first run downloads)."""
    if always_say or sys.stderr.isatty():
        print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    return load(args.model, quantize=args.quantize, dtype=getattr(args, "dtype", None))


# --------------------------------------------------------------------------------------------
# Errors, warnings and notes: one line each on stderr


def debug() -> bool:
    """Tracebacks wanted: `--debug` on the main command, or MLX_KYUTAI_IS_DEBUG=1."""
    return bool(os.environ.get(DEBUG_ENV))


def error(e: BaseException | str, prefix: str = "", prog: str | None = None):
    """One line on stderr. The package's errors and OS errors carry messages written for users;
    anything else (a bug) also names its type, and --debug shows its traceback."""
    msg = one_line(e, hint=" (--debug shows the traceback)") if isinstance(e, BaseException) else e
    print(f"{prog or _current}: error: {prefix}{msg}", file=sys.stderr, flush=True)


def warn(msg: str, prog: str | None = None):
    print(f"{prog or _current}: warning: {msg}", file=sys.stderr, flush=True)


def note(msg: str, prog: str | None = None):
    print(f"{prog or _current}: {msg}", file=sys.stderr, flush=True)


def print_traceback(e: BaseException):
    traceback.print_exception(e, file=sys.stderr)


def _one_line_warnings():
    def show(message, category, filename, lineno, file=None, line=None):
        warn(str(message).strip().splitlines()[0] if str(message).strip() else category.__name__)

    warnings.showwarning = show


def run(prog: str, fn) -> int:
    """Run a command's body `fn()` (returning its exit status, None for 0) the house way: warnings
    and errors as one line (``PROG: error: ...``, status 1), Ctrl-C 130 and SIGTERM 143 with one
    line, a closed stdout (``| head``) not an error; with --debug, tracebacks instead. `prog` is
    the command's parser's (``mlx-kyutai-is COMMAND``): `error`, `warn` and `note` use it too."""
    global _current
    _current = prog
    if not debug():
        _one_line_warnings()
    try:
        code = fn()
        return 0 if code is None else code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`) where a command asks for it
        status = getattr(e, "exit_status", 130)
        print(f"{prog}: {'terminated' if status != 130 else 'interrupted'}", file=sys.stderr, flush=True)
        return status
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    except Exception as e:
        if debug():
            raise
        error(e, prog=prog)
        return 1


# --------------------------------------------------------------------------------------------
# Signals


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (MLX work stops between
    steps, the work done so far is saved); the exit status is 128 + 15."""

    exit_status = 128 + signal.SIGTERM


@contextmanager
def sigterm_raises():
    """While inside: SIGTERM raises `Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt."""

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def signals_ignored():
    """While the work done so far is being saved, Ctrl-C and SIGTERM are ignored: a second Ctrl-C
    must not lose what the first one saves (saving takes moments; SIGKILL still works)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
