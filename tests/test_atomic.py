"""Atomic files and directories: a failure or a kill at any point leaves the old contents or the
new ones, never a mix; leftovers of killed writers are cleaned, those of live ones are not."""

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_kyutai_is import atomic

ROOT = Path(__file__).resolve().parents[1]


def listing(d):
    return sorted(p.name for p in Path(d).iterdir())


def test_atomic_write_replaces_whole(tmp_path):
    p = tmp_path / "out.txt"
    atomic.atomic_write(p, "first\n")
    assert p.read_text() == "first\n"
    atomic.atomic_write(p, b"second\n")
    assert p.read_bytes() == b"second\n"
    assert listing(tmp_path) == ["out.txt"]


def test_error_inside_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old\n")
    for exc in (ValueError("boom"), KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
        with pytest.raises(type(exc)):
            with atomic.atomic_open(p) as f:
                f.write("new, half written")
                raise exc
        assert p.read_text() == "old\n"
        assert listing(tmp_path) == ["out.json"]


def test_fsync_failure_leaves_old_file(tmp_path, monkeypatch):
    """A disk that fills when the data is flushed (ENOSPC from fsync, as NFS and some filesystems
    report it): the target keeps its old contents."""
    p = tmp_path / "out.txt"
    p.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic.atomic_write(p, "new\n")
    assert p.read_text() == "old\n" and listing(tmp_path) == ["out.txt"]


def test_mode_and_symlink(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old\n")
    os.chmod(p, 0o640)
    atomic.atomic_write(p, "new\n")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640  # the existing file's mode is kept
    fresh = tmp_path / "fresh.txt"
    atomic.atomic_write(fresh, "x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # as open(..., "w") would
    link = tmp_path / "link.txt"
    link.symlink_to(p)
    atomic.atomic_write(link, "through the link\n")
    assert link.is_symlink() and p.read_text() == "through the link\n"


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "a.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a.txt.{dead_pid}-xyz.tmp"
    live = tmp_path / f".a.txt.{os.getpid()}-abc.tmp"
    other = tmp_path / ".b.txt.1-abc.tmp"
    for p in (stale, live, other):
        p.write_text("half")
    atomic.atomic_write(target, "done\n")
    assert not stale.exists()  # its writer is gone
    assert live.exists() and other.exists()  # a running writer's, and another target's


def test_kill_during_write_leaves_old_or_new(tmp_path):
    """SIGKILL while a 4 MB file is being written, at several moments: the target is always the
    old or the new contents in full."""
    p = tmp_path / "big.txt"
    old, new = "o" * 10 + "\n", "n" * (4 << 20) + "\n"
    code = (
        "import sys, time; from mlx_kyutai_is.atomic import atomic_open\n"
        "new = 'n' * (4 << 20) + '\\n'\n"
        f"with atomic_open({str(p)!r}) as f:\n"
        "    print('open', flush=True)\n"
        "    for i in range(64): f.write(new[i * 65536:(i + 1) * 65536]); f.flush(); time.sleep(0.005)\n"
        "    f.write(new[64 * 65536:])\n"
    )
    seen = set()
    for delay in (0.0, 0.05, 0.2, 2.0):
        p.write_text(old)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.stdout.readline() == "open\n"
        if delay < 2.0:
            time.sleep(delay)
            proc.kill()
        proc.wait(timeout=30)
        got = p.read_text()
        assert got in (old, new), (delay, len(got))
        seen.add(got == new)
    assert seen == {False, True}  # both outcomes happened: the kills landed mid-write


def test_replace_dir(tmp_path):
    target = tmp_path / "model"
    new = atomic.make_temp_dir(target)
    (new / "w").write_text("1")
    atomic.replace_dir(new, target)  # absent target
    assert listing(target) == ["w"] and listing(tmp_path) == ["model"]
    new = atomic.make_temp_dir(target)
    (new / "w").write_text("2")
    (new / "x").write_text("2")
    atomic.replace_dir(new, target)  # existing target: swapped, the old contents deleted
    assert listing(target) == ["w", "x"] and (target / "w").read_text() == "2"
    assert listing(tmp_path) == ["model"]


def test_check_writable_dir(tmp_path):
    d = atomic.check_writable_dir(tmp_path / "a" / "b")
    assert d.is_dir() and listing(d) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError) as e:
        atomic.check_writable_dir(tmp_path / "file")
    assert e.value.filename == str(tmp_path / "file") and "not a directory" in e.value.strerror
    with pytest.raises(OSError) as e:
        atomic.check_writable_dir(tmp_path / "file" / "sub")
    assert e.value.filename == str(tmp_path / "file" / "sub")
