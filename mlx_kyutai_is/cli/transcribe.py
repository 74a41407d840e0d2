# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is transcribe`: transcribe or translate audio files into txt, srt, vtt and json."""

import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..apps.archive import Archive, LocalWorkers, RayWorkers, Transcriber
from ..apps.archive.job import is_uri
from ..atomic import check_writable_dir
from ..audio import audio_duration
from ..errors import UserError
from ..evaluation.manifest import read_manifest
from ..stt import DEFAULT_BATCH_SIZE, ProgressBar
from ..tasks import task_list
from ..writers import FORMATS, WriteError, get_writer, is_complete
from .common import (
    Terminated,
    add_model_args,
    add_segment_args,
    debug,
    error,
    load_model,
    note,
    parser,
    positive_float,
    positive_int,
    print_traceback,
    run,
    segment_options,
    signals_ignored,
    sigterm_raises,
    warn,
)


def configure_parser():
    p = parser(
        "transcribe",
        description="Transcribe (--task is) or translate to English (--task en) audio files.\n"
        "Each file gives OUTPUT_DIR/<name>.<format> (--task both: <name>.is.<format> and\n"
        "<name>.en.<format>), written when it is done; the texts are printed in input order,\n"
        "and one line on stderr sums up the run (real-time factor = wall time / audio time).\n"
        "A file that fails is reported on one line and the others still run; the exit status\n"
        "is 1 if any failed. Outputs are written whole or not at all. Ctrl-C (or SIGTERM)\n"
        "saves what the files in progress decoded as <name>.partial.<format>, names the\n"
        "files not done, and exits 130 (143).",
        epilog="examples:\n"
        "  mlx-kyutai-is transcribe talk.wav\n"
        "  mlx-kyutai-is transcribe a.wav b.flac -f srt -o subs --task en\n"
        "  mlx-kyutai-is transcribe - < talk.wav\n"
        "  sox -d -t wav - | mlx-kyutai-is transcribe - -v      live from the microphone\n"
        "  mlx-kyutai-is transcribe talks/*.wav -o out --skip-existing   resume a batch\n"
        "  mlx-kyutai-is transcribe --manifest archive.txt -o out --ray -f all   on a Ray cluster",
    )
    p.add_argument("audio", nargs="*", metavar="FILE", help="audio files (wav, flac, mp3, ogg, ...); - reads stdin")
    add_model_args(p, dtype=True)
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
    add_segment_args(p)
    _add_archive_args(p)
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


def _writer(args):
    """The writer the output options name (format, directory, subtitle cues)."""
    return get_writer(
        args.output_format,
        args.output_dir,
        max_line_width=args.max_line_width,
        max_line_count=args.max_line_count,
        max_duration=args.max_cue_duration,
    )


