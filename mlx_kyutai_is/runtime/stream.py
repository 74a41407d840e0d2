# Copyright © 2026 mlx-kyutai-is contributors
"""`Stream`: live transcription of one audio stream, fed and read synchronously.

A stream is one row (two for task "both") of a private `engine.Engine`: feeding audio runs the
engine until the fed audio is decoded, so `feed()` returns the words that became final. The
protocol, the word rule and the timestamp rule live in `protocol.py`.
"""

import logging

from ..audio.prepare import prepare_array
from ..results import Transcript, Word
from ..tasks import task_list
from .engine import Engine
from .protocol import StreamOptions
from .watchdog import StallWatchdog

log = logging.getLogger("mlx_kyutai_is")

__all__ = ["Stream", "Word"]


class Stream:
    """Live transcription of one audio stream: `feed()` chunks, read words, `flush()` at the end.

    Use as ``with stt.stream(task="en") as s: words = s.feed(samples)``; leaving the block flushes.
    `task="both"` decodes Icelandic and English as two rows sharing the same Mimi codes (one LM
    call per step). Feeding a whole file and flushing gives exactly `STT.transcribe`'s tokens,
    whatever the chunk sizes.

    Parameters
    ----------
    model : Model
        `.lm`, `.mimi` and `.args` (`sample_rate`, `frame_size`) are used.
    tokenizer : Tokenizer
    task : {"is", "en", "both"}
    options : StreamOptions
        The protocol's options and the processor's padding (`STT.options` gives the model's).
    watchdog : StallWatchdog, optional
        Re-primes the LM when it stalls; None (default) keeps the reference protocol exactly.
    """

    def __init__(
        self,
        model,
        tokenizer,
        task: str = "is",
        *,
        options: StreamOptions = StreamOptions(),
        watchdog: "StallWatchdog | None" = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.watchdog = watchdog
        if watchdog is not None:
            watchdog.attach(model.args.frame_size, model.args.sample_rate)
        self.task = task
        self.tasks = task_list(task)
        self.sample_rate = model.args.sample_rate
        self.frame_size = model.args.frame_size
        self.options = options
        self.engine = Engine(model, tokenizer)
        self._s = None
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self):
        """Start a fresh utterance: new Mimi and LM state, same weights."""
        if self._s is not None:
            self.engine.close(self._s)
        self._s = self.engine.open(self.task, self.options)
        self.recoveries: list[tuple[float, str]] = []
        if self.watchdog is not None:
            self.watchdog.reset()

    def recover(self, reason: str) -> list[Word]:
        """Re-prime the LM after a stall: finish the pending word, reset the LM state and send the
        task prefix again. Weights and the audio (Mimi) state are kept; the clock goes on."""
        words = self._s.take_words() + self.engine.reprime(self._s)
        self._s.words = []
        self.recoveries.append((self.duration, reason))
        log.warning("stream stalled at %.1f s (%s): LM state reset and re-primed", self.duration, reason)
        return words

    @property
    def duration(self) -> float:
        """Seconds of input audio fed so far (padding not counted)."""
        return self._s.duration

    @property
    def steps(self) -> int:
        """LM steps run on this stream (watchdog re-primes included)."""
        return self._s.steps

    @property
    def words(self) -> dict[str, list[Word]]:
        return {t: a.words for t, a in self._s.assemblers.items()}

    @property
    def partials(self) -> dict[str, str]:
        return {t: a.partial for t, a in self._s.assemblers.items()}

    @property
    def partial(self) -> str:
        return self._s.assemblers[self.tasks[0]].partial

    # -- decoding ----------------------------------------------------------------------------
    def feed(self, samples) -> list[Word]:
        """Feed audio; run one LM step per completed 80 ms frame.

        Parameters
        ----------
        samples : array_like
            Mono samples at the model rate (24 kHz), any length (even 0): float in [-1, 1], or
            integer PCM (scaled to [-1, 1]); 2-D input is downmixed (channels on the shorter
            axis); non-finite values are replaced by 0.

        Returns
        -------
        list[Word]
            The words that became final during this call (each with `.task` set), in order.
        """
        if self._s.finishing:
            raise RuntimeError("stream already flushed: call reset() to start a new utterance")
        x = prepare_array(samples, allow_empty=True)
        self.engine.push(self._s, x)
        self.engine.run()
        words = self._s.take_words()
        if self.watchdog is not None and (reason := self.watchdog.observe(x, words)):
            words += self.recover(reason)
            self.watchdog.reset()
        return words

    def flush(self) -> list[Word]:
        """End the stream: feed `trailing_silence` plus the processor's right padding
        (``delay + 1`` s) of zeros at full speed, then close every pending word.

        The stream then has run floor(padded samples / frame size) LM steps in all, as
        transformers' `generate` on the model card's recipe input. Calling it again does nothing;
        `feed()` after it raises until `reset()`.

        Returns
        -------
        list[Word]
            The words that became final, the last (pending) ones included.
        """
        if self._s.finishing:
            return []
        self.engine.finish(self._s)
        self.engine.run()
        return self._s.take_words()

    # -- results -----------------------------------------------------------------------------
    def transcripts(self, partial: bool = False) -> dict[str, Transcript]:
        return self._s.transcripts(partial)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.flush()
        return False
