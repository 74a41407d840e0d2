"""The mic loop: file-backed and fake sources, interrupts, overflows, a model slower than real
time; utterance lines, their times and the watchdog's re-primes in pauses; then the real `mic`
command as a subprocess on a small checkpoint (text, timestamps, SIGTERM)."""

import _thread
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from bisect import bisect_right
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mlx_kyutai_is import load
from mlx_kyutai_is.apps.mic import FileSource, LiveDisplay, SessionClock, line_time, run_mic
from mlx_kyutai_is.audio.vad import SpeechParams, SpeechTracker, VoiceActivity, speech_probabilities, speech_spans
from mlx_kyutai_is.results import Transcript, Word
from mlx_kyutai_is.runtime.watchdog import StallWatchdog

from checkpoints import SENTENCES, build_checkpoint, espeak, read_wav

SR = 24_000
FRAME = 1920


# --------------------------------------------------------------------------------------------
# Fakes: a stream that emits a known word every few frames, and sources driven by the test.


class FakeStream:
    def __init__(self, task, every=3, delay=0.0, fail_at=None):
        self.tasks = ["is", "en"] if task == "both" else [task]
        self.every, self.delay, self.fail_at = every, delay, fail_at
        self.frames = 0
        self.samples = 0
        self.words = {t: [] for t in self.tasks}
        self.fed = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def _word(self, task, text):
        t = self.samples / SR
        w = Word(text=text, start=max(0.0, t - 0.5), end=t, task=task, tokens=[len(self.words[task])])
        self.words[task].append(w)
        return w

    def feed(self, samples):
        if self.delay:
            time.sleep(self.delay)
        self.frames += 1
        if self.fail_at is not None and self.frames >= self.fail_at:
            raise RuntimeError("the model broke")
        self.fed.append(np.array(samples))
        self.samples += len(samples)
        if self.frames % self.every:
            return []
        return [self._word(t, f"{t}{self.frames // self.every}") for t in self.tasks]

    @property
    def partials(self):
        return {t: f"…{t}{self.frames}" for t in self.tasks}

    @property
    def partial(self):
        return self.partials[self.tasks[0]]

    def flush(self):
        return [self._word(t, "endir.") for t in self.tasks]

    def transcripts(self):
        return {
            t: Transcript(
                text=" ".join(w.text for w in ws),
                words=list(ws),
                task=t,
                duration=self.samples / SR,
                tokens=[tok for w in ws for tok in w.tokens],
            )
            for t, ws in self.words.items()
        }


class FakeSTT:
    sample_rate = SR
    frame_size = FRAME

    def __init__(self, **stream_kw):
        self.stream_kw = stream_kw
        self.last = None

    def stream(self, task="is", **kw):
        self.last = FakeStream(task, **self.stream_kw)
        return self.last


class LoopingStream(FakeStream):
    """Says the same word at every frame, with a real watchdog acted on as `Stream.feed` does."""

    def __init__(self, task="is", max_repeats=4):
        super().__init__(task, every=1)
        self.watchdog = StallWatchdog(max_repeats=max_repeats)
        self.watchdog.attach(FRAME, SR)
        self.recoveries = []

    def feed(self, samples):
        self.frames += 1
        self.samples += len(samples)
        words = [self._word(t, "br") for t in self.tasks]
        if reason := self.watchdog.observe(np.asarray(samples, np.float32), words):
            self.recoveries.append((self.samples / SR, reason))
            self.watchdog.reset()
        return words


class LoopingSTT(FakeSTT):
    def stream(self, task="is", **kw):
        self.last = LoopingStream(task)
        return self.last


