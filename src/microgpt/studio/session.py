"""One studio session: a run trained on a background thread, and the events it streams.

Training is `train.run`, the loop `microgpt train` runs, with hooks that stream each step,
fresh samples and the validation loss, at a pace the page sets (one step a second to full
speed; one step at a time). Each step (and its evaluation) holds `Session.lock` (the engine
is not thread-safe). A view or a draw of samples holds it only to copy the weights onto an
engine of its own (`clone_engine`), so it sees the weights between two steps, never halfway
through an Adam update, and computes without holding up training. Samples come from
`draw.Draw` and their report from `report.make_report`, as `microgpt sample` makes them;
they use their own generators, so they never disturb the run's random stream.
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

from .. import runs
from ..draw import Draw, SampleConfig
from ..engine import Engine
from ..evaluate import Evaluation
from ..fingerprint import Fingerprint
from ..init import num_params
from ..report import Report, make_report
from ..schedule import learning_rate
from ..tokenizer import Tokenizer
from ..train import StepResult, TrainingError
from ..train import run as run_training
from . import fields, views
from .runs import open_run


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


class Busy(Exception):
    """A request that must wait for one already running (HTTP 409)."""


class Cancelled(Exception):
    """A draw of samples stopped by the page's Cancel."""


class CancellableEngine:
    """An engine whose every forward and decode first checks a cancel flag, so a long draw
    (novel-only samples at a low temperature can take thousands of tries) stops within one
    token of the page's Cancel. Everything else is the wrapped engine's."""

    def __init__(self, engine: Engine, cancel: threading.Event, tick: Callable[[], None]):
        self._engine, self._cancel, self._tick = engine, cancel, tick

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled
        self._tick()
        # NOTE: a draw is pure Python, like a reference-engine step; threads share one
        # interpreter lock, which a busy thread gives up only every 5 ms. Giving it up
        # before every token lets a waiting training step in at once: the draw runs in
        # token-sized slices, at a lower priority than training.
        time.sleep(0)

    def decode(self, cache, token_id, pos_id):
        self._check()
        return self._engine.decode(cache, token_id, pos_id)

    def forward(self, tokens):
        self._check()
        return self._engine.forward(tokens)


def clone_engine(engine: Engine) -> Engine:
    """A second engine with the same weights (and Adam moments): views and samples compute
    on it without the training lock, so they never wait for, or hold up, a training step."""
    copy = type(engine)(engine.config, engine.optim, engine.vocab_size, engine.parameters(),
                        dtype=engine.dtype)  # fmt: skip
    copy.load_optimizer_state(*engine.optimizer_state())
    return copy


@dataclasses.dataclass
class Snapshot:
    """The run at one moment, on an engine of its own (see clone_engine)."""

    engine: Engine
    tokenizer: Tokenizer
    step: int
    run_id: int
    num_steps: int
    fingerprint: Fingerprint | None