def transcribe(args) -> int:
    debug_on = debug()
    writer = _writer(args)
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

    progress = None
    if not args.verbose and sys.stderr.isatty():
        progress = ProgressBar()  # the real-time factor and the time left, over the whole job
        out.bar = progress.bar

    def save(item) -> bool:
        """Write one input's complete transcript; False (reported) if some file could not be."""
        x = todo[item.index]
        try:
            writer(item.result, x.name)
        except WriteError as e:  # the text is printed all the same: say what is missing
            reason = e.failed[0][1].strerror or e.failed[0][1]
            missing = ", ".join(str(p) for p, _ in e.failed)
            error(f"{x.label}: transcribed, but {missing} could not be written ({reason})")
            return False
        for p in x.partial_paths:  # a complete transcript replaces an interrupted run's
            p.unlink(missing_ok=True)
        return True

    def show(item):
        """Print one input's outcome: its text on stdout, or its error on one line."""
        if item.error is not None:
            _report(item.error, todo[item.index].file, debug_on)
        elif not args.verbose:
            for line in _result_lines(item.result, todo[item.index].label if several else None):
                out.print(line)

    # Results come in completion order (a short file overtakes a long one in the batch); each is
    # written at once, and printed in input order: a file waits for the ones before it.
    waiting, shown = {}, 0
    finished, saving, stopped, crashed = set(), None, None, None
    transcribed, audio_seconds, started = 0, 0.0, time.perf_counter()
    job = stt.transcribe_iter(
        [x.file for x in todo],
        task=args.task,
        batch_size=args.batch_size,
        progress=progress,
        on_words=on_words if args.verbose else None,
        **segment_options(args),
    )
    try:
        for item in job:
            waiting[item.index] = item
            if item.error is not None:
                failed += 1
            else:
                saving = item
                failed += not save(item)
                saving = None
                transcribed, audio_seconds = transcribed + 1, audio_seconds + item.result.duration
            finished.add(item.index)
            while shown in waiting:
                show(waiting.pop(shown))
                shown += 1
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
        stopped = e
    except Exception as e:  # the model failed: not an error of any one file
        crashed = e
        if debug_on:
            print_traceback(e)
    finally:
        if progress is not None:
            progress.close()
            out.bar = None
    if stopped is None and crashed is None:
        if failed and several:
            warn(f"{failed} of {len(inputs)} files failed")
        _summary(transcribed, audio_seconds, time.perf_counter() - started)
        return 1 if failed else 0

    with signals_ignored():
        what = "terminated" if isinstance(stopped, Terminated) else "interrupted"
        if crashed is not None:
            error(crashed, prefix="transcription failed: ")
        else:
            note(what)
        if saving is not None:  # stopped while its files were being written: finish them
            save(saving)
            finished.add(saving.index)
        for i in sorted(waiting):  # done, but held back for a file before them that was not
            show(waiting[i])
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


def _summary(files: int, audio: float, wall: float):
    """The run's last line on stderr: what was transcribed, and how fast (wall time ÷ audio time,
    the model's loading left out)."""
    if files and audio > 0:
        note(
            f"transcribed {files} file{'s' if files != 1 else ''}, {audio:.1f} s of audio, in {wall:.1f} s: "
            f"real-time factor {wall / audio:.2f}"
        )


def _add_archive_args(p):
    """--manifest, --ray, --workers, --worker-cpus, --worker-gpus: a list of files done once each,
    on this machine or spread over a Ray cluster, resumable with --skip-existing."""
    g = p.add_argument_group(
        "archives (--manifest)",
        "Every file of LIST once: its outputs under OUTPUT_DIR (the files' folders below their common\n"
        "folder kept), one line each in OUTPUT_DIR/results.jsonl, progress and errors on stderr.\n"
        "Ctrl-C keeps every finished file; --skip-existing then does only what is left.",
    )
    g.add_argument(
        "--manifest",
        metavar="LIST",
        help="the files: a .txt list of paths (one a line) or an eval manifest (.jsonl/.csv/.tsv with an "
        "'audio' column); relative paths are read from LIST's folder; URIs (s3://...) through fsspec",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="spread the files over a Ray cluster: auto (RAY_ADDRESS or the cluster running here), "
        "HOST:PORT, or local (start one here); needs the [ray] extra on every node",
    )
    g.add_argument("--workers", type=positive_int, metavar="N", help="with --ray: models loaded (default: 1 per node)")
    g.add_argument(
        "--worker-cpus", type=positive_float, default=1.0, metavar="N", help="with --ray: CPUs each worker reserves"
    )
    g.add_argument(
        "--worker-gpus",
        type=float,
        default=0.0,
        metavar="N",
        help="with --ray: GPUs each worker reserves (1: one model per GPU; a Mac started with --num-gpus 1)",
    )


def _check_archive_args(p, args):
    """Refuse (usage error, exit 2) what does not go together."""
    if args.manifest is None:
        if not args.audio:
            p.error("give audio FILEs, or --manifest LIST")
        for flag, value in (("--ray", args.ray), ("--workers", args.workers)):
            if value is not None:
                p.error(f"{flag} goes with --manifest LIST")
    elif args.audio:
        p.error("give audio FILEs or --manifest LIST, not both")
    elif args.workers is not None and args.ray is None:
        p.error("--workers goes with --ray (without it the files run on this machine, one model)")
    if args.worker_gpus < 0:
        p.error(f"--worker-gpus must be >= 0, got {args.worker_gpus}")


