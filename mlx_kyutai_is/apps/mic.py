# Copyright © 2026 mlx-kyutai-is contributors

"""Live transcription from a microphone (as moshi_mlx/local.py).

The audio source calls back from its own thread (PortAudio's, or a file reader's) with one
model frame at a time; the callback never blocks: it hands the block to the recorder thread
(so `--save-audio` keeps everything) and to a bounded queue that the model loop in the main
thread drains. When the model is slower than real time the queue fills up, new frames are
dropped (counted and reported) instead of letting the delay grow without bound.

Sources are injectable: `SoundDeviceSource` (a microphone), `FileSource` (a file replayed in real
time, or as fast as the model goes), or any object with the `AudioSource` interface.

Utterances: a voice-activity detector (`audio.vad`) hears the frames the model is fed, and the text
is broken into one line per utterance, on screen and in a .txt transcript, by the words' own
timestamps (the text comes out seconds after the audio). The model's stream runs on through
pauses; its watchdog, when it must re-prime, waits for one.
"""

import os
import queue
import shutil
import signal
import sys
import threading
import time
from bisect import bisect_right
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np
import soxr

from ..atomic import commit_file, part_path
from ..audio import (
    AudioError,
    AudioWriter,
    audio_duration,
    iter_audio_blocks,
    recording_format,
)
from ..audio.vad import SpeechParams, SpeechTracker, VoiceActivity
from ..errors import Error
from ..results import Result
from ..tasks import task_list
from ..writers import FORMATS, SENTENCE_END, get_writer


class DeviceError(Error, RuntimeError):
    """No such input device, or no audio input at all (one-line message)."""


class OutputError(Error, ValueError):
    """A transcript or recording path that `mic` cannot write (one-line message)."""


# --------------------------------------------------------------------------------------------
# Audio sources


class Sink(Protocol):
    def push(self, block: np.ndarray, overflowed: bool = False) -> None: ...
    def end(self, error: BaseException | None = None) -> None: ...


class AudioSource(Protocol):
    """What `run_mic` needs from a source of audio.

    Attributes
    ----------
    sample_rate : int
        Rate of the blocks pushed (must be the model's).
    block_size : int
        Nominal samples per block (one model frame).
    realtime : bool
        True for a live source: blocks arrive at wall-clock pace and `push` must never wait,
        so frames are dropped when the model falls behind. False for a source that can wait
        (a file read as fast as possible): `push` blocks instead and nothing is dropped.
    """

    sample_rate: int
    block_size: int
    realtime: bool

    def start(self, sink: Sink) -> None:
        """Start calling ``sink.push(block, overflowed)`` from another thread; ``sink.end()`` at the end."""

    def stop(self) -> None:
        """Stop pushing (idempotent); after it returns no more pushes arrive."""


def _sounddevice():
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise DeviceError(f"audio input is unavailable: {e}") from None
    return sd


def resolve_device(device: int | str | None):
    """Validate an input device given by index or (part of its) name; None = system default.

    Returns the value to hand to sounddevice; raises `DeviceError` with a one-line message.
    """
    sd = _sounddevice()
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)
    hint = "run 'mlx-kyutai-is mic --list-devices' to see the input devices"
    try:
        info = sd.query_devices(device, "input")
    except ValueError as e:  # no (unique) match, or not an input device
        why = str(e).splitlines()[0].rstrip(".:")
        raise DeviceError(f"{why[:1].lower()}{why[1:]}; {hint}") from None
    except sd.PortAudioError:
        what = "no default input device" if device is None else f"no input device {device!r}"
        raise DeviceError(f"{what}; {hint}") from None
    if info["max_input_channels"] < 1:
        raise DeviceError(f"device {device!r} ({info['name']}) has no input channels; {hint}")
    return device


