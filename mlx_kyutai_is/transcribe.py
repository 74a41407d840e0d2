# Copyright © 2026 mlx-kyutai-is contributors
"""One-shot transcription of files and arrays, and the `STT` object that `load()` returns."""

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

# This module is imported by `import mlx_kyutai_is` (so that the package's `transcribe` stays the
# function, not this submodule): it must stay light, everything heavy is imported where used.
if TYPE_CHECKING:
    from .stream import Stream, Word
    from .watchdog import StallWatchdog

DEFAULT_MODEL = "mideind/kyutai-stt-1b-is-en"

# Audio is fed to the stream in blocks this long: Mimi encodes a block in one batched call
# and a long file is never held in memory whole.
BLOCK_SECONDS = 10.0


@dataclass
class Transcript:
    """The result of one task over one input.

    `text` is the decoded transcript (the task prefix left out), `words` carry `start`/`end` in
    seconds of the input audio, `tokens` are every generated text id, the 4 prefix ids included.
    """

    text: str
    words: "list[Word]" = field(default_factory=list)
    task: str = "is"
    duration: float = 0.0
    tokens: list[int] = field(default_factory=list)


class STT:
    """A loaded speech-to-text model: `transcribe()` files and arrays, or `stream()` live audio."""

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
        options = dict(pad_steps=pad_steps, text_delay=text_delay, trailing_silence=trailing_silence)
        return Stream(
            self.model,
            self.tokenizer,
            task,
            silence_prefix=self.silence_prefix,
            delay=self.delay,
            watchdog=watchdog or None,
            **{k: v for k, v in options.items() if v is not None},
        )

    def transcribe(
        self,
        audio,
        task: str = "is",
        *,
        sr: int | None = None,
        verbose: bool = False,
        progress=None,
        **stream_options,
    ):
        """Transcribe a file path ("-" for stdin) or an array of samples.

        By default this runs the model card's transformers recipe step for step: 5 s of silence
        appended, the processor's left/right padding, floor(padded samples / 1920) LM steps,
        greedy decoding with the task prefix and 12 forced pad steps. The tokens are those of the
        recipe exactly when both compute in float32 (``load(..., dtype="float32")``); in bf16 the
        two frameworks' kernels round differently and may break an argmax near-tie the other way.

        Parameters
        ----------
        audio : str, Path or array
            A file (any format soundfile reads, any rate and channel count), or samples
            (1-D, or 2-D with channels on the shorter axis) at rate `sr` (default: the model rate).
        task : {"is", "en", "both"}
        verbose : bool
            Print words as they are decoded.
        progress : callable or bool, optional
            Called as ``progress(seconds_done, total_seconds)`` (total is None for a file whose
            length is unknown up front); ``True`` shows a tqdm bar on stderr.
        **stream_options
            `pad_steps`, `text_delay`, `trailing_silence`, `watchdog`: see `stream()`.

        Returns
        -------
        Transcript, or dict[str, Transcript] for task="both".
        """
        from .audio import audio_duration, iter_audio_blocks, prepare_array
        from .stream import task_list

        tasks = task_list(task)
        rate = self.sample_rate
        if isinstance(audio, (str, Path)):
            total = audio_duration(audio) if progress is not None else None
            blocks = iter_audio_blocks(audio, block_seconds=BLOCK_SECONDS, sr=rate)
        else:
            samples = prepare_array(audio, sr_in=sr or rate, sr=rate)
            step = int(BLOCK_SECONDS * rate)
            blocks = (samples[i : i + step] for i in range(0, len(samples), step))
            total = len(samples) / rate
        bar = None
        if progress is True:
            bar, progress = _tqdm_progress(total)
        elif progress is False:
            progress = None
        stream = self.stream(task, **stream_options)
        for block in blocks:
            words = stream.feed(block)
            if verbose:
                _print_words(words, len(tasks) > 1)
            if progress is not None:
                progress(stream.duration, total)
        words = stream.flush()
        if verbose:
            _print_words(words, len(tasks) > 1)
        if progress is not None:
            progress(stream.duration, total)
        if bar is not None:
            bar.close()
        results = stream.transcripts()
        return results if task == "both" else results[task]


def _print_words(words, show_task: bool):
    for w in words:
        tag = f"[{w.task}] " if show_task else ""
        print(f"{tag}[{w.start:7.2f} -> {w.end:7.2f}] {w.text}", file=sys.stdout, flush=True)


def _tqdm_progress(total):
    """A tqdm bar on stderr over audio seconds, and the `progress` callback that moves it."""
    from tqdm import tqdm

    total = None if total is None else round(total, 1)
    bar = tqdm(total=total, unit="s", desc="transcribing", leave=False, file=sys.stderr)
    return bar, lambda done, _total=None: bar.update(round(done, 1) - bar.n)


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
    """Transcribe a file or an array in one call.

    Parameters
    ----------
    audio : str, Path or array
        See `STT.transcribe`.
    model : STT, str or Path
        A loaded model, or a model directory / hub id (loaded on first use and kept for the
        next calls).
    task : {"is", "en", "both"}
    **options
        Passed to `STT.transcribe` (`sr`, `verbose`, `progress`, stream options).

    Returns
    -------
    Transcript, or dict[str, Transcript] for task="both".
    """
    stt = model if isinstance(model, STT) else ModelHolder.get(model)
    return stt.transcribe(audio, task=task, **options)
