# Copyright © 2026 mlx-kyutai-is contributors
"""The public API's home: `load()` a model, the `STT` object it returns, and `transcribe()`.

`STT.transcribe` decodes files and arrays (one or a list) on the batched engine, `STT.stream`
gives one synchronous live stream, `STT.live` many concurrent ones on a background thread.
Every task gives the same result shape (`results.Result`).
"""

import os
import sys
import time
from collections.abc import Iterator
from numbers import Integral, Real
from pathlib import Path

from tqdm import tqdm

from .audio import audio_duration, iter_audio_blocks, prepare_array
from .models.codec import MimiCodec, load_codec
from .models.loading import (
    DEFAULT_MODEL,
    adapt_to_device,
    load_model,
    read_preprocessor_config,
    resolve_model_path,
)
from .models.tokenizer import Tokenizer
from .results import Result
from .runtime.batch import BatchJob, PieceError
from .runtime.live import LiveEngine
from .runtime.protocol import StreamOptions
from .runtime.segments import (
    DEFAULT_MAX_SEGMENT,
    Piece,
    Prefetch,
    Segmenter,
    measure_batch_cost,
    overhead_steps,
    plan_segments,
)
from .runtime.stream import Stream
from .runtime.watchdog import StallWatchdog
from .tasks import task_list

# How many inputs a list transcription decodes at once. A one-frame step is memory- and
# launch-bound, so a step for B rows costs far less than B steps (this CPU, full size, bf16,
# 2026-12-01, `bench --bulk`-style run of 16 files: batch_size 8 1.76x faster than 1, 16 no faster
# than 8); more rows cost memory (~50 MB of KV per row at full size, Mimi ~135 MB per row per call).
DEFAULT_BATCH_SIZE = 8
# Files are read this much at a time (never whole); a pipe or an open file less, so that words
# come out as the audio arrives.
FILE_BLOCK_SECONDS = 2.0
PIPE_BLOCK_SECONDS = 0.24
# Sets `STT.batch_cost` instead of measuring it (e.g. to force or forbid cutting long recordings).
BATCH_COST_ENV = "MLX_KYUTAI_IS_BATCH_COST"


def load(path_or_repo: str = DEFAULT_MODEL, quantize: int | dict | None = None, dtype: str | None = None) -> "STT":
    """Load a model for `transcribe()` and `stream()`.

    Parameters
    ----------
    path_or_repo : str or Path
        An MLX directory written by `convert`, a Hugging Face checkpoint directory (converted in
        memory at every load), or a hub repo id (downloaded once into the Hugging Face cache,
        then converted in memory at every load, as a checkpoint directory is).
    quantize : int or dict, optional
        4 or 8 (bits), or ``{"bits": .., "group_size": ..}``: quantize the LM's linear layers of a
        float checkpoint on load (Mimi and the embeddings stay float).
    dtype : str, optional
        "float32", "bfloat16" or "float16": the LM's compute type for a float checkpoint
        (default: as stored, bf16). Mimi is always float32.

    Returns
    -------
    STT
    """
    path = resolve_model_path(path_or_repo)
    model = adapt_to_device(load_model(path, quantize=_quantization(quantize), dtype=dtype))
    tokenizer = Tokenizer.from_dir(path, model.args.lm)
    return STT(model, tokenizer, read_preprocessor_config(path), path=str(path))


def _quantization(quantize) -> dict | None:
    """`load`'s quantize argument as {"bits", "group_size"}: 4, 8, "4", "8" or such a dict."""
    if quantize is None or isinstance(quantize, dict):
        return quantize
    bits = quantize
    if isinstance(bits, str) and bits.strip().isdigit():
        bits = int(bits)
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"quantize must be 4 or 8 (bits), or {{'bits': ..., 'group_size': ...}}; got {quantize!r}")
    return {"bits": int(bits), "group_size": 64}


def _check_sr(sr):
    if sr is not None and (isinstance(sr, bool) or not isinstance(sr, Integral) or sr <= 0):
        raise ValueError(f"sr must be a positive integer (samples per second), got {sr!r}")


def _is_file(x) -> bool:
    return isinstance(x, (str, Path)) or hasattr(x, "read")


class ProgressBar:
    """One tqdm bar on stderr over a job's audio seconds (`progress=True`, and `transcribe`'s bar):
    the real-time factor (wall time ÷ audio done, over the whole job so far, not smoothed) and
    the time left at that pace. Called as ``bar(seconds_done, total)``; `total` may be None (an
    input's length not known up front) and come later.

    Attributes
    ----------
    bar : tqdm
        The bar itself (`clear()` and `refresh()` it around lines printed to the same terminal).
    """

    KNOWN = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}{postfix}]"
    UNKNOWN = "{desc}: {n:.1f} s of audio [{elapsed}{postfix}]"

    def __init__(self, total: float | None = None):
        self.start = time.perf_counter()
        total = None if total is None else round(total, 1)
        # smoothing=0: tqdm's time left uses the average pace since the start, as the RTF shown does.
        self.bar = tqdm(
            total=total,
            unit="s",
            desc="transcribing",
            leave=False,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.UNKNOWN if total is None else self.KNOWN,
        )

    def __call__(self, done: float, total: float | None = None):
        if total is not None and self.bar.total != round(total, 1):
            self.bar.total, self.bar.bar_format = round(total, 1), self.KNOWN
        if done > 0:
            self.bar.set_postfix_str(f"RTF {(time.perf_counter() - self.start) / done:.2f}", refresh=False)
        self.bar.update(round(done, 1) - self.bar.n)

    def close(self):
        self.bar.close()


