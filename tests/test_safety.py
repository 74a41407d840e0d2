"""Nothing a user made is ever lost: `transcribe` as a subprocess on the small checkpoint, killed
(SIGKILL at several moments while outputs are written), on a full disk, interrupted (SIGINT,
SIGTERM) and resumed with --skip-existing, with stdout closed early, and refusing runs that would
overwrite an input; every bad input or output a one-line error."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from checkpoints import parse_srt, parse_vtt

ROOT = Path(__file__).resolve().parents[1]
PROG = "mlx-kyutai-is transcribe"  # how its errors and notes begin, as every command's
SR = 24_000
MAIN = "import sys; from mlx_kyutai_is.cli import main; sys.exit(main())"

# Writers slowed down (64 characters per 2 ms), so that a SIGKILL lands in the middle of writing;
# "WRITING" on stderr says writing has begun. The real atomic_open does the writing.
SLOW_WRITES = """
import sys, time
from contextlib import contextmanager
from mlx_kyutai_is import writers

real = writers.atomic_open


class Slow:
    def __init__(self, f):
        self.f = f

    def write(self, s):
        for i in range(0, len(s), 64):
            self.f.write(s[i : i + 64])
            self.f.flush()
            time.sleep(0.002)


@contextmanager
def slow_open(path, mode="w", encoding="utf-8"):
    with real(path, mode, encoding=encoding) as f:
        print("WRITING", path, file=sys.stderr, flush=True)
        yield Slow(f)


