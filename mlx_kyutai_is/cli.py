# Copyright © 2026 mlx-kyutai-is contributors

"""The `mlx-kyutai-is` command: transcribe | mic | convert | bench (as mlx_lm/cli.py).

Only argparse runs at start-up; the model, MLX and sounddevice are imported by the command that
needs them, so `--help`, `--version` and argument errors are instant. Every user-facing error is
one line on stderr and a non-zero exit; `--debug` (or MLX_KYUTAI_IS_DEBUG=1) shows tracebacks.
"""

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from . import DEFAULT_MODEL
from .errors import DEBUG_ENV, one_line
from .transcribe import DEFAULT_BATCH_SIZE

PROG = "mlx-kyutai-is"
TASKS = ("is", "en", "both")
FORMATS = ("txt", "srt", "vtt", "json", "all")
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
        "line and the others still run; the exit status is 1 if any failed. Outputs are\n"
        "written whole or not at all. Ctrl-C (or SIGTERM) saves what the files in progress\n"
        "decoded as <name>.partial.<format>, names the files not done, and exits 130 (143).",
        epilog="examples:\n"
        "  mlx-kyutai-is transcribe talk.wav\n"
        "  mlx-kyutai-is transcribe a.wav b.flac -f srt -o subs --task en\n"
        "  mlx-kyutai-is transcribe - < talk.wav\n"
        "  sox -d -t wav - | mlx-kyutai-is transcribe - -v      live from the microphone\n"
        "  mlx-kyutai-is transcribe talks/*.wav -o out --skip-existing   resume a batch",
        formatter_class=_Formatter,
    )
    p.add_argument("audio", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, ogg, ...); - reads stdin")
    _add_model_args(p)
    p.add_argument("--output-format", "-f", default="txt", choices=FORMATS, help="what to write; all = every format")
    p.add_argument("--output-dir", "-o", default=".", metavar="DIR", help="directory for the output files")
    p.add_argument("--verbose", "-v", action="store_true", help="print words as they become final")
    p.add_argument(
        "--batch-size",
        "-b",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="files decoded at once on one batched model step (faster than one at a time; more memory)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip files whose outputs are all there and complete (resume an interrupted batch)",
    )
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
    p.add_argument(
        "--save-audio",
        default=None,
        metavar="FILE",
        help="also record the audio to this file: .wav, .flac or .ogg (renamed into place when it ends)",
    )
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt (MLX work stops between
    steps, the work done so far is saved); the exit status is 128 + 15."""

    exit_status = 128 + signal.SIGTERM


@contextmanager
def _sigterm_raises():
    """While inside: SIGTERM raises `Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt."""

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _signals_ignored():
    """While the work done so far is being saved, Ctrl-C and SIGTERM are ignored: a second Ctrl-C
    must not lose what the first one saves (saving takes moments; SIGKILL still works)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class _Stdout:
    """Prints results on stdout; once the reader has gone (`| head`) stdout is dropped quietly and
    the work goes on: the files are still transcribed and written, and nothing is reported."""

    def __init__(self):
        self.gone = False
        self.bar = None  # a progress bar on the same terminal, cleared around each line

    def print(self, line: str):
        if self.gone:
            return
        try:
            if self.bar is not None:
                self.bar.clear()
            print(line, file=sys.stdout, flush=True)
            if self.bar is not None:
                self.bar.refresh()
        except BrokenPipeError:
            self.gone = True
            # Point fd 1 at /dev/null so that the interpreter's last flush at exit stays quiet.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass


def _result_lines(result, name: str | None) -> list[str]:
    """The transcript as printed: plain text for one file, `name: text` when there are several."""
    items = result.items() if isinstance(result, dict) else [(None, result)]
    lines = []
    for task, t in items:
        label = " ".join(x for x in (name and f"{name}:", task and f"[{task}]") if x)
        lines.append(f"{label} {t.text.strip()}" if label else t.text.strip())
    return lines


class _Input:
    """One FILE argument of `transcribe` and the files its transcript goes to."""

    def __init__(self, index: int, file: str, writer, tasks):
        self.index, self.file = index, file
        self.label = "<stdin>" if file == "-" else file  # how messages name it
        self.name = "stdin" if file == "-" else Path(file).stem
        self.paths = writer.paths(self.name, tasks)
        self.partial_paths = writer.paths(f"{self.name}.partial", tasks)  # an interrupted run's


def _check_outputs(inputs: list[_Input]):
    """Refuse, before anything is written, a run that would overwrite an input or write two
    inputs' transcripts to the same file (`UserError`: one line)."""
    sources = {}
    for x in inputs:
        if x.file != "-":
            sources.setdefault(os.path.realpath(x.file), x.file)
    owners = {}
    for x in inputs:
        for p in [*x.paths, *x.partial_paths]:
            key = os.path.realpath(p)
            if key in sources:
                raise UserError(
                    f"{sources[key]}: is an input and {x.file}'s transcript would overwrite it ({p}); "
                    "choose another output directory (-o) or rename it"
                )
            if key in owners and owners[key] is not x:
                raise UserError(
                    f"{owners[key].file} and {x.file} would both be written to {p}; "
                    "rename one or transcribe them into different directories (-o)"
                )
            owners[key] = x


def _report(e: BaseException, file: str, debug: bool):
    """One line for an input that failed (and, with --debug, its traceback)."""
    if debug:
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    _error(e, prefix="" if file in str(e) or file == "-" else f"{file}: ")


def cmd_transcribe(args) -> int:
    from .atomic import check_writable_dir
    from .audio import audio_duration
    from .writers import WriteError, get_writer, is_complete

    debug = getattr(args, "debug", False)
    writer = get_writer(
        args.output_format,
        args.output_dir,
        max_line_width=args.max_line_width,
        max_line_count=args.max_line_count,
        max_duration=args.max_cue_duration,
    )
    tasks = ["is", "en"] if args.task == "both" else [args.task]
    several = len(args.audio) > 1
    inputs = [_Input(i, f, writer, tasks) for i, f in enumerate(args.audio)]
    _check_outputs(inputs)  # before anything is touched
    check_writable_dir(args.output_dir)  # before the model loads: a finished job must not be lost

    failed, todo, skipped = 0, [], 0
    for x in inputs:
        if x.file != "-":
            try:  # unreadable, missing, empty: reported now, before any model work
                audio_duration(x.file)
            except Exception as e:
                _report(e, x.file, debug)
                failed += 1
                continue
            if args.skip_existing and all(is_complete(p) for p in x.paths):
                skipped += 1
                continue
        todo.append(x)
    if skipped:
        _note(f"skipped {skipped} of {len(inputs)} files whose outputs are complete (--skip-existing)")
    if not todo:
        return 1 if failed else 0

    stt = _load(args)  # errors here are the model's: one line naming it, never blamed on a file
    out = _Stdout()
    label = {x.index: x.label for x in todo}

    def on_words(i, words):
        for w in words:
            tags = "".join(f"[{t}] " for t in ((label[i] if several else None), (w.task if len(tasks) > 1 else None)) if t)
            out.print(f"{tags}[{w.start:7.2f} -> {w.end:7.2f}] {w.text}")

    bar = None
    progress = None
    if not args.verbose and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit="s", desc="transcribing", leave=False, file=sys.stderr)
        out.bar = bar

        def progress(done, total):
            if total is not None and bar.total != round(total, 1):
                bar.total = round(total, 1)
            bar.update(round(done, 1) - bar.n)

    def save(item) -> bool:
        """Write one input's complete transcript; False (reported) if some file could not be."""
        x = todo[item.index]
        try:
            writer(item.result, x.name)
        except WriteError as e:  # the text is on stdout already: say what is missing
            reason = e.failed[0][1].strerror or e.failed[0][1]
            missing = ", ".join(str(p) for p, _ in e.failed)
            _error(f"{x.label}: transcribed, but {missing} could not be written ({reason})")
            return False
        for p in x.partial_paths:  # a complete transcript replaces an interrupted run's
            p.unlink(missing_ok=True)
        return True

    finished, saving, stopped, crashed = set(), None, None, None
    job = stt.transcribe_iter(
        [x.file for x in todo],
        task=args.task,
        batch_size=args.batch_size,
        progress=progress,
        on_words=on_words if args.verbose else None,
    )
    try:
        for item in job:
            x = todo[item.index]
            if item.error is not None:
                finished.add(item.index)
                _report(item.error, x.file, debug)
                failed += 1
                continue
            if not args.verbose:
                for line in _result_lines(item.result, x.label if several else None):
                    out.print(line)
            saving = item
            failed += not save(item)
            finished.add(item.index)
            saving = None
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
        stopped = e
    except Exception as e:  # the model failed: not an error of any one file
        crashed = e
        if debug:
            import traceback

            traceback.print_exception(e, file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
            out.bar = None
    if stopped is None and crashed is None:
        if failed and several:
            _warn(f"{failed} of {len(inputs)} files failed")
        return 1 if failed else 0

    with _signals_ignored():
        what = "terminated" if isinstance(stopped, Terminated) else "interrupted"
        if crashed is not None:
            _error(crashed, prefix="transcription failed: ")
        else:
            print(f"{PROG}: {what}", file=sys.stderr, flush=True)
        if saving is not None:  # stopped while its files were being written: finish them
            save(saving)
            finished.add(saving.index)
        partial = _save_partials(job, todo, writer, out)
        left = [x for x in todo if x.index not in finished and x.index not in partial]
        if left:
            _note(f"not transcribed: {', '.join(x.label for x in left)}")
        if any(todo[i].file != "-" for i in partial) or any(x.file != "-" for x in left):
            _note("run the same command with --skip-existing to do only what is left")
    if crashed is not None:
        return 1
    return getattr(stopped, "exit_status", 130)


def _save_partials(job, todo, writer, out) -> set:
    """Write what the inputs in progress decoded before the stop, as `name.partial.*` (so a
    complete earlier transcript is never replaced by a partial one), marked partial; returns
    their indices."""
    from .writers import WriteError

    done = set()
    try:
        items = job.partials()
    except Exception as e:
        _error(e, prefix="could not save the files in progress: ")
        return done
    for item in items:
        x = todo[item.index]
        done.add(item.index)
        results = item.result if isinstance(item.result, dict) else {None: item.result}
        seconds = max((t.duration for t in results.values()), default=0.0)
        try:
            paths = writer(item.result, f"{x.name}.partial")
        except WriteError as e:
            _error(e, prefix=f"{x.label}: partial transcript not saved: ")
            for line in _result_lines(item.result, x.label):
                out.print(line)
            continue
        _note(f"{x.label}: stopped after {seconds:.1f} s of audio; partial transcript in {', '.join(map(str, paths))}")
    return done


def cmd_mic(args) -> int:
    from . import mic
    from .atomic import check_writable_dir

    if args.list_devices:
        print(mic.list_devices())
        return 0
    # outputs and the device (or file) are checked before loading the model: fail fast
    for p in mic.output_files(args.task, args.output, args.save_audio, args.input_file):
        check_writable_dir(p.parent)
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


def _error(e: BaseException | str, prefix: str = ""):
    """One line on stderr. Errors raised by the package and OS errors carry messages written for
    users; anything else (a bug) also names its type, and --debug shows its traceback."""
    msg = one_line(e, hint=" (--debug shows the traceback)") if isinstance(e, BaseException) else e
    print(f"{PROG}: error: {prefix}{msg}", file=sys.stderr, flush=True)


def _warn(msg: str):
    print(f"{PROG}: warning: {msg}", file=sys.stderr, flush=True)


def _note(msg: str):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


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
        args.debug = debug
        if args.command == "transcribe":  # mic handles its signals itself
            with _sigterm_raises():
                return args.func(args)
        return args.func(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`) before any work was done
        status = getattr(e, "exit_status", 130)
        print(f"{PROG}: {'terminated' if status != 130 else 'interrupted'}", file=sys.stderr)
        return status
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
