# Copyright © 2026 mlx-kyutai-is contributors
"""`results.jsonl`: one line per input of an archive job, the job's record of what is done.

Each line is a JSON object: ``audio`` (the source the workers opened), ``status`` ("done",
"failed", or "skipped" for an input whose outputs were found complete but had no line),
``outputs`` (paths relative to the output directory), ``audio_seconds``, ``wall_seconds``,
``error`` (one line, or null) and ``worker`` (``host:pid`` of the process that transcribed it).

One line per input, never two: when a job starts, the lines of every input it is about to do are
removed (the file is rewritten atomically), and each input done then appends its line (flushed
and fsynced) after its outputs are written. A line cut short by a kill is dropped on the next start.
"""

import fcntl
import json
import os
from pathlib import Path

from ...atomic import atomic_write
from ...errors import Error

RESULTS_NAME = "results.jsonl"
LOCK_NAME = ".results.lock"


class JobRunning(Error):
    """Another job is writing to the same output directory."""


class Ledger:
    """The results file of one output directory, held by one job at a time (a lock beside it).

    Parameters
    ----------
    directory : Path
        The job's output directory (it must exist).
    """

    def __init__(self, directory: Path):
        self.path = Path(directory) / RESULTS_NAME
        self._lock = open(Path(directory) / LOCK_NAME, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise JobRunning(
                f"{directory}: another job is writing its results there; wait for it or use another -o"
            ) from None
        self.records = self._read()

    def _read(self) -> dict[str, dict]:
        """audio -> its line, for every whole line (a line cut short by a kill is left out)."""
        records = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return records
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("audio"), str):
                records[record["audio"]] = record
        return records

    def forget(self, audio: set[str]):
        """Remove the lines of `audio` (the inputs about to be done), keeping every other line."""
        self.records = {a: r for a, r in self.records.items() if a not in audio}
        if self.path.exists() or self.records:
            atomic_write(self.path, "".join(_line(r) for r in self.records.values()))

    def append(self, record: dict):
        """Add one input's line (whole, on disk before this returns)."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_line(record))
            f.flush()
            os.fsync(f.fileno())
        self.records[record["audio"]] = record

    def close(self):
        self._lock.close()


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
