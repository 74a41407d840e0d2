# Copyright © 2026 mlx-kyutai-is contributors
"""`BatchJob`: a list of inputs decoded `batch_size` at a time on one `Engine`.

The job reads no files: each input comes with an `open_input(source)` that gives its audio as
an iterator of float32 blocks at the model rate (`stt.py` opens files, pipes and arrays).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from ..results import Result
from ..tasks import task_list
from .engine import Engine
from .protocol import StreamOptions

# A stream gets more audio when less than this is waiting to be decoded.
FEED_AHEAD_SECONDS = 1.0


@dataclass
class BatchItem:
    """One input of a list transcription: its `result` or the `error` that stopped it;
    `partial` when decoding was interrupted."""

    index: int
    source: Any
    result: Result | None = None
    error: BaseException | None = None
    partial: bool = False


class BatchJob:
    """A list transcription in progress: iterate it for `BatchItem`s in completion order.

    Up to `batch_size` inputs decode at once on one `engine.Engine`; each input is read a block
    at a time as its stream needs audio, so memory stays flat whatever the lengths. If the
    iteration is interrupted (Ctrl-C, an exception), `partials()` gives what the inputs in
    progress decoded so far and `not_started()` the indices never started.

    Parameters
    ----------
    model, tokenizer
        The loaded model (`STT.model`, `STT.tokenizer`).
    inputs : list
        The sources, handed to `open_input` one at a time as a row frees up.
    open_input : callable
        ``open_input(source) -> iterator of float32 sample blocks`` at the model rate.
    progress : callable, optional
        ``progress(seconds_done, total)`` after each step (`total` as given); its ``close()``,
        if it has one, is called when the iteration ends.
    on_words : callable, optional
        ``on_words(index, words)`` as each input's words become final.
    """

    def __init__(
        self,
        model,
        tokenizer,
        inputs: list,
        task: str,
        *,
        open_input: Callable[[Any], Iterator[np.ndarray]],
        options: StreamOptions,
        batch_size: int,
        progress=None,
        total: float | None = None,
        on_words=None,
    ):
        task_list(task)  # a bad task fails now, not per input
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.tokenizer = model, tokenizer
        self.inputs, self.task = list(inputs), task
        self.open_input, self.options = open_input, options
        self.batch_size = int(batch_size)
        self.on_words = on_words
        self._progress, self._total = progress, total
        self._active = {}  # index -> [StreamState, blocks iterator or None]
        self._next = 0
        self._done_s = 0.0
        self.engine = None

    def __iter__(self):
        self.engine = Engine(self.model, self.tokenizer)
        try:
            yield from self._run()
        finally:
            if hasattr(self._progress, "close"):
                self._progress.close()

    def _open(self, i):
        blocks = self.open_input(self.inputs[i])
        s = self.engine.open(self.task, self.options)
        self._active[i] = [s, iter(blocks)]

    def _result(self, s, partial=False) -> Result:
        return Result(self.task, s.transcripts(partial))

    def _run(self):
        engine = self.engine
        ahead = int(FEED_AHEAD_SECONDS * engine.sample_rate)
        while self._next < len(self.inputs) or self._active:
            while len(self._active) < self.batch_size and self._next < len(self.inputs):
                i, self._next = self._next, self._next + 1
                try:
                    self._open(i)
                except Exception as e:
                    yield BatchItem(i, self.inputs[i], error=e)
            for i, entry in list(self._active.items()):
                s, blocks = entry
                try:
                    while blocks is not None and s.queued < ahead:
                        block = next(blocks, None)
                        if block is None:
                            engine.finish(s)
                            entry[1] = blocks = None
                        else:
                            engine.push(s, block)
                except Exception as e:
                    engine.close(s)
                    del self._active[i]
                    yield BatchItem(i, self.inputs[i], error=e)
            if not engine.step():
                engine.drain()
            self._collect_words()
            finished = [(i, s) for i, (s, _) in self._active.items() if s.done]
            for i, s in finished:
                del self._active[i]
                self._done_s += s.duration
                engine.close(s)
            self._report_progress()
            for i, s in finished:
                yield BatchItem(i, self.inputs[i], result=self._result(s))

    def _collect_words(self):
        for i, (s, _) in self._active.items():
            words = s.take_words()
            if words and self.on_words is not None:
                self.on_words(i, words)

    def _report_progress(self):
        if self._progress is not None:
            # Audio decoded: inputs done, and what the model has read of those in progress.
            done = self._done_s + sum(s.audio_time for s, _ in self._active.values())
            self._progress(done, self._total)

    def partials(self) -> list[BatchItem]:
        """What each input in progress decoded so far (pending words closed), marked partial."""
        if self.engine is None:
            return []
        try:
            self.engine.drain()
        except Exception:  # the device work that was interrupted is lost; the rest is kept
            pass
        items = []
        for i, (s, _) in sorted(self._active.items()):
            for a in s.assemblers.values():
                a.flush()
            items.append(BatchItem(i, self.inputs[i], result=self._result(s, partial=True), partial=True))
        return items

    def not_started(self) -> list[int]:
        return list(range(self._next, len(self.inputs)))
