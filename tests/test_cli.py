"""The `mlx-kyutai-is` command run as a subprocess: help, version, transcribing several files on
a small real checkpoint (outputs parsed back), stdin, and every user error as one line."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from checkpoints import parse_srt, parse_vtt

ROOT = Path(__file__).parents[1]
PROG = "mlx-kyutai-is"


def run(*args, stdin=None, timeout=180):
    """Run the CLI exactly as the console script does (`sys.exit(main())`)."""
    code = "import sys; from mlx_kyutai_is.cli import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k != "MLX_KYUTAI_IS_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def text(b: bytes) -> str:
    return b.decode("utf-8")


def assert_one_line_error(p, *needles):
    err = text(p.stderr)
    assert p.returncode != 0, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    command = next(a for a in p.args[3:] if not a.startswith("-"))  # the command, after `-c code`
    assert len(lines) == 1 and lines[0].startswith(f"{PROG} {command}: error: "), err
    for n in needles:
        assert n in lines[0], err
    return lines[0]


def test_entry_point_declared():
    assert f'{PROG} = "mlx_kyutai_is.cli:main"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--help"], ["usage: mlx-kyutai-is", "transcribe", "mic", "convert", "bench", "examples:"]),
        (["transcribe", "--help"], ["--task {is,en,both}", "--output-format", "(default: txt)", "examples:"]),
        (["mic", "--help"], ["--list-devices", "--save-audio", "--device", "examples:"]),
    ],
)
def test_help(args, needles):
    p = run(*args)
    assert p.returncode == 0, text(p.stderr)
    for n in needles:
        assert n in text(p.stdout)


def test_version_and_fast_import():
    from mlx_kyutai_is import _version

    p = run("--version")
    assert p.returncode == 0
    assert text(p.stdout).strip() == f"{PROG} {_version.__version__}"
    # lazy imports: the CLI module pulls in neither MLX nor the model nor sounddevice
    probe = "import sys, mlx_kyutai_is.cli; print(sorted(m for m in ('mlx.core', 'sounddevice', 'numpy') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert text(p.stdout).strip() == "[]", text(p.stderr)


def test_argument_errors():
    p = run("transcribe", "a.wav", "--task", "de")
    assert p.returncode == 2 and "Traceback" not in text(p.stderr)
    assert "invalid choice: 'de'" in text(p.stderr).strip().splitlines()[-1]
    p = run("nonsense")
    assert p.returncode == 2 and "invalid choice: 'nonsense'" in text(p.stderr)


def test_unknown_device():
    # the device is checked before the model is loaded (the model path does not exist)
    line = assert_one_line_error(run("mic", "--device", "no-such-mic", "--model", "/nonexistent"))
    assert "no-such-mic" in line and "--list-devices" in line


def test_list_devices():
    p = run("mic", "--list-devices")
    assert p.returncode == 0, text(p.stderr)
    assert "device" in text(p.stdout)


# --------------------------------------------------------------------------------------------
# On a small random checkpoint (the shared session one: a Hugging Face dir, converted on load)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.wav").write_bytes(os.urandom(3000))
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 24000)
    return {"missing": d / "missing.wav", "garbage": d / "garbage.wav", "empty": d / "empty.wav"}


def test_transcribe_two_files_all_formats(tmp_path, small_hf, speech):
    out = tmp_path / "out"
    p = run("transcribe", speech[0], speech[1], "--model", small_hf, "-f", "all", "-o", out)
    assert p.returncode == 0, text(p.stderr)
    assert "Traceback" not in text(p.stderr)
    printed = text(p.stdout).strip().splitlines()
    assert len(printed) == 2
    # one line per file, labelled, in input order
    by_file = {line.split(": ", 1)[0]: line for line in printed}
    assert list(by_file) == list(map(str, speech[:2]))
    for wav in speech[:2]:
        line = by_file[str(wav)]
        name = Path(wav).stem
        data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        duration = len(sf.read(wav)[0]) / 24000
        assert data["task"] == "is"
        assert data["duration"] == pytest.approx(duration, abs=0.2)
        assert line == f"{wav}: {data['text']}"
        assert (out / f"{name}.txt").read_text(encoding="utf-8").strip() == data["text"]
        words = data["words"]
        assert words, "the random model emits text pieces"
        assert " ".join(w["text"] for w in words).split() == data["text"].split()
        assert all(0 <= w["start"] <= w["end"] for w in words)
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        assert all(isinstance(t, int) for t in data["tokens"]) and data["tokens"]

        srt = parse_srt((out / f"{name}.srt").read_text(encoding="utf-8"))
        vtt = parse_vtt((out / f"{name}.vtt").read_text(encoding="utf-8"))
        assert [(s, e, t) for _, s, e, t in srt] == vtt
        assert " ".join(t for *_, t in vtt).split() == data["text"].split()
        assert vtt[0][0] == pytest.approx(words[0]["start"], abs=1e-3)
        assert all(s < e for s, e, _ in vtt)


SUMMARY = re.compile(
    rf"{PROG} transcribe: transcribed (\d+) files?, ([\d.]+) s of audio, in ([\d.]+) s: real-time factor ([\d.]+)"
)


def test_transcribe_prints_in_input_order_and_sums_up(tmp_path, small_hf, speech):
    """A long file, then a short one, decoded side by side (--batch-size 2): the short one finishes
    first (its outputs are written first: each file is written when it is done), yet the text comes
    out in input order; stderr ends with one line that sums up the run, whose real-time factor is
    its wall time over its audio time, and whose wall time fits inside the measured one."""
    long, short = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long, np.concatenate([sf.read(w, dtype="float32")[0] for w in speech]), 24000)
    sf.write(short, sf.read(speech[0], dtype="float32")[0][: 24000 * 2], 24000)
    seconds = [sf.info(long).duration, sf.info(short).duration]
    out = tmp_path / "out"
    t0 = time.monotonic()
    p = run("transcribe", long, short, "--model", small_hf, "--batch-size", "2", "-o", out)
    measured = time.monotonic() - t0
    assert p.returncode == 0, text(p.stderr)

    assert (out / "short.txt").stat().st_mtime_ns < (out / "long.txt").stat().st_mtime_ns  # short finished first
    printed = text(p.stdout).strip().splitlines()
    assert [line.split(": ", 1)[0] for line in printed] == [str(long), str(short)]
    for line, name in zip(printed, ("long", "short")):
        assert line.split(": ", 1)[1] == (out / f"{name}.txt").read_text(encoding="utf-8").strip()

    last = text(p.stderr).strip().splitlines()[-1]
    m = SUMMARY.fullmatch(last)
    assert m, text(p.stderr)
    files, audio, wall, rtf = int(m[1]), float(m[2]), float(m[3]), float(m[4])
    assert files == 2 and audio == pytest.approx(sum(seconds), abs=0.06)
    gap = ((out / "long.txt").stat().st_mtime_ns - (out / "short.txt").stat().st_mtime_ns) / 1e9
    assert gap - 0.05 <= wall <= measured + 0.05  # it spans the decoding, and no more than the whole run
    assert rtf == pytest.approx(wall / audio, abs=0.005 + 0.05 / audio)  # the printed figures, rounded


@pytest.mark.slow
def test_transcribe_stdin_both(tmp_path, small_hf, speech):
    p = run("transcribe", "-", "--model", small_hf, "--task", "both", "-f", "json", "-o", tmp_path,
            stdin=Path(speech[2]).read_bytes())
    assert p.returncode == 0, text(p.stderr)
    tasks = {t: json.loads((tmp_path / f"stdin.{t}.json").read_text(encoding="utf-8")) for t in ("is", "en")}
    assert [d["task"] for d in tasks.values()] == ["is", "en"]
    assert text(p.stdout).strip().splitlines() == [f"[is] {tasks['is']['text']}", f"[en] {tasks['en']['text']}"]


def test_transcribe_per_file_errors(tmp_path, small_hf, speech, bad_files):
    """Bad files are reported one line each; the good one is still transcribed; exit status 1."""
    files = [bad_files["missing"], speech[0], bad_files["garbage"], bad_files["empty"]]
    p = run("transcribe", *files, "--model", small_hf, "-o", tmp_path)
    err = text(p.stderr)
    assert p.returncode == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"{PROG} transcribe: error: ")]
    assert len(errors) == 3, err
    for line, f in zip(errors, [files[0], files[2], files[3]]):
        assert str(f) in line
    assert "no such file" in errors[0]
    assert "empty" in errors[2]
    assert (tmp_path / f"{Path(speech[0]).stem}.txt").exists()
    assert len(text(p.stdout).strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["missing", "garbage", "empty"])
def test_transcribe_bad_file_alone(which, bad_files, tmp_path):
    """A run with nothing readable fails fast, before the model is loaded (its path is bogus here)."""
    assert_one_line_error(run("transcribe", bad_files[which], "--model", "/nonexistent", "-o", tmp_path),
                          str(bad_files[which]))


@pytest.mark.parametrize(
    "hub, says",
    [
        ({"HF_HUB_OFFLINE": "1"}, "downloads are off (HF_HUB_OFFLINE is set): unset HF_HUB_OFFLINE to download it"),
        # Nothing listens on port 9 of loopback: the connection is refused, as with no network.
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "(http://127.0.0.1:9) cannot be reached (ConnectError: "),
    ],
)
def test_first_command_without_the_hub_names_the_next_step(hub, says, speech, tmp_path, monkeypatch):
    """The README's first command, with an empty Hugging Face cache and no hub: one line that says
    why and what to do next (the network, HF_ENDPOINT or HF_HUB_OFFLINE, or --model DIR)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for k, v in hub.items():
        monkeypatch.setenv(k, v)
    line = assert_one_line_error(run("transcribe", speech[0], "--task", "is", "-o", tmp_path), says)
    assert line.startswith(f"{PROG} transcribe: error: mideind/kyutai-stt-1b-is-en: not a local directory")
    assert line.endswith("or pass a local model directory instead (--model DIR: a Hugging Face checkpoint or a `convert` output)")
    if "HF_ENDPOINT" in hub:
        assert "check the network (or HF_ENDPOINT, for a mirror)" in line


def test_bad_model_is_one_line(speech, tmp_path):
    assert_one_line_error(run("transcribe", speech[0], "--model", tmp_path / "no-model", "-o", tmp_path))