def list_devices() -> str:
    """A table of the input devices (``>`` marks the default), or a line saying there are none."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default = sd.default.device[0]
    except sd.PortAudioError as e:
        raise DeviceError(f"cannot list audio devices: {e}") from None
    rows = [
        f"{'>' if i == default else ' '} {i:3d}  {d['name']}  ({d['max_input_channels']} ch, "
        f"{d['default_samplerate']:.0f} Hz)"
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]
    if not rows:
        return "no audio input devices found"
    return "input devices (use --device INDEX or --device NAME):\n" + "\n".join(rows)


class SoundDeviceSource:
    """A microphone through sounddevice/PortAudio, one model frame per callback.

    When the device cannot record at the model's rate, it records at its own default rate and
    resamples each block in the callback (soxr streaming: tens of microseconds per frame).
    """

    realtime = True

    def __init__(self, device=None):
        self.device = resolve_device(device)
        self.sample_rate = self.block_size = None  # the model's, set by `attach`
        self._stream = None

    def attach(self, sample_rate: int, block_size: int) -> None:
        """Deliver blocks of `block_size` samples at `sample_rate` (the model's frame and rate)."""
        self.sample_rate, self.block_size = sample_rate, block_size

    def start(self, sink: Sink) -> None:
        sd = _sounddevice()
        rate, resampler = self.sample_rate, None
        try:
            sd.check_input_settings(self.device, channels=1, dtype="float32", samplerate=self.sample_rate)
        except Exception:  # the device has no native 24 kHz: record at its rate, resample here
            rate = int(sd.query_devices(self.device, "input")["default_samplerate"])
            resampler = soxr.ResampleStream(rate, self.sample_rate, 1, dtype="float32")

        def callback(indata, frames, time_info, status):
            block = indata[:, 0].copy()
            if resampler is not None:
                block = resampler.resample_chunk(block)
            sink.push(block, bool(status.input_overflow))

        try:
            self._stream = sd.InputStream(
                samplerate=rate,
                blocksize=round(self.block_size * rate / self.sample_rate),
                device=self.device,
                channels=1,
                dtype="float32",
                callback=callback,
            )
            self._stream.start()
        except sd.PortAudioError as e:
            raise DeviceError(f"cannot open audio input {self.device!r}: {e}") from None

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()  # waits for the last callback to return
            self._stream.close()
            self._stream = None


class FileSource:
    """An audio file delivered frame by frame, like a microphone (tests, demos, replays).

    Parameters
    ----------
    path : str or Path
        Any file `audio.load_audio` reads; "-" for stdin.
    paced : bool
        True: one frame per frame duration of wall-clock time, as a microphone (frames are
        dropped when the model is slower). False: as fast as the model consumes them, lossless.
    """

    def __init__(self, path, paced: bool = True):
        self.path = path
        self.realtime = paced
        audio_duration(path)  # a missing, unreadable or empty file fails now, before the model loads
        self.sample_rate = self.block_size = None  # the model's, set by `attach`
        self._blocks = None
        self._stopping = threading.Event()
        self._thread = None

    def attach(self, sample_rate: int, block_size: int) -> None:
        """Deliver blocks of `block_size` samples at `sample_rate` (the model's frame and rate)."""
        self.sample_rate, self.block_size = sample_rate, block_size
        self._blocks = iter_audio_blocks(self.path, sample_rate)

    def _frames(self):
        buf = np.zeros(0, np.float32)
        for block in self._blocks:
            buf = np.concatenate([buf, block])
            while len(buf) >= self.block_size:
                yield buf[: self.block_size]
                buf = buf[self.block_size :]
        if len(buf):
            yield buf

    def _run(self, sink: Sink):
        error = None
        t0, seconds = time.monotonic(), 0.0
        try:
            for frame in self._frames():
                if self._stopping.is_set():
                    return
                if self.realtime:
                    # the frame is "recorded" once its last sample has been spoken
                    seconds += len(frame) / self.sample_rate
                    if self._stopping.wait(max(0.0, t0 + seconds - time.monotonic())):
                        return
                sink.push(frame)
        except Exception as e:  # a decoding error in the middle of the file
            error = e
        if not self._stopping.is_set():
            sink.end(error)

    def start(self, sink: Sink) -> None:
        self._thread = threading.Thread(target=self._run, args=(sink,), name="file-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


# --------------------------------------------------------------------------------------------
# Capture: the sink between the source thread and the model loop.


class _Recorder:
    """Writes blocks to the recording from its own thread, so the audio callback never does I/O.
    The file grows under its part name and is renamed into place when closed."""

    def __init__(self, path, sample_rate: int):
        self.writer = AudioWriter(path, sample_rate, part=True)
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.thread.start()

    def _run(self):
        while (block := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(block)
                except Exception as e:  # disk full...: keep transcribing, report at the end
                    self.error = e
        try:
            self.writer.close()
        except Exception as e:
            self.error = self.error or e

    def close(self):
        self.q.put(None)
        self.thread.join()


class _Capture:
    """The source's sink: counts, records, and queues frames for the model without blocking."""

    def __init__(self, max_frames: int, realtime: bool, recorder: _Recorder | None):
        self.q: queue.Queue = queue.Queue(max_frames)
        self.realtime = realtime
        self.recorder = recorder
        self.ended = threading.Event()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.samples = 0
        self.frames = 0
        self.dropped = 0
        self.overflows = 0
        self.max_depth = 0

    def push(self, block: np.ndarray, overflowed: bool = False) -> None:
        if self.closed.is_set():
            return
        item = (self.samples, block)  # where the block starts in the session (the recording)
        self.frames += 1
        self.samples += len(block)
        self.overflows += bool(overflowed)
        if self.recorder is not None:
            self.recorder.q.put(block)
        if self.realtime:
            try:
                self.q.put_nowait(item)
            except queue.Full:
                self.dropped += 1
        else:
            while not self.closed.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
        self.max_depth = max(self.max_depth, self.q.qsize())

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        self.ended.set()

    def get(self, timeout: float = 0.05) -> tuple[int, np.ndarray] | None:
        """The next frame and the session sample it starts at, or None if none came within `timeout`
        seconds."""
        try:
            return self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
        except queue.Empty:
            return None

    def finished(self) -> bool:
        """True once the source has ended and every frame was taken; raises the source's error."""
        if self.ended.is_set() and self.q.empty():
            if self.error is not None:
                raise self.error
            return True
        return False


# --------------------------------------------------------------------------------------------
# Utterances: where the lines break, and their times


class SessionClock:
    """Session seconds (those of the recording) of the model's stream seconds: they differ by the
    audio dropped before, when the model fell behind real time and never saw some frames."""

    KEEP = 120.0  # seconds of stream remembered: words are dated at most a few seconds back

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self.fed = 0  # samples fed to the model
        self._at = [0]  # stream samples where the offset changed ...
        self._offset = [0]  # ... and the samples dropped before them

    def fed_block(self, session_sample: int, n: int) -> None:
        """The model is fed `n` samples that start at `session_sample` of the session."""
        offset = session_sample - self.fed
        if offset != self._offset[-1]:
            self._at.append(self.fed)
            self._offset.append(offset)
            old = bisect_right(self._at, self.fed - self.KEEP * self.sample_rate) - 1
            if old > 0:
                del self._at[:old], self._offset[:old]
        self.fed += n

    def __call__(self, seconds: float) -> float:
        i = max(0, bisect_right(self._at, round(seconds * self.sample_rate)) - 1)
        return seconds + self._offset[i] / self.sample_rate


def line_time(seconds: float) -> str:
    """A line's time: ``[HH:MM:SS.d]``."""
    tenths = max(0, round(seconds * 10))
    hours, tenths = divmod(tenths, 36_000)
    minutes, tenths = divmod(tenths, 600)
    secs, tenths = divmod(tenths, 10)
    return f"[{hours:02d}:{minutes:02d}:{secs:02d}.{tenths}]"


class Utterances:
    """Where the text breaks into lines: one line per utterance.

    A voice-activity detector hears the audio as it is fed to the model (`feed`) and dates each
    pause in seconds of the stream. A word begins a new line when a pause lies between the previous
    word's start and its own: words carry the times of the audio they transcribe, and come out
    seconds after it (the model's text delay), by when the pause is known. A pause is placed at the
    start of its silence plus half of `pause` (the shortest pause), so that a word dated a little
    late or early stays on its own side.

    Parameters
    ----------
    sample_rate : int
        Rate of the audio fed.
    pause : float
        Seconds of silence that end an utterance.
    threshold : float
        Speech probability (per 32 ms) at which speech starts.
    timestamps : bool
        Lines begin with the time of their first word, ``[HH:MM:SS.d]``.
    session_time : callable, optional
        Stream seconds to the seconds shown (e.g. a `SessionClock`); default the same.
    """

    def __init__(self, sample_rate: int, pause: float = 0.5, threshold: float = 0.5, timestamps: bool = False,
                 session_time=None):
        self.vad = VoiceActivity(sample_rate)
        self.tracker = SpeechTracker(SpeechParams(threshold=threshold, min_silence=pause), prefix=0.0)
        self.pause = pause
        self.timestamps = timestamps
        self.session_time = session_time or (lambda t: t)
        self.breaks: list[float] = []  # stream seconds between utterances, in order
        self._last: dict[str, float] = {}  # task -> the start of its last word

    @property
    def speaking(self) -> bool:
        """True from the first speech until a pause has lasted `pause` seconds."""
        return self.tracker.speaking

    def feed(self, samples: np.ndarray, last: bool = False) -> None:
        """Hear the next samples fed to the model (`last`: the stream ends)."""
        for kind, t in self.tracker.update(self.vad.feed(samples, last=last)):
            if kind == "stop":
                self.breaks.append(t + self.pause / 2)

    def head(self, word) -> str | None:
        """None when `word` goes on in its task's current line; else it begins a line, and this is
        what the line starts with (its time and a space with `timestamps`, else "")."""
        prev = self._last.get(word.task)
        self._last[word.task] = word.start
        if prev is None:
            new = True
        else:
            i = bisect_right(self.breaks, prev)  # the first break after the previous word
            new = i < len(self.breaks) and self.breaks[i] <= word.start
        del self.breaks[: bisect_right(self.breaks, min(self._last.values()))]  # behind every task
        if not new:
            return None
        return f"{line_time(self.session_time(word.start))} " if self.timestamps else ""


# --------------------------------------------------------------------------------------------
# Display


DIM, RESET, CLEAR_DOWN = "\x1b[2m", "\x1b[0m", "\x1b[J"


class LiveDisplay:
    """Confirmed words plus the pending partial text, one live line per task.

    On a terminal the live lines are redrawn in place (carriage return, cursor up, clear); full
    lines scroll up. Elsewhere (a pipe, a file) only confirmed text is written, in plain lines
    ended at sentence ends or at `width` characters, so the output is a clean transcript.

    Given line heads (`update`'s `heads`, from `Utterances`), each utterance begins a new line
    instead: a terminal still wraps a long one at its width (continuation rows indented past the
    time), elsewhere it is written as one line once the next one begins (or at the end).
    """

    def __init__(self, tasks, file: TextIO | None = None, tty: bool | None = None, width: int | None = None):
        self.file = file if file is not None else sys.stdout
        self.tty = self.file.isatty() if tty is None else tty
        self.tasks = list(tasks)
        self._width = width
        self.lines = {t: "" for t in self.tasks}
        self.partials = {t: "" for t in self.tasks}
        self.drawn = 0  # live lines on screen
        self.utterances = False  # lines are utterances (set by the first `heads`)
        self._indent = {t: "" for t in self.tasks}  # a wrapped utterance's continuation rows

    @property
    def width(self) -> int:
        if self._width is not None:
            return self._width
        return shutil.get_terminal_size((80, 24)).columns if self.tty else 80

    def _prefix(self, task) -> str:
        if len(self.tasks) == 1:
            return ""
        return f"{task}: " if self.tty else f"[{task}] "

    def update(self, words, partials: dict | None = None, heads: list | None = None) -> None:
        """Add confirmed `words` and show the `partials` ({task: text}). `heads`, one per word:
        None goes on in the current line, a string begins a new line with it (`Utterances.head`)."""
        if heads is not None:
            self.utterances = True
        for w, head in zip(words, heads if heads is not None else [None] * len(words)):
            self._add(w.task if w.task in self.lines else self.tasks[0], w.text.strip(), head)
        if partials is not None:
            self.partials = {t: partials.get(t, "") for t in self.tasks}
        if self.tty:
            self._draw()

    def _add(self, task, text, head=None) -> None:
        if not text:
            return
        current = self.lines[task]
        if head is not None:
            if current:
                self._commit(task, current)
            current, self._indent[task] = "", " " * len(head)
            text = head + text
        line = f"{current} {text}" if current else text
        limit = self.width - 1
        if self.tty and current and len(self._prefix(task) + line) > limit:
            self._commit(task, current)
            line = self._indent[task] + text
        self.lines[task] = line
        if not self.tty and not self.utterances and (len(line) >= limit or SENTENCE_END.search(line)):
            self._commit(task, line)
            self.lines[task] = ""

    def _commit(self, task, text) -> None:
        self._clear()
        self.file.write(self._prefix(task) + text + "\n")
        self.file.flush()

    def _clear(self) -> None:
        if self.tty and self.drawn:
            up = f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else ""
            self.file.write("\r" + up + CLEAR_DOWN)
            self.drawn = 0

    def _draw(self) -> None:
        self._clear()
        limit = self.width - 1
        rows = []
        for t in self.tasks:
            shown = self._prefix(t) + self.lines[t]
            partial = self.partials.get(t, "").strip()
            room = limit - len(shown) - 1
            if partial and room > 1:
                if len(partial) > room:
                    partial = "…" + partial[-(room - 1) :]
                shown = f"{shown} {DIM}{partial}{RESET}" if shown else f"{DIM}{partial}{RESET}"
            rows.append(shown)
        self.file.write("\n".join(rows))
        self.file.flush()
        self.drawn = len(rows)

    def message(self, text: str, file: TextIO | None = None) -> None:
        """Print a line (a warning) without garbling the live lines."""
        self._clear()
        self.file.flush()
        print(text, file=file or sys.stderr, flush=True)
        if self.tty:
            self._draw()

    def close(self) -> None:
        """Write out what is left of every line (the flushed words are already in)."""
        self._clear()
        for t in self.tasks:
            if self.lines[t]:
                self._commit(t, self.lines[t])
                self.lines[t] = ""
        self.partials = {t: "" for t in self.tasks}
        self.file.flush()


# --------------------------------------------------------------------------------------------
# Transcript file


def transcript_format(path) -> str:
    """The writer format for a transcript path, by its suffix (none: txt); `OutputError` if unknown."""
    fmt = Path(path).suffix.lstrip(".").lower() or "txt"
    if fmt not in FORMATS:
        raise OutputError(f"{path}: unsupported transcript format .{fmt} (use .txt, .srt, .vtt or .json)")
    return fmt


def transcript_paths(path, tasks) -> list[Path]:
    """The files `-o path` gives: `path` for one task, ``name.is.ext`` and ``name.en.ext`` for both."""
    path = Path(path)
    fmt = transcript_format(path)
    name = path.stem if path.suffix else path.name
    if len(tasks) == 1:
        return [path.parent / f"{name}.{fmt}"]
    return [path.parent / f"{name}.{t}.{fmt}" for t in tasks]


class TranscriptFile:
    """`-o`: final words appended as they come to a .txt part file (``name.part-<pid>.txt``: it
    survives a crash, and an existing transcript is not touched until the end), one line per
    utterance when `append` is given line heads; at the end a .txt is that file, renamed into
    place (the lines shown on screen), and .srt, .vtt or .json are written atomically by `writers`
    from the complete transcript (``name.is.ext`` / ``name.en.ext`` for task "both")."""

    def __init__(self, path, tasks):
        path = Path(path)
        self.fmt = transcript_format(path)
        self.dir, self.name = path.parent, path.stem if path.suffix else path.name
        self.tasks = list(tasks)
        self.paths = transcript_paths(path, self.tasks)
        self.live = {}  # task -> [open .txt part file, words written]
        if self.fmt == "txt":
            self.live = {t: [open(part_path(self._path(t)), "w", encoding="utf-8"), 0] for t in self.tasks}

    def _path(self, task) -> Path:
        return self.paths[self.tasks.index(task)]

    def append(self, words, heads: list | None = None) -> None:
        """Append confirmed words; `heads` as in `LiveDisplay.update` (a string begins a line)."""
        for w, head in zip(words, heads if heads is not None else [None] * len(words)):
            task = w.task if len(self.tasks) > 1 else self.tasks[0]
            entry, text = self.live.get(task), w.text.strip()
            if entry is not None and text:
                if head is not None:
                    entry[0].write(("\n" if entry[1] else "") + head + text)
                else:
                    entry[0].write((" " if entry[1] else "") + text)
                entry[0].flush()
                entry[1] += 1

    def finish(self, transcripts: dict | None) -> list[Path]:
        """Close the live files: a .txt transcript is the live text, renamed into place; other
        formats are written from the complete `transcripts` (if any). Returns the files written."""
        for f, _ in self.live.values():
            f.write("\n")
            f.close()
        if transcripts and not self.live:
            result = Result("both" if len(self.tasks) > 1 else self.tasks[0], transcripts)
            get_writer(self.fmt, self.dir)(result, self.name)
        for task in self.live:
            commit_file(part_path(self._path(task)), self._path(task))
        return [p for p in self.paths if p.exists()]


def output_files(task: str, output=None, save_audio=None, input_file=None) -> list[Path]:
    """Check `mic`'s outputs before anything starts and return the files it will write.

    The transcript's and the recording's formats must be known (by their extensions), and
    neither may be the input being replayed. Their directories are created.

    Raises
    ------
    OutputError (a ValueError)
        One line naming the path and the problem.
    """
    tasks = task_list(task)
    paths = []
    if output is not None:
        transcript_format(output)
        paths += transcript_paths(output, tasks)
    if save_audio is not None:
        recording_format(save_audio)
        paths.append(Path(save_audio))
    # (the transcript and the recording cannot collide: their extensions differ)
    if input_file is not None and input_file != "-" and os.path.realpath(input_file) in map(os.path.realpath, paths):
        raise OutputError(f"{input_file}: is the input; writing to it would destroy it")
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    return paths


# --------------------------------------------------------------------------------------------
# The model loop


@dataclass
class MicResult:
    """What a `run_mic` session did (the transcripts are also in the files it wrote)."""

    transcripts: dict = field(default_factory=dict)
    seconds: float = 0.0  # audio captured (all of it is in the recording)
    frames: int = 0
    dropped: int = 0  # frames the model never saw because it fell behind
    overflows: int = 0  # blocks the audio driver reported as overflowed (samples lost before us)
    max_queue: int = 0
    interrupted: bool = False
    files: list = field(default_factory=list)


class _Stopper:
    """First Ctrl-C / SIGTERM: finish cleanly (`requested` is set, the loop ends after the current
    frame); a second one while `abortable`: KeyboardInterrupt now (skip draining and flushing)."""

    def __init__(self):
        self.requested = threading.Event()
        self.abortable = True

    def _handler(self, signum, frame):
        if self.requested.is_set() and self.abortable:
            raise KeyboardInterrupt
        self.requested.set()

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set in the main thread
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def run_mic(
    stt,
    task: str = "is",
    source: AudioSource | None = None,
    *,
    output=None,
    save_audio=None,
    max_lag: float = 5.0,
    warn_lag: float = 1.0,
    display: LiveDisplay | None = None,
    log: TextIO | None = None,
    stream_kwargs: dict | None = None,
    timestamps: bool = False,
    pause: float = 0.5,
) -> MicResult:
    """Transcribe live audio until the source ends, Ctrl-C, or SIGTERM.

    Parameters
    ----------
    stt : STT
        A loaded model (`mlx_kyutai_is.load`); only ``stt.stream(task=...)`` and
        ``stt.sample_rate`` are used.
    task : {"is", "en", "both"}
    source : AudioSource, optional
        Where audio comes from; default the system's default microphone.
    output : str or Path, optional
        Transcript file (.txt written as words come, one line per utterance; .srt/.vtt/.json at
        the end).
    save_audio : str or Path, optional
        WAV file of everything captured, written incrementally (valid even if killed).
    max_lag : float
        Seconds of audio the model may fall behind before frames are dropped (queue bound).
    warn_lag : float
        Lag in seconds above which a warning is shown (at most every 5 s).
    display : LiveDisplay, optional
        Default: a `LiveDisplay` on stdout.
    log : file, optional
        Where status and warnings go (default stderr).
    stream_kwargs : dict, optional
        Passed to ``stt.stream`` (e.g. ``watchdog=True``; its re-primes then wait for a pause).
    timestamps : bool
        Each line (on screen and in a .txt transcript) begins with its time, ``[HH:MM:SS.d]``, in
        seconds of the session (as in the recording).
    pause : float
        Seconds of silence that end an utterance (a new line).

    Returns
    -------
    MicResult
        On a clean end and on Ctrl-C / SIGTERM (pending words flushed, files written).

    Raises
    ------
    Exception
        An error in the model loop or the source, re-raised after the words so far, the
        transcript and the recording have been written.
    """
    log = log or sys.stderr
    if source is None:
        source = SoundDeviceSource()
    if source.sample_rate is None:
        source.attach(stt.sample_rate, stt.frame_size)
    if source.sample_rate != stt.sample_rate:
        raise ValueError(f"source rate {source.sample_rate} Hz != model rate {stt.sample_rate} Hz")
    tasks = task_list(task)
    display = display or LiveDisplay(tasks)
    frame_s = source.block_size / source.sample_rate
    max_frames = max(1, round(max_lag / frame_s))

    stream = stt.stream(task=task, **(stream_kwargs or {}))
    watchdog = getattr(stream, "watchdog", None)
    clock = SessionClock(source.sample_rate)
    utterances = Utterances(source.sample_rate, pause, timestamps=timestamps, session_time=clock)
    tfile = TranscriptFile(output, tasks) if output is not None else None
    recorder = _Recorder(save_audio, source.sample_rate) if save_audio is not None else None
    capture = _Capture(max_frames, source.realtime, recorder)
    result = MicResult()
    stopper = _Stopper()
    error: BaseException | None = None
    last_warn, warned = -1e9, (0, 0)

    def feed(item):
        session_sample, block = item
        clock.fed_block(session_sample, len(block))
        utterances.feed(block)  # the detector hears exactly what the model is fed, on its clock
        if watchdog is not None:
            watchdog.set_speaking(utterances.speaking)
        return stream.feed(block)

    def emit(words, partials=None):
        words = [w for w in words if w.text.strip()]
        heads = [utterances.head(w) for w in words]
        display.update(words, partials, heads)
        if tfile is not None and words:
            tfile.append(words, heads)

    def check_health():
        nonlocal last_warn, warned
        lag = capture.q.qsize() * frame_s
        counts = (capture.dropped, capture.overflows)
        now = time.monotonic()
        if (lag > warn_lag or counts != warned) and now - last_warn > 5.0:
            parts = []
            if lag > warn_lag:
                parts.append(f"transcription is {lag:.1f} s behind real time")
            if capture.dropped:
                parts.append(f"{capture.dropped} frames dropped ({capture.dropped * frame_s:.1f} s not transcribed)")
            if capture.overflows:
                parts.append(f"{capture.overflows} input overflows")
            display.message("warning: " + "; ".join(parts), file=log)
            last_warn, warned = now, counts

    with stream, stopper.installed():
        try:
            source.start(capture)
            print("listening... (Ctrl-C to stop)", file=log, flush=True)
            while not stopper.requested.is_set():
                item = capture.get()
                if item is None:
                    if capture.finished():
                        break
                    continue
                emit(feed(item), stream.partials)
                if source.realtime:
                    check_health()
        except KeyboardInterrupt:  # not in the main thread, or a second Ctrl-C
            stopper.requested.set()
        except Exception as e:
            error = e
        result.interrupted = stopper.requested.is_set()
        capture.closed.set()  # first, so that a source waiting in push() can stop
        try:
            source.stop()
        except Exception as e:  # never lose the transcript over a device that won't close
            error = error or e
        try:
            if error is None:
                # what was captured before the stop is still transcribed
                while (item := capture.get(timeout=0)) is not None:
                    emit(feed(item), stream.partials)
            utterances.feed(np.zeros(0, np.float32), last=True)
            emit(stream.flush(), stream.partials)
        except KeyboardInterrupt:  # Ctrl-C again: skip the rest, keep what we have
            pass
        except Exception as e:
            error = error or e
        stopper.abortable = False  # from here on, only writing files: let it finish
        display.close()
        try:
            result.transcripts = stream.transcripts()
        except Exception as e:
            error = error or e
        if tfile is not None:
            try:
                result.files += tfile.finish(result.transcripts)
            except Exception as e:
                error = error or e
        if recorder is not None:
            recorder.close()
            result.files.append(Path(save_audio))

    result.seconds = capture.samples / source.sample_rate
    result.frames = capture.frames
    result.dropped = capture.dropped
    result.overflows = capture.overflows
    result.max_queue = capture.max_depth
    summary = f"{result.seconds:.1f} s of audio"
    if capture.dropped or capture.overflows:
        summary += f", {capture.dropped} frames dropped, {capture.overflows} input overflows"
    print(summary + "".join(f"; wrote {p}" for p in result.files), file=log, flush=True)
    if recorder is not None and recorder.error is not None:
        error = error or AudioError(f"{save_audio}: recording failed ({recorder.error})")
    if error is not None:
        raise error
    return result
