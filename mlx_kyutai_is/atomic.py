# Copyright © 2026 mlx-kyutai-is contributors
"""Atomic outputs: every file and directory the package writes appears complete or not at all.

A file is written under a temporary name in its own directory (same filesystem, so the rename is
atomic), flushed to disk (``fsync``) and renamed over the target with `os.replace`; a SIGKILL,
a full disk or an exception leaves the old file (or none), never a truncated one. Directories
(`convert`'s model) are built under a temporary name beside the target and swapped in at the end.

Temporary names start with a dot and carry the writer's pid, so that a later write of the same
target removes the leftovers of a killed process (and never those of one still running).
"""

import ctypes
import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

TMP_SUFFIX = ".tmp"


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove temporary files (or directories) left beside `target` by killed writers.

    Only names of the form ``.<target name>.<pid>-<random>.tmp`` whose pid is no longer running
    are removed. Returns what was removed.
    """
    target = Path(target)
    prefix, removed = _tmp_prefix(target), []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _resolve_target(path: str | Path) -> Path:
    """The file a write to `path` should replace: through a symlink to what it points to
    (replacing the link itself would silently detach it)."""
    path = Path(path).expanduser()
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform/filesystem opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode(target: Path) -> int:
    """The mode a plain `open(target, "w")` would give: the existing file's, else 0o666 & ~umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open `path` for writing so that it is replaced only when the block completes.

    Parameters
    ----------
    path : str or Path
        The file to write; its directory must exist.
    mode : {"w", "wb"}
    encoding : str, optional
        For text mode.

    Yields
    ------
    file
        A file object on a temporary file beside `path`. When the block ends normally the
        file is flushed, fsynced and renamed over `path`; on any exception (KeyboardInterrupt
        included) it is removed and `path` is left as it was.

    Examples
    --------
    >>> with atomic_open("out/talk.json") as f:
    ...     json.dump(result, f)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = _resolve_target(path)
    remove_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(target)}{os.getpid()}-", suffix=TMP_SUFFIX, dir=target.parent)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, _default_mode(target))
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            fd = None
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_dir(target.parent)


def atomic_write(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write `data` (text or bytes) to `path` atomically (see `atomic_open`); returns `path`."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", encoding=encoding) as f:
        f.write(data)
    return Path(path)


def temp_path_for(target: str | Path, suffix: str = "") -> Path:
    """A fresh temporary name beside `target` (nothing is created) for writers that need a
    path rather than a file object (libsndfile); `suffix` keeps an extension libraries read."""
    target = Path(target)
    return target.parent / f"{_tmp_prefix(target)}{os.getpid()}-{os.urandom(4).hex()}{suffix}{TMP_SUFFIX}"


def commit_file(tmp: str | Path, target: str | Path) -> Path:
    """Flush `tmp` (complete) to disk and rename it over `target`."""
    tmp, target = Path(tmp), _resolve_target(target)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, _default_mode(target))
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    return target


def part_path(path: str | Path) -> Path:
    """Where a file that grows as it is recorded (a recording, `mic`'s live transcript) lives until
    it is complete: ``<stem>.part-<pid><ext>`` beside `path`, visible and never cleaned up by us,
    so that after a crash what was recorded is there to find; renamed to `path` when done."""
    path = Path(path)
    return path.with_name(f"{path.stem}.part-{os.getpid()}{path.suffix}")


# --------------------------------------------------------------------------------------------
# Directories


def make_temp_dir(target: str | Path) -> Path:
    """A new empty directory beside `target` (same filesystem), to build `target`'s new
    contents in before `replace_dir` swaps it in. Stale ones of killed processes are removed."""
    target = Path(target).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    return Path(tempfile.mkdtemp(prefix=f"{_tmp_prefix(target)}{os.getpid()}-", suffix=TMP_SUFFIX, dir=target.parent))


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD = -100
    rc = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or a filesystem without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: str | Path, target: str | Path) -> Path:
    """Put the complete directory `new` at `target`, replacing what is there.

    `target` is absent or a directory. On Linux the two are exchanged in one atomic step
    (renameat2), so at every moment `target` holds either the old or the new contents; elsewhere
    the old directory is first renamed aside (a crash in between leaves it there, under its
    temporary name, and `target` absent). The old contents are then deleted.
    """
    new, target = Path(new), Path(target).expanduser()
    if not target.exists():
        os.replace(new, target)  # (an empty directory at target would also be replaced)
        _fsync_dir(target.parent)
        return target
    if target.is_dir() and not any(target.iterdir()):
        os.replace(new, target)
        _fsync_dir(target.parent)
        return target
    if _exchange(new, target):
        old = new  # the old contents now live under the temporary name
    else:
        old = temp_path_for(target)
        os.replace(target, old)
        os.replace(new, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# Checks before work starts


def check_writable_dir(directory: str | Path) -> Path:
    """Create `directory` (with parents) if needed and prove that files can be created in it.

    Raises
    ------
    OSError
        With ``filename`` set to the directory: it cannot be created or written to.
    """
    directory = Path(directory).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", str(directory)) from None
    except OSError as e:
        raise type(e)(e.errno, f"cannot create the directory ({e.strerror})", str(directory)) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TMP_SUFFIX, dir=directory)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write here ({e.strerror})", str(directory)) from None
    os.close(fd)
    os.unlink(probe)
    return directory
