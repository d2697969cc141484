"""One trial: train it (start, or resume from its checkpoint) in its run directory through
the run library, and the line results.jsonl gets for it. Standard library only.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

from .. import rundir, runs
from ..train import TrainingError

# A trial's loss curve in results.jsonl: 100 points, each the mean loss of the 5% of the
# steps that end there (a batch-1 loss is too noisy to see a hundred curves through).
CURVE_POINTS, CURVE_WINDOW = 100, 0.05


def train_trial(spec: runs.RunSpec, path: Path, cache: runs.DocsCache, should_stop,
                on_eval=None) -> tuple[runs.Run, str, str | None, float]:  # fmt: skip
    """Start (or resume, when it has a checkpoint) the trial in `path` and train it.

    Returns (run, status, error, seconds): status is "finished", "stopped" or "diverged".
    """
    t0 = time.perf_counter()
    for stale in path.glob(".*.tmp"):  # a checkpoint write cut short by a kill
        stale.unlink()
    with warnings.catch_warnings():
        # as `microgpt train`: a diverged run is one line (TrainingError), not NumPy's warnings
        warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) "
                                "encountered", RuntimeWarning)  # fmt: skip
        if (path / rundir.LATEST).is_file():
            run = runs.resume(runs.ResumeSpec(str(path), engine=spec.engine,
                                              checkpoint_every=spec.checkpoint_every))  # fmt: skip
        else:  # new, or killed before its first checkpoint: start again (the same run)
            run = runs.start(spec, out=path, force=True, cache=cache)
        try:
            finished = runs.train(run, should_stop=should_stop, on_eval=on_eval)
        except TrainingError as e:
            return run, "diverged", str(e), time.perf_counter() - t0
    return run, "finished" if finished else "stopped", None, time.perf_counter() - t0


def outcome(task: dict, run: runs.Run, status: str, error: str | None, seconds: float) -> dict:
    """The trial's line in results.jsonl, from its metrics.jsonl (so a resumed trial reports
    all its steps, and the same numbers as one never interrupted)."""
    path = Path(task["dir"])
    records = [json.loads(line) for line in (path / rundir.METRICS).read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    last = max(1, round(len(losses) / 10))  # the last 10% of the steps
    every = max(1, math.ceil(len(losses) / CURVE_POINTS))
    window = max(1, round(len(losses) * CURVE_WINDOW))
    ends = sorted({*range(every, len(losses), every), len(losses)} - {0})
    curve = [[end, round(math.fsum(losses[max(0, end - window):end]) /
                         (end - max(0, end - window)), 6)] for end in ends]  # fmt: skip
    return {
        "trial": task["trial"], "dir": f"trials/{task['trial']}", "config": task["config"],
        "seed": task["seed"], "status": status, "error": error,
        "train_loss": math.fsum(losses[-last:]) / last if losses else None,
        "val_loss": evals[-1]["val_loss"] if evals and status != "diverged" else None,
        "val_bpc": evals[-1]["val_bpc"] if evals and status != "diverged" else None,
        "steps": len(losses), "seconds": round(seconds, 4), "engine": run.engine,
        "dtype": run.trainer.engine.dtype, "loss_curve": curve,
        "val_curve": [[r["step"], r["val_loss"]] for r in evals],
    }  # fmt: skip
