"""The sweep's worker processes, seen from the sweep: start them, hand out trials, collect
their messages, stop them. Standard library only.

Each worker is `python -m microgpt.sweep.worker` with one BLAS/OpenMP thread; it trains in
its own process through the run library and talks JSON lines over its stdin and stdout.
Trials go to the worker that asks, preferring the seed it trained last: a worker remembers a
seed's shuffled documents and their fingerprint (runs.DocsCache), which cost as much as a
short trial to rebuild.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .space import SweepError

# One thread per worker: W workers on W cores, not W x cores threads fighting over them.
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                     "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                                     "NUMEXPR_NUM_THREADS")}  # fmt: skip


class WorkerDied(SweepError):
    """A worker ended without a word (killed, out of memory, or a bug it printed)."""


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Worker:
    def __init__(self, index: int):
        src = str(Path(__file__).resolve().parents[2])  # this microgpt, wherever it is
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, **ONE_THREAD, "MICROGPT_SWEEP_PARENT": str(os.getpid()),
               "PYTHONPATH": src + (os.pathsep + path if path else "")}  # fmt: skip
        self.index = index
        # NOTE: a session of its own, so a Ctrl-C at the terminal reaches the sweep alone; the
        # sweep then asks each worker to stop (SIGTERM), and a killed sweep takes its workers
        # with it (worker.die_with_parent)
        self.proc = subprocess.Popen([sys.executable, "-m", "microgpt.sweep.worker"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)  # fmt: skip
        self.buffer = b""
        self.task: dict | None = None  # the task it is working on
        self.seed: int | None = None  # the seed of its last trial
        self.signalled = False

    def send(self, task: dict) -> None:
        self.task, self.seed = task, task.get("seed")
        try:
            self.proc.stdin.write((json.dumps(task) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died; its stdout says so (EOF)

    def stop(self) -> None:
        """Ask it to stop after the current step (it writes a checkpoint)."""
        if not self.signalled and self.proc.poll() is None:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


class Pool:
    """W workers; `run(tasks)` yields each message as it arrives."""

    def __init__(self, workers: int):
        self.workers = [Worker(i) for i in range(workers)]
        self.selector = selectors.DefaultSelector()
        for w in self.workers:
            self.selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        self.stopping = False

    def stop(self) -> None:
        """Stop every busy worker after its current step; hand out nothing more."""
        self.stopping = True
        for w in self.workers:
            if w.task is not None:
                w.stop()

    def run(self, tasks: list[dict], poll: Callable[[], None]) -> Iterator[dict]:
        """Hand out `tasks` (a worker that asks gets one of its last seed first) and yield
        every message; `poll` is called between messages (a signal may have asked to stop)."""
        pending = list(tasks)
        idle = list(self.workers)
        while True:
            while idle and pending and not self.stopping:
                w = idle.pop(0)
                w.send(pending.pop(pick(pending, w.seed, {b.seed for b in self.workers
                                                           if b.task is not None})))  # fmt: skip
            if not any(w.task is not None for w in self.workers):
                return
            for key, _ in self.selector.select(timeout=0.2):
                w = key.data
                for message in self.read(w):
                    if not message.get("more"):  # the task is done (an Optuna task sends more)
                        w.task = None
                        idle.append(w)
                    yield message
            poll()

    def read(self, w: Worker) -> list[dict]:
        chunk = os.read(w.proc.stdout.fileno(), 1 << 16)
        if not chunk:  # the worker is gone
            self.selector.unregister(w.proc.stdout)
            code = w.proc.wait()
            if w.task is not None and not (self.stopping and w.signalled):
                raise WorkerDied(f"a sweep worker died (exit status {code}) while training "
                                 f"trial {w.task.get('trial')}; rerun the same command to "
                                 "continue")  # fmt: skip
            w.task = None
            return []
        w.buffer += chunk
        *lines, w.buffer = w.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self, kill: bool = False) -> None:
        """Let the workers end (EOF on their stdin); kill those still there after 10 s (at
        once with `kill`)."""
        for w in self.workers:
            w.close()
        for w in self.workers:
            try:
                if kill:
                    raise subprocess.TimeoutExpired(w.proc.args, 0)
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            w.proc.stdout.close()
        self.selector.close()


def pick(pending: list[dict], seed: int | None, busy: set) -> int:
    """The index of the task a worker gets: its last seed's first, else one of a seed no
    worker is on, else the first."""
    for wanted in (lambda t: t.get("seed") == seed, lambda t: t.get("seed") not in busy):
        for i, task in enumerate(pending):
            if wanted(task):
                return i
    return 0
