# Copyright © 2025 mlx-kyutai-is contributors

"""The `mlx-kyutai-is` command: transcribe | mic | convert | bench (as mlx_lm/cli.py).

Only argparse runs at start-up; the model, MLX and sounddevice are imported by the command that
needs them, so `--help`, `--version` and argument errors are instant. Every user-facing error is
one line on stderr and a non-zero exit; `--debug` (or MLX_KYUTAI_IS_DEBUG=1) shows tracebacks.
"""

import argparse
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from . import DEFAULT_MODEL

PROG = "mlx-kyutai-is"
TASKS = ("is", "en", "both")
FORMATS = ("txt", "srt", "vtt", "json", "all")
DEBUG_ENV = "MLX_KYUTAI_IS_DEBUG"
# Commands that own their argument parsing: mlx_kyutai_is.<name>.main(argv).
DELEGATED = ("convert", "bench", "serve", "eval")

DESCRIPTION = """\
Streaming Icelandic speech recognition and Icelandic -> English speech translation with
MLX, running Mideind's fine-tune of Kyutai STT (mideind/kyutai-stt-1b-is-en).

Tasks: "is" writes what was said in Icelandic, "en" translates it to English, "both" does
both at once. The model is downloaded and converted once, then cached."""

EXAMPLES = """\
examples:
  mlx-kyutai-is mic                              speak Icelandic, read it live
  mlx-kyutai-is mic --task en -o notes.txt       ... read English, keep a transcript
  mlx-kyutai-is transcribe talk.wav              Icelandic text on screen and in ./talk.txt
  mlx-kyutai-is transcribe *.wav -f srt -o subs  subtitles, subs/<name>.srt
  mlx-kyutai-is transcribe talk.mp3 --task both -f all
                                                 talk.is.{txt,srt,vtt,json} and talk.en.*
  sox -d -t wav - | mlx-kyutai-is transcribe -   audio from stdin
  mlx-kyutai-is convert --help                   make a local (quantized) MLX copy
  mlx-kyutai-is <command> --help                 all options of a command"""


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout; shows defaults, except None and those of on/off flags."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:  # flags: the help says what they do
            return action.help
        return super()._get_help_string(action)


