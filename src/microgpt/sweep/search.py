"""`microgpt sweep --backend optuna`: Optuna chooses the configs (TPE), prunes weak trials on
their validation loss, and keeps the study in a storage that several machines can share.

    microgpt sweep --backend optuna --out sweeps/m1 --storage /shared/lr.journal --study lr \\
        --sample learning_rate=log:1e-3:1e-1 --set n_head=1,2,4 --trials 50 --prune

Run the same command on several machines (each with its own --out, one --storage: a journal
file on a shared file system, or a database URL such as postgresql://...): their workers
ask the one study for trials, so no trial runs twice and TPE learns from all of them. The
study ends at --trials trials (finished or pruned): a lock makes that count exact for a
journal file, and for one machine's workers on a database (machines that ask at the same
moment may add one each).

Each Optuna trial trains its config with every seed in turn, one run directory per seed
(DIR/trials/trial=NNNN,seed=S), and its value is their mean validation loss. With --prune it
reports each evaluation (--eval-every, default a tenth of the steps) and stops when the
median rule says so; a pruned run's directory is still a valid run. A trial left running
by a killed sweep is marked failed when the same DIR's sweep starts again, and a new trial
takes its place. Optuna is imported only here (and only by this backend's processes).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

from .. import runs
from .space import Axis, Range, SweepError, spec_from_dict, trial_spec
from .trial import outcome, train_trial

DIR_ATTR = "microgpt_sweep_dir"  # the sweep directory that ran a trial


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError("--backend optuna needs Optuna: pip install 'microgpt-lab[sweep]'") \
            from None  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_space(grid: list[Axis], ranges: list[Range]) -> list[dict]:
    """The configs to validate before the study starts: every choice, every range's ends."""
    if not grid and not ranges:
        raise SweepError("--backend optuna needs a space to search: --sample KEY=DIST:LO:HI "
                         "or --set KEY=V1,V2,...")  # fmt: skip
    configs = [{a.key: v} for a in grid for v in a.values]
    for r in ranges:
        configs += [{r.key: type_of(r)(r.lo)}, {r.key: type_of(r)(r.hi)}]
    return configs


def type_of(r: Range):
    return int if r.integer else float


def storage_of(text: str):
    """An RDB URL as it is, else a journal file (a lock file beside it keeps writers apart)."""
    optuna = import_optuna()
    if "://" in text:
        return text
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    return optuna.storages.JournalStorage(JournalFileBackend(text, JournalFileOpenLock(text)))


@contextlib.contextmanager
def counting_lock(task: dict):
    """Held while a worker counts the study's trials and asks for one: a lock file beside a
    journal (every machine that shares it), or in the sweep directory for a database (this
    machine's workers; machines asking at the same moment may each add one)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the count may overshoot by a trial per worker
        yield
        return
    storage = task["storage"]
    # NOTE: not the journal's own lock (JournalFileOpenLock creates FILE.lock exclusively)
    path = (os.path.join(task["dir"], ".optuna-count.lock") if "://" in storage
            else storage + ".count.lock")  # fmt: skip
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_study(task: dict):
    optuna = import_optuna()
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=task["warmup"])
              if task["prune"] else optuna.pruners.NopPruner())  # fmt: skip
    return optuna.create_study(
        study_name=task["study"], storage=storage_of(task["storage"]), direction="minimize",
        sampler=optuna.samplers.TPESampler(), pruner=pruner, load_if_exists=True,
    )  # fmt: skip


def suggest(trial, task: dict) -> dict:
    config = {}
    for key, values in task["choices"].items():
        config[key] = trial.suggest_categorical(key, values)
    for key, (dist, lo, hi, integer) in task["ranges"].items():
        if dist == "int" or integer:
            config[key] = trial.suggest_int(key, math.ceil(lo), math.floor(hi), log=dist == "log")
        else:
            config[key] = trial.suggest_float(key, lo, hi, log=dist == "log")
    return config


class Report:
    """Reports an Optuna trial's evaluations, seed after seed (the steps of its later seeds
    are counted on from the earlier ones'), and says when the pruner stopped it."""

    def __init__(self, trial, prune: bool, should_stop):
        self.trial, self.prune, self.should_stop = trial, prune, should_stop
        self.offset = 0  # steps of the seeds done
        self.pruned = False

    def stop(self) -> bool:
        return self.pruned or self.should_stop()

    def on_eval(self, step: int, evaluation, is_best: bool) -> None:
        self.trial.report(evaluation.loss, self.offset + step)
        self.pruned = self.pruned or (self.prune and self.trial.should_prune())


def run_study(task: dict, cache: runs.DocsCache, should_stop, send) -> None:
    """A worker's loop: ask the study for a trial, train its seeds, tell the study; until the
    study has its trials or the sweep stops."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    study = open_study(task)
    base = spec_from_dict(task["base"])
    while not should_stop():
        with counting_lock(task):
            counted = (states.RUNNING, states.WAITING, states.COMPLETE, states.PRUNED)
            if len(study.get_trials(deepcopy=False, states=counted)) >= task["trials"]:
                break
            trial = study.ask()
            trial.set_user_attr(DIR_ATTR, task["dir"])
        config = suggest(trial, task)
        losses, report = [], Report(trial, task["prune"], should_stop)
        for seed in task["seeds"]:
            spec = trial_spec(base, config, seed)
            name = f"trial={trial.number:04d},seed={seed}"
            path = Path(task["dir"]) / "trials" / name
            try:
                run, status, error, seconds = train_trial(
                    spec, path, cache, report.stop, report.on_eval)
            except runs.USER_ERRORS as e:
                study.tell(trial, state=states.FAIL)
                send({"trial": name, "user_error": str(e)})
                return
            if status == "stopped" and not report.pruned:  # the sweep is stopping
                study.tell(trial, state=states.FAIL)
                send({"done": True})
                return
            report.offset += run.trainer.train.num_steps
            status = "pruned" if report.pruned else status
            done = {"trial": name, "dir": str(path), "config": config, "seed": seed}
            result = {**outcome(done, run, status, error, seconds), "optuna_trial": trial.number}
            send({"more": True, "result": result})
            if status != "finished":
                break
            losses.append(result["val_loss"])
        if report.pruned:
            study.tell(trial, state=states.PRUNED)
        elif len(losses) < len(task["seeds"]):  # diverged: the worst possible value
            study.tell(trial, math.inf)
        else:
            study.tell(trial, math.fsum(losses) / len(losses))
    send({"done": True})


def prepare(storage: str, study: str, sweep_dir: str) -> int:
    """Open (or create) the study; fail the trials a killed sweep of `sweep_dir` left
    running (new ones take their place). The trials done (finished or pruned)."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    s = open_study({"study": study, "storage": storage, "prune": False, "warmup": 0})
    for t in s.get_trials(deepcopy=False, states=(states.RUNNING,)):
        if t.user_attrs.get(DIR_ATTR) == sweep_dir:
            s.tell(t.number, state=states.FAIL)
    return len(s.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))


def best(storage: str, study: str) -> str:
    """The study's best trial, from every machine that shares it, in one line."""
    optuna = import_optuna()
    s = open_study({"study": study, "storage": storage, "prune": False, "warmup": 0})
    finished = s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not finished:
        return f"study {study}: no trial finished yet"
    b = min(finished, key=lambda t: t.value)
    return (f"study {study}: {len(finished)} trials finished; best: trial {b.number}, "
            f"val loss {b.value:.4f}, {b.params}")
