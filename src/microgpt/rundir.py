"""A run directory (`microgpt train --out DIR`): the one place a run writes files.

    DIR/config.json         what was run: configs, data file and its sha256, loop options
    DIR/metrics.jsonl       one JSON object per line: {"step", "loss", "lr"} for every step,
                            {"step", "val_loss", "val_bpc"} for every evaluation
    DIR/model.safetensors   the latest checkpoint (periodic, final, or on interrupt)
    DIR/best.safetensors    the checkpoint with the lowest validation loss so far

Every file is replaced atomically (checkpoint.write_atomic), so a kill at any moment leaves
the previous version; metrics.jsonl is appended and flushed line by line, and cut back to
the checkpoint's step on resume. Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import checkpoint as ckpt_io

LATEST = "model.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
RUN_FILES = (LATEST, BEST, METRICS, CONFIG)


class RunDirError(Exception):
    """A run directory that cannot be used; the message says what to do."""


def check_new(out: str | os.PathLike, force: bool) -> Path:
    """Check (without writing) that a new run may use `out`."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--out {str(out)!r} exists and is not a directory; choose another path")
    existing = [name for name in RUN_FILES if (path / name).exists()]
    if existing and not force:
        raise RunDirError(
            f"--out {str(out)!r} already holds a run ({existing[0]}); choose a new directory, "
            f"continue it with --resume {out}, or pass --force to overwrite it"
        )
    return path


def check_resumable(out: str | os.PathLike) -> Path:
    """The latest checkpoint of the run in `out` (a directory or the checkpoint file)."""
    path = Path(out)
    if path.is_file():
        return path
    if not path.is_dir():
        raise RunDirError(f"--resume {str(out)!r}: no such run directory")
    if not (path / LATEST).is_file():
        raise RunDirError(
            f"--resume {str(out)!r}: the directory holds no {LATEST}; nothing to resume"
        )
    return path / LATEST


class RunDir:
    """Writes a run's files; `None` in place of a RunDir means the run writes nothing."""

    def __init__(self, path: Path):
        self.path = path
        self.saved_step: int | None = None  # step of the latest checkpoint written or found
        self._metrics = None

    @property
    def latest(self) -> Path:
        return self.path / LATEST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @classmethod
    def create(cls, out: str | os.PathLike, force: bool, config: dict) -> RunDir:
        """Start a new run in `out`: a fresh config.json and metrics.jsonl."""
        path = check_new(out, force)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create --out {str(out)!r}: {e.strerror}") from None
        run = cls(path)
        for name in (BEST, LATEST):  # with --force: a stale checkpoint must not outlive its run
            if (path / name).exists():
                (path / name).unlink()
        run.write_config(config)
        ckpt_io.write_atomic(path / METRICS, b"")
        return run

    @classmethod
    def reopen(cls, path: Path, step: int, config: dict) -> RunDir:
        """Continue the run in `path` from its checkpoint at `step`: drop metrics past it."""
        run = cls(path)
        run.saved_step = step
        for stale in path.glob(f".{LATEST}.*.tmp"):  # left by a kill in the middle of a write
            stale.unlink()
        kept = []
        if (path / METRICS).is_file():
            for line in (path / METRICS).read_text(encoding="utf-8").splitlines(keepends=True):
                try:
                    record = json.loads(line)
                except ValueError:
                    break  # a line cut short by the kill; everything after it is newer
                if isinstance(record, dict) and record.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        ckpt_io.write_atomic(path / METRICS, "".join(kept).encode("utf-8"))
        run.write_config(config)
        return run

    def write_config(self, config: dict) -> None:
        text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        ckpt_io.write_atomic(self.path / CONFIG, text.encode("utf-8"))

    def log(self, record: dict) -> None:
        """Append one line to metrics.jsonl (flushed, so a kill loses at most this line)."""
        if self._metrics is None:
            self._metrics = open(self.path / METRICS, "a", encoding="utf-8")  # noqa: SIM115
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def save(self, ckpt: ckpt_io.Checkpoint, best: bool = False) -> None:
        """Write the latest checkpoint (or the best-validation one)."""
        if best:
            ckpt_io.save(self.best, ckpt)
        else:
            ckpt_io.save(self.latest, ckpt)
            self.saved_step = ckpt.step

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
