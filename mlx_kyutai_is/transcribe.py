# Copyright © 2026 mlx-kyutai-is contributors
"""Transcription of files and arrays, one or many at a time, and the `STT` object `load()` returns."""

import sys
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

# This module is imported by `import mlx_kyutai_is` (so that the package's `transcribe` stays the
# function, not this submodule): it must stay light, everything heavy is imported where used.
if TYPE_CHECKING:
    from .engine import LiveEngine
    from .stream import Stream
    from .watchdog import StallWatchdog

DEFAULT_MODEL = "mideind/kyutai-stt-1b-is-en"

# How many inputs a list transcription decodes at once. A one-frame step is memory- and
# launch-bound, so a step for B rows costs far less than B steps (this CPU, full size, bf16,
# 2026-12-01, `bench --bulk`-style run of 16 files: batch_size 8 1.76x faster than 1, 16 no faster
# than 8); more rows cost memory (~50 MB of KV per row at full size, Mimi ~135 MB per row per call).
DEFAULT_BATCH_SIZE = 8
# Files are read this much at a time (never whole); a pipe or an open file less, so that words
# come out as the audio arrives.
FILE_BLOCK_SECONDS = 2.0
PIPE_BLOCK_SECONDS = 0.24
# A stream gets more audio when less than this is waiting to be decoded.
FEED_AHEAD_SECONDS = 1.0


@dataclass
class BatchItem:
    """One input of a list transcription: its `result` (a Transcript, or dict[str, Transcript]
    for task "both") or the `error` that stopped it; `partial` when decoding was interrupted."""

    index: int
    source: Any
    result: Any = None
    error: BaseException | None = None
    partial: bool = False


def _check_sr(sr):
    if sr is not None and (isinstance(sr, bool) or not isinstance(sr, Integral) or sr <= 0):
        raise ValueError(f"sr must be a positive integer (samples per second), got {sr!r}")


def _label(source) -> str:
    if isinstance(source, (str, Path)):
        return "stdin" if str(source) == "-" else str(source)
    if hasattr(source, "read"):
        return getattr(source, "name", None) or "file object"
    return "audio array"


class BatchJob:
    """A list transcription in progress: iterate it for `BatchItem`s in completion order.

    Up to `batch_size` inputs decode at once on one `engine.Engine`; each input is read a block
    at a time as its stream needs audio, so memory stays flat whatever the lengths. If the
    iteration is interrupted (Ctrl-C, an exception), `partials()` gives what the inputs in
    progress decoded so far and `not_started()` the indices never started.
    """

    def __init__(self, stt, inputs, task, *, batch_size, sr=None, progress=None, on_words=None, stream_options=None):
        from .decoding import task_list

        task_list(task)  # a bad task fails now, not per input
        _check_sr(sr)
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.stt, self.inputs, self.task = stt, list(inputs), task
        self.batch_size, self.sr = int(batch_size), sr
        self.on_words = on_words
        self.stream_options = stream_options or {}
        self._progress, self._bar = progress, None
        self._active = {}  # index -> [EngineStream, blocks iterator or None]
        self._next = 0
        self._done_s = 0.0
        self._total = None
        self.engine = None

    def __iter__(self):
        from .engine import Engine

        self.engine = Engine(
            self.stt.model, self.stt.tokenizer, silence_prefix=self.stt.silence_prefix, delay=self.stt.delay
        )
        self._start_progress()
        try:
            yield from self._run()
        finally:
            if self._bar is not None:
                self._bar.close()

    def _start_progress(self):
        if self._progress is None or self._progress is False:
            self._progress = None
            return
        from .audio import audio_duration

        total = 0.0
        for x in self.inputs:
            if isinstance(x, (str, Path)) and str(x) != "-":
                try:
                    d = audio_duration(x)
                except Exception:  # reported when the input is read
                    d = 0.0
            elif hasattr(x, "read") or isinstance(x, (str, Path)):
                d = None
            else:
                d = len(x) / (self.sr or self.stt.sample_rate) if hasattr(x, "__len__") else None
            if d is None:
                total = None
                break
            total += d
        self._total = total
        if self._progress is True:
            from tqdm import tqdm

            total = None if total is None else round(total, 1)
            self._bar = tqdm(total=total, unit="s", desc="transcribing", leave=False, file=sys.stderr)
            self._progress = lambda done, _t=None: self._bar.update(round(done, 1) - self._bar.n)

    def _open(self, i):
        from .audio import iter_audio_blocks, prepare_array

        x = self.inputs[i]
        rate = self.stt.sample_rate
        if isinstance(x, (str, Path)) or hasattr(x, "read"):
            pipe = hasattr(x, "read") or str(x) == "-"
            blocks = iter_audio_blocks(x, block_seconds=PIPE_BLOCK_SECONDS if pipe else FILE_BLOCK_SECONDS, sr=rate)
        else:
            samples = prepare_array(x, sr_in=self.sr or rate, sr=rate)
            step = int(FILE_BLOCK_SECONDS * rate)
            blocks = (samples[j : j + step] for j in range(0, len(samples), step))
        s = self.engine.open(self.task, **self.stream_options)
        self._active[i] = [s, iter(blocks)]

    def _result(self, s, partial=False):
        results = s.transcripts(partial)
        return results if self.task == "both" else results[self.task]

    def _run(self):
        engine, rate = self.engine, self.stt.sample_rate
        ahead = int(FEED_AHEAD_SECONDS * rate)
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
                            engine.feed(s, block)
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


