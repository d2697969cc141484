"""A sweep directory (`microgpt sweep --out DIR`): what it holds and how it is written.

    DIR/sweep.json       what every trial has in common: the swept keys, the fixed train
                         flags, the data file's sha256 (written once, when the sweep begins)
    DIR/results.jsonl    one JSON object per finished trial, appended atomically per line
    DIR/summary.csv      per config: mean and std over seeds, ranked by validation loss
    DIR/report.html      the pictures and the table in one self-contained page
    DIR/pictures/*.svg   the same pictures as files
    DIR/trials/NAME/     one ordinary run directory per trial (config.json, metrics.jsonl,
                         model.safetensors, best.safetensors)

A rerun with the same swept keys and fixed flags continues the sweep and may add values,
seeds or random draws; anything else is refused (the results would not be comparable).
Standard library only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import checkpoint as ckpt_io
from .. import files
from ..version import __version__
from .space import SweepError

SWEEP = "sweep.json"
RESULTS = "results.jsonl"
SUMMARY = "summary.csv"
REPORT = "report.html"
PICTURES = "pictures"
TRIALS = "trials"
LOCK = ".lock"
KIND = "microgpt-sweep"
VERSION = 1


def definition(backend: str, swept: list[str], fixed: dict, data_sha256: dict,
               **extra) -> dict:  # fmt: skip
    """What sweep.json records; a rerun must agree on everything but `microgpt_version`."""
    return {"kind": KIND, "version": VERSION, "microgpt_version": __version__,
            "backend": backend, "swept": sorted(swept), "fixed": fixed,
            "data_sha256": data_sha256, **extra}  # fmt: skip


def check(out: str, wanted: dict) -> Path:
    """Check (writing nothing) that `out` is empty, absent, or this same sweep."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise SweepError(f"--out {out!r} exists and is not a directory; choose another path")
    if not path.is_dir() or all(p.name == LOCK for p in path.iterdir()):
        return path
    try:
        saved = json.loads((path / SWEEP).read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or saved.get("kind") != KIND:
            raise ValueError
    except (OSError, ValueError):
        raise SweepError(f"--out {out!r} holds something that is not a sweep (no valid {SWEEP}); "
                         "choose a new or empty directory") from None  # fmt: skip
    for what in wanted:
        if what != "microgpt_version" and saved.get(what) != wanted[what]:
            why = describe(what, saved, wanted)
            raise SweepError(f"--out {out!r} holds another sweep ({why}); rerun it with the "
                             "same flags, or choose a new --out")  # fmt: skip
    return path


def describe(what: str, saved: dict, wanted: dict) -> str:
    """The first difference between two definitions, in words."""
    if what == "swept":
        return f"it sweeps {', '.join(saved['swept']) or 'seeds only'}, not " + (
            ", ".join(wanted["swept"]) or "seeds only")
    if what == "fixed":
        fixed, now = saved.get("fixed") or {}, wanted["fixed"]
        key = next(k for k in sorted(set(fixed) | set(now)) if fixed.get(k) != now.get(k))
        return f"its {key} is {fixed.get(key)!r}, not {now.get(key)!r}"
    if what == "data_sha256":
        return "its data file has changed since it began (sha256 differs)"
    return f"its {what} is {saved.get(what)!r}, not {wanted[what]!r}"


class SweepDir:
    """An open sweep directory: held by one `microgpt sweep` at a time (a lock file)."""

    def __init__(self, path: Path, wanted: dict):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._lock = lock(path / LOCK)
        if not (path / SWEEP).is_file():
            text = json.dumps(wanted, indent=2, sort_keys=True) + "\n"
            ckpt_io.write_atomic(path / SWEEP, text.encode("utf-8"))
        (path / TRIALS).mkdir(exist_ok=True)

    def trial_dir(self, name: str) -> Path:
        return self.path / TRIALS / name

    def results(self) -> dict[str, dict]:
        """The finished trials by name. A line cut short by a kill (or any line that is not a
        result) is dropped from the file, so that trial runs again."""
        return read_results(self.path / RESULTS)

    def append(self, result: dict) -> None:
        append_line(self.path / RESULTS, json.dumps(result, sort_keys=True))

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def lock(path: Path) -> int | None:
    """Hold an exclusive lock on `path` until the process ends (None where there is no
    flock); a second sweep on the same directory is refused."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one sweep per directory is the user's to keep
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SweepError(f"{path.parent} is in use by another microgpt sweep; wait for it to "
                         "finish, or choose another --out") from None  # fmt: skip
    return fd


def read_results(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    good, bad = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            result = json.loads(line)
            if not (line.endswith(b"\n") and isinstance(result, dict) and "trial" in result):
                raise ValueError
        except ValueError:
            bad += 1
            continue
        good.append((result, line))
    if bad:  # rewrite before anything is appended after a torn line
        ckpt_io.write_atomic(path, b"".join(line for _, line in good))
    out: dict[str, dict] = {}
    for result, _ in good:
        out.setdefault(result["trial"], result)
    return out


def append_line(path: Path, line: str) -> None:
    """Append one line with one write and fsync it: a kill leaves it whole or cut short
    (and a line cut short is dropped by read_results)."""
    out = files.Appender(path)  # the one write path: an OSError is one line, not a traceback
    try:
        out.write(line + "\n")
        out.sync()
    finally:
        out.close()