class _TopFormatter(argparse.RawDescriptionHelpFormatter):
    """Leaves room for the indented command names (argparse measures them unindented)."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(map(len, action.choices)) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def _add_model_args(p: argparse.ArgumentParser):
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
    p.add_argument(
        "--task",
        "-t",
        default="is",
        choices=TASKS,
        help="is: Icelandic transcript; en: English translation; both: the two at once",
    )


def _positive(kind):
    def parse(s: str):
        v = kind(s)
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


_positive_float, _positive_int = _positive(float), _positive(int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=_TopFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks on errors (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", help=f"`{PROG} COMMAND --help` shows its options"
    )

    # transcribe -----------------------------------------------------------------------------
    p = sub.add_parser(
        "transcribe",
        help="transcribe or translate audio files (txt, srt, vtt, json)",
        description="Transcribe (--task is) or translate to English (--task en) audio files.\n"
        "Each file gives OUTPUT_DIR/<name>.<format> (--task both: <name>.is.<format> and\n"
        "<name>.en.<format>), and its text is printed. A file that fails is reported on one\n"
        "line and the others still run; the exit status is 1 if any failed.",
        epilog="examples:\n"
        "  mlx-kyutai-is transcribe talk.wav\n"
        "  mlx-kyutai-is transcribe a.wav b.flac -f srt -o subs --task en\n"
        "  mlx-kyutai-is transcribe - < talk.wav",
        formatter_class=_Formatter,
    )
    p.add_argument("audio", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, ogg, ...); - reads stdin")
    _add_model_args(p)
    p.add_argument("--output-format", "-f", default="txt", choices=FORMATS, help="what to write; all = every format")
    p.add_argument("--output-dir", "-o", default=".", metavar="DIR", help="directory for the output files")
    p.add_argument("--verbose", "-v", action="store_true", help="print words as they are decoded")
    p.add_argument("--max-line-width", type=_positive_int, default=42, metavar="N", help="subtitles: characters per line")
    p.add_argument("--max-line-count", type=_positive_int, default=2, metavar="N", help="subtitles: lines per cue")
    p.add_argument("--max-cue-duration", type=_positive_float, default=6.0, metavar="SECONDS", help="subtitles: seconds per cue")
    p.set_defaults(func=cmd_transcribe)

    # mic ------------------------------------------------------------------------------------
    p = sub.add_parser(
        "mic",
        help="live transcription from the microphone",
        description="Listen to the microphone and print the text live: confirmed words, then the\n"
        "words still being decided (dimmed). The text lags the speech by a few seconds (the\n"
        "model's delay). Ctrl-C stops: the last words are flushed and the files are written.",
        epilog="examples:\n"
        "  mlx-kyutai-is mic --task en\n"
        "  mlx-kyutai-is mic --list-devices\n"
        "  mlx-kyutai-is mic --device 2 -o notes.txt --save-audio rec.wav\n"
        "  mlx-kyutai-is mic --task both -o meeting.srt",
        formatter_class=_Formatter,
    )
    _add_model_args(p)
    p.add_argument("--device", "-d", default=None, help="input device, by index or (part of its) name; default: the system's")
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="FILE",
        help="write the transcript: .txt (as words come), .srt, .vtt or .json (at the end); "
        "--task both writes FILE.is.ext and FILE.en.ext",
    )
    p.add_argument("--save-audio", default=None, metavar="WAV", help="also record the audio to this WAV file")
    p.add_argument(
        "--max-lag",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="when the model falls this far behind real time, drop audio instead of falling further behind "
        "(the recording keeps everything)",
    )
    p.add_argument(
        "--no-watchdog",
        dest="watchdog",
        action="store_false",
        help="do not re-prime the model when it stalls (no words while someone speaks, or one word repeated)",
    )
    p.add_argument("--input-file", default=None, metavar="FILE", help=argparse.SUPPRESS)  # replay a file as the mic
    p.add_argument("--unpaced", action="store_true", help=argparse.SUPPRESS)  # ... as fast as the model goes
    p.set_defaults(func=cmd_mic)

    # delegated ------------------------------------------------------------------------------
    sub.add_parser("convert", help="convert a Hugging Face checkpoint to MLX, optionally quantized", add_help=False)
    sub.add_parser("bench", help="measure speed: ms per step and real-time factor", add_help=False)
    sub.add_parser("serve", help="OpenAI-compatible speech server with live captions in the browser", add_help=False)
    sub.add_parser("eval", help="WER/CER and BLEU/chrF on a manifest (reproduce the model card)", add_help=False)
    return parser


def _version() -> str:
    from ._version import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# Commands


def _load(args):
    from . import load

    if sys.stderr.isatty():  # the first run downloads ~2.4 GB: say what is happening
        print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    return load(args.model, quantize=args.quantize)


def _print_result(result, name: str | None):
    """The transcript on stdout: plain text for one file, `name: text` when there are several."""
    items = result.items() if isinstance(result, dict) else [(None, result)]
    for task, t in items:
        label = " ".join(x for x in (name and f"{name}:", task and f"[{task}]") if x)
        print(f"{label} {t.text.strip()}" if label else t.text.strip(), flush=True)


def _open_input(file: str):
    """Check an input before any model work: (what to give `STT.transcribe`, seconds).

    Files are streamed by the transcriber; stdin (and a file whose header has no length) is
    read here. Raises `AudioError` (one line, naming the file) for missing, unreadable or empty
    audio."""
    from .audio import SAMPLE_RATE, audio_duration, load_audio

    if file != "-" and (seconds := audio_duration(file)):
        return file, seconds
    samples = load_audio(file, sr=SAMPLE_RATE)
    return samples, len(samples) / SAMPLE_RATE


@contextmanager
def _progress_bar(desc: str, seconds: float, enabled: bool):
    """A tqdm bar over the audio seconds of one file (stderr, on a terminal); yields the
    ``progress(seconds_done, total)`` callback `STT.transcribe` takes, or None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=round(seconds, 1), unit="s", desc=desc, leave=False, file=sys.stderr) as bar:
        yield lambda done, total=None: bar.update(round(min(done, seconds), 1) - bar.n)


