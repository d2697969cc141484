"""The sweep's table: per config, the mean and standard deviation over its seeds, ranked by
validation loss; saved as CSV, printed, and the best config as a `microgpt train` command.
Standard library only.

A config whose trials diverged (a NaN or infinite loss) ranks after every config that did
not, and its validation loss is over the trials that finished. The standard deviation is
the sample's (n - 1); with one seed it is blank.
"""

from __future__ import annotations

import csv
import io
import math
import shlex
import statistics
from dataclasses import dataclass

from ..runs import RunSpec
from .space import SPEC_KEYS, flag, show_value

STATS = ("val_loss", "val_bpc", "train_loss")


@dataclass
class Row:
    rank: int
    config: dict
    trials: list[dict]  # its results, one per seed

    def values(self, what: str) -> list[float]:
        return [t[what] for t in self.trials if t.get(what) is not None]

    def mean(self, what: str) -> float | None:
        v = self.values(what)
        return math.fsum(v) / len(v) if v else None

    def std(self, what: str) -> float | None:
        v = self.values(what)
        return statistics.stdev(v) if len(v) >= 2 else None

    @property
    def diverged(self) -> int:
        return sum(t["status"] == "diverged" for t in self.trials)


def rank(results: list[dict]) -> list[Row]:
    """Group results by config (in first-seen order), rank by mean validation loss."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(repr(sorted(r["config"].items())), []).append(r)
    rows = [Row(0, trials[0]["config"], sorted(trials, key=lambda t: t["seed"]))
            for trials in groups.values()]  # fmt: skip

    def key(row: Row):
        mean = row.mean("val_loss")
        return (row.diverged > 0, math.inf if mean is None or math.isnan(mean) else mean)

    rows.sort(key=key)
    for i, row in enumerate(rows):
        row.rank = i + 1
    return rows


def train_command(spec: RunSpec, engine: str | None = None, dtype: str | None = None) -> str:
    """The `microgpt train` command line that trains `spec` (on `engine`, `dtype`: the
    trial's own) and so reproduces its losses."""
    args = ["microgpt", "train"]
    engine, dtype = engine or spec.engine.name, dtype or spec.engine.dtype
    if engine:
        args += ["--engine", engine]
    if dtype and dtype != "float64":
        args += ["--dtype", dtype]
    if spec.engine.device:
        args += ["--device", spec.engine.device]
    for key in SPEC_KEYS:
        value = getattr(spec, key)
        default = {"preset": "final", "eval_every": 0, "checkpoint_every": 0}.get(key)
        if value is not None and value != default:
            args += [flag(key), show_value(value)]
    if spec.engine.compile:
        args.append("--compile")
    return shlex.join(args)


def number(x: float | None, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def plus_minus(row: Row, what: str) -> str:
    mean, std = row.mean(what), row.std(what)
    if mean is None:
        return "-"
    return number(mean) + ("" if std is None else f" ± {number(std)}")


def table(rows: list[Row], keys: list[str]) -> str:
    """The ranked table as text (what `microgpt sweep` prints)."""
    head = ["rank", *keys, "seeds", "val loss", "val bits/char", "train loss", "s/trial"]
    body = [[str(r.rank), *(show_value(r.config.get(k, "")) for k in keys),
             str(len(r.trials)) + (f" ({r.diverged} diverged)" if r.diverged else ""),
             plus_minus(r, "val_loss"), plus_minus(r, "val_bpc"), plus_minus(r, "train_loss"),
             number(r.mean("seconds"), 2)] for r in rows]  # fmt: skip
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [head, *body])  # fmt: skip


def to_csv(rows: list[Row], keys: list[str], commands: list[str]) -> str:
    """The ranked table as CSV: full-precision numbers, one `microgpt train` command per row."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    stats = [f"{what}_{s}" for what in STATS for s in ("mean", "std")]
    w.writerow(["rank", *keys, "seeds", *stats, "seconds_mean", "diverged", "trials", "command"])
    for row, command in zip(rows, commands):
        cells = []
        for what in STATS:
            cells += [row.mean(what), row.std(what)]
        w.writerow([row.rank, *(row.config.get(k, "") for k in keys), len(row.trials),
                    *("" if c is None else repr(c) for c in cells), row.mean("seconds"),
                    row.diverged, " ".join(t["dir"] for t in row.trials), command])  # fmt: skip
    return out.getvalue()
