"""A run directory (`microgpt train --out DIR`): the one place a run writes files.

    DIR/config.json         what was run: configs, data file and its sha256, loop options
    DIR/metrics.jsonl       one JSON object per line: {"step", "loss", "lr"} for every step,
                            {"step", "val_loss", "val_bpc"} for every evaluation
    DIR/model.safetensors   the latest checkpoint (periodic, final, or on interrupt)
    DIR/best.safetensors    the checkpoint with the lowest validation loss so far
    DIR/.lock               held (flock) by the one process writing the run; empty otherwise

Three rules keep a run safe (standard library only):

- One writer: a process holds DIR/.lock for as long as it writes the run. A second writer is
  refused with the holder's pid and command. The operating system drops the lock when its
  holder dies, so a crashed run never blocks the next one.
- Nothing is replaced before its replacement is on disk: until the run's first checkpoint,
  the files of the run that was there (`--force`, `--resume`) stay as they were; the new
  config.json and metrics.jsonl are staged in temporary files and replace the old ones only
  after the first checkpoint is written. A command that fails before that leaves every
  existing file byte-identical and removes what it created.
- Every file goes through files.py: written atomically (temporary file, fsync, rename), never
  executable; metrics.jsonl grows a whole line at a time and is cut back to the checkpoint's
  step when a run resumes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import checkpoint as ckpt_io
from . import files
from .config import to_dict

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs are not locked
    fcntl = None

LATEST = "model.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
LOCK = ".lock"
RUN_FILES = (LATEST, BEST, METRICS, CONFIG)


class RunDirError(Exception):
    """A run directory that cannot be used; the message says what to do."""


def check_new(out: str | os.PathLike, force: bool) -> Path:
    """Check (without writing) that a new run may use `out`."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {str(out)!r} exists and is not a directory; choose another path")
    existing = [name for name in RUN_FILES if os.path.lexists(path / name)]
    if existing and not force:
        raise RunDirError(
            f"--out {str(out)!r} already holds a run ({existing[0]}); choose a new directory, "
            f"continue it with --resume {out}, or pass --force to replace it"
        )
    check_run_files(path, f"--out {str(out)!r}")
    return path


def check_run_files(path: Path, flag: str) -> None:
    """Each run file that is there must be a regular file (it will be replaced)."""
    for name in RUN_FILES:
        p = path / name
        if os.path.lexists(p) and (p.is_symlink() or not p.is_file()):
            raise RunDirError(
                f"{flag}: {str(p)!r} is not a regular file; move it away and try again"
            )


def check_resumable(out: str | os.PathLike, in_place: bool = False) -> Path:
    """The checkpoint to resume from `out` (a run directory, or a checkpoint file).

    With `in_place` (the resumed run writes its files), only a run's latest checkpoint may
    be given: writing beside any other file would overwrite the folder's model.safetensors,
    config.json and metrics.jsonl, which belong to another run or a later step.
    """
    path = Path(out)
    if path.is_dir():
        if not os.path.lexists(path / LATEST):
            raise RunDirError(
                f"--resume {str(out)!r}: the directory holds no {LATEST}; nothing to resume"
            )
        return path / LATEST
    if not os.path.lexists(path):
        raise RunDirError(f"--resume {str(out)!r}: no such run directory or checkpoint file")
    if in_place and path.name != LATEST:
        raise RunDirError(
            f"--resume {str(out)!r}: only a run's latest checkpoint ({LATEST}) continues in "
            f"its folder, and writing beside {path.name} would replace that folder's files; "
            f"copy it as {LATEST} into a new directory and resume that directory"
        )
    return path


def check_in_place(path: Path, flag: str, ckpt: ckpt_io.Checkpoint) -> None:
    """A folder a resumed run will write into must be the checkpoint's own run: its run
    files are regular files, and its config.json is the config.json of a microgpt run with
    this checkpoint's model, vocabulary and seed. (A folder with the checkpoint alone is
    its run too: nothing there would be replaced.)"""
    check_run_files(path, flag)
    config = path / CONFIG
    if not config.exists():
        others = [name for name in (METRICS, BEST) if os.path.lexists(path / name)]
        if others:
            raise RunDirError(
                f"{flag}: {str(path)!r} holds {others[0]} but no {CONFIG}, so it is not "
                "recognisably this checkpoint's run; resume a copy of the checkpoint in a new "
                "directory"
            )
        return
    try:
        record = json.loads(config.read_bytes())
    except (OSError, ValueError, RecursionError):
        record = None
    if not (isinstance(record, dict) and "microgpt_version" in record):
        raise RunDirError(
            f"{flag}: {str(config)!r} is not a microgpt run's configuration, and resuming "
            "would replace it; move it away, or resume a copy of the checkpoint in a new "
            "directory"
        )
    train = record.get("train") if isinstance(record.get("train"), dict) else {}
    if (record.get("model"), record.get("vocab"), train.get("seed")) != (
        to_dict(ckpt.model), "".join(ckpt.uchars), ckpt.train.seed
    ):
        raise RunDirError(
            f"{flag}: {str(config)!r} belongs to another run (its model, vocabulary or seed "
            "differ from the checkpoint's), and resuming would replace its files; resume a "
            "copy of the checkpoint in a new directory"
        )


