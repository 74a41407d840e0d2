# Copyright © 2026 mlx-kyutai-is contributors
"""Stall detection for long streams.

This model family is known to fall silent after a while (only pad tokens although someone is
speaking) or to get stuck repeating one word. The watchdog watches what goes in (speech energy
per 80 ms frame) and what comes out (words), and tells the stream to re-prime its LM when:
- no word came out during `max_silent_speech` seconds of input that had speech energy, or
- the same word came out `max_repeats` times in a row.
Recovery (`Stream.recover`) resets the LM state and re-sends the task prefix; weights and the
Mimi state are kept, so it costs ~1.3 s of priming, not a reload.

The LM restarts on the audio fed from then on, so restarting mid-word loses that word's start. A
caller that runs a voice-activity detector on the fed audio (the `mic` command does) tells the
watchdog with `set_speaking`; a stall found while someone speaks is then acted on in the next
pause, or after `max_defer` seconds of audio if no pause comes.
"""

import logging

import numpy as np

log = logging.getLogger("mlx_kyutai_is")


class StallWatchdog:
    """Tells a `Stream` when to re-prime its LM (see the module).

    Parameters
    ----------
    max_silent_speech : float
        Seconds of speech-energy input with no word that make a stall.
    max_repeats : int
        The same word this many times in a row makes a stall.
    energy_threshold : float
        RMS of an 80 ms frame above which it counts as speech.
    max_defer : float
        Seconds of audio a stall found while someone speaks may wait for a pause (`set_speaking`).
    """

    def __init__(
        self,
        max_silent_speech: float = 20.0,
        max_repeats: int = 8,
        energy_threshold: float = 0.01,
        max_defer: float = 10.0,
    ):
        self.max_silent_speech = max_silent_speech
        self.max_repeats = max_repeats
        self.energy_threshold = energy_threshold
        self.max_defer = max_defer
        self.frame_size = self.sample_rate = None  # the stream's, set by `attach`
        self.speaking: bool | None = None  # unknown: a stall is acted on at once
        self.reset()

    def attach(self, frame_size: int, sample_rate: int):
        """Measure speech in the watched stream's frames (its model's frame size and rate)."""
        self.frame_size, self.sample_rate = frame_size, sample_rate

    def reset(self):
        self.speech_since_word = 0.0  # seconds of speech-energy input since the last word
        self._recent: list[str] = []
        self.deferred = 0.0  # seconds of audio a found stall has waited for a pause

    def set_speaking(self, speaking: bool | None) -> None:
        """Whether someone is speaking in the audio being fed (a voice-activity detector's view, kept
        until changed). While True, a stall waits for a pause (at most `max_defer` seconds of audio)
        so that the LM is not re-primed mid-word; None (the default) means unknown: at once."""
        self.speaking = speaking

    def observe(self, samples: np.ndarray, words) -> str | None:
        """Account for one fed chunk and the words it produced; returns a reason when stalled."""
        n = len(samples) // self.frame_size * self.frame_size
        if n:
            frames = samples[:n].reshape(-1, self.frame_size)
            rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
            speech = float((rms > self.energy_threshold).sum()) * self.frame_size / self.sample_rate
        else:
            speech = 0.0
        if words:
            self.speech_since_word = 0.0
            for w in words:
                self._recent = (self._recent + [w.text.lower()])[-self.max_repeats :]
        else:
            self.speech_since_word += speech
        reason = None
        if self.speech_since_word > self.max_silent_speech:
            reason = f"no words for {self.speech_since_word:.0f} s of speech"
        elif len(self._recent) >= self.max_repeats and len(set(self._recent)) == 1:
            reason = f"'{self._recent[0]}' repeated {self.max_repeats} times"
        if reason is None:  # (a stall that ended while waiting for a pause needs nothing)
            self.deferred = 0.0
            return None
        if self.speaking and self.deferred < self.max_defer:
            self.deferred += len(samples) / self.sample_rate
            return None
        if self.deferred:
            reason += f"; waited {self.deferred:.1f} s for a pause" if not self.speaking else "; no pause came in time"
        return reason
