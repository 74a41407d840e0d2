# Copyright © 2026 mlx-kyutai-is contributors
"""The workers' side of an archive job: one model, the batched engine over a chunk of inputs,
one `Outcome` per input as it finishes. `LocalWorkers` runs them on this machine; a Ray actor
(`cluster.py`) runs the same `Transcriber` on each node.
"""

import os
import socket
import time
from collections.abc import Iterator

import fsspec

from ...errors import one_line
from ...stt import DEFAULT_BATCH_SIZE, load
from .job import Entry, Outcome, is_uri


def _open(source: str):
    """A path as it is; a URI as an open binary file through fsspec (s3://, gs://, file://...)."""
    return fsspec.open(source, "rb").open() if is_uri(source) else source


def chunks(entries: list[Entry], size: int) -> list[list[Entry]]:
    """`entries` in chunks of `size`, in order: the work one worker takes at a time."""
    return [entries[i : i + size] for i in range(0, len(entries), size)]


class Transcriber:
    """One worker: a loaded model that transcribes chunks of inputs on the batched engine.

    Parameters
    ----------
    model : str
        Model directory or hub id, as `stt.load` takes it (every worker loads its own).
    task : {"is", "en", "both"}
    batch_size : int
        Inputs decoded at once (a chunk is this many).
    quantize, dtype
        As `stt.load` takes them.
    options : dict
        More keyword arguments for `STT.transcribe_iter`.
    """

    def __init__(
        self, model: str, task: str, batch_size: int = DEFAULT_BATCH_SIZE, quantize=None, dtype=None, **options
    ):
        self.stt = load(model, quantize=quantize, dtype=dtype)
        self.task, self.batch_size, self.options = task, batch_size, options
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """Where this worker runs (``host:pid``), once its model is loaded."""
        return self.where

    def run(self, chunk: list[Entry]) -> Iterator[Outcome]:
        """Transcribe `chunk`, one `Outcome` per input in completion order; a failing input gives
        its error and the others go on. `wall_seconds` runs from the start of the chunk."""
        start = time.perf_counter()
        opened, outcomes = [], {}
        for e in chunk:
            try:
                opened.append(_open(e.source))
            except Exception as err:  # an unreachable URI: reported like an unreadable file
                outcomes[e.index] = Outcome(e.index, error=_message(err, e.source), worker=self.where)
                opened.append(None)
        for index, outcome in outcomes.items():
            yield outcome
        live = [(e, x) for e, x in zip(chunk, opened) if x is not None]
        job = self.stt.transcribe_iter([x for _, x in live], self.task, batch_size=self.batch_size, **self.options)
        try:
            for item in job:
                e = live[item.index][0]
                wall = time.perf_counter() - start
                if item.error is not None:
                    yield Outcome(e.index, error=_message(item.error, e.source), wall_seconds=wall, worker=self.where)
                else:
                    seconds = float(item.result.duration)
                    yield Outcome(e.index, item.result, audio_seconds=seconds, wall_seconds=wall, worker=self.where)
        finally:
            for _, x in live:
                if hasattr(x, "close"):
                    x.close()


def _message(err: BaseException, source: str) -> str:
    """The error as one line that names the input."""
    msg = one_line(err)
    return msg if source in msg or os.path.basename(source) in msg else f"{source}: {msg}"


class LocalWorkers:
    """One `Transcriber` on this machine: the archive job without a cluster.

    Parameters
    ----------
    transcriber : Transcriber
    """

    def __init__(self, transcriber: Transcriber):
        self.transcriber = transcriber
        self.alive = 1

    def run(self, entries: list[Entry]) -> Iterator[Outcome]:
        """Every entry's `Outcome`, chunk after chunk (`batch_size` inputs at a time)."""
        for chunk in chunks(entries, self.transcriber.batch_size):
            yield from self.transcriber.run(chunk)

    def close(self):
        pass
