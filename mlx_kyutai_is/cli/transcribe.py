# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is transcribe`: transcribe or translate audio files into txt, srt, vtt and json."""

import os
import sys
from pathlib import Path

from tqdm import tqdm

from ..atomic import check_writable_dir
from ..audio import audio_duration
from ..errors import UserError
from ..stt import DEFAULT_BATCH_SIZE
from ..tasks import task_list
from ..writers import FORMATS, WriteError, get_writer, is_complete
from .common import (
    PROG,
    Terminated,
    add_model_args,
    debug,
    error,
    load_model,
    note,
    parser,
    positive_float,
    positive_int,
    print_traceback,
    run,
    signals_ignored,
    sigterm_raises,
    warn,
)


def configure_parser():
    p = parser(
        "transcribe",
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
    )
    p.add_argument("audio", nargs="+", metavar="FILE", help="audio files (wav, flac, mp3, ogg, ...); - reads stdin")
    add_model_args(p)
    p.add_argument("--output-format", "-f", default="txt", choices=(*FORMATS, "all"), help="what to write; all = every format")
    p.add_argument("--output-dir", "-o", default=".", metavar="DIR", help="directory for the output files")
    p.add_argument("--verbose", "-v", action="store_true", help="print words as they become final")
    p.add_argument(
        "--batch-size",
        "-b",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="files decoded at once on one batched model step (faster than one at a time; more memory)",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip files whose outputs are all there and complete (resume an interrupted batch)",
    )
    p.add_argument("--max-line-width", type=positive_int, default=42, metavar="N", help="subtitles: characters per line")
    p.add_argument("--max-line-count", type=positive_int, default=2, metavar="N", help="subtitles: lines per cue")
    p.add_argument("--max-cue-duration", type=positive_float, default=6.0, metavar="SECONDS", help="subtitles: seconds per cue")
    return p


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
    several = len(result.transcripts) > 1
    lines = []
    for task, t in result.items():
        task = task if several else None
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


def _report(e: BaseException, file: str, debug_on: bool):
    """One line for an input that failed (and, with --debug, its traceback)."""
    if debug_on:
        print_traceback(e)
    error(e, prefix="" if file in str(e) or file == "-" else f"{file}: ")


def transcribe(args) -> int:
    debug_on = debug()
    writer = get_writer(
        args.output_format,
        args.output_dir,
        max_line_width=args.max_line_width,
        max_line_count=args.max_line_count,
        max_duration=args.max_cue_duration,
    )
    tasks = task_list(args.task)
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
                _report(e, x.file, debug_on)
                failed += 1
                continue
            if args.skip_existing and all(is_complete(p) for p in x.paths):
                skipped += 1
                continue
        todo.append(x)
    if skipped:
        note(f"skipped {skipped} of {len(inputs)} files whose outputs are complete (--skip-existing)")
    if not todo:
        return 1 if failed else 0

    stt = load_model(args)  # errors here are the model's: one line naming it, never blamed on a file
    out = _Stdout()
    label = {x.index: x.label for x in todo}

    def on_words(i, words):
        for w in words:
            tags = "".join(f"[{t}] " for t in ((label[i] if several else None), (w.task if len(tasks) > 1 else None)) if t)
            out.print(f"{tags}[{w.start:7.2f} -> {w.end:7.2f}] {w.text}")

    bar = None
    progress = None
    if not args.verbose and sys.stderr.isatty():
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
            error(f"{x.label}: transcribed, but {missing} could not be written ({reason})")
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
                _report(item.error, x.file, debug_on)
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
        if debug_on:
            print_traceback(e)
    finally:
        if bar is not None:
            bar.close()
            out.bar = None
    if stopped is None and crashed is None:
        if failed and several:
            warn(f"{failed} of {len(inputs)} files failed")
        return 1 if failed else 0

    with signals_ignored():
        what = "terminated" if isinstance(stopped, Terminated) else "interrupted"
        if crashed is not None:
            error(crashed, prefix="transcription failed: ")
        else:
            print(f"{PROG}: {what}", file=sys.stderr, flush=True)
        if saving is not None:  # stopped while its files were being written: finish them
            save(saving)
            finished.add(saving.index)
        partial = _save_partials(job, todo, writer, out)
        left = [x for x in todo if x.index not in finished and x.index not in partial]
        if left:
            note(f"not transcribed: {', '.join(x.label for x in left)}")
        if any(todo[i].file != "-" for i in partial) or any(x.file != "-" for x in left):
            note("run the same command with --skip-existing to do only what is left")
    if crashed is not None:
        return 1
    return getattr(stopped, "exit_status", 130)


def _save_partials(job, todo, writer, out) -> set:
    """Write what the inputs in progress decoded before the stop, as `name.partial.*` (so a
    complete earlier transcript is never replaced by a partial one), marked partial; returns
    their indices."""
    done = set()
    try:
        items = job.partials()
    except Exception as e:
        error(e, prefix="could not save the files in progress: ")
        return done
    for item in items:
        x = todo[item.index]
        done.add(item.index)
        seconds = item.result.duration
        try:
            paths = writer(item.result, f"{x.name}.partial")
        except WriteError as e:
            error(e, prefix=f"{x.label}: partial transcript not saved: ")
            for line in _result_lines(item.result, x.label):
                out.print(line)
            continue
        note(f"{x.label}: stopped after {seconds:.1f} s of audio; partial transcript in {', '.join(map(str, paths))}")
    return done


def main(argv: list[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    with sigterm_raises():
        return run(PROG, lambda: transcribe(args))
