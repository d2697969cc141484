"""One studio session: a run trained on a background thread, and the events it streams.

Training is `train.run`, the loop `microgpt train` runs, with hooks that stream each step,
fresh samples and the validation loss. Each step (and its evaluation) holds `Session.lock`
(the engine is not thread-safe); every view takes the same lock, so a look inside sees the
weights between two steps, never halfway through an Adam update. Samples come from
`sample.Draw` and their report from `sample.make_report`, as `microgpt sample` makes them;
they use their own generator, so they never disturb the run's random stream.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from ..draw import Draw, SampleConfig
from ..engine import Engine
from ..evaluate import Evaluation
from ..fingerprint import Fingerprint
from ..init import num_params
from ..report import Report, make_report
from ..train import StepResult
from ..train import run as run_training
from . import views
from .runs import Run


class FairLock:
    """A reentrant lock that serves waiters in arrival order.

    NOTE: the training thread takes the lock again right after releasing it; with a plain
    lock it usually wins, and a page request could wait for the whole run. Here a request
    waits at most one step.
    """

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[object] = deque()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            ticket = object()
            self._queue.append(ticket)
            while self._owner is not None or self._queue[0] is not ticket:
                self._cond.wait()
            self._queue.popleft()
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class EventLog:
    """Numbered events of the current run, for server-sent events that resume.

    Ids only grow, across resets too. A browser reconnecting with Last-Event-ID gets the
    events after that id; one whose id is older than the run (or unknown) gets the whole
    run again, starting with its `run` event, which tells the page to start over.
    """

    def __init__(self, max_events: int = 100_000):
        self.cond = threading.Condition()
        self.events: deque[tuple[int, str, str]] = deque(maxlen=max_events)
        self.next_id = 1
        self.closed = False

    def emit(self, kind: str, data: dict, new_run: bool = False) -> int:
        payload = json.dumps(data, allow_nan=False, separators=(",", ":"))
        with self.cond:
            if new_run:
                self.events.clear()
            event_id = self.next_id
            self.next_id += 1
            self.events.append((event_id, kind, payload))
            self.cond.notify_all()
        return event_id

    def since(self, last_id: int | None) -> list[tuple[int, str, str]]:
        with self.cond:
            events = list(self.events)
        if not events:
            return []
        first = events[0][0]
        if last_id is None or last_id < first or last_id >= self.next_id:
            # NOTE: a trimmed log (over max_events) starts after its run event; the page then
            # draws the curve from the first step it still holds.
            return events
        return [e for e in events if e[0] > last_id]

    def wait(self, last_id: int | None, timeout: float) -> list[tuple[int, str, str]]:
        """Events after `last_id`, waiting up to `timeout` seconds for the first one."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.closed or (self.events and self.events[-1][0] != last_id),
                timeout=timeout,
            )
        return self.since(last_id)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class Session:
    """A run, its training thread and the views on it.

    `make_run` builds a fresh `runs.Run` (from the flags or a checkpoint); reset calls it
    again, so a reset run repeats the first one's numbers exactly.
    """

    def __init__(
        self,
        make_run: Callable[[], Run],
        sample_every: int = 50,
        num_samples: int = 8,
        temperature: float = 0.5,
        val_every: int = 100,
    ):
        self.make_run = make_run
        self.sample_every = sample_every
        self.num_samples = num_samples
        self.temperature = temperature
        self.val_every = val_every
        self.lock = FairLock()  # held for every engine call
        self.events = EventLog()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.run_id = 0
        self._new_run()

    # --- state ----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self.run.trainer.engine

    def _new_run(self) -> None:
        self.run = self.make_run()
        self.run_id += 1
        trainer = self.run.trainer
        self.sample_rng = random.Random(trainer.train.seed)
        self._window: deque[tuple[int, float]] = deque(maxlen=20)  # (tokens, seconds)
        self.events.emit("run", self.state(), new_run=True)
        self._emit_snapshot()

    def state(self) -> dict:
        tr = self.run.trainer
        model, vocab = tr.model, tr.tokenizer.vocab_size
        return {
            "run": self.run_id,
            "engine": tr.engine.name,
            "source": self.run.source,
            "data_path": self.run.data_path,
            "can_train": bool(tr.docs),
            "running": self.running,
            "step": tr.step_count,
            "num_steps": tr.train.num_steps,
            "vocab_size": vocab,
            "vocab": [views.token_label(tr.tokenizer, i) for i in range(vocab)],
            "uniform_loss": math.log(vocab),
            "num_params": num_params(model, vocab),
            "num_docs": len(tr.docs),
            "num_val_docs": len(tr.val_docs),
            "model": {
                "n_layer": model.n_layer,
                "n_embd": model.n_embd,
                "n_head": model.n_head,
                "block_size": model.block_size,
            },
            "batch_size": tr.train.batch_size,
            "seed": tr.train.seed,
            "sample_every": self.sample_every,
            "temperature": self.temperature,
        }

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- control ----------------------------------------------------------------------------
    def start(self) -> dict:
        with self.lock:
            if not self.running and self.run.trainer.docs and not self.run.trainer.done:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._train, name="microgpt-studio-train", daemon=True
                )
                self._thread.start()
                self.events.emit("status", self._status(running=True))
        return self.state()

    def stop(self) -> dict:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        return self.state()

    def reset(self) -> dict:
        self.stop()
        with self.lock:
            self._new_run()
        return self.state()

    def close(self) -> None:
        self.stop()
        self.events.close()

    def _status(self, running: bool) -> dict:
        tr = self.run.trainer
        return {"running": running, "step": tr.step_count, "num_steps": tr.train.num_steps}

    def _train(self) -> None:
        tr = self.run.trainer
        held, t0 = False, 0.0

        def should_stop() -> bool:
            # `train.run` asks this before every step: let a waiting view in between two
            # steps, then hold the lock through the step and its evaluation.
            nonlocal held, t0
            if held:
                self.lock.release()
            self.lock.acquire()
            held, t0 = True, time.perf_counter()
            return self._stop.is_set()

        def on_step(result: StepResult) -> None:
            self._window.append((result.tokens, time.perf_counter() - t0))
            window_s = sum(s for _, s in self._window)
            tok_s = sum(t for t, _ in self._window) / window_s if window_s > 0 else None
            self.events.emit(
                "step",
                {
                    "step": result.step,
                    "loss": views.finite(result.loss),
                    "lr": result.lr,
                    "tokens_per_s": tok_s,
                },
            )
            if result.step % self.sample_every == 0 or tr.done:
                self._emit_snapshot()

        def on_eval(step: int, evaluation: Evaluation, is_best: bool) -> None:
            self.events.emit("val", {"step": step, "loss": views.finite(evaluation.loss)})

        try:
            run_training(tr, eval_every=self.val_every, on_step=on_step, on_eval=on_eval,
                         should_stop=should_stop)  # fmt: skip
        except Exception as e:  # a bug or a diverged run: show it, do not kill the server
            self.events.emit(
                "train_error", {"message": f"training stopped: {e.__class__.__name__}: {e}"}
            )
        finally:
            if held:
                self.lock.release()
            self.events.emit("status", self._status(running=False))

    def _emit_snapshot(self) -> None:
        """Fresh samples and the embedding picture, at the current step."""
        with self.lock:
            tr = self.run.trainer
            config = SampleConfig(num_samples=self.num_samples, temperature=self.temperature)
            draw = Draw(tr.engine, tr.tokenizer, self.sample_rng, config)
            samples = [sample_row(s.text, self.run.fingerprint) for s in draw.run()]
            emb = views.embeddings_2d(tr.engine, tr.tokenizer)
            step = tr.step_count
        self.events.emit("samples", {"step": step, "samples": samples})
        self.events.emit("embeddings", {"step": step, **emb})

    # --- views ------------------------------------------------------------------------------
    def look_inside(self, text: str, temperature: float) -> dict:
        with self.lock:
            tr = self.run.trainer
            return {
                "step": tr.step_count,
                **views.look_inside(tr.engine, tr.tokenizer, text, temperature),
            }

    def embeddings(self) -> dict:
        with self.lock:
            tr = self.run.trainer
            return {"step": tr.step_count, **views.embeddings_2d(tr.engine, tr.tokenizer)}

    def graph(self, text: str, position: int, root: int | None, depth: int) -> dict:
        with self.lock:
            tr = self.run.trainer
            key = (self.run_id, tr.step_count, text, position)
            if getattr(self, "_graph_key", None) != key:
                self._graph = views.Graph(tr.engine, tr.tokenizer, text, position)
                self._graph_key = key
            g = self._graph
        start = g.summary()["root"] if root is None else root
        return {
            "step": key[1],
            "position": position,
            "tokens": [views.token_label(tr.tokenizer, t) for t in g.tokens],
            "summary": g.summary(),
            "nodes": g.subgraph(start, depth=depth),
        }

    def sample(
        self,
        prompt: str,
        count: int,
        temperature: float,
        top_k: int | None,
        novel: bool,
        seed: int | None,
        min_length: int | None = None,
        max_length: int | None = None,
    ) -> dict:
        """Samples and their report, as `microgpt sample --report` draws and reports them."""
        rng = random.Random(seed) if seed is not None else self.sample_rng
        config = SampleConfig(
            num_samples=count, temperature=temperature, top_k=top_k, prompt=prompt,
            novel=novel, min_length=min_length, max_length=max_length,
        )  # fmt: skip
        with self.lock:
            tr, fingerprint = self.run.trainer, self.run.fingerprint
            draw = Draw(tr.engine, tr.tokenizer, rng, config, fingerprint)
            draw.run()
            step = tr.step_count
        tries = draw.tries if config.filtered else None  # as `microgpt sample --report`
        report = make_report(draw.samples, fingerprint, tries, draw.rejected)
        return {
            "step": step,
            "samples": [sample_row(s.text, fingerprint) for s in draw.samples],
            "report": report_json(report, draw.tries),
        }


def sample_row(text: str, fingerprint: Fingerprint | None) -> dict:
    """A sample for the page; novel: not a training document (None: unknown)."""
    return {"text": text, "novel": None if fingerprint is None else text not in fingerprint}


def report_json(report: Report, tries: int) -> dict:
    """`sample.make_report`'s numbers for the page (JSON has no NaN: null), with the counts
    behind its shares: samples kept, tries, unique and novel samples."""
    n = report.num_samples
    d = dataclasses.asdict(report)
    d = {k: views.finite(v) if isinstance(v, float) else v for k, v in d.items()}
    d["lengths"] = [[label, s, t] for label, s, t in report.lengths]
    return {
        **d,
        "novel_share": d.pop("novel"),
        "count": n,
        "drawn": tries,
        "unique": n - round(report.duplicates * n),
        "novel": None if report.novel is None or not n else round(report.novel * n),
    }
