# Copyright © 2026 mlx-kyutai-is contributors
"""The driver of an archive job: which inputs are left, where each one's outputs go, and what
happens when a transcript comes back (outputs written atomically, then its line in `results.jsonl`).

The driver never decodes audio: workers (`workers.LocalWorkers` on this machine,
`cluster.RayWorkers` on a Ray cluster) send back `Outcome`s, and the driver is the only writer.
"""

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ...errors import UserError, one_line
from ...results import Result
from ...writers import WriteError, is_complete
from .ledger import Ledger


@dataclass
class Entry:
    """One input of the job: `source` is what workers open (an absolute path or a URI), `name`
    the output name under the output directory (its path from the inputs' common folder, no suffix)."""

    index: int
    source: str
    name: str


@dataclass
class Outcome:
    """What a worker sends back for one input: its `result`, or `error` (one line)."""

    index: int
    result: Result | None = None
    error: str | None = None
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    worker: str = ""


@dataclass
class Tally:
    """The job so far, for progress lines: files by status, audio and wall seconds, workers alive."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    workers: int = 0

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def wall_seconds(self) -> float:
        return time.perf_counter() - self.start

    @property
    def rtf(self) -> float | None:
        """Wall time ÷ audio transcribed (below 1: faster than real time), over the whole job."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds > 0 else None

    def line(self) -> str:
        rtf = f"RTF {self.rtf:.2f}" if self.rtf is not None else "RTF -"
        parts = [f"{self.done} done", f"{self.failed} failed"] + ([f"{self.skipped} skipped"] if self.skipped else [])
        hours = self.audio_seconds / 3600
        per_hour = 3600 * (self.done + self.failed) / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return (
            f"{self.finished}/{self.total} files ({', '.join(parts)}); {hours:.3f} h of audio in "
            f"{self.wall_seconds:.1f} s, {rtf}, {per_hour:.0f} files/h; workers alive: {self.workers}"
        )


def is_uri(source: str) -> bool:
    """A source with a scheme (``s3://``, ``gs://``, ``file://``...): opened through fsspec."""
    scheme = urlsplit(source).scheme
    return len(scheme) > 1 and "://" in source


def _uri_key(uri: str) -> PurePosixPath:
    """``/host/path`` of a URI: where its outputs go, as a file's absolute path."""
    parts = urlsplit(uri)
    return PurePosixPath("/", parts.netloc, parts.path.lstrip("/"))


def plan_entries(sources: list[str]) -> tuple[list[Entry], int]:
    """Entries for `sources` (paths or URIs), each listed once; returns them and how many
    repeats were dropped. Output names keep the inputs' folders below their common folder,
    so that an archive's ``2020/a.wav`` and ``2021/a.wav`` don't collide.

    Raises
    ------
    UserError
        Two different inputs would write the same outputs (``a.wav`` and ``a.flac`` in one folder).
    """
    unique, seen = [], set()
    for s in sources:
        s = s if is_uri(s) else os.path.abspath(os.path.expanduser(s))
        if s not in seen:
            seen.add(s)
            unique.append(s)
    # The path each name is taken from: a URI's host and path, a file's absolute path.
    keys = [_uri_key(s) if is_uri(s) else PurePosixPath(s) for s in unique]
    root = PurePosixPath(os.path.commonpath([str(k.parent) for k in keys])) if keys else PurePosixPath("/")
    entries, owners = [], {}
    for i, (s, k) in enumerate(zip(unique, keys)):
        name = str(k.relative_to(root).with_suffix(""))
        if name in owners:
            raise UserError(
                f"{owners[name]} and {s} would both be written as {name}.*; rename one or list them in two jobs"
            )
        owners[name] = s
        entries.append(Entry(i, s, name))
    return entries, len(sources) - len(unique)


@contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the block ends: an input's outputs and its line are written
    together, so a stop never leaves outputs without their line (SIGKILL aside)."""
    signals = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Archive:
    """The driver's side of an archive job: the entries, the writer, and `results.jsonl`.

    Parameters
    ----------
    sources : list of str
        Audio paths (relative to the current directory) or URIs every worker can open.
    output_dir : str or Path
        Where outputs and `results.jsonl` go (created if needed).
    writer
        A `writers.get_writer(...)` for `output_dir`.
    tasks : list of str
        The decoded tasks (``task_list(task)``), for the output names.

    Examples
    --------
    >>> archive = Archive(paths, "out", get_writer("all", "out"), ["is"])
    >>> todo = archive.plan(skip_existing=True)
    >>> for outcome in LocalWorkers(stt, "is").run(todo):
    ...     archive.save(outcome)
    """

    def __init__(self, sources: list[str], output_dir, writer, tasks: list[str]):
        self.output_dir = Path(output_dir)
        self.writer, self.tasks = writer, tasks
        self.entries, self.repeats = plan_entries(sources)
        self._check_outputs()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.output_dir)
        self.tally = Tally(total=len(self.entries))

    def _check_outputs(self):
        inputs = {os.path.realpath(e.source): e.source for e in self.entries if not is_uri(e.source)}
        for e in self.entries:
            for p in self.paths(e):
                if os.path.realpath(p) in inputs:
                    raise UserError(f"{e.source}: its transcript would overwrite the input {p}; choose another -o")

    def paths(self, entry: Entry) -> list[Path]:
        """The files `entry`'s transcript is written to."""
        return self.writer.paths(entry.name, self.tasks)

    def plan(self, skip_existing: bool = False) -> list[Entry]:
        """The entries left to do. With `skip_existing`, an entry whose outputs are all there
        and complete is skipped (its line kept, or a "skipped" line added where it has none);
        every other entry's old line is removed, so that each input keeps one line."""
        todo, skipped = [], []
        for e in self.entries:
            if skip_existing and all(is_complete(p) for p in self.paths(e)):
                skipped.append(e)
            else:
                todo.append(e)
        self.ledger.forget({e.source for e in todo})
        for e in skipped:
            if e.source not in self.ledger.records:
                self.ledger.append(self._record(e, "skipped", outputs=self.paths(e)))
        self.tally.skipped = len(skipped)
        return todo

    def _record(self, e: Entry, status: str, outputs=(), outcome: Outcome | None = None, error=None) -> dict:
        return {
            "audio": e.source,
            "status": status,
            "outputs": [os.path.relpath(p, self.output_dir) for p in outputs],
            "audio_seconds": round(outcome.audio_seconds, 3) if outcome else None,
            "wall_seconds": round(outcome.wall_seconds, 3) if outcome else None,
            "error": error,
            "worker": outcome.worker if outcome else None,
        }

    def save(self, outcome: Outcome) -> dict:
        """Write one input's outputs (atomically), then append its line; returns the line."""
        e = self.entries[outcome.index]
        with _signals_held():
            if outcome.error is not None:
                record = self._record(e, "failed", outcome=outcome, error=outcome.error)
            else:
                try:
                    (self.output_dir / e.name).parent.mkdir(parents=True, exist_ok=True)
                    record = self._record(e, "done", self.writer(outcome.result, e.name), outcome)
                except (WriteError, OSError) as err:
                    written = getattr(err, "written", [])
                    record = self._record(e, "failed", written, outcome, f"transcribed, but {one_line(err)}")
            self.ledger.append(record)
        t = self.tally
        t.audio_seconds += outcome.audio_seconds
        if record["status"] == "done":
            t.done += 1
        else:
            t.failed += 1
        return record

    def close(self):
        self.ledger.close()
