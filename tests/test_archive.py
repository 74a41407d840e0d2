# Copyright © 2026 mlx-kyutai-is contributors
"""Archive jobs (`transcribe --manifest`, `apps.archive`): every file once, outputs equal to
`transcribe()` of the file alone, one line per input in results.jsonl, resumable; on this machine
and on a real two-node Ray cluster (a head and a node joined with `ray start --address`) that
the tests start and stop, inside a network namespace of their own that has only loopback.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf
from checkpoints import SAMPLE_RATE, read_wav

from mlx_kyutai_is import load
from mlx_kyutai_is.apps.archive import Ledger, plan_entries
from mlx_kyutai_is.apps.archive.ledger import JobRunning
from mlx_kyutai_is.errors import UserError
from mlx_kyutai_is.writers import get_writer

# Servers, clusters and codecs run end to end here: the quick loop (-m 'not slow') leaves them out.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
N_FILES = 16
FORMATS = ("txt", "srt", "vtt", "json")
RAY_PORT = 6379  # inside the tests' own network namespace: no other cluster can hold it


@pytest.fixture(scope="module")
def stt_f32(small_hf):
    return load(str(small_hf), dtype="float32")


@pytest.fixture(scope="module")
def clips(speech, tmp_path_factory):
    """16 short, different recordings (slices of the espeak sentences) in two folders."""
    d = tmp_path_factory.mktemp("archive")
    out = []
    for i in range(N_FILES):
        audio = read_wav(speech[i % len(speech)])
        start = int((i // len(speech)) * 0.25 * SAMPLE_RATE)
        piece = audio[start : start + int((1.2 + 0.1 * (i % 4)) * SAMPLE_RATE)]
        path = d / ("a" if i % 2 else "b") / f"clip{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), piece, SAMPLE_RATE, subtype="PCM_16")
        out.append(path)
    return out


@pytest.fixture(scope="module")
def reference(clips, stt_f32, tmp_path_factory):
    """name -> {format: bytes}: what `transcribe()` of each file alone writes."""
    d = tmp_path_factory.mktemp("reference")
    writer, ref = get_writer("all", d), {}
    for path in clips:
        name = f"{path.parent.name}/{path.stem}"
        (d / path.parent.name).mkdir(exist_ok=True)
        writer(stt_f32.transcribe(str(path)), name)
        ref[name] = {fmt: (d / f"{name}.{fmt}").read_bytes() for fmt in FORMATS}
    return ref


def write_list(path, files):
    path.write_text("# the archive\n" + "".join(f"{f}\n" for f in files), encoding="utf-8")
    return path


def results(out) -> list[dict]:
    text = (Path(out) / "results.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def assert_outputs_equal_reference(out, reference, names=None):
    for name in names or reference:
        for fmt in FORMATS:
            assert (Path(out) / f"{name}.{fmt}").read_bytes() == reference[name][fmt], (name, fmt)


def cli(*args):
    return [sys.executable, "-m", "mlx_kyutai_is", "transcribe", *map(str, args)]


# --------------------------------------------------------------------------------------------
# The driver's parts, alone


def test_output_names_keep_folders_and_each_file_is_listed_once(tmp_path):
    entries, repeats = plan_entries(["x/2020/a.wav", "x/2021/a.wav", "x/2020/a.wav", "file:///m/y/b.flac"])
    assert repeats == 1
    assert [e.source for e in entries] == [
        str(Path("x/2020/a.wav").absolute()),
        str(Path("x/2021/a.wav").absolute()),
        "file:///m/y/b.flac",
    ]
    cwd = Path.cwd().relative_to("/")
    assert [e.name for e in entries] == [f"{cwd}/x/2020/a", f"{cwd}/x/2021/a", "m/y/b"]
    entries, _ = plan_entries(["/d/2020/a.wav", "/d/2021/b.wav"])
    assert [e.name for e in entries] == ["2020/a", "2021/b"]
    assert [e.name for e in plan_entries(["/d/one.wav"])[0]] == ["one"]
    with pytest.raises(UserError, match=r"/d/a.wav and /d/a.flac would both be written as a\.\*"):
        plan_entries(["/d/a.wav", "/d/a.flac"])


def test_results_file_keeps_one_whole_line_per_input(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(JobRunning, match="another job is writing its results there"):
        Ledger(tmp_path)
    for a in ("a", "b", "c"):
        ledger.append({"audio": a, "status": "done"})
    ledger.forget({"b"})  # about to be done again: its old line goes
    ledger.append({"audio": "b", "status": "failed"})
    ledger.close()
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"audio": "d", "sta')  # a line cut short by a kill
    ledger = Ledger(tmp_path)
    assert ledger.records == {
        "a": {"audio": "a", "status": "done"},
        "c": {"audio": "c", "status": "done"},
        "b": {"audio": "b", "status": "failed"},
    }
    ledger.forget(set())  # the cut line is dropped when the next job starts
    assert [r["audio"] for r in results(tmp_path)] == ["a", "c", "b"]
    ledger.close()


def test_usage_errors(tmp_path):
    for args, message in (
        ((), "give audio FILEs, or --manifest LIST"),
        (("a.wav", "--ray"), "--ray goes with --manifest LIST"),
        (("a.wav", "--manifest", "l.txt"), "not both"),
        (("--manifest", "l.txt", "--workers", "2"), "--workers goes with --ray"),
    ):
        p = subprocess.run(cli(*args), capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert p.returncode == 2 and message in p.stderr, (args, p.stderr)
    p = subprocess.run(cli("--manifest", "nope.txt"), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.strip() == "mlx-kyutai-is transcribe: error: nope.txt: no such file"


@pytest.mark.slow
def test_on_this_machine_without_ray(tmp_path, small_hf, clips, reference):
    """The same manifest without --ray: a missing and an unreadable file reported, the others
    (one given as a file:// URI) equal `transcribe()`'s; a rerun with --skip-existing redoes only
    the failed ones, and results.jsonl keeps one line per input."""
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n")
    good = clips[:3]
    listing = write_list(tmp_path / "list.txt", [good[0], f"file://{good[1]}", good[2], "missing.wav", bad.name])
    out = tmp_path / "out"
    args = cli("--manifest", listing, "-o", out, "-m", small_hf, "--dtype", "float32", "-f", "all", "-b", "2")
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr
    errors = [line for line in p.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2 and any("missing.wav" in e for e in errors) and any("notes.wav" in e for e in errors), (
        p.stderr
    )
    assert "Traceback" not in p.stderr and "5/5 files (3 done, 2 failed)" in p.stderr
    lines = results(out)
    assert len(lines) == 5 and sorted(r["status"] for r in lines) == ["done"] * 3 + ["failed"] * 2
    names = {f"{c.parent.name}/{c.stem}": c for c in good}
    # the inputs' common folder is the clips' parent's parent, tmp_path's sibling: names keep more folders
    root = Path(os.path.commonpath([str(c.parent) for c in good] + [str(tmp_path)]))
    for name, c in names.items():
        stem = str(c.relative_to(root).with_suffix(""))
        for fmt in FORMATS:
            assert (out / f"{stem}.{fmt}").read_bytes() == reference[name][fmt]
    done_before = [r for r in lines if r["status"] == "done"]
    p = subprocess.run([*args, "--skip-existing"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "skipped 3 of 5 files" in p.stderr, p.stderr
    after = results(out)
    assert len(after) == 5 and after[:3] == done_before  # the done ones untouched, the failed redone once


# --------------------------------------------------------------------------------------------
# A real two-node Ray cluster on loopback


def _lo_up_script():
    # Brings loopback up in a new network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS), then holds the
    # namespace open until its stdin closes.
    return (
        "import fcntl, socket, struct, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0))[:18])[1]\n"
        "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', flags | 1))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )


class Cluster:
    """A head and one more node (`ray start --block`, one CPU each, dashboard off, small object
    stores, temp dirs of their own) in a network namespace with only loopback; commands run in it."""

    def __init__(self):
        self.holder = subprocess.Popen(
            ["unshare", "--net", sys.executable, "-c", _lo_up_script()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if self.holder.stdout.readline().strip() != "ready":
            err = self.holder.communicate(timeout=10)[1]
            pytest.skip(f"cannot make a network namespace here (unshare --net: {err.strip()[-200:]})")
        self.address = f"127.0.0.1:{RAY_PORT}"
        self.dirs = [Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")) for _ in range(2)]
        self.nodes = []
        common = ["--num-cpus", "1", "--object-store-memory", "200000000", "--disable-usage-stats", "--block"]
        head = ["--head", "--port", str(RAY_PORT), "--include-dashboard=false", "--temp-dir", str(self.dirs[0])]
        try:
            self.start(head + common, self.dirs[0])
            self.wait_for_nodes(1)
            self.start(["--address", self.address, "--temp-dir", str(self.dirs[1])] + common, self.dirs[1])
            self.wait_for_nodes(2)
        except BaseException:
            self.stop()
            raise

    def command(self, args):
        # No token authentication: nothing outside the namespace can reach it (and a token file
        # that an earlier local `ray.init()` left in ~/.ray would otherwise turn it on for the head).
        return [
            "nsenter",
            f"--net=/proc/{self.holder.pid}/ns/net",
            "--",
            "env",
            "RAY_AUTH_MODE=disabled",
            *map(str, args),
        ]

    def popen(self, args, **kwargs):
        return subprocess.Popen(self.command(args), cwd=ROOT, **kwargs)

    def start(self, args, log_dir):
        log = open(log_dir / "start.log", "w")
        self.nodes.append(
            self.popen(
                [sys.executable, "-m", "ray.scripts.scripts", "start", *args],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        )

    def wait_for_nodes(self, n, timeout=120):
        script = (
            "import ray, sys, time\n"
            f"ray.init(address='{self.address}', log_to_driver=False, logging_level='ERROR')\n"
            f"t = time.time()\n"
            f"while sum(1 for x in ray.nodes() if x['Alive']) < {n} and time.time() - t < {timeout}:\n"
            "    time.sleep(0.5)\n"
            f"sys.exit(0 if sum(1 for x in ray.nodes() if x['Alive']) >= {n} else 1)\n"
        )
        deadline = time.time() + timeout
        while time.time() < deadline:  # the head's GCS may not listen yet
            p = subprocess.run(
                self.command([sys.executable, "-c", script]), capture_output=True, text=True, timeout=timeout + 60
            )
            if p.returncode == 0:
                return
            assert all(node.poll() is None for node in self.nodes), f"{p.stderr[-2000:]}\n{self.logs()}"
            time.sleep(1)
        raise AssertionError(f"the cluster has fewer than {n} nodes after {timeout} s\n{self.logs()}")

    def logs(self):
        return "\n".join((d / "start.log").read_text()[-2000:] for d in self.dirs if (d / "start.log").exists())

    def own(self, pid: int) -> bool:
        """Whether `pid` is one of this cluster's processes (in one of the nodes' sessions)."""
        try:
            return os.getsid(pid) in {node.pid for node in self.nodes}
        except ProcessLookupError:
            return False

    def stop(self):
        for node in reversed(self.nodes):  # `ray start --block` stops its node's processes on SIGTERM
            if node.poll() is None:
                node.terminate()
        for node in reversed(self.nodes):
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(node.pid, signal.SIGKILL)  # whatever of its session is left
            except ProcessLookupError:
                pass
        self.holder.stdin.close()
        self.holder.wait(timeout=30)
        for d in self.dirs:
            subprocess.run(["rm", "-rf", str(d)], check=False)


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


def archive_args(cluster, listing, out, small_hf, *more):
    return cli(
        "--manifest", listing, "-o", out, "-m", small_hf, "--dtype", "float32", "-f", "all", "-b", "2",
        "--ray", cluster.address, "--workers", "2", *more,
    )  # fmt: skip


def wait_for_lines(out, n, proc, timeout=300):
    """Wait until results.jsonl has `n` lines (the job still running); returns them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = Path(out) / "results.jsonl"
        if path.exists():
            lines = [json.loads(x) for x in path.read_text().splitlines(keepends=True) if x.endswith("\n")]
            if len(lines) >= n:
                return lines
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} results after {timeout} s")


