# Copyright © 2026 mlx-kyutai-is contributors
"""Long recordings decoded as parallel segments: where to cut, whether to, and the merged result.

A recording is cut at pauses (the voice-activity detector's silences), on 80 ms frame boundaries,
into segments that decode as rows of the batched engine side by side; each segment decodes
exactly as `transcribe()` of its slice of samples alone, and its words are shifted by its start.

Cutting is not free: a segment decoded alone pays the protocol again (its trailing silence and
padding, ~81 steps at 12.5 Hz), and B rows cost `cost(B)` single-row steps, from ~1 on a GPU to
~B on a CPU at full size. So `plan_segments` cuts only where the measured batching gain pays for
the extra steps, into a few long balanced segments; audio no longer than `max_segment` is never
cut (and decodes exactly as before).
"""

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..audio.vad import CHUNK_SECONDS, SpeechParams, VoiceActivity
from ..results import Segment, Transcript, Word
from .engine import Engine
from .protocol import StreamOptions

# The longest segment, and the shortest worth cutting (seconds). 30 s is the LM's window: a
# segment never slides it, as the short read utterances the fine-tune was trained on.
DEFAULT_MAX_SEGMENT = 30.0
MIN_SEGMENT = 15.0
# A cut is only worth it when the estimate is at least this much faster than one stream: the
# linear cost model is optimistic where rows cost nearly their number (full size on a 2-core
# CPU, B=8 at 5x B=1: 8 segments ran at 0.61x where it predicts 0.95x).
MIN_GAIN = 1.5
# Pauses at least this long are places to cut.
MIN_PAUSE = 0.3


@dataclass
class Piece:
    """A stretch of one input to decode as its own stream: samples from `start` (model rate),
    `last` when no piece of that input follows; `number` counts the input's pieces from 0."""

    input: int
    number: int
    start: int
    blocks: Iterator[np.ndarray]
    last: bool = True


# --------------------------------------------------------------------------------------------
# Whether and how long


def measure_batch_cost(model, tokenizer, rows: int, frames: int = 12, repeats: int = 3) -> float:
    """How many single-row steps one engine step of `rows` rows costs on this backend and model
    (1.0: batching is free; `rows`: it gains nothing): `frames` frames of noise decoded by the
    engine for `rows` streams at once against one stream, after a warm-up of each shape, chunked
    as decoding chunks them (a lone stream's codec call takes 12 frames, a batch's fewer); the
    best of `repeats` runs each. A batch run stops once it has taken `rows` single-stream times."""
    n = model.args.frame_size
    noise = np.random.default_rng(0).normal(scale=0.1, size=n * frames).astype(np.float32)

    def seconds(b: int, budget: float = float("inf")) -> float:
        engine = Engine(model, tokenizer)
        streams = [engine.open("is", StreamOptions(trailing_silence=0.0)) for _ in range(b)]
        best, spent = float("inf"), 0.0
        for i in range(repeats + 1):  # the first is a warm-up: the BOS step, compilation, buffers
            for s in streams:
                engine.push(s, noise)
            t0 = time.perf_counter()
            while engine.step():
                if time.perf_counter() - t0 > budget:
                    break
            engine.drain()
            if i:
                elapsed = time.perf_counter() - t0
                best, spent = min(best, elapsed), spent + elapsed
                if spent > 2.0:  # slow steps: one run is precise enough, and more would cost
                    break
        return best

    if rows < 2:
        return 1.0
    one = seconds(1)
    return min(float(rows), max(1.0, seconds(rows, budget=rows * one) / one))


def overhead_steps(options: StreamOptions, frame_rate: float) -> float:
    """LM steps a stream runs beyond its own audio: its left padding, trailing silence and
    right padding (the processor's ``delay + 1`` s)."""
    return (options.silence_prefix + options.trailing_silence + options.delay + 1.0) * frame_rate


