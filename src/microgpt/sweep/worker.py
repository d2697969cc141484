"""A sweep's worker: `python -m microgpt.sweep.worker`, one per core, started by the sweep.

It reads one task per line on stdin (JSON), trains it in this process through the run
library (runs.start into the trial's directory, or runs.resume from its checkpoint), and
writes one message per line on stdout: the trial's result, or that it stopped. The sweep
sets one BLAS/OpenMP thread in its environment before it starts, so workers do not fight
over the cores. It stops after the current step on SIGTERM (writing a checkpoint), ignores
SIGINT (the sweep decides), and dies with the sweep (Linux: PR_SET_PDEATHSIG; elsewhere it
stops at the next step once its parent is gone).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from .. import rundir, runs
from ..train import TrainingError
from .space import spec_from_dict

CURVE_POINTS = 100  # a trial's loss curve in results.jsonl: the mean loss of each 1% of steps


def train_trial(spec: runs.RunSpec, path: Path, cache: runs.DocsCache, should_stop,
                on_eval=None) -> tuple[runs.Run | None, str, str | None, float]:  # fmt: skip
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
    width = max(1, math.ceil(len(losses) / CURVE_POINTS))
    curve = [[min(i + width, len(losses)), round(math.fsum(losses[i:i + width]) /
                                                 len(losses[i:i + width]), 6)]
             for i in range(0, len(losses), width)]  # fmt: skip
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


def run_task(task: dict, cache: runs.DocsCache, should_stop) -> dict:
    """One grid trial: its result, or {"stopped"}, or a user error's message."""
    spec = spec_from_dict(task["spec"])
    try:
        run, status, error, seconds = train_trial(spec, Path(task["dir"]), cache, should_stop)
    except runs.USER_ERRORS as e:
        return {"trial": task["trial"], "user_error": str(e)}
    if status == "stopped":
        return {"trial": task["trial"], "stopped": True}
    return {"trial": task["trial"], "result": outcome(task, run, status, error, seconds)}


def die_with_parent(parent: int) -> None:
    """Be killed when the sweep is (a SIGKILLed sweep cannot stop its workers itself)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


class Stop:
    """SIGTERM: stop after the current step; the parent's death: the same."""

    def __init__(self, parent: int):
        self.parent = parent
        self.signum: int | None = None
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _handle(self, signum, frame):
        self.signum = signum

    def requested(self) -> bool:
        return self.signum is not None or os.getppid() != self.parent


def main() -> int:
    parent = int(os.environ.get("MICROGPT_SWEEP_PARENT", os.getppid()))
    die_with_parent(parent)
    stop = Stop(parent)
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")  # messages to the sweep
    os.dup2(2, 1)  # anything else printed goes to stderr
    cache = runs.DocsCache()

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    for line in sys.stdin:
        task = json.loads(line)
        if task["kind"] == "optuna":
            from .search import run_study

            run_study(task, cache, stop.requested, send)
        else:
            send(run_task(task, cache, stop.requested))
        if stop.requested():
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