class ScriptedSource:
    """Pushes `n` frames of a known signal from a thread, every `interval` seconds; then either
    ends, or (interrupt=True) interrupts the main thread like Ctrl-C and waits to be stopped."""

    def __init__(self, n, interval=0.0, realtime=True, interrupt=False, overflow_every=0, block_size=FRAME):
        self.n, self.interval, self.realtime = n, interval, realtime
        self.interrupt, self.overflow_every = interrupt, overflow_every
        self.sample_rate, self.block_size = SR, block_size
        self.signal = np.sin(np.arange(n * block_size) / 10.0).astype(np.float32) * 0.5
        self.stopped = threading.Event()
        self.thread = None

    def _run(self, sink):
        for i in range(self.n):
            if self.stopped.is_set():
                return
            sink.push(self.signal[i * self.block_size : (i + 1) * self.block_size], self._overflow(i))
            if self.interval:
                time.sleep(self.interval)
        if self.interrupt:
            _thread.interrupt_main()  # exactly what Ctrl-C does to the main thread
            self.stopped.wait(10)
        else:
            sink.end()

    def _overflow(self, i):
        return bool(self.overflow_every) and i % self.overflow_every == 0

    def start(self, sink):
        self.thread = threading.Thread(target=self._run, args=(sink,), daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped.set()
        self.thread.join()


def quiet_display(tasks=("is",)):
    out = io.StringIO()
    return LiveDisplay(list(tasks), file=out, tty=False), out


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """Espeak Icelandic, 24 kHz 16-bit: what the mic would hear."""
    return espeak("Góðan daginn, ég heiti Jón og ég bý í Reykjavík.", tmp_path_factory.mktemp("mic") / "s.wav")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Three espeak sentences with 1.5 s of silence inserted between them: the wav, and where each
    sentence's sound starts and ends (samples above 0.01), in seconds."""
    d = tmp_path_factory.mktemp("utterances")
    parts, spoken, at = [], [], 0
    for i, text in enumerate(SENTENCES):
        audio = read_wav(espeak(text, d / f"s{i}.wav"))
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        spoken.append(((at + loud[0]) / SR, (at + loud[-1] + 1) / SR))
        parts += [audio, np.zeros(int(1.5 * SR), np.float32)]
        at += len(audio) + int(1.5 * SR)
    sf.write(d / "three.wav", np.concatenate(parts[:-1]), SR, subtype="PCM_16")
    return d / "three.wav", spoken


def heard_stops(path, pause):
    """Where the mic's detector hears utterances end: the frames it is fed, as it is fed them."""
    vad, tracker = VoiceActivity(SR), SpeechTracker(SpeechParams(min_silence=pause), prefix=0.0)
    audio = read_wav(path)
    events = [e for i in range(0, len(audio), FRAME) for e in tracker.update(vad.feed(audio[i : i + FRAME]))]
    return [t for kind, t in events if kind == "stop"]


LINE = re.compile(r"\[(\d\d):(\d\d):(\d\d)\.(\d)\] (.+)")


def line_seconds(line):
    m = LINE.fullmatch(line)
    assert m, f"no time at the start of {line!r}"
    h, mi, s, tenths = map(int, m.groups()[:4])
    return h * 3600 + mi * 60 + s + tenths / 10, m.group(5)


# --------------------------------------------------------------------------------------------
# run_mic with fakes


def test_file_source_unpaced(tmp_path, wav):
    stt = FakeSTT()
    display, out = quiet_display()
    log = io.StringIO()
    res = run_mic(
        stt, "is", FileSource(wav, paced=False), output=tmp_path / "t.txt", save_audio=tmp_path / "rec.wav",
        display=display, log=log, max_lag=0.2,
    )
    audio = read_wav(wav)
    stream = stt.last
    # lossless: every sample reached the model, in order, in 1920-sample frames
    np.testing.assert_array_equal(np.concatenate(stream.fed), audio)
    assert all(len(b) == FRAME for b in stream.fed[:-1])
    assert not res.interrupted and res.dropped == 0 and res.overflows == 0
    words = [w.text for w in stream.words["is"]]
    assert words[-1] == "endir."  # flushed at the end of the file
    assert out.getvalue().split() == words  # plain text, no escape codes
    assert "\x1b" not in out.getvalue()
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == " ".join(words) + "\n"
    rec, sr = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert sr == SR and len(rec) == len(audio)
    np.testing.assert_allclose(rec, audio, atol=1 / 32768)
    assert res.seconds == pytest.approx(len(audio) / SR)
    assert "listening" in log.getvalue() and "rec.wav" in log.getvalue()


def test_interrupt_flushes_and_writes(tmp_path):
    """Ctrl-C after N frames: pending words flushed, transcript + recording of exactly N frames, no raise."""
    stt = FakeSTT()
    display, out = quiet_display()
    src = ScriptedSource(10, interrupt=True)
    res = run_mic(stt, "is", src, output=tmp_path / "t.srt", save_audio=tmp_path / "rec.wav",
                  display=display, log=io.StringIO())
    assert res.interrupted
    assert stt.last.words["is"][-1].text == "endir."
    assert "endir." in (tmp_path / "t.srt").read_text(encoding="utf-8")
    rec, sr = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert len(rec) == 10 * FRAME
    np.testing.assert_allclose(rec, src.signal, atol=1 / 32768)
    # every captured frame was transcribed before the flush
    assert sum(map(len, stt.last.fed)) == 10 * FRAME
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_overflows_counted_and_reported(tmp_path):
    stt = FakeSTT()
    display, _ = quiet_display()
    log = io.StringIO()
    res = run_mic(stt, "is", ScriptedSource(12, overflow_every=4), display=display, log=log)
    assert res.overflows == 3 and res.dropped == 0
    assert "3 input overflows" in log.getvalue()


def test_slow_model_bounded_queue(tmp_path):
    """A model 5x slower than real time: warnings, bounded queue, frames dropped, audio all saved."""
    block = 480  # 20 ms frames to keep the test short
    stt = FakeSTT(delay=0.02)
    display, _ = quiet_display()
    log = io.StringIO()
    src = ScriptedSource(100, interval=0.004, block_size=block)
    res = run_mic(stt, "is", src, save_audio=tmp_path / "rec.wav", display=display, log=log,
                  max_lag=0.1, warn_lag=0.05)
    max_frames = 5  # 0.1 s / 20 ms
    assert res.max_queue <= max_frames
    assert res.dropped > 50
    assert res.dropped + sum(1 for _ in stt.last.fed) == 100
    assert "behind real time" in log.getvalue() and "frames dropped" in log.getvalue()
    rec, _ = sf.read(tmp_path / "rec.wav", dtype="float32")
    np.testing.assert_allclose(rec, src.signal, atol=1 / 32768)


def test_model_error_writes_then_raises(tmp_path):
    stt = FakeSTT(fail_at=8)
    display, _ = quiet_display()
    with pytest.raises(RuntimeError, match="the model broke"):
        run_mic(stt, "is", ScriptedSource(20, realtime=False), output=tmp_path / "t.txt",
                save_audio=tmp_path / "rec.wav", display=display, log=io.StringIO())
    assert (tmp_path / "t.txt").read_text(encoding="utf-8").split() == ["is1", "is2", "endir."]
    rec, _ = sf.read(tmp_path / "rec.wav", dtype="float32")
    assert len(rec) >= 8 * FRAME


def test_both_tasks_files_and_display(tmp_path):
    stt = FakeSTT()
    display, out = quiet_display(("is", "en"))
    run_mic(stt, "both", ScriptedSource(6), output=tmp_path / "t.txt", display=display, log=io.StringIO())
    assert (tmp_path / "t.is.txt").read_text().split() == ["is1", "is2", "endir."]
    assert (tmp_path / "t.en.txt").read_text().split() == ["en1", "en2", "endir."]
    assert out.getvalue().splitlines() == ["[is] is1 is2 endir.", "[en] en1 en2 endir."]


def test_live_display_terminal():
    out = io.StringIO()
    d = LiveDisplay(["is"], file=out, tty=True, width=20)
    words = [Word(text=t, start=0, end=0, task="is", tokens=[]) for t in "eitt tvö þrjú fjögur fimm".split()]
    d.update(words[:2], {"is": "þr"})
    assert out.getvalue().endswith("eitt tvö \x1b[2mþr\x1b[0m")
    d.update(words[2:], {"is": "sex sjö átta níu tíu"})
    d.close()
    screen = out.getvalue()
    assert "\r\x1b[J" in screen  # the live line is redrawn in place
    committed = [line.split("\x1b[J")[-1] for line in screen.split("\n")[:-1]]
    assert committed == ["eitt tvö þrjú", "fjögur fimm"]  # full lines scroll up at 19 columns
    for line in screen.replace("\r", "\n").split("\n"):
        plain = line.replace("\x1b[2m", "").replace("\x1b[0m", "").replace("\x1b[J", "")
        assert len(plain) <= 19  # never wraps, so redrawing stays in place


# --------------------------------------------------------------------------------------------
# Utterances: one line each, their times, and the watchdog's re-primes in pauses


@pytest.mark.slow
def test_utterance_lines_break_at_the_pauses(tmp_path, small_hf, three):
    """The tiny random model says gibberish all the time, but its words carry real times: each
    line holds the words between two pauses, each pause lies in an inserted silence, each line
    starts with its first word's time, and the .txt transcript has the same lines."""
    path, spoken = three
    stt = load(small_hf, dtype="float32")
    display, out = quiet_display()
    res = run_mic(stt, "is", FileSource(path, paced=False), output=tmp_path / "t.txt", display=display,
                  log=io.StringIO(), timestamps=True)
    stops = heard_stops(path, 0.5)
    offline = [end for _, end in speech_spans(speech_probabilities(read_wav(path), SR),
                                              SpeechParams(min_silence=0.5, pad=0.0, min_speech=0.0))[:-1]]
    assert len(stops) == 2 and np.allclose(stops, offline, atol=0.1)
    breaks = [t + 0.25 for t in stops]  # a pause is dated half the shortest pause into its silence
    for b, (_, end), (start, _) in zip(breaks, spoken, spoken[1:]):
        assert end < b < start
    words = res.transcripts["is"].words
    expected = [[w for w in words if bisect_right(breaks, w.start) == k] for k in range(3)]
    assert all(expected), "the random model says something in every utterance"
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for line, ws in zip(lines, expected):
        seconds, text = line_seconds(line)
        assert seconds == pytest.approx(ws[0].start, abs=0.051)
        assert text == " ".join(w.text for w in ws)
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == out.getvalue()


def test_utterance_lines_without_timestamps_both_tasks(tmp_path, three):
    """Task both: each task's text in utterance lines (no times without `timestamps`), on screen and
    in name.is.txt / name.en.txt."""
    path, _ = three
    stt = FakeSTT()
    display, out = quiet_display(("is", "en"))
    run_mic(stt, "both", FileSource(path, paced=False), output=tmp_path / "t.txt", display=display,
            log=io.StringIO())
    breaks = [t + 0.25 for t in heard_stops(path, 0.5)]
    for task in ("is", "en"):
        words = stt.last.words[task]
        expected = [" ".join(w.text for w in words if bisect_right(breaks, w.start) == k) for k in range(3)]
        assert (tmp_path / f"t.{task}.txt").read_text(encoding="utf-8").splitlines() == expected
        assert [ln[5:] for ln in out.getvalue().splitlines() if ln.startswith(f"[{task}] ")] == expected
    assert len(out.getvalue().splitlines()) == 6


def test_watchdog_reprimes_in_pauses(three):
    """A stream stuck on one word: told by the mic's detector that someone is speaking, the watchdog
    waits; every re-prime falls in a silence, after `pause` seconds of it. The same stream fed the
    same audio without the detector re-primes mid-sentence."""
    path, spoken = three
    stt = LoopingSTT()
    run_mic(stt, "is", FileSource(path, paced=False), display=quiet_display()[0], log=io.StringIO(), pause=0.5)
    times = [t for t, _ in stt.last.recoveries]
    assert len(times) >= 2
    silences = list(zip([end for _, end in spoken], [start for start, _ in spoken[1:]]))
    for t in times:
        assert any(end + 0.4 <= t <= start + 0.1 for end, start in silences), (t, silences)
    assert any("waited" in reason for _, reason in stt.last.recoveries)

    alone = LoopingStream()
    audio = read_wav(path)
    for i in range(0, len(audio), FRAME):
        alone.feed(audio[i : i + FRAME])
    assert any(start < t < end for t, _ in alone.recoveries for start, end in spoken)


def test_live_display_utterance_lines_terminal():
    """On a terminal a new utterance starts a new line; a long one wraps, indented past its time."""
    out = io.StringIO()
    d = LiveDisplay(["is"], file=out, tty=True, width=30)
    w = [Word(text=t, start=0, end=0, task="is", tokens=[]) for t in "eitt tvö þrjú fjögur fimm sex".split()]
    d.update(w[:2], {"is": "þr"}, ["[00:00:01.0] ", None])
    assert out.getvalue().endswith("[00:00:01.0] eitt tvö \x1b[2mþr\x1b[0m")
    d.update(w[2:], {"is": ""}, [None, None, "[00:00:05.2] ", None])
    d.close()
    committed = [line.split("\x1b[J")[-1] for line in out.getvalue().split("\n")[:-1]]
    assert committed == ["[00:00:01.0] eitt tvö þrjú", " " * 13 + "fjögur", "[00:00:05.2] fimm sex"]


def test_line_times_and_the_session_clock():
    assert line_time(0.0) == "[00:00:00.0]" and line_time(-0.3) == "[00:00:00.0]"
    assert line_time(59.96) == "[00:01:00.0]" and line_time(3723.44) == "[01:02:03.4]"
    # frames the model never saw (it fell behind) move later words' times to where they were spoken
    clock = SessionClock(SR)
    clock.fed_block(0, FRAME)
    clock.fed_block(3 * FRAME, FRAME)  # two frames dropped
    clock.fed_block(4 * FRAME, FRAME)
    assert clock(0.05) == pytest.approx(0.05)
    assert clock(0.1) == pytest.approx(0.1 + 0.16) and clock(0.2) == pytest.approx(0.2 + 0.16)


# --------------------------------------------------------------------------------------------
# The real command, as a subprocess, on a small random checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("mic_ckpt"), seed=1, audio_silence_prefix_seconds=0.0)


def cli(*args, **kw):
    code = "import sys; from mlx_kyutai_is.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_mic_command_prints_text(tmp_path, ckpt, wav):
    p = cli("mic", "--model", ckpt, "--input-file", wav, "--unpaced", "-o", tmp_path / "t.txt",
            "--save-audio", tmp_path / "rec.wav")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert out.strip(), err  # the random model emits text pieces
    assert (tmp_path / "t.txt").read_text(encoding="utf-8").split() == out.split()
    assert len(read_wav(tmp_path / "rec.wav")) == len(read_wav(wav))


@pytest.mark.slow
def test_mic_command_timestamps(tmp_path, small_hf, three):
    """`mic --timestamps -o out.txt`: the same timed lines on stdout and in the file, one per
    sentence, each timed after the previous sentence's sound ended and before the next began."""
    path, spoken = three
    p = cli("mic", "--model", small_hf, "--input-file", path, "--unpaced", "--timestamps", "-o", tmp_path / "out.txt")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "Traceback" not in err, err
    lines = out.splitlines()
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == lines
    assert len(lines) == 3, out
    for k, line in enumerate(lines):
        seconds, _ = line_seconds(line)
        assert k == 0 or seconds > spoken[k - 1][1]
        assert k == 2 or seconds < spoken[k + 1][0]


def test_mic_command_sigterm(tmp_path, ckpt, wav):
    """SIGTERM in the middle of a (real-time paced) session: exit 0, transcript and recording written."""
    p = cli("mic", "--model", ckpt, "--input-file", wav, "-o", tmp_path / "t.txt",
            "--save-audio", tmp_path / "rec.wav")
    err_lines = []
    for line in p.stderr:
        err_lines.append(line)
        if line.startswith("listening"):
            break
    else:
        pytest.fail(f"never started: {''.join(err_lines)} {p.stdout.read()}")
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    err = "".join(err_lines) + err
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert (tmp_path / "t.txt").exists()
    rec = read_wav(tmp_path / "rec.wav")
    audio = read_wav(wav)
    assert 0.5 * SR < len(rec) < len(audio)  # stopped in the middle
    assert len(rec) % FRAME == 0  # whole frames, as captured
    np.testing.assert_allclose(rec, audio[: len(rec)], atol=1 / 32768)


def test_outputs_into_missing_dirs_and_recording_formats(tmp_path, ckpt, wav):
    """`-o` and `--save-audio` into directories that do not exist yet are created (as transcribe
    -o does); the recording's format is the one its extension names."""
    out, rec = tmp_path / "new" / "deeper" / "t.srt", tmp_path / "rec" / "r.flac"
    p = cli("mic", "--model", ckpt, "--input-file", wav, "--unpaced", "-o", out, "--save-audio", rec)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.read_text(encoding="utf-8").startswith("1\n")
    info = sf.info(str(rec))
    assert info.format == "FLAC" and info.frames == len(read_wav(wav))
    np.testing.assert_allclose(sf.read(str(rec), dtype="float32")[0], read_wav(wav), atol=1 / 32768)
    assert sorted(p.name for p in rec.parent.iterdir()) == ["r.flac"]  # the part file was renamed


@pytest.mark.parametrize("fmt, subtype", [("wav", "PCM_16"), ("ogg", "VORBIS")])
def test_recording_formats_in_process(tmp_path, wav, fmt, subtype):
    rec = tmp_path / f"rec.{fmt}"
    run_mic(FakeSTT(), "is", FileSource(wav, paced=False), save_audio=rec, display=quiet_display()[0],
            log=io.StringIO())
    info = sf.info(str(rec))
    assert info.subtype == subtype and info.frames == len(read_wav(wav))


@pytest.mark.parametrize(
    "args, needles",
    [
        (lambda d, wav: ["--save-audio", d / "rec.mp3"], ["rec.mp3: unsupported audio format .mp3", ".wav, .flac, .ogg"]),
        (lambda d, wav: ["--save-audio", d / "rec"], ["rec: no extension"]),
        (lambda d, wav: ["--save-audio", wav], [": is the input"]),
        (lambda d, wav: ["-o", d / "notes.docx"], ["unsupported transcript format .docx"]),
    ],
)
def test_bad_outputs_refused_before_the_model_loads(tmp_path, wav, args, needles):
    """The model path is bogus: each error comes first, one line, and nothing is written."""
    before = Path(wav).read_bytes()
    p = cli("mic", "--model", tmp_path / "no-model", "--input-file", wav, *args(tmp_path, wav))
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlx-kyutai-is mic: error: "), err
    for n in needles:
        assert n in lines[0], err
    assert "Error:" not in lines[0] and "--debug" not in lines[0], err  # a user's mistake, not a bug
    assert "no-model" not in err
    assert Path(wav).read_bytes() == before and list(tmp_path.iterdir()) == []


def test_kill_9_keeps_the_old_files_and_the_audio_so_far(tmp_path, ckpt, wav):
    """SIGKILL mid-session: the recording and transcript of an earlier session are untouched (the
    new ones grow under part names, renamed only at the end), and the part recording is a
    valid WAV of what was heard."""
    rec, txt = tmp_path / "rec.wav", tmp_path / "t.txt"
    sf.write(rec, np.zeros(100, np.float32), SR, subtype="PCM_16")
    txt.write_text("an earlier session\n")
    old_rec = rec.read_bytes()
    p = cli("mic", "--model", ckpt, "--input-file", wav, "-o", txt, "--save-audio", rec)
    for line in p.stderr:
        if line.startswith("listening"):
            break
    time.sleep(1.5)
    p.kill()
    p.communicate(timeout=30)
    assert rec.read_bytes() == old_rec and txt.read_text() == "an earlier session\n"
    part = tmp_path / f"rec.part-{p.pid}.wav"
    audio = read_wav(part)
    assert 0.5 * SR < len(audio) < len(read_wav(wav))
    np.testing.assert_allclose(audio, read_wav(wav)[: len(audio)], atol=1 / 32768)
    assert (tmp_path / f"t.part-{p.pid}.txt").exists()