class _ArchiveProgress:
    """The job over the whole archive on stderr: files, hours of audio, real-time factor, workers
    alive; a bar on a terminal, else a line every PROGRESS_SECONDS (logs of a long job)."""

    PROGRESS_SECONDS = 60.0

    def __init__(self, tally, workers):
        self.tally, self.workers = tally, workers
        self.bar = None
        self.last = time.monotonic()
        if sys.stderr.isatty():
            self.bar = tqdm(total=tally.total, initial=tally.skipped, unit="file", leave=False, file=sys.stderr)

    def update(self):
        self.tally.workers = self.workers.alive
        if self.bar is not None:
            t = self.tally
            rtf = f"RTF {t.rtf:.2f}" if t.rtf is not None else ""
            self.bar.set_postfix_str(f"{t.audio_seconds / 3600:.2f} h audio, {rtf}, {t.workers} workers", refresh=False)
            self.bar.update(t.finished - self.bar.n)
        elif time.monotonic() - self.last >= self.PROGRESS_SECONDS:
            self.last = time.monotonic()
            note(self.tally.line())

    def around(self, say, *args):
        """Say something (`error`, `note`) without breaking the bar."""
        if self.bar is not None:
            self.bar.clear()
        say(*args)
        if self.bar is not None:
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _archive(args) -> int:
    """`--manifest`: every file once, on this machine or on a Ray cluster (`apps.archive`)."""
    sources = [u.audio if is_uri(u.audio) else str(u.path) for u in read_manifest(args.manifest, [])]
    writer = _writer(args)
    check_writable_dir(args.output_dir)
    archive = Archive(sources, args.output_dir, writer, task_list(args.task))
    try:
        if archive.repeats:
            warn(f"{args.manifest}: {archive.repeats} entries repeat an earlier one; each file is done once")
        todo = archive.plan(skip_existing=args.skip_existing)
        if archive.tally.skipped:
            skipped, total = archive.tally.skipped, archive.tally.total
            note(f"skipped {skipped} of {total} files whose outputs are complete (--skip-existing)")
        if not todo:
            return 0
        options = dict(model=args.model, task=args.task, batch_size=args.batch_size, quantize=args.quantize)
        options.update(dtype=args.dtype, **segment_options(args))
        if args.ray is None:
            workers = LocalWorkers(Transcriber(**options))
        else:
            workers = RayWorkers(args.ray, args.workers, cpus=args.worker_cpus, gpus=args.worker_gpus, **options)
        return _run_archive(archive, workers, todo)
    finally:
        archive.close()


def _run_archive(archive, workers, todo) -> int:
    """Save each outcome as it comes; on Ctrl-C or a lost cluster, keep what is done and say how to resume."""
    tally, stopped, crashed = archive.tally, None, None
    tally.start = time.perf_counter()  # the model's loading left out, as transcribe's summary does
    progress, retried = _ArchiveProgress(tally, workers), 0
    try:
        for outcome in workers.run(todo):
            record = archive.save(outcome)
            if record["error"] is not None:
                progress.around(error, record["error"])
            if getattr(workers, "retried", 0) > retried:
                left = workers.retried - retried
                progress.around(note, f"a worker died; its {left} unfinished files go to the others")
                retried = workers.retried
            progress.update()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
        stopped = e
    except Exception as e:  # the cluster went away, or no worker could start: no one file's fault
        crashed = e
    finally:
        progress.close()
        with signals_ignored():
            workers.close()
    if crashed is not None:
        error(crashed)
    elif stopped is not None:
        note("terminated" if isinstance(stopped, Terminated) else "interrupted")
    note(tally.line())
    if stopped is None and crashed is None:
        if tally.failed:
            warn(f"{tally.failed} of {tally.total} files failed (their errors are in results.jsonl)")
        return 1 if tally.failed else 0
    note(f"{tally.total - tally.finished} files not done; run the same command with --skip-existing to do only those")
    return 1 if crashed is not None else getattr(stopped, "exit_status", 130)


def main(argv: list[str] | None = None) -> int:
    p = configure_parser()
    args = p.parse_args(argv)
    _check_archive_args(p, args)
    with sigterm_raises():
        return run(p.prog, lambda: _archive(args) if args.manifest is not None else transcribe(args))
