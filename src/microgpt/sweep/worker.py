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
import os
import signal
import sys
from pathlib import Path

from .. import runs
from .space import spec_from_dict
from .trial import outcome, train_trial


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