def kept_metrics(path: Path, step: int) -> bytes:
    """The lines of DIR/metrics.jsonl up to `step`, which a resumed run continues after.

    A last line cut short (a kill in the middle of writing it) is dropped; a damaged line
    anywhere else is refused, rather than silently dropping what follows it.
    """
    p = path / METRICS
    if not os.path.lexists(p):
        return b""
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as e:
        raise RunDirError(f"cannot read {str(p)!r}: {files.describe(e)}") from None
    except UnicodeDecodeError as e:
        raise RunDirError(
            f"{str(p)!r} is not a metrics log (byte {e.start} is not UTF-8); move it away to "
            "resume without it"
        ) from None
    lines = text.splitlines(keepends=True)
    kept = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if not (isinstance(record, dict) and type(record.get("step")) is int):
            if i == len(lines) - 1 and not line.endswith("\n"):
                break  # cut short by a kill: newer than any checkpoint
            raise RunDirError(
                f"{str(p)!r} line {i + 1} is not a metrics record (the file is damaged); "
                "move it away to resume without it"
            )
        if record["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept).encode("utf-8")


def remove_stale(path: Path) -> None:
    """Temporary files a killed writer left (only the lock's holder may call this)."""
    for name in RUN_FILES:
        for stale in path.glob(f".{name}.*.tmp"):
            files.remove(stale)


# --- one writer -------------------------------------------------------------------------------


class Lock:
    """DIR/.lock, held with flock(2) by the process writing the run (released on exit, even a
    crash). While held it says who holds it: `pid N: the command line`."""

    def __init__(self, path: Path, fd: int, created: bool):
        self.path = path
        self.fd = fd
        self.created = created  # the file did not exist before (removed if the run fails)

    @classmethod
    def acquire(cls, folder: Path, flag: str) -> Lock:
        path = folder / LOCK
        created = not os.path.lexists(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | files.CLOEXEC | files.NOFOLLOW,
                         files.FILE_MODE)  # fmt: skip
        except OSError as e:
            raise files.write_error(path, e) from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
                finally:
                    os.close(fd)
                raise RunDirError(
                    f"{flag}: {str(folder)!r} is being written by another microgpt "
                    f"({holder or 'starting up'}); wait for it to finish, or choose another "
                    "directory"
                ) from None
        lock = cls(path, fd, created)
        command = " ".join(["microgpt", *sys.argv[1:]]).replace("\n", " ")[:300]
        try:
            os.ftruncate(fd, 0)
            files._write_all(fd, f"pid {os.getpid()}: {command}\n".encode("utf-8", "replace"))
        except OSError as e:
            lock.release()
            raise files.write_error(path, e) from None
        return lock

    def release(self) -> None:
        """Let go of the lock; the file is emptied, or removed when this run created it and
        leaves nothing (see RunDir.close)."""
        if self.fd < 0:
            return
        try:
            if self.created:
                files.remove(self.path)
            else:
                os.ftruncate(self.fd, 0)
        except OSError:
            pass
        os.close(self.fd)  # closing the descriptor releases the flock
        self.fd = -1


# --- a run's files ----------------------------------------------------------------------------


class RunDir:
    """Writes a run's files; `None` in place of a RunDir means the run writes nothing.

    Until the first checkpoint (`committed`), a file that already exists is only staged: the
    new config.json in a temporary file, new metrics lines in a temporary metrics file that
    starts with the lines kept (resume). The first `save` writes the checkpoint, then renames
    the staged files over the old ones and removes the replaced run's leftover files.
    `close` ends the run: an uncommitted one leaves the folder as it found it.
    """

    def __init__(self, path: Path, lock: Lock | None, replacing: bool = False):
        self.path = path
        self.lock = lock
        self.replacing = replacing  # a new run over an old one (--force)
        self.saved_step: int | None = None  # step of the latest checkpoint on disk
        self.best_step: int | None = None  # step of the best checkpoint this run wrote
        self.committed = False
        self.created: list[Path] = []  # files this run made (removed if it fails)
        self.made_dirs: list[Path] = []  # folders this run made, outermost first (likewise)
        self._staged: list[tuple[Path, Path]] = []  # (temporary file, the file it replaces)
        self._metrics: files.Appender | None = None

    @property
    def latest(self) -> Path:
        return self.path / LATEST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @classmethod
    def create(cls, out: str | os.PathLike, force: bool, config: dict) -> RunDir:
        """Start a new run in `out` (`force`: over the run there, replaced at the first
        checkpoint)."""
        path = check_new(out, force)
        made = _make_dirs(path, f"--out {str(out)!r}")
        try:
            lock = Lock.acquire(path, f"--out {str(out)!r}")
        except BaseException:
            _remove_dirs(made)
            raise
        run = cls(path, lock)
        run.made_dirs = made
        try:
            check_new(out, force)  # again, under the lock: another run may have finished here
            remove_stale(path)
            run.replacing = any(os.path.lexists(path / name) for name in RUN_FILES)
            run._write(CONFIG, _config_bytes(config))
            run._open_metrics(b"")
        except BaseException:
            run.close()
            raise
        return run

    @classmethod
    def reopen(cls, path: Path, step: int, config: dict, lock: Lock | None,
               kept: bytes = b"") -> RunDir:  # fmt: skip
        """Continue the run in `path` from its checkpoint at `step`; `kept` is kept_metrics'
        (the lines up to that step). Nothing changes there until the first checkpoint."""
        run = cls(path, lock)
        run.saved_step = step
        try:
            remove_stale(path)
            run._write(CONFIG, _config_bytes(config))
            run._open_metrics(kept)
        except BaseException:
            run.close()
            raise
        return run

    # --- writing ----------------------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> None:
        """A whole file: written now if new, staged if it would replace one (uncommitted)."""
        target = self.path / name
        if self.committed or not os.path.lexists(target):
            files.write_atomic(target, data)
            if not self.committed:
                self.created.append(target)
        else:
            self._staged.append((files.write_temp(target, data), target))

    def _open_metrics(self, kept: bytes) -> None:
        target = self.path / METRICS
        if os.path.lexists(target):  # staged: a temporary metrics file, renamed at the commit
            tmp = self.path / f".{METRICS}.{os.getpid()}.pending.tmp"
            files.remove(tmp)
            self._staged.append((tmp, target))
            self._metrics = files.Appender(tmp)
        else:
            self._metrics = files.Appender(target)
            self.created.append(target)
        if kept:
            self._metrics.write(kept.decode("utf-8"))

    def log(self, record: dict) -> None:
        """Append one line to metrics.jsonl (a NaN or infinite number is written as null:
        metrics.jsonl stays standard JSON)."""
        clean = {k: (None if isinstance(v, float) and not _finite(v) else v)
                 for k, v in record.items()}  # fmt: skip
        self._metrics.write(json.dumps(clean) + "\n")

    def save(self, ckpt: ckpt_io.Checkpoint, best: bool = False) -> None:
        """Write the latest checkpoint (or the best-validation one). The first one commits the
        run: the latest checkpoint is always written then (a best one too), so a run folder
        that holds a run can always be resumed."""
        if self.committed:
            ckpt_io.save(self.best if best else self.latest, ckpt)
        else:
            data = ckpt_io.encode(ckpt)
            if best:  # staged like the others: it may replace the old run's best
                self._staged.append((files.write_temp(self.best, data), self.best))
            ckpt_io.write_atomic(self.latest, data)  # the commit: the new run is on disk
            self.saved_step = ckpt.step
            self._commit()
        if best:
            self.best_step = ckpt.step
        else:
            self.saved_step = ckpt.step

    def _commit(self) -> None:
        """The first checkpoint is on disk: the staged files replace the old ones, and a
        replaced run's best checkpoint, if this run has none, goes."""
        metrics_target = self.path / METRICS
        for tmp, target in self._staged:
            if target == metrics_target:
                self._metrics.sync()
                self._metrics.close()
            files.replace(tmp, target)
        if self.replacing and self.best not in [target for _, target in self._staged]:
            files.remove(self.best)
        self._staged = []
        self.committed = True
        self.replacing = False
        if self._metrics is not None and self._metrics.fd < 0:
            self._metrics = files.Appender(metrics_target)

    def close(self) -> None:
        """The run is over. Before its first checkpoint that means it failed: the staged files
        and every file it created go, and the folder is as it was."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if not self.committed:
            for tmp, _ in self._staged:
                files.remove(tmp)
            self._staged = []
            for p in reversed(self.created):
                files.remove(p)
            self.created = []
        if self.lock is not None:
            self.lock.created = self.lock.created and not self.committed
            self.lock.release()
            self.lock = None
        if not self.committed:
            _remove_dirs(self.made_dirs)
            self.made_dirs = []


def _finite(x: float) -> bool:
    return x - x == 0  # False for NaN and the infinities


def _config_bytes(config: dict) -> bytes:
    return (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _make_dirs(path: Path, flag: str) -> list[Path]:
    """Create `path` and its missing parents; the folders made, outermost first."""
    missing = []
    p = path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    made = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            continue
        except OSError as e:
            _remove_dirs(made)
            raise RunDirError(f"cannot create {flag}: {files.describe(e)}") from None
        made.append(d)
    return made


def _remove_dirs(made: list[Path]) -> None:
    """Remove folders this run made, innermost first, if they are empty."""
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            pass