class STT:
    """A loaded speech-to-text model: `transcribe()` files and arrays (one or a list), `stream()`
    one live stream, or `live()` many concurrent live streams on one batched engine.

    Attributes
    ----------
    options : StreamOptions
        How streams are decoded by default: the protocol's defaults and this checkpoint's
        processor padding (`preprocessor_config.json`).
    """

    def __init__(self, model, tokenizer, preprocessor: dict | None = None, path: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = path
        pre = preprocessor or {}
        self.options = StreamOptions(
            silence_prefix=float(pre.get("audio_silence_prefix_seconds", 0.0)),
            delay=float(pre.get("audio_delay_seconds", 0.0)),
        )
        self.batch_costs: dict[int, float] = {}

    @property
    def sample_rate(self) -> int:
        """Samples per second the model reads (its codec's)."""
        return self.model.args.sample_rate

    @property
    def frame_size(self) -> int:
        """Samples per model step (80 ms)."""
        return self.model.args.frame_size

    @property
    def codec(self) -> MimiCodec:
        """The model's Mimi codec (`models.codec.MimiCodec`): `encode` audio to the codes the model
        reads, `decode` codes back to audio, to hear what the model hears. Shares the loaded
        encoder; the decoder's weights are read from the model's directory on first use (a
        directory converted before they were kept has none: `decode` says so)."""
        if getattr(self, "_codec", None) is None:
            if self.path is None:
                self._codec = MimiCodec(self.model.mimi, missing="this model was not loaded from a directory")
            else:
                self._codec = load_codec(self.path, encoder=self.model.mimi)
        return self._codec

    def stream(
        self,
        task: str = "is",
        *,
        pad_steps: int | None = None,
        text_delay: float | None = None,
        trailing_silence: float | None = None,
        watchdog: "bool | StallWatchdog" = False,
    ) -> Stream:
        """A live stream (see `runtime.stream.Stream`); use it as a context manager, or call `flush()`.

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
            Re-prime the LM when it stalls (see `runtime.watchdog.StallWatchdog`); off by default
            so that results are exactly the reference recipe's.
        """
        options = self.options.replace(pad_steps=pad_steps, text_delay=text_delay, trailing_silence=trailing_silence)
        if watchdog is True:
            watchdog = StallWatchdog()
        return Stream(self.model, self.tokenizer, task, options=options, watchdog=watchdog or None)

    def live(self, max_streams: int = 64) -> LiveEngine:
        """Many concurrent live streams on one batched engine running on a background thread
        (see `runtime.live.LiveEngine`): ``s = engine.open("is"); s.feed(pcm); s.flush().result()``."""
        return LiveEngine(self, max_streams=max_streams)

    def _open_input(self, x, sr: int | None):
        """An input's audio as float32 blocks at the model rate, read as the engine needs them."""
        rate = self.sample_rate
        if _is_file(x):
            pipe = hasattr(x, "read") or str(x) == "-"
            return iter_audio_blocks(x, rate, block_seconds=PIPE_BLOCK_SECONDS if pipe else FILE_BLOCK_SECONDS)
        samples = prepare_array(x, sr_in=sr or rate, sr=rate)
        step = int(FILE_BLOCK_SECONDS * rate)
        return (samples[j : j + step] for j in range(0, len(samples), step))

    def _durations(self, inputs, sr: int | None) -> list[float | None]:
        """Each input's seconds of audio, None where not known up front (a pipe, an open file)."""
        out = []
        for x in inputs:
            if isinstance(x, (str, Path)) and str(x) != "-":
                try:
                    d = audio_duration(x)
                except Exception:  # reported when the input is read
                    d = 0.0
            elif _is_file(x) or not hasattr(x, "__len__"):
                d = None
            else:
                d = len(x) / (sr or self.sample_rate)
            out.append(d)
        return out

    def batch_cost(self, rows: int) -> float:
        """What an engine step of `rows` rows costs in single-row steps on this machine (1.0:
        batching is free), measured once per process (`runtime.segments.measure_batch_cost`).
        ``MLX_KYUTAI_IS_BATCH_COST`` (a number) sets it instead, for every row count."""
        if rows not in self.batch_costs:
            given = os.environ.get(BATCH_COST_ENV)
            try:
                cost = float(given) if given else None
            except ValueError:
                raise ValueError(f"{BATCH_COST_ENV} must be a number, got {given!r}") from None
            self.batch_costs[rows] = cost or measure_batch_cost(self.model, self.tokenizer, rows)
        return self.batch_costs[rows]

    def _segment_targets(self, durations, max_segment, rows, options) -> dict[int, float]:
        """input index -> target segment seconds, for the inputs worth cutting (`plan_segments`)."""
        frame_rate = self.sample_rate / self.frame_size
        overhead = overhead_steps(options, frame_rate)
        targets = {}
        for i, d in enumerate(durations):
            if rows > 1 and (d is None or d > max_segment):
                target = plan_segments(d, rows, self.batch_cost(rows), overhead, frame_rate, max_segment)
                if target is not None:
                    targets[i] = target
        return targets

    def _pieces(self, inputs, sr, targets: dict, max_segment: float) -> Iterator:
        """Each input's `Piece`s in order: one lazily read stream, or, for the inputs in
        `targets`, pieces cut at pauses as the input is read."""
        for i, x in enumerate(inputs):
            try:
                blocks = self._open_input(x, sr)
                if targets.get(i) is None:
                    yield Piece(i, 0, 0, blocks, last=True)
                    continue
                cutter = Segmenter(self.sample_rate, self.frame_size, targets[i], max_segment)
                yield from cutter.pieces(i, blocks)
            except Exception as e:
                yield PieceError(i, e)

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
        segment: str | None = "vad",
        max_segment: float = DEFAULT_MAX_SEGMENT,
    ) -> BatchJob:
        """Transcribe many inputs, `batch_size` engine rows at a time on one batched engine.

        Parameters
        ----------
        inputs : list
            Paths, "-" (stdin, read as it arrives), open binary files, or arrays at rate `sr`.
        task : {"is", "en", "both"}
        batch_size : int, optional
            How many inputs decode at once (default `DEFAULT_BATCH_SIZE`).
        progress : callable or bool, optional
            ``progress(seconds_done, total_seconds)`` over the whole job's audio (total None when
            an input's length is unknown up front); True shows one bar on stderr (`ProgressBar`:
            the real-time factor and the time left).
        on_words : callable, optional
            ``on_words(index, words)`` as each input's words become final.
        segment : {"vad", None}
            "vad" (default): a recording longer than `max_segment` seconds is cut at pauses into
            segments decoded side by side, when this machine's measured batching gain pays for
            the cuts (each segment decodes exactly as its slice alone; see
            `runtime.segments`); None: every input is one unbroken stream.
        max_segment : float
            The longest segment in seconds; shorter audio is never cut.

        Returns
        -------
        BatchJob
            Iterate it for `BatchItem`s in completion order, each with a `Result`; a failed input
            gives an item with `error` set and the others go on.
        """
        task_list(task)
        _check_sr(sr)
        if segment not in ("vad", None):
            raise ValueError(f'segment must be "vad" or None, got {segment!r}')
        if isinstance(max_segment, bool) or not isinstance(max_segment, Real) or not max_segment > 0:
            raise ValueError(f"max_segment must be a number of seconds > 0, got {max_segment!r}")
        options = self.options.replace(pad_steps=pad_steps, text_delay=text_delay, trailing_silence=trailing_silence)
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        inputs = list(inputs)
        durations = self._durations(inputs, sr) if progress or segment else []
        total = None if not progress or None in durations else sum(durations)
        if progress is True:
            progress = ProgressBar(total)
        # The rows a recording may use: its share of the batch (other inputs decode beside it).
        rows = max(1, int(batch_size) // max(1, len(inputs))) if isinstance(batch_size, Integral) else 1
        targets = self._segment_targets(durations, max_segment, rows, options) if segment else {}
        pieces = self._pieces(inputs, sr, targets, max_segment)
        return BatchJob(
            self.model,
            self.tokenizer,
            inputs,
            task,
            pieces=Prefetch(pieces, size=batch_size) if targets else pieces,
            options=options,
            batch_size=batch_size,
            progress=progress or None,
            total=total,
            on_words=on_words,
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
    ) -> "Result | list[Result]":
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
            `pad_steps`, `text_delay`, `trailing_silence`: see `stream()`; `segment`,
            `max_segment`: see `transcribe_iter()` (long recordings cut at pauses by default).

        Returns
        -------
        Result
            The same shape for every task: ``result.text`` (the first task's), and
            ``result["is"]`` / ``result["en"]`` (`Transcript`s). For a list, a list of them in
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
        if cls.stt is None or cls.key != str(path_or_repo):
            cls.stt, cls.key = None, None  # free the old weights before loading new ones
            cls.stt, cls.key = load(str(path_or_repo)), str(path_or_repo)
        return cls.stt


def transcribe(audio, *, model=DEFAULT_MODEL, task: str = "is", **options) -> "Result | list[Result]":
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
    Result, or a list of them for a list.
    """
    stt = model if isinstance(model, STT) else ModelHolder.get(model)
    return stt.transcribe(audio, task=task, **options)
