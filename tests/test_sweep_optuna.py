"""microgpt sweep --backend optuna: two processes (as two machines would) share one journal
file, and no trial runs twice; a pruned trial's directory is a valid run.

Oracles: the study as the journal records it (trial numbers and states), each sweep
directory's results, and the checkpoints the run library loads. Skipped, with the reason,
where Optuna (the `sweep` extra) is not installed; `.ci/run` installs it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt import runs

optuna = pytest.importorskip("optuna", reason="the sweep extra (pip install "
                             "'microgpt-lab[sweep]') is not installed; .ci/run installs it")

NAMES = "emma olivia ava isabella sophia charlotte mia amelia harper evelyn abigail emily".split()


def test_two_processes_on_one_journal_run_every_trial_once(tmp_path, cli_env):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES * 3) + "\n")
    journal = tmp_path / "study.journal"
    flags = ["--backend", "optuna", "--storage", str(journal), "--study", "s", "--data",
             str(data), "--n-embd", "8", "--block-size", "8", "--steps", "15", "--sample",
             "learning_rate=log:1e-3:1e-1", "--set", "n_head=2,4", "--trials", "6",
             "--seeds", "2", "--workers", "1", "--quiet"]  # fmt: skip
    procs = [subprocess.Popen([sys.executable, "-m", "microgpt", "sweep", "--out",
                               str(tmp_path / f"m{i}"), *flags], env=cli_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))  # fmt: skip
    assert sorted(t.number for t in study.trials) == list(range(6))  # six, no more
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    ran = {}
    for i in range(2):
        for line in (tmp_path / f"m{i}" / "results.jsonl").read_text().splitlines():
            r = json.loads(line)
            ran.setdefault(r["optuna_trial"], set()).add((i, r["seed"]))
            ckpt_io.load(tmp_path / f"m{i}" / r["dir"] / "model.safetensors")  # a valid run
    # every trial by one process only, with both seeds
    assert {n: len({m for m, _ in s}) for n, s in ran.items()} == {n: 1 for n in range(6)}
    assert all({seed for _, seed in s} == {42, 43} for s in ran.values())
    mine = [json.loads(line) for i in range(2) for line in
            (tmp_path / f"m{i}" / "results.jsonl").read_text().splitlines()]  # fmt: skip
    for t in study.trials:  # the study's value is the mean of its seeds' validation losses
        losses = [r["val_loss"] for r in mine if r["optuna_trial"] == t.number]
        assert t.value == sum(losses) / 2 and t.params == next(
            r["config"] for r in mine if r["optuna_trial"] == t.number)


class Stub:
    """An Optuna trial that asks to be pruned at its second report."""

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= 2


def test_a_pruned_trial_stops_at_its_report_and_stays_a_valid_run(tmp_path):
    from microgpt.sweep.search import Report
    from microgpt.sweep.worker import train_trial

    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES * 3) + "\n")
    spec = runs.RunSpec(data=str(data), n_embd=8, block_size=8, steps=40, val_fraction=0.2,
                        eval_every=5)  # fmt: skip
    trial = Stub()
    report = Report(trial, prune=True, should_stop=lambda: False)
    run, status, error, _ = train_trial(spec, tmp_path / "t", runs.DocsCache(), report.stop,
                                        report.on_eval)  # fmt: skip
    assert status == "stopped" and report.pruned and error is None
    assert [s for s, _ in trial.reports] == [5, 10]  # stopped right after the second report
    assert ckpt_io.load(tmp_path / "t" / "model.safetensors").step == 10
    resumed = runs.resume(runs.ResumeSpec(str(tmp_path / "t")))  # a run like any other
    assert runs.train(resumed) and resumed.trainer.step_count == 40


def test_a_trial_left_running_by_a_killed_sweep_is_failed_when_its_dir_restarts(tmp_path):
    from microgpt.sweep.search import DIR_ATTR, prepare

    journal = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))  # fmt: skip
    mine, theirs, done = study.ask(), study.ask(), study.ask()
    mine.set_user_attr(DIR_ATTR, "/sweeps/a")  # its sweep was killed
    theirs.set_user_attr(DIR_ATTR, "/sweeps/b")  # another machine's, still running
    study.tell(done, 1.0)
    assert prepare(journal, "s", "/sweeps/a") == 1  # one trial done
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states == {0: optuna.trial.TrialState.FAIL, 1: optuna.trial.TrialState.RUNNING,
                      2: optuna.trial.TrialState.COMPLETE}  # fmt: skip
