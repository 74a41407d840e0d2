# Copyright © 2026 mlx-kyutai-is contributors
"""`BatchJob`: a list of inputs decoded `batch_size` engine rows at a time on one `Engine`.

The job reads no files: `pieces` gives each input's audio as `segments.Piece`s (an input decoded
as one stream is one piece; a long recording cut at pauses, several), each with an iterator of
float32 blocks at the model rate (`stt.py` opens files, pipes and arrays, and cuts them).
Pieces of all inputs share the rows; an input's result is its pieces' merged.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from ..results import Result
from ..tasks import task_list
from .engine import Engine
from .protocol import StreamOptions
from .segments import Piece, merge, shift_words

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


@dataclass
class PieceError:
    """What `pieces` gives instead of a piece when reading or cutting input `input` failed."""

    input: int
    error: BaseException


@dataclass
class _Input:
    """An input's pieces: finished ones (number -> (start s, end s, {task: Transcript})), those
    decoding (number -> StreamState), and whether its last piece has been seen."""

    done: dict = field(default_factory=dict)
    active: dict = field(default_factory=dict)
    complete: bool = False


class BatchJob:
    """A list transcription in progress: iterate it for `BatchItem`s in completion order.

    Up to `batch_size` pieces decode at once on one `engine.Engine`; each is read a block at a
    time as its stream needs audio, so memory stays flat whatever the lengths. If the iteration
    is interrupted (Ctrl-C, an exception), `partials()` gives what the inputs in progress decoded
    so far and `not_started()` the indices never started.

    Parameters
    ----------
    model, tokenizer
        The loaded model (`STT.model`, `STT.tokenizer`).
    inputs : list
        The sources (for `BatchItem.source`).
    pieces : iterator
        Each input's `Piece`s in input order (an input's pieces in order), or `PieceError`s.
    progress : callable, optional
        ``progress(seconds_done, total)`` after each step (`total` as given); its ``close()``,
        if it has one, is called when the iteration ends.
    on_words : callable, optional
        ``on_words(index, words)`` as each input's words become final (times of the input).
    """

    def __init__(
        self,
        model,
        tokenizer,
        inputs: list,
        task: str,
        *,
        pieces: Iterator["Piece | PieceError"],
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
        self.pieces, self.options = pieces, options
        self.batch_size = int(batch_size)
        self.on_words = on_words
        self._progress, self._total = progress, total
        self._inputs: dict[int, _Input] = {}  # inputs started and not yet given out
        self._active: dict[int, list] = {}  # stream id -> [Piece, StreamState, blocks iterator or None]
        self._next_input = 0  # inputs below this have been started (or failed)
        self._exhausted = False
        self._done_s = 0.0
        self.engine = None

    def __iter__(self):
        self.engine = Engine(self.model, self.tokenizer)
        try:
            yield from self._run()
        finally:
            for closer in (self._progress, self.pieces):
                if hasattr(closer, "close"):
                    closer.close()

    # -- pieces --------------------------------------------------------------------------------
    def _take_piece(self):
        """The next piece (opened as a stream), a `BatchItem` for an input that failed, or None."""
        try:
            p = next(self.pieces)
        except StopIteration:
            self._exhausted = True
            return None
        if isinstance(p, PieceError):
            self._next_input = max(self._next_input, p.input + 1)
            return self._fail(p.input, p.error)
        self._next_input = max(self._next_input, p.input + 1)
        state = self._inputs.setdefault(p.input, _Input())
        s = self.engine.open(self.task, self.options)
        state.active[p.number] = s
        state.complete = state.complete or p.last
        self._active[s.id] = [p, s, iter(p.blocks)]
        return None

    def _fail(self, i: int, error: BaseException) -> BatchItem:
        state = self._inputs.pop(i, None)
        for s in state.active.values() if state else ():
            self.engine.close(s)
            self._active.pop(s.id, None)
        return BatchItem(i, self.inputs[i], error=error)

    def _run(self):
        engine = self.engine
        rate = engine.sample_rate
        ahead = int(FEED_AHEAD_SECONDS * rate)
        while not self._exhausted or self._active:
            while len(self._active) < self.batch_size and not self._exhausted:
                failed = self._take_piece()
                if failed is not None:
                    yield failed
            for entry in list(self._active.values()):
                p, s, blocks = entry
                if s.closed:  # its input failed in this loop
                    continue
                try:
                    while blocks is not None and s.queued < ahead:
                        block = next(blocks, None)
                        if block is None:
                            engine.finish(s)
                            entry[2] = blocks = None
                        else:
                            engine.push(s, block)
                except Exception as e:
                    yield self._fail(p.input, e)
            if not engine.step():
                engine.drain()
            self._collect_words()
            finished = [(p, s) for p, s, _ in self._active.values() if s.done]
            for p, s in finished:
                del self._active[s.id]
                self._done_s += s.duration
                engine.close(s)
                state = self._inputs.get(p.input)
                if state is None:  # the input failed meanwhile
                    continue
                del state.active[p.number]
                start = p.start / rate
                state.done[p.number] = (start, start + s.duration, s.transcripts())
            self._report_progress()
            for i in sorted({p.input for p, _ in finished}):
                state = self._inputs.get(i)
                if state is not None and state.complete and not state.active:
                    del self._inputs[i]
                    yield BatchItem(i, self.inputs[i], result=self._result(state))

    def _result(self, state: _Input, partial: bool = False) -> Result:
        parts = [state.done[n] for n in sorted(state.done)]
        duration = parts[-1][1] if parts else 0.0
        tasks = task_list(self.task)
        return Result(
            self.task, {t: merge([(a, b, ts[t]) for a, b, ts in parts], duration, partial) for t in tasks}
        )

    def _collect_words(self):
        rate = self.engine.sample_rate
        for p, s, _ in self._active.values():
            words = s.take_words()
            if words and self.on_words is not None:
                self.on_words(p.input, shift_words(words, p.start / rate))

    def _report_progress(self):
        if self._progress is not None:
            # Audio decoded: pieces done, and what the model has read of those in progress.
            done = self._done_s + sum(s.audio_time for _, s, _ in self._active.values())
            self._progress(done, self._total)

    def partials(self) -> list[BatchItem]:
        """What each input in progress decoded so far (pending words closed), marked partial:
        its finished pieces and what its pieces in progress had read."""
        if self.engine is None:
            return []
        try:
            self.engine.drain()
        except Exception:  # the device work that was interrupted is lost; the rest is kept
            pass
        rate = self.engine.sample_rate
        items = []
        for i, state in sorted(self._inputs.items()):
            for number, s in state.active.items():
                for a in s.assemblers.values():
                    a.flush()
                p = next(p for p, st, _ in self._active.values() if st is s)
                start = p.start / rate
                state.done[number] = (start, start + s.audio_time, s.transcripts(partial=True))
            items.append(BatchItem(i, self.inputs[i], result=self._result(state, partial=True), partial=True))
        return items

    def not_started(self) -> list[int]:
        return list(range(self._next_input, len(self.inputs)))