def plan_segments(
    duration: float | None,
    rows: int,
    cost: float,
    overhead: float,
    frame_rate: float,
    max_segment: float = DEFAULT_MAX_SEGMENT,
) -> float | None:
    """The target segment length in seconds for a recording of `duration` seconds (None: not
    known up front, e.g. a pipe), or None to decode it as one stream.

    `rows`: the engine rows the recording may use; `cost`: what a step of `rows` rows costs in
    single-row steps (`measure_batch_cost`; between, linear). The estimate for k segments of
    ``duration / k`` seconds on ``r = min(k, rows)`` rows is ``(steps + k * overhead) / r * cost(r)``.
    """
    if duration is not None and duration <= max_segment:
        return None
    if rows < 2:
        return None

    def cost_of(r: int) -> float:
        return 1.0 + (cost - 1.0) * (r - 1) / (rows - 1)

    if duration is None:  # unknown length: segments as long as allowed, if a full batch would gain
        k = rows
        gain = (k * max_segment * frame_rate + overhead) / ((max_segment * frame_rate + overhead) * cost_of(rows))
        return max_segment if gain >= MIN_GAIN else None
    steps = duration * frame_rate
    one = steps + overhead
    best_k, best = 1, one
    k_min = int(np.ceil(duration / max_segment))
    k_max = max(k_min, int(duration // MIN_SEGMENT))
    for k in range(k_min, k_max + 1):
        r = min(k, rows)
        t = (steps + k * overhead) / r * cost_of(r)
        if t < best:
            best_k, best = k, t
    if best_k == 1 or one / best < MIN_GAIN:
        return None
    return duration / best_k


# --------------------------------------------------------------------------------------------
# Where


class Segmenter:
    """Cuts one input's audio (blocks at the model rate) into pieces at pauses as it reads it:
    each piece is handed out as soon as its end is found, so decoding starts while the rest is
    still being read and detected.

    A cut is made once `target` seconds have gathered since the last one, at the pause (a silence
    of at least `MIN_PAUSE` s) whose middle is nearest the target, between `MIN_SEGMENT` / 2 and
    `max_segment`; with no pause by `max_segment`, at the least speech-like frame. Cuts fall on
    frame boundaries.
    """

    def __init__(
        self,
        sample_rate: int,
        frame_size: int,
        target: float,
        max_segment: float = DEFAULT_MAX_SEGMENT,
        params: SpeechParams = SpeechParams(),
    ):
        self.rate, self.frame = sample_rate, frame_size
        self.target = int(target * sample_rate)
        self.max = max(int(max_segment * sample_rate) // frame_size * frame_size, frame_size)
        self.min = min(int(MIN_SEGMENT / 2 * sample_rate), self.max)
        self.params = params
        self.vad = VoiceActivity(sample_rate)
        self.vad_seconds = 0.0  # time spent detecting

    def pieces(self, index: int, blocks: Iterator[np.ndarray]) -> Iterator[Piece]:
        buf, start, number = [], 0, 0  # audio since the last cut; its first sample in the input
        buffered = 0
        probs = np.zeros(0, np.float32)  # one per chunk since the input's start
        for block in blocks:
            t0 = time.perf_counter()
            probs = np.concatenate([probs, self.vad.feed(block)])
            self.vad_seconds += time.perf_counter() - t0
            buf.append(block)
            buffered += len(block)
            while buffered >= self.target:
                cut = self._cut(probs, start, start + buffered)
                if cut is None:
                    break
                audio = np.concatenate(buf)
                yield Piece(index, number, start, iter([audio[: cut - start]]), last=False)
                rest = audio[cut - start :]
                buf, buffered, start, number = [rest], len(rest), cut, number + 1
        yield Piece(index, number, start, iter(buf), last=True)

    def _cut(self, probs: np.ndarray, start: int, end: int) -> int | None:
        """Where to cut the audio `[start, end)` (samples), or None to read on."""
        lo, hi = start + self.min, min(start + self.max, end)
        chunk = CHUNK_SECONDS * self.rate
        first = int(start / chunk)  # only this piece's chunks
        best, best_d = None, None
        for a, b in _pauses(probs[first:], self.params, MIN_PAUSE):
            a, b = a + first, b + first
            mid = (a + b) / 2 * chunk
            cut = int(round(mid / self.frame)) * self.frame
            if not lo <= cut <= hi:
                continue
            d = abs(cut - (start + self.target))
            if best_d is None or d < best_d:
                best, best_d = cut, d
        if best is not None:
            return best
        if end - start < self.max:
            return None
        # No pause by the longest segment: the least speech-like frame boundary in its second half.
        frames = np.arange((start + self.max // 2) // self.frame, (start + self.max) // self.frame + 1) * self.frame
        idx = np.minimum((frames / chunk).astype(int), max(len(probs) - 1, 0))
        return int(frames[int(np.argmin(probs[idx]))]) if len(probs) else start + self.max


def _pauses(probs: np.ndarray, params: SpeechParams, min_pause: float) -> list[tuple[int, int]]:
    """Silences ``[(first chunk, end chunk)]``: runs under ``threshold - 0.15`` of at least
    `min_pause` seconds."""
    quiet = probs < max(params.threshold - 0.15, 0.01)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    runs = zip(edges[::2], edges[1::2])
    need = int(np.ceil(min_pause / CHUNK_SECONDS))
    return [(int(a), int(b)) for a, b in runs if b - a >= need]


# --------------------------------------------------------------------------------------------
# The merged result


def shift_words(words: list[Word], offset: float) -> list[Word]:
    """`words` dated `offset` seconds later (to the microsecond, so ties stay ties)."""
    if not offset:
        return list(words)
    return [Word(w.text, round(w.start + offset, 6), round(w.end + offset, 6), w.task, list(w.tokens)) for w in words]


def merge(parts: list[tuple[float, float, Transcript]], duration: float, partial: bool = False) -> Transcript:
    """One task's transcript of an input from its pieces ``(start, end, transcript)`` in order
    (seconds of the input): words shifted by their piece's start, texts joined with one space,
    tokens end to end, a `Segment` per piece. One piece is returned as it is."""
    if len(parts) == 1 and parts[0][0] == 0.0:
        return parts[0][2]
    words, texts, tokens, segments = [], [], [], []
    for start, end, t in parts:
        words += shift_words(t.words, start)
        if t.text.strip():
            texts.append(t.text.strip())
        tokens += t.tokens
        segments.append(Segment(round(start, 2), round(end, 2), t.text.strip(), list(t.tokens), len(t.words)))
    task = parts[0][2].task
    return Transcript(" ".join(texts), words, task, duration, tokens, partial, segments)


# --------------------------------------------------------------------------------------------
# Reading ahead


class Prefetch:
    """Runs an iterator on a thread of its own, `size` items ahead of the reader: the voice
    detector and the file reading go on while the engine decodes. Errors come out where the
    item would have; `close()` stops the thread."""

    _END = object()

    def __init__(self, items: Iterator, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name="mlx-kyutai-is-segmenter", daemon=True)
        self._thread.start()

    def _run(self, items):
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # handed to the reader
            self._put(e)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)  # stays ended
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