def cmd_transcribe(args) -> int:
    from .audio import SAMPLE_RATE
    from .writers import get_writer

    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    writer = get_writer(
        args.output_format,
        args.output_dir,
        max_line_width=args.max_line_width,
        max_line_count=args.max_line_count,
        max_duration=args.max_cue_duration,
    )
    several = len(args.audio) > 1
    stt, failed, names = None, 0, {}
    for i, file in enumerate(args.audio, start=1):
        try:
            audio, seconds = _open_input(file)
        except Exception as e:
            _error(e, prefix="" if file in str(e) or file == "-" else f"{file}: ")
            failed += 1
            continue
        if stt is None:  # only now: a run with nothing readable never waits for the model
            stt = _load(args)
        name = "stdin" if file == "-" else Path(file).stem
        if name in names:
            _warn(f"{file} and {names[name]} both write {name}.*; the later one overwrites")
        names[name] = file
        desc = f"[{i}/{len(args.audio)}] {Path(file).name}" if several else Path(file).name
        if args.verbose and several:
            print(f"{file}:", flush=True)
        try:
            with _progress_bar(desc, seconds, enabled=not args.verbose) as progress:
                result = stt.transcribe(audio, task=args.task, sr=SAMPLE_RATE, verbose=args.verbose, progress=progress)
            writer(result, name)
        except Exception as e:
            _error(e, prefix="" if file in str(e) else f"{file}: ")
            failed += 1
            continue
        if not args.verbose:
            _print_result(result, file if several else None)
    if failed and several:
        _warn(f"{failed} of {len(args.audio)} files failed")
    return 1 if failed else 0


def cmd_mic(args) -> int:
    from . import mic

    if args.list_devices:
        print(mic.list_devices())
        return 0
    if args.output is not None:
        mic.transcript_format(args.output)  # before loading the model: fail fast
    # the device (or file) is checked before loading the model: fail fast
    if args.input_file is not None:
        source = mic.FileSource(args.input_file, paced=not args.unpaced)
    else:
        source = mic.SoundDeviceSource(args.device)
    stt = _load(args)
    mic.run_mic(
        stt,
        args.task,
        source,
        output=args.output,
        save_audio=args.save_audio,
        max_lag=args.max_lag,
        stream_kwargs={"watchdog": args.watchdog},
    )
    return 0


def _delegate(command: str, argv: list[str]) -> int:
    """`convert`, `bench`, `serve` and `eval` own their argument parsing (mlx_lm style)."""
    import importlib

    try:
        module = importlib.import_module(f"mlx_kyutai_is.{command}")
    except ModuleNotFoundError as e:
        if e.name != f"mlx_kyutai_is.{command}":
            raise
        raise UserError(f"'{command}' is not available in this version of {PROG}") from None
    sys.argv[0] = f"{PROG} {command}"  # so its usage lines name the right command
    code = module.main(argv)
    return code if isinstance(code, int) else 0


# --------------------------------------------------------------------------------------------
# Errors and warnings: one line each


def _raised_by_package(e: BaseException) -> bool:
    """True if the package's own code raised `e` (its message was written for users)."""
    if type(e).__module__.startswith("mlx_kyutai_is"):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).parent == Path(__file__).parent


def _error(e: BaseException | str, prefix: str = ""):
    """One line on stderr. Errors raised by the package and OS errors carry messages written for
    users; anything else (a bug) also names its type, and --debug shows its traceback."""
    if isinstance(e, BaseException):
        lines = str(e).strip().splitlines()
        msg = lines[0] if lines else ""
        if isinstance(e, OSError) and e.filename is not None:
            msg = f"{e.filename}: {e.strerror or msg}"
        elif not (_raised_by_package(e) or isinstance(e, OSError)) or not msg:
            msg = f"{type(e).__name__}: {msg} (--debug shows the traceback)" if msg else type(e).__name__
    else:
        msg = e
    print(f"{PROG}: error: {prefix}{msg}", file=sys.stderr, flush=True)


def _warn(msg: str):
    print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)


def _one_line_warnings():
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        _warn(str(message).strip().splitlines()[0] if str(message).strip() else category.__name__)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlx-kyutai-is` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get(DEBUG_ENV)) or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        _one_line_warnings()
    try:
        if argv and argv[0] in DELEGATED:
            return _delegate(argv[0], argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: not an error
        sys.stderr.close()
        return 0
    except Exception as e:
        if debug:
            raise
        _error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