class STT:
    """A loaded speech-to-text model: `transcribe()` files and arrays (one or a list), `stream()`
    one live stream, or `live()` many concurrent live streams on one batched engine."""

    def __init__(self, model, tokenizer, preprocessor: dict | None = None, path: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        pre = preprocessor or {}
        self.silence_prefix = float(pre.get("audio_silence_prefix_seconds", 0.0))
        self.delay = float(pre.get("audio_delay_seconds", 0.0))

    @property
    def sample_rate(self) -> int:
        return self.model.args.sample_rate

    def _options(self, pad_steps=None, text_delay=None, trailing_silence=None) -> dict:
        from .decoding import check_options

        options = dict(pad_steps=pad_steps, text_delay=text_delay, trailing_silence=trailing_silence)
        options = {k: v for k, v in options.items() if v is not None}
        check_options(**options)
        return options

    def stream(
        self,
        task: str = "is",
        *,
        pad_steps: int | None = None,
        text_delay: float | None = None,
        trailing_silence: float | None = None,
        watchdog: "bool | StallWatchdog" = False,
    ) -> "Stream":
        """A live stream (see `stream.Stream`); use it as a context manager, or call `flush()`.

        Parameters
        ----------
        task : {"is", "en", "both"}
        pad_steps : int, optional
            Steps forced to pad after the task prefix (default 12, the model card's).
        text_delay : float, optional
            Seconds the text lags the audio, used only to date words (default 5.0, the delay the
            fine-tune was trained with).
        trailing_silence : float, optional
            Silence `flush()` feeds before the processor's right padding (default 5.0, as the
            model card's recipe appends).
        watchdog : bool or StallWatchdog
            Re-prime the LM when it stalls (see `watchdog.StallWatchdog`); off by default so that
            results are exactly the reference recipe's.
        """
        from .stream import Stream
        from .watchdog import StallWatchdog

        if watchdog is True:
            watchdog = StallWatchdog(frame_size=self.model.args.frame_size, sample_rate=self.sample_rate)
        return Stream(
            self.model,
            self.tokenizer,
            task,
            silence_prefix=self.silence_prefix,
            delay=self.delay,
            watchdog=watchdog or None,
            **self._options(pad_steps, text_delay, trailing_silence),
        )

    def live(self, max_streams: int = 64) -> "LiveEngine":
        """Many concurrent live streams on one batched engine running on a background thread
        (see `engine.LiveEngine`): ``s = engine.open("is"); s.feed(pcm); s.flush().result()``."""
        from .engine import LiveEngine

        return LiveEngine(self, max_streams=max_streams)

    def transcribe_iter(
        self,
        inputs,
        task: str = "is",
        *,
        batch_size: int | None = None,
        sr: int | None = None,
        progress=None,
        on_words=None,
        pad_steps: int | None = None,
        text_delay: float | None = None,
        trailing_silence: float | None = None,
    ) -> BatchJob:
        """Transcribe many inputs, `batch_size` at a time on one batched engine.

        Parameters
        ----------
        inputs : list
            Paths, "-" (stdin, read as it arrives), open binary files, or arrays at rate `sr`.
        task : {"is", "en", "both"}
        batch_size : int, optional
            How many inputs decode at once (default `DEFAULT_BATCH_SIZE`).
        progress : callable or bool, optional
            ``progress(seconds_done, total_seconds)`` over the whole job's audio (total None when
            an input's length is unknown up front); True shows one tqdm bar on stderr.
        on_words : callable, optional
            ``on_words(index, words)`` as each input's words become final.

        Returns
        -------
        BatchJob
            Iterate it for `BatchItem`s in completion order; a failed input gives an item with
            `error` set and the others go on.
        """
        return BatchJob(
            self,
            inputs,
            task,
            batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
            sr=sr,
            progress=progress,
            on_words=on_words,
            stream_options=self._options(pad_steps, text_delay, trailing_silence),
        )

    def transcribe(
        self,
        audio,
        task: str = "is",
        *,
        sr: int | None = None,
        verbose: bool = False,
        progress=None,
        batch_size: int | None = None,
        **stream_options,
    ):
        """Transcribe a file path ("-" for stdin), an open binary file or an array of samples, or
        a list of them.

        By default this runs the model card's transformers recipe step for step: 5 s of silence
        appended, the processor's left/right padding, floor(padded samples / 1920) LM steps,
        greedy decoding with the task prefix and 12 forced pad steps. The tokens are those of the
        recipe exactly when both compute in float32 (``load(..., dtype="float32")``); in bf16 the
        two frameworks' kernels round differently and may break an argmax near-tie the other way.
        A list is decoded `batch_size` inputs at a time, each exactly as it would be alone.

        Parameters
        ----------
        audio : str, Path, binary file, array, or a list of them
            A file (any format soundfile reads, any rate and channel count), or samples
            (1-D, or 2-D with channels on the shorter axis; integer PCM is scaled to [-1, 1]) at
            rate `sr` (default: the model rate).
        task : {"is", "en", "both"}
        sr : int, optional
            The sample rate of array input.
        verbose : bool
            Print words as they are decoded.
        progress : callable or bool, optional
            Called as ``progress(seconds_done, total_seconds)`` (total is None for an input whose
            length is unknown up front); ``True`` shows a tqdm bar on stderr. For a list it
            covers the whole list.
        batch_size : int, optional
            For a list: how many inputs decode at once (default `DEFAULT_BATCH_SIZE`).
        **stream_options
            `pad_steps`, `text_delay`, `trailing_silence`: see `stream()`.

        Returns
        -------
        Transcript, or dict[str, Transcript] for task="both"; for a list, a list of those in
        input order (the first failing input raises its error).
        """
        many = isinstance(audio, (list, tuple))
        inputs = list(audio) if many else [audio]
        show_task = task == "both"
        on_words = (lambda i, words: _print_words(words, show_task)) if verbose else None
        job = self.transcribe_iter(
            inputs, task, batch_size=batch_size, sr=sr, progress=progress, on_words=on_words, **stream_options
        )
        results = [None] * len(inputs)
        for item in job:
            if item.error is not None:
                raise item.error
            results[item.index] = item.result
        return results if many else results[0]


def _print_words(words, show_task: bool):
    for w in words:
        tag = f"[{w.task}] " if show_task else ""
        print(f"{tag}[{w.start:7.2f} -> {w.end:7.2f}] {w.text}", file=sys.stdout, flush=True)


class ModelHolder:
    """Keeps the last model `transcribe()` loaded, so repeated calls don't reload it
    (as mlx_whisper's ModelHolder)."""

    stt: "STT | None" = None
    key: str | None = None

    @classmethod
    def get(cls, path_or_repo: str) -> "STT":
        from . import load

        if cls.stt is None or cls.key != str(path_or_repo):
            cls.stt, cls.key = None, None  # free the old weights before loading new ones
            cls.stt, cls.key = load(str(path_or_repo)), str(path_or_repo)
        return cls.stt


def transcribe(audio, *, model=DEFAULT_MODEL, task: str = "is", **options):
    """Transcribe a file or an array (or a list of them) in one call.

    Parameters
    ----------
    audio : str, Path, binary file, array, or a list of them
        See `STT.transcribe`.
    model : STT, str or Path
        A loaded model, or a model directory / hub id (loaded on first use and kept for the
        next calls).
    task : {"is", "en", "both"}
    **options
        Passed to `STT.transcribe` (`sr`, `verbose`, `progress`, `batch_size`, stream options).

    Returns
    -------
    Transcript, or dict[str, Transcript] for task="both"; a list of those for a list.
    """
    stt = model if isinstance(model, STT) else ModelHolder.get(model)
    return stt.transcribe(audio, task=task, **options)