@pytest.fixture(scope="module")
def listing(clips, tmp_path_factory):
    return write_list(tmp_path_factory.mktemp("lists") / "archive.txt", clips)


@pytest.mark.slow
def test_two_node_cluster_transcribes_every_file_once(cluster, listing, small_hf, reference, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run(
        cluster.command(archive_args(cluster, listing, out, small_hf)), capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr
    assert "16/16 files (16 done, 0 failed)" in p.stderr and "workers alive: 2" in p.stderr, p.stderr
    lines = results(out)
    assert len(lines) == N_FILES and sorted(r["audio"] for r in lines) == sorted(str(c) for c in listing_files(listing))
    assert all(r["status"] == "done" and r["error"] is None and r["audio_seconds"] > 1 for r in lines)
    assert len({r["worker"] for r in lines}) == 2  # both workers did some
    assert_outputs_equal_reference(out, reference)


def listing_files(listing):
    return [Path(x) for x in Path(listing).read_text().splitlines() if x and not x.startswith("#")]


@pytest.mark.slow
def test_a_worker_killed_mid_run_has_its_files_done_elsewhere(cluster, listing, small_hf, reference, tmp_path):
    out = tmp_path / "out"
    proc = cluster.popen(
        archive_args(cluster, listing, out, small_hf), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        first = wait_for_lines(out, 1, proc)
        victim = int(first[0]["worker"].rsplit(":", 1)[1])
        assert cluster.own(victim), first[0]
        os.kill(victim, signal.SIGKILL)
        assert len(wait_for_lines(out, 1, proc)) < N_FILES  # killed mid-run
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "a worker died" in err and "16/16 files (16 done, 0 failed)" in err, err
    lines = results(out)
    assert len(lines) == N_FILES and len({r["audio"] for r in lines}) == N_FILES
    assert all(r["status"] == "done" for r in lines)
    assert_outputs_equal_reference(out, reference)


@pytest.mark.slow
def test_ctrl_c_then_skip_existing_does_only_what_is_left(cluster, listing, small_hf, reference, tmp_path):
    out = tmp_path / "out"
    args = archive_args(cluster, listing, out, small_hf)
    proc = cluster.popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(out, 2, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command with --skip-existing" in err and "Traceback" not in err, err
    before = results(out)
    assert 2 <= len(before) < N_FILES and all(r["status"] == "done" for r in before)
    assert_outputs_equal_reference(out, reference, [str(Path(r["outputs"][0]).with_suffix("")) for r in before])

    p = subprocess.run(cluster.command([*args, "--skip-existing"]), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert f"skipped {len(before)} of 16 files" in p.stderr, p.stderr
    after = results(out)
    assert after[: len(before)] == before  # the first run's lines as they were: none done twice
    assert len(after) == N_FILES and len({r["audio"] for r in after}) == N_FILES  # nothing lost
    assert all(r["status"] == "done" for r in after)
    assert_outputs_equal_reference(out, reference)


@pytest.mark.slow
def test_missing_and_unreadable_files_are_reported_and_the_others_done(cluster, clips, small_hf, reference, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio\n")
    listing = write_list(tmp_path / "list.txt", [clips[0], tmp_path / "missing.wav", bad, clips[1]])
    out = tmp_path / "out"
    p = subprocess.run(
        cluster.command(archive_args(cluster, listing, out, small_hf)), capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 1, p.stderr
    errors = [line for line in p.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2 and "missing.wav" in errors[0] + errors[1] and "notes.wav" in errors[0] + errors[1], (
        p.stderr
    )
    assert "Traceback" not in p.stderr and "2 of 4 files failed" in p.stderr
    lines = {Path(r["audio"]).name: r for r in results(out)}
    assert len(lines) == 4 and {n: r["status"] for n, r in lines.items()} == {
        "clip00.wav": "done", "clip01.wav": "done", "missing.wav": "failed", "notes.wav": "failed",
    }  # fmt: skip
    assert "missing.wav" in lines["missing.wav"]["error"] and "notes.wav" in lines["notes.wav"]["error"]
    root = Path(os.path.commonpath([str(clips[0].parent), str(clips[1].parent), str(tmp_path)]))
    for c in clips[:2]:
        stem = str(c.relative_to(root).with_suffix(""))
        for fmt in FORMATS:
            assert (out / f"{stem}.{fmt}").read_bytes() == reference[f"{c.parent.name}/{c.stem}"][fmt]
