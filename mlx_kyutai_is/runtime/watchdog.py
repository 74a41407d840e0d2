# Copyright © 2026 mlx-kyutai-is contributors
"""Stall detection for long streams.

This model family is known to fall silent after a while (only pad tokens although someone is
speaking) or to get stuck repeating one word. The watchdog watches what goes in (speech energy
per 80 ms frame) and what comes out (words), and tells the stream to re-prime its LM when:
- no word came out during `max_silent_speech` seconds of input that had speech energy, or
- the same word came out `max_repeats` times in a row.
Recovery (`Stream.recover`) resets the LM state and re-sends the task prefix; weights and the
Mimi state are kept, so it costs ~1.3 s of priming, not a reload.
"""

import logging

import numpy as np

log = logging.getLogger("mlx_kyutai_is")


class StallWatchdog:
    def __init__(
        self,
        max_silent_speech: float = 20.0,
        max_repeats: int = 8,
        energy_threshold: float = 0.01,
    ):
        self.max_silent_speech = max_silent_speech
        self.max_repeats = max_repeats
        self.energy_threshold = energy_threshold
        self.frame_size = self.sample_rate = None  # the stream's, set by `attach`
        self.reset()

    def attach(self, frame_size: int, sample_rate: int):
        """Measure speech in the watched stream's frames (its model's frame size and rate)."""
        self.frame_size, self.sample_rate = frame_size, sample_rate

    def reset(self):
        self.speech_since_word = 0.0  # seconds of speech-energy input since the last word
        self._recent: list[str] = []

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
        if self.speech_since_word > self.max_silent_speech:
            return f"no words for {self.speech_since_word:.0f} s of speech"
        if len(self._recent) >= self.max_repeats and len(set(self._recent)) == 1:
            return f"'{self._recent[0]}' repeated {self.max_repeats} times"
        return None