writers.atomic_open = slow_open
from mlx_kyutai_is.cli import main
sys.exit(main())
"""


def env():
    e = {k: v for k, v in os.environ.items() if k != "MLX_KYUTAI_IS_DEBUG"}
    e["PYTHONPATH"] = str(ROOT)
    return e


def cli(*args, code=MAIN, **kw):
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env(), **kw)


def run(*args, code=MAIN, timeout=120, **kw):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env(), capture_output=True,
                          text=True, timeout=timeout, **kw)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if line.startswith(f"{PROG}: error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def visible(d) -> list[str]:
    return sorted(p.name for p in Path(d).iterdir() if not p.name.startswith("."))


def temps(d) -> list[str]:
    return sorted(p.name for p in Path(d).iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def clips(tmp_path_factory, speech):
    """Two short clips (the espeak sentences) and a 12 s one that takes seconds to decode."""
    d = tmp_path_factory.mktemp("clips")
    a, b = d / "a.wav", d / "b.wav"
    shutil.copy(speech[0], a)
    shutil.copy(speech[1], b)
    parts = [sf.read(s, dtype="float32")[0] for s in speech]
    noise = np.random.default_rng(0).standard_normal(SR * 12).astype(np.float32) * 0.05
    long = np.concatenate(parts + [noise])[: SR * 12]
    sf.write(d / "long.wav", long, SR, subtype="PCM_16")
    return {"a": a, "b": b, "long": d / "long.wav", "dir": d}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_hf, clips):
    """The complete outputs of `transcribe a b -f all`: name -> bytes."""
    out = tmp_path_factory.mktemp("ref")
    p = run("transcribe", clips["a"], clips["b"], "--model", small_hf, "-f", "all", "-o", out)
    assert p.returncode == 0, p.stderr
    files = {f.name: f.read_bytes() for f in out.iterdir()}
    assert sorted(files) == [f"{n}.{e}" for n in "ab" for e in ("json", "srt", "txt", "vtt")]
    for name, data in files.items():  # they parse: what "complete" means below
        {"json": json.loads, "srt": parse_srt, "vtt": parse_vtt, "txt": str}[name.split(".")[-1]](data.decode())
    return files


# --------------------------------------------------------------------------------------------
# Output safety


@pytest.mark.slow
def test_kill_9_while_writing_leaves_each_output_old_or_complete(tmp_path, small_hf, clips, reference):
    """SIGKILL at several moments after the first output file is opened: every output holds its
    previous contents or the complete new ones, never a mix; the next run cleans up."""
    old = b"an earlier transcript, to be kept whole or replaced whole\n"
    outcomes = set()
    for delay in (0.0, 0.1, 0.35, 0.8):
        out = tmp_path / f"kill{delay}"
        out.mkdir()
        for name in reference:
            (out / name).write_bytes(old)
        p = cli("transcribe", clips["a"], clips["b"], "--model", small_hf, "-f", "all", "-o", out,
                code=SLOW_WRITES, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in p.stderr:
            if line.startswith("WRITING"):
                break
        else:
            pytest.fail(f"never wrote: rc {p.wait()}")
        time.sleep(delay)
        p.kill()
        p.wait(timeout=30)
        assert visible(out) == sorted(reference)
        for name, data in reference.items():
            got = (out / name).read_bytes()
            assert got in (old, data), f"{name} after kill at +{delay} s: {got[:80]!r}"
            outcomes.add(got == data)
    assert outcomes == {False, True}, "the kills must land while outputs are being written"
    assert temps(out), "a killed writer leaves its temporary file"  # (the last run was mid-write)
    p = run("transcribe", clips["a"], clips["b"], "--model", small_hf, "-f", "all", "-o", out)
    assert p.returncode == 0, p.stderr
    assert temps(out) == []  # the dead writer's leftovers are removed by the next write
    assert {n: (out / n).read_bytes() for n in reference} == reference


def _mount_tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _limit_file_size(limit):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.parametrize("disk", ["tmpfs", "file-size limit"])
def test_full_disk_loses_nothing(disk, tmp_path, small_hf, clips, reference):
    """Outputs that do not fit: no empty or truncated file beside the complete ones, no temporary
    file left, the text printed anyway and one line naming what could not be written."""
    out = tmp_path / "out"
    extra = {}
    if disk == "tmpfs":
        # 4 pages: the txt files and a few others fit, the rest do not
        if not _mount_tmpfs(out, "16k"):
            pytest.skip("cannot mount a tmpfs here (needs root); the file-size limit case covers it")
    else:
        out.mkdir()
        extra["preexec_fn"] = _limit_file_size(1000)  # the .json (~6 kB) do not fit, the others do
    try:
        p = run("transcribe", clips["a"], clips["b"], "--model", small_hf, "-f", "all", "-o", out, **extra)
        written = visible(out)
        contents = {n: (out / n).read_bytes() for n in written}
        left = temps(out)
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", str(out)], check=True)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert left == []
    assert set(written) < set(reference) and written, written  # some fit, some did not
    for n, data in contents.items():
        assert data == reference[n], n
    errors = [line for line in p.stderr.splitlines() if line.startswith(f"{PROG}: error: ")]
    missing = sorted(set(reference) - set(written))
    assert errors, p.stderr
    assert all("could not be written" in e for e in errors), errors
    assert sorted(n for n in missing if any(n in e for e in errors)) == missing
    if disk == "file-size limit":
        assert missing == ["a.json", "b.json"]
    # the transcripts themselves are not lost: both are on stdout
    printed = sorted(line.split(": ", 1)[0] for line in p.stdout.strip().splitlines())
    assert printed == sorted(map(str, [clips["a"], clips["b"]]))


def test_output_is_never_an_input(tmp_path):
    """An audio file named clip.txt transcribed into its own directory would be replaced by its
    transcript: refused, one line, the file untouched, before the model loads (bogus path here)."""
    clip = tmp_path / "clip.txt"
    sf.write(clip, np.zeros(SR, np.float32), SR, format="WAV")
    before = clip.read_bytes()
    p = run("transcribe", clip, "--model", tmp_path / "no-model", "-o", tmp_path)
    line = one_error_line(p.stderr)
    assert p.returncode == 1 and str(clip) in line and "overwrite" in line, line
    assert clip.read_bytes() == before and visible(tmp_path) == ["clip.txt"]
    # two inputs with the same name would write the same transcript: refused too
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for d in "xy":
        sf.write(tmp_path / d / "talk.wav", np.zeros(SR, np.float32), SR)
    p = run("transcribe", tmp_path / "x/talk.wav", tmp_path / "y/talk.wav", "--model", tmp_path / "no-model",
            "-o", tmp_path / "out")
    line = one_error_line(p.stderr)
    assert "both be written to" in line and not (tmp_path / "out").exists(), line


def test_unwritable_output_dir_fails_before_the_model_loads(tmp_path, clips):
    (tmp_path / "file").write_text("not a directory")
    p = run("transcribe", clips["a"], "--model", tmp_path / "no-model", "-o", tmp_path / "file" / "out")
    line = one_error_line(p.stderr)
    assert str(tmp_path / "file" / "out") in line and "no-model" not in line, line


@pytest.mark.slow
def test_closed_stdout_does_not_stop_the_batch(tmp_path, small_hf, clips):
    """`... | head -1`: every file is still transcribed and written, status 0, nothing reported but
    the run's summary."""
    files = [tmp_path / f"c{i}.wav" for i in range(3)]
    for f in files:
        shutil.copy(clips["a"], f)
    p = cli("transcribe", *files, "--model", small_hf, "-o", tmp_path / "out", "-v", "-b", "1",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline()  # the first word; then the reader goes away
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert err.startswith(f"{PROG}: transcribed 3 files, ") and err.count("\n") == 1, err
    assert visible(tmp_path / "out") == ["c0.txt", "c1.txt", "c2.txt"]


# --------------------------------------------------------------------------------------------
# Interrupted work is saved


def _start_and_wait_for_words(*args):
    """Start `transcribe ... -v` and return once its first word is out (decoding is under way)."""
    p = cli(*args, "-v", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline(), p.communicate()[1]
    return p


@pytest.mark.slow
@pytest.mark.parametrize("sig, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_interrupt_saves_partial_and_resume_finishes(sig, status, word, tmp_path, small_hf, clips):
    out = tmp_path / "out"
    files = [clips["long"], clips["a"], clips["b"]]
    p = _start_and_wait_for_words("transcribe", *files, "--model", small_hf, "-f", "json", "-o", out, "-b", "1")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == status, err
    assert "Traceback" not in err and f"{PROG}: {word}" in err, err
    # the file in progress: its words so far, closed, marked partial; the others named
    assert visible(out) == ["long.partial.json"], err
    data = json.loads((out / "long.partial.json").read_text(encoding="utf-8"))
    assert data["partial"] is True and data["words"] and 0 < data["duration"] < 12.0
    assert " ".join(w["text"] for w in data["words"]) == data["text"]
    assert f"{clips['long']}: stopped after" in err and "long.partial.json" in err
    assert f"not transcribed: {clips['a']}, {clips['b']}" in err
    if sig == signal.SIGTERM:
        return
    # resume: everything is done now, and the partial transcript gives way to the complete one
    p = run("transcribe", *files, "--model", small_hf, "-f", "json", "-o", out, "--skip-existing")
    assert p.returncode == 0, p.stderr
    assert visible(out) == ["a.json", "b.json", "long.json"]
    full = json.loads((out / "long.json").read_text(encoding="utf-8"))
    assert "partial" not in full and full["duration"] == pytest.approx(12.0, abs=0.01)
    assert full["words"][: len(data["words"]) - 1] == data["words"][:-1]  # the same decoding, cut short
    # and once more: nothing left to do, the model is not even loaded (its path is bogus)
    p = run("transcribe", *files, "--model", tmp_path / "no-model", "-f", "json", "-o", out, "--skip-existing")
    assert p.returncode == 0 and "skipped 3 of 3 files" in p.stderr, p.stderr


def test_skip_existing_redoes_incomplete_outputs(tmp_path, clips, reference):
    """Only files whose outputs are all there and complete are skipped: a truncated .json (an
    older version killed mid-write) or a missing format sends that file back to the model."""
    out = tmp_path / "out"
    out.mkdir()
    for n in ("a.txt", "a.json", "b.txt", "b.json"):
        (out / n).write_bytes(reference[n])
    (out / "b.json").write_bytes(reference["b.json"][:100])
    p = run("transcribe", clips["a"], clips["b"], "--model", tmp_path / "no-model", "-f", "all", "-o", out,
            "--skip-existing")
    assert "skipped" not in p.stderr  # a.srt is missing: a is not complete either
    p = run("transcribe", clips["a"], clips["b"], "--model", tmp_path / "no-model", "-f", "json", "-o", out,
            "--skip-existing")
    assert "skipped 1 of 2 files" in p.stderr, p.stderr
    line = one_error_line(p.stderr)
    assert "no-model" in line and str(clips["b"]) not in line  # b needs the model, which is not there
    assert (out / "a.json").read_bytes() == reference["a.json"]


@pytest.mark.slow
def test_stdin_streams_and_ctrl_c_saves(tmp_path, small_hf):
    """`sox -d -t wav - | transcribe - -v`: words appear while the audio is still arriving (the
    pipe stays open), and Ctrl-C then saves what was heard."""
    import struct

    header = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, SR, 2 * SR, 2, 16)
              + b"data" + struct.pack("<I", 0xFFFFFFFF))  # a recorder's header: sizes unknown
    p = cli("transcribe", "-", "--model", small_hf, "-v", "-f", "json", "-o", tmp_path,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdin.write(header)
    rng = np.random.default_rng(0)
    os.set_blocking(p.stdout.fileno(), False)
    first, fed = b"", 0.0
    while not first and fed < 30:
        p.stdin.write((rng.standard_normal(SR // 10) * 3000).astype("<i2").tobytes())
        p.stdin.flush()
        fed += 0.1
        time.sleep(0.1)
        try:
            first = os.read(p.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            pass
    assert first, "no words while the audio was arriving"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()
    data = json.loads((tmp_path / "stdin.partial.json").read_text(encoding="utf-8"))
    assert data["partial"] is True and data["words"] and data["duration"] <= fed + 0.5


# --------------------------------------------------------------------------------------------
# Bad input, clear errors


def _with_config(src, dst, **edits):
    dst.mkdir()
    for f in Path(src).iterdir():
        (dst / f.name).symlink_to(f)
    config = json.loads((Path(src) / "config.json").read_text())
    config.update(edits)
    (dst / "config.json").unlink()
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_bad_config_is_the_models_error_not_the_audio_files(tmp_path, small_hf, clips):
    bad = _with_config(small_hf, tmp_path / "bad", sliding_window=None)  # was: std::bad_cast, blamed on the audio
    p = run("transcribe", clips["a"], "--model", bad, "-o", tmp_path)
    line = one_error_line(p.stderr)
    assert p.returncode == 1
    assert f"{bad / 'config.json'}: sliding_window must be a positive integer, got null" in line, line
    assert str(clips["a"]) not in line


def test_zero_length_file_and_debug_traceback(tmp_path, clips):
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    p = run("transcribe", zero, "--model", tmp_path / "no-model", "-o", tmp_path)
    line = one_error_line(p.stderr)
    assert line == f"{PROG}: error: {zero}: empty file (0 bytes)"  # no advice to convert it
    # --debug shows the traceback of an error inside the per-file loop, and the run goes on
    p = run("--debug", "transcribe", zero, tmp_path / "missing.wav", "--model", tmp_path / "no-model", "-o", tmp_path)
    assert p.stderr.count("Traceback") == 2, p.stderr
    assert f"{zero}: empty file" in p.stderr and "missing.wav: no such file" in p.stderr


# The model failing in the middle of a batch (injected: the engine's 15th step raises).
MODEL_FAILS = """
import sys
from mlx_kyutai_is.runtime import engine

real, calls = engine.Engine.step, [0]


def step(self):
    calls[0] += 1
    if calls[0] == 15:
        raise RuntimeError("[metal::malloc] out of device memory")
    return real(self)


engine.Engine.step = step
from mlx_kyutai_is.cli import main
sys.exit(main())
"""


def test_model_failure_is_not_an_audio_files_error(tmp_path, small_hf, clips):
    """A failure of the model is reported once, as the model's, not as an error of the file being
    decoded; what was decoded is saved as partial and the files not done are named."""
    p = run("transcribe", clips["long"], clips["a"], "--model", small_hf, "-b", "1", "-f", "json", "-o", tmp_path,
            code=MODEL_FAILS)
    assert p.returncode == 1, p.stderr
    line = one_error_line(p.stderr)
    assert line == f"{PROG}: error: transcription failed: RuntimeError: [metal::malloc] out of device memory " \
                   "(--debug shows the traceback)", line
    assert visible(tmp_path) == ["long.partial.json"]
    assert f"not transcribed: {clips['a']}" in p.stderr
    p = run("--debug", "transcribe", clips["long"], "--model", small_hf, "-o", tmp_path / "d", code=MODEL_FAILS)
    assert "Traceback" in p.stderr and "out of device memory" in p.stderr and p.returncode == 1