class Session:
    """A run, its training thread and the views on it.

    `spec` is the run library's spec of the run: a `runs.RunSpec` (a new run) or a
    `runs.ResumeSpec` (a checkpoint continued). Reset opens it again, so a reset run repeats
    the first one's numbers exactly; new settings from the page are laid over it with
    dataclasses.replace and applied by starting that run (`runs.start`), as `microgpt train`
    with those flags would.
    """

    def __init__(
        self,
        spec: runs.RunSpec | runs.ResumeSpec,
        sample_every: int = 50,
        num_samples: int = 8,
        temperature: float = 0.5,
        val_every: int = 100,
    ):
        self.spec = spec
        self.sample_every = sample_every
        self.num_samples = num_samples
        self.temperature = temperature
        self.val_every = val_every
        self.lock = FairLock()  # held for every step and every use of the run's engine
        self.events = EventLog()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pace = threading.Condition()  # wakes a paced wait when the speed or stop changes
        self.steps_per_s: float | None = None  # the pace; None: full speed
        self._budget: int | None = None  # steps left before pausing (step once); None: all
        self._sampling = threading.Lock()
        self._job: dict | None = None  # the draw in progress: cancel flag and progress
        self._graph_cache: tuple | None = None
        self.run_id = 0
        self._new_run()

    # --- state ----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        return self.run.trainer.engine

    @property
    def editable(self) -> bool:
        """A new run's settings can all change; a checkpoint's run keeps its shape."""
        return isinstance(self.spec, runs.RunSpec)

    def _new_run(self) -> None:
        self.run = open_run(self.spec)
        self.run_id += 1
        trainer = self.run.trainer
        self.sample_rng = random.Random(trainer.train.seed)  # the live samples
        self.page_rng = random.Random(trainer.train.seed + 1)  # the Sample tab's, unseeded
        self._window: deque[tuple[float, int, float]] = deque(maxlen=50)
        self._elapsed = 0.0
        self._started: float | None = None
        self._emb_pcs = None
        self.events.emit("run", self.state(), new_run=True)
        self._emit_snapshot()

    def settings(self) -> dict:
        tr = self.run.trainer
        m = tr.model
        return {"steps": tr.train.num_steps, "learning_rate": tr.optim.learning_rate,
                "n_embd": m.n_embd, "n_layer": m.n_layer, "n_head": m.n_head,
                "block_size": m.block_size, "seed": tr.train.seed}  # fmt: skip

    def state(self) -> dict:
        tr = self.run.trainer
        model, vocab = tr.model, tr.tokenizer.vocab_size
        job = self._job
        return {
            "run": self.run_id,
            "engine": tr.engine.name,
            "source": self.run.source,
            "data_path": self.run.data_path,
            "can_train": bool(tr.docs),
            "running": self.running,
            "step": tr.step_count,
            "num_steps": tr.train.num_steps,
            "elapsed_s": self.elapsed(),
            "steps_per_s_pace": self.steps_per_s,
            "sampling": None if job is None else job["progress"],
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
            "settings": self.settings(),
            "editable": self.editable,
            "limits": fields.limits(),
            "batch_size": tr.train.batch_size,
            "seed": tr.train.seed,
            "sample_every": self.sample_every,
            "temperature": self.temperature,
        }

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def elapsed(self) -> float:
        """Seconds spent training this run (pauses not counted)."""
        started = self._started
        return self._elapsed + (time.monotonic() - started if started is not None else 0.0)

    # --- control ----------------------------------------------------------------------------
    def start(self, budget: int | None = None) -> dict:
        """Train (in the background) until the set steps are done, or `budget` steps."""
        with self.lock:
            if self.running:
                self._budget = budget
            elif self.run.trainer.docs and not self.run.trainer.done:
                self._stop.clear()
                self._budget = budget
                self._thread = threading.Thread(
                    target=self._train, name="microgpt-studio-train", daemon=True
                )
                self._thread.start()
                self.events.emit("status", self._status(running=True))
        return self.state()

    def step_once(self) -> dict:
        """One step, then pause (while running: pause after the next step)."""
        if self.run.trainer.done:
            raise fields.FieldError(f"the run has done its {self.run.trainer.train.num_steps} "
                                    "steps; add more steps with Continue first")  # fmt: skip
        return self.start(budget=1)

    def stop(self) -> dict:
        self._stop.set()
        with self._pace:
            self._pace.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        return self.state()

    def set_pace(self, steps_per_s: float | None) -> dict:
        with self._pace:
            self.steps_per_s = steps_per_s
            self._pace.notify_all()
        self.events.emit("pace", {"steps_per_s": steps_per_s})
        return self.state()

    def continue_run(self, more: int) -> dict:
        """Go on past the set steps: `more` steps on top of them. The learning-rate schedule
        then follows the new length, as `microgpt train --resume DIR --steps N` does."""
        self.stop()
        with self.lock:
            tr = self.run.trainer
            if not tr.docs:
                raise fields.FieldError("this run cannot train: its documents were not found")
            tr.train = dataclasses.replace(tr.train, num_steps=tr.train.num_steps + more)
        return self.start()

    def reset(self) -> dict:
        self.stop()
        with self.lock:
            self._new_run()
        return self.state()

    def apply_settings(self, values: dict) -> dict:
        """A new run with these settings (None keeps one), through the run library."""
        current = self.settings()
        wanted = {**current, **{k: v for k, v in values.items() if v is not None}}
        if wanted["n_embd"] % wanted["n_head"]:
            raise fields.FieldError(
                f"width (n_embd) {wanted['n_embd']} must be a multiple of heads (n_head) "
                f"{wanted['n_head']}: each head gets n_embd / n_head dimensions"
            )
        if self.editable:
            spec = dataclasses.replace(self.spec, **wanted)
            spec.configs()  # validated before the running run is stopped
        else:
            changed = [k for k in wanted if k != "steps" and wanted[k] != current[k]]
            if changed:
                raise fields.FieldError(
                    f"this run was opened from a checkpoint, so only steps can change "
                    f"({changed[0]} is the checkpoint's); open its data for a new run"
                )
            done = self.run.trainer.step_count
            if wanted["steps"] < done:
                raise fields.FieldError(f"steps must be at least the {done} this run has done")
            spec = dataclasses.replace(self.spec, steps=wanted["steps"])
        self.stop()
        with self.lock:
            old = self.spec
            self.spec = spec
            try:
                self._new_run()
            except Exception:
                self.spec = old
                raise
        return self.state()

    def close(self) -> None:
        self.stop()
        job = self._job
        if job is not None:
            job["cancel"].set()
        self.events.close()

    def _status(self, running: bool) -> dict:
        tr = self.run.trainer
        return {"running": running, "step": tr.step_count, "num_steps": tr.train.num_steps,
                "elapsed_s": self.elapsed()}  # fmt: skip

    def _wait_for_pace(self, last_start: float | None) -> bool:
        """Wait until the next step is due at the current pace; False when stopped."""
        with self._pace:
            while not self._stop.is_set():
                pace = self.steps_per_s
                if pace is None or last_start is None:
                    break
                wait = last_start + 1.0 / pace - time.monotonic()
                if wait <= 0:
                    break
                self._pace.wait(wait)
        return not self._stop.is_set()

    def _train(self) -> None:
        tr = self.run.trainer
        held, t0, last_start = False, 0.0, None
        self._window.clear()  # a pause does not count in steps/s
        self._started = time.monotonic()

        def should_stop() -> bool:
            # `train.run` asks this before every step: let a waiting view in between two
            # steps (and wait for the pace), then hold the lock through the step.
            nonlocal held, t0, last_start
            if held:
                self.lock.release()
                held = False
            if self._budget is not None and self._budget <= 0:
                return True
            if not self._wait_for_pace(last_start):
                return True
            self.lock.acquire()
            held, t0 = True, time.perf_counter()
            last_start = time.monotonic()
            if self._budget is not None:
                self._budget -= 1
            return self._stop.is_set()

        def on_step(result: StepResult) -> None:
            now = time.monotonic()
            # by the step's start: starts keep the pace exactly, ends jitter with the work
            self._window.append((last_start, result.tokens, time.perf_counter() - t0))
            recent = [w for w in self._window if now - w[0] <= 5.0]
            span = recent[-1][0] - recent[0][0]
            compute = sum(w[2] for w in recent)
            self.events.emit(
                "step",
                {
                    "step": result.step,
                    "loss": views.finite(result.loss),
                    "lr": result.lr,
                    # the engine's speed while computing, and the steps actually made per
                    # second (the pace included), over the last 5 s (at most 50 steps)
                    "tokens_per_s": sum(w[1] for w in recent) / compute if compute > 0 else None,
                    "steps_per_s": (len(recent) - 1) / span if span > 0 else None,
                    "elapsed_s": self.elapsed(),
                },
            )
            if result.step % self.sample_every == 0 or tr.done:
                self._emit_snapshot()

        def on_eval(step: int, evaluation: Evaluation, is_best: bool) -> None:
            self.events.emit("val", {"step": step, "loss": views.finite(evaluation.loss)})

        try:
            run_training(tr, eval_every=self.val_every, on_step=on_step, on_eval=on_eval,
                         should_stop=should_stop)  # fmt: skip
        except TrainingError as e:  # diverged: say what to do, in the page's own terms
            what = str(e).split(". Try")[0]
            self.events.emit("train_error", {"message": f"training stopped: {what}. Lower the "
                             "learning rate (or the size) in Settings and apply"})  # fmt: skip
        except Exception as e:  # a bug: show it, do not kill the server
            self.events.emit(
                "train_error", {"message": f"training stopped: {e.__class__.__name__}: {e}"}
            )
        finally:
            if held:
                self.lock.release()
            self._elapsed += time.monotonic() - self._started
            self._started = None
            self._budget = None
            self.events.emit("status", self._status(running=False))

    def _emit_snapshot(self) -> None:
        """Fresh samples and the embedding picture, at the current step."""
        with self.lock:
            tr = self.run.trainer
            config = SampleConfig(num_samples=self.num_samples, temperature=self.temperature)
            draw = Draw(tr.engine, tr.tokenizer, self.sample_rng, config)
            samples = [sample_row(s.text, self.run.fingerprint) for s in draw.run()]
            emb = views.embeddings_2d(tr.engine, tr.tokenizer, self._emb_pcs)
            self._emb_pcs = emb.pop("pcs")
            step = tr.step_count
        self.events.emit("samples", {"step": step, "samples": samples})
        self.events.emit("embeddings", {"step": step, **emb})

    # --- views: each on a snapshot of the run, outside the training lock ---------------------
    def snapshot(self) -> Snapshot:
        with self.lock:  # held only to copy the weights
            tr = self.run.trainer
            return Snapshot(clone_engine(tr.engine), tr.tokenizer, tr.step_count, self.run_id,
                            tr.train.num_steps, self.run.fingerprint)  # fmt: skip

    def look_inside(self, text: str, temperature: float) -> dict:
        snap = self.snapshot()
        return {"step": snap.step,
                **views.look_inside(snap.engine, snap.tokenizer, text, temperature)}  # fmt: skip

    def embeddings(self) -> dict:
        snap = self.snapshot()
        emb = views.embeddings_2d(snap.engine, snap.tokenizer, self._emb_pcs)
        emb.pop("pcs")
        return {"step": snap.step, **emb}

    def graph(self, text: str, position: int, focus: int | None) -> dict:
        with self.lock:
            tr = self.run.trainer
            key = (self.run_id, tr.step_count, text, position)
            cached = self._graph_cache
            if cached is None or cached[0] != key:
                cached = None
                params = tr.engine.parameters()
                adam = tr.engine.optimizer_state()
                lr = learning_rate(tr.optim, tr.step_count, max(tr.train.num_steps, 1))
                optim, model, tok, step = tr.optim, tr.model, tr.tokenizer, tr.step_count
        if cached is None:  # built outside the lock: a big graph takes a while
            g = views.Graph(params, model, tok, text, position,
                            adam=views.AdamState(optim, *adam, lr=lr, t=step + 1))  # fmt: skip
            self._graph_cache = cached = (key, g)
        g = cached[1]
        return {"step": key[1], **g.view(focus)}

    # --- sampling -----------------------------------------------------------------------------
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
        """Samples and their report, as `microgpt sample --report` draws and reports them.

        The draw runs on a copy of the engine, outside the training lock, so training and
        the other views go on meanwhile; one draw at a time (Busy otherwise), and `cancel`
        stops it within a token, keeping what was found.
        """
        if not self._sampling.acquire(blocking=False):
            raise Busy("samples are still being drawn: wait for them, or cancel them")
        try:
            snap = self.snapshot()
            check_sample_request(snap, prompt, novel, min_length, max_length)
            config = SampleConfig(
                num_samples=count, temperature=temperature, top_k=top_k, prompt=prompt,
                novel=novel, min_length=min_length, max_length=max_length,
            )  # fmt: skip
            rng = random.Random(seed) if seed is not None else self.page_rng
            cancel = threading.Event()
            progress = {"found": 0, "tries": 0, "wanted": count}
            self._job = {"cancel": cancel, "progress": progress}
            last = [0.0]
            draw: Draw | None = None

            def tick() -> None:  # progress for every page, at most 5 times a second
                now = time.monotonic()
                if draw is not None and now - last[0] > 0.2:
                    last[0] = now
                    progress.update(found=len(draw.samples), tries=draw.tries)
                    self.events.emit("sampling", {"busy": True, **progress})

            engine = CancellableEngine(snap.engine, cancel, tick)
            draw = Draw(engine, snap.tokenizer, rng, config, snap.fingerprint)
            self.events.emit("sampling", {"busy": True, **progress})
            cancelled = False
            try:
                draw.run()
            except Cancelled:
                cancelled = True
        finally:
            self._job = None
            self._sampling.release()
            self.events.emit("sampling", {"busy": False})
        tries = draw.tries if config.filtered else None  # as `microgpt sample --report`
        report = make_report(draw.samples, snap.fingerprint, tries, draw.rejected)
        return {
            "step": snap.step,
            "cancelled": cancelled,
            "samples": [sample_row(s.text, snap.fingerprint) for s in draw.samples],
            "report": report_json(report, draw.tries),
        }

    def cancel_sample(self) -> dict:
        job = self._job
        if job is not None:
            job["cancel"].set()
        return {"cancelled": job is not None}


def check_sample_request(snap: Snapshot, prompt: str, novel: bool, min_length: int | None,
                         max_length: int | None) -> None:  # fmt: skip
    """The Sample tab's mistakes, in its own words (SampleConfig.validate speaks in the
    CLI's flags, which the page does not have)."""
    longest = len(prompt) + snap.engine.config.block_size
    if min_length is not None and min_length > longest:
        raise fields.FieldError(
            f"min length {min_length} cannot be reached: a sample has at most {longest} "
            f"characters (the prompt, then up to the context of {longest - len(prompt)})"
        )
    if min_length is not None and max_length is not None and max_length < min_length:
        raise fields.FieldError(f"max length {max_length} is below min length {min_length}")
    if max_length is not None and max_length < len(prompt):
        raise fields.FieldError(
            f"max length {max_length} is shorter than the prompt ({len(prompt)} characters)"
        )
    if novel and snap.fingerprint is None:
        raise fields.FieldError("novel only needs the training documents' fingerprint, "
                                "and this checkpoint has none (an older microgpt's)")  # fmt: skip


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
