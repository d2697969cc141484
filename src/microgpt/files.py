"""The one way microgpt writes files. Standard library only.

Every byte a command writes to disk goes through `os.write` in `_write_all` below, by one of
two doors:

    write_atomic(path, data)    a whole file: a temporary file in the same folder is written,
                                fsynced and renamed over `path`, so a crash or a full disk
                                leaves either the old file or the new one, never a mix
    Appender(path)              a log that grows line by line (metrics.jsonl): each line is
                                written whole and flushed, so a kill loses at most that line

Files are created mode 0644 (less the umask), never executable. When the operating system
refuses (a full disk, a read-only folder, /proc), the OSError becomes a `WriteError`: an
OSError whose message is one line naming the file and what to do, which the command line
prints as `microgpt: error: ...`. Nothing is left behind: the temporary file is removed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

FILE_MODE = 0o644  # rw-r--r--: a checkpoint is data, never a program
# open() flags that not every system has (Windows): 0 where absent
CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # not inherited by processes we start
NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO does not wait for a writer
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
BINARY = getattr(os, "O_BINARY", 0)


class WriteError(OSError):
    """A file the operating system would not let us write; one line, saying what to do."""


def describe(e: OSError) -> str:
    """An OSError in a few words: 'No space left on device', without the errno number."""
    return e.strerror or str(e) or e.__class__.__name__


def what_to_do(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space, or write somewhere else"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "choose a folder you can write to"
    return "check the path, or write somewhere else"


def write_error(path: str | os.PathLike, e: OSError) -> WriteError:
    if isinstance(e, WriteError):
        return e
    err = WriteError(f"cannot write {str(path)!r}: {describe(e)}; {what_to_do(e)}")
    err.errno = e.errno
    return err


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte (os.write may write fewer than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _open_new(path: Path) -> tuple[int, Path]:
    """A new temporary file beside `path`, named .NAME.<pid>.<n>.tmp (a kill can leave one;
    the next writer of that folder removes it, see rundir)."""
    for n in range(1000):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{n}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC | BINARY, FILE_MODE)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "too many temporary files", str(path))


def write_temp(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a fsynced temporary file beside `path` and return its name; `replace`
    then puts it in place. For a change of several files at once: every temporary file is
    written (the step that can fail on a full disk) before any of them replaces anything."""
    path = Path(path)
    try:
        fd, tmp = _open_new(path)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        try:
            if path.exists() and hasattr(os, "fchmod"):  # the old file's permissions, no x
                os.fchmod(fd, path.stat().st_mode & 0o666)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException as e:
        remove(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    return tmp


def replace(tmp: Path, path: str | os.PathLike) -> None:
    """Rename a temporary file from `write_temp` over `path` (atomic), then make the rename
    itself durable (fsync of the folder)."""
    path = Path(path)
    try:
        os.replace(tmp, path)
    except OSError as e:
        remove(tmp)
        raise write_error(path, e) from None
    sync_dir(path.parent)


def write_atomic(
    path: str | os.PathLike, data: bytes, _before_rename: Callable[[Path], None] | None = None
) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one.

    `_before_rename` is a fault-injection hook for tests: called with the temporary file's
    path after it is written and before it replaces `path`.
    """
    tmp = write_temp(path, data)
    if _before_rename is not None:
        try:
            _before_rename(tmp)
        except BaseException as e:
            remove(tmp)
            if isinstance(e, OSError):
                raise write_error(path, e) from None
            raise
    replace(tmp, path)


def sync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder, so that renames in it survive a power cut (best effort)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY | CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(path: str | os.PathLike) -> None:
    """Remove a file if it is there (cleaning up: never raises)."""
    try:
        os.unlink(path)
    except OSError:
        pass


class Appender:
    """A file that grows one whole line at a time (created if absent, mode 0644)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | CLOEXEC | BINARY, FILE_MODE
            )
        except OSError as e:
            raise write_error(self.path, e) from None

    def write(self, text: str) -> None:
        try:
            _write_all(self.fd, text.encode("utf-8"))
        except OSError as e:
            raise write_error(self.path, e) from None

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
