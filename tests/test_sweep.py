"""microgpt sweep: trials are ordinary runs, the same as `microgpt train`; a SIGKILLed sweep
continues to the uninterrupted sweep's results bit for bit; bad input is one line and
writes nothing; the table's numbers; random draws; the run library's DocsCache.

Oracles: `microgpt train` with the same flags (every step's loss `==`), an uninterrupted
sweep of the same command (every result, metrics line and weight `==`), hand-worked tables,
uncached `runs.start`. Tiny models on 40 names: a trial takes a few milliseconds a step.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import assert_same_state, main_cli, snapshot

from microgpt import checkpoint as ckpt_io
from microgpt import runs
from microgpt.sweep import store
from microgpt.sweep.pool import pick
from microgpt.sweep.space import Range, configs, draw, trial_name
from microgpt.sweep.summary import rank

NAMES = """emma olivia ava isabella sophia charlotte mia amelia harper evelyn abigail emily
elizabeth mila ella avery sofia camila aria scarlett victoria madison luna grace chloe penelope
layla riley zoey nora lily eleanor hannah lillian addison aubrey ellie stella natalie zoe""".split()
TINY = ["--n-embd", "8", "--block-size", "8", "--steps", "20"]


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def sweep(out: Path, data: Path, *flags) -> list:
    return ["sweep", "--out", str(out), "--data", str(data), "--quiet", *flags]


def results(out: Path) -> dict[str, dict]:
    """results.jsonl by trial, without `seconds` (the one thing that differs run to run)."""
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["trial"]: {k: v for k, v in r.items() if k != "seconds"} for r in map(json.loads,
                                                                                     lines)}


def metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


# --- a trial is `microgpt train` --------------------------------------------------------------


def test_trials_equal_train_alone_and_are_ordinary_runs(data, tmp_path):
    out = tmp_path / "sweep"
    r = main_cli(sweep(out, data, *TINY, "--set", "learning_rate=0.01,0.05", "--seeds", "2",
                       "--workers", "2"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    found = results(out)
    assert sorted(found) == sorted(trial_name({"learning_rate": lr}, s)
                                   for lr in (0.01, 0.05) for s in (42, 43))  # fmt: skip
    rows = list(csv.DictReader((out / "summary.csv").open()))
    for row in rows:  # each config's command line, run alone, is its first seed's trial
        alone = tmp_path / f"alone-{row['rank']}"
        command = shlex.split(row["command"])
        assert command[:2] == ["microgpt", "train"]
        assert main_cli([*command[1:], "--out", str(alone), "--quiet"]).returncode == 0
        trial = out / row["trials"].split()[0]
        assert metrics(trial) == metrics(alone)  # every step's loss and the val loss, ==
        losses = [m["loss"] for m in metrics(alone) if "loss" in m]
        result = found[trial.name]
        assert result["train_loss"] == math.fsum(losses[-2:]) / 2  # the last 10% of 20 steps
        assert result["val_loss"] == metrics(alone)[-1]["val_loss"]
        engine = json.loads((alone / "config.json").read_text())["engine"]
        assert result["steps"] == 20 and result["engine"] == engine
    best = r.stdout.strip().splitlines()[-1]
    assert best == "best: " + rows[0]["command"]
    # sample, eval and train --resume work on a trial as on any run
    trial = out / rows[0]["trials"].split()[0]
    assert main_cli(["sample", "--checkpoint", trial / "model.safetensors", "--num-samples",
                     "3", "--novel"]).returncode == 0  # fmt: skip
    assert main_cli(["eval", "--checkpoint", trial / "best.safetensors", "--data",
                     data]).returncode == 0  # fmt: skip
    assert main_cli(["train", "--resume", trial, "--steps", "25", "--quiet"]).returncode == 0
    assert [m["step"] for m in metrics(trial) if "loss" in m] == list(range(1, 26))


# --- SIGKILL, then the same command -----------------------------------------------------------


def test_sigkill_then_the_same_command_equals_an_uninterrupted_sweep(data, tmp_path, cli_env):
    # the numpy engine: a known pace (~0.1 s a trial), so the kill finds trials in flight
    flags = [*TINY, "--steps", "200", "--checkpoint-every", "10", "--engine", "numpy", "--set",
             "learning_rate=0.01,0.03", "--set", "n_head=2,4", "--seeds", "2", "--workers", "2"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main_cli(sweep(whole, data, *flags)).returncode == 0
    command = [sys.executable, "-m", "microgpt", *sweep(killed, data, *flags)]
    proc = subprocess.Popen(command, env=cli_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120

    def resumable() -> bool:  # a finished trial, and another with a checkpoint but no result
        done = (killed / "results.jsonl").is_file() and (killed / "results.jsonl").read_text()
        return bool(done) and any((d / "model.safetensors").is_file() and d.name not in done
                                  for d in (killed / "trials").iterdir())  # fmt: skip

    while not (killed / "trials").is_dir() or not resumable():
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, at once
    proc.wait()
    proc.stderr.close()
    before = store.read_results(killed / "results.jsonl")  # (the kill may have cut one)
    assert 0 < len(before) < 8
    with (killed / "results.jsonl").open("a") as f:  # a line cut short by the kill
        f.write('{"trial": "learning_rate=0.01,n_head=2,seed=42", "val_lo')
    r = main_cli(sweep(killed, data, *flags))
    assert r.returncode == 0, r.stderr
    assert results(killed) == results(whole)
    assert len((killed / "results.jsonl").read_text().splitlines()) == 8  # finished: not rerun
    for trial in results(whole):
        a, b = whole / "trials" / trial, killed / "trials" / trial
        assert metrics(a) == metrics(b), trial
        assert_same_state(ckpt_io.load(a / "model.safetensors"),
                          ckpt_io.load(b / "model.safetensors"))  # fmt: skip
    assert table(killed) == table(whole)


def table(out: Path) -> list[dict]:
    """summary.csv without the seconds column."""
    rows = list(csv.DictReader((out / "summary.csv").open()))
    return [{k: v for k, v in row.items() if k != "seconds_mean"} for row in rows]


# --- a rerun with another grid ----------------------------------------------------------------


def test_more_values_add_trials_and_other_fixed_flags_are_refused(data, tmp_path):
    out = tmp_path / "sweep"
    assert main_cli(sweep(out, data, *TINY, "--set", "learning_rate=0.01", "--seeds", "2",
                          "--workers", "1")).returncode == 0  # fmt: skip
    old = out / "trials" / trial_name({"learning_rate": 0.01}, 42)
    kept = snapshot(old)
    r = main_cli(sweep(out, data, *TINY, "--set", "learning_rate=0.01,0.02", "--seeds", "3",
                       "--workers", "1"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(results(out)) == 6 and snapshot(old) == kept  # 4 new trials; old ones untouched
    assert len(list(csv.DictReader((out / "summary.csv").open()))) == 2
    before = snapshot(tmp_path)
    r = main_cli(sweep(out, data, *TINY, "--steps", "30", "--set", "learning_rate=0.01"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "holds another sweep (its steps is 20, not 30)" in r.stderr
    r = main_cli(sweep(out, data, *TINY, "--set", "batch_size=1,2"))
    assert r.returncode == 2 and "it sweeps learning_rate, not batch_size" in r.stderr
    assert snapshot(tmp_path) == before


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

BAD = {
    "unknown key": (["--set", "colour=1,2"], "--set colour: not a train flag a sweep can vary"),
    "bad int": (["--set", "n_embd=8,abc"], "--set n_embd: invalid int value 'abc'"),
    "bad choice": (["--set", "dtype=float16"], "--set dtype: invalid choice 'float16'"),
    "train refuses": (["--set", "n_head=2,3"], "n_head=3: "),
    "empty grid": (["--set", "learning_rate="], "the grid would be empty"),
    "too many": (["--set", "learning_rate=0.1,0.2,0.3", "--max-trials", "5"],
                 "6 trials (3 configs x 2 seeds) is more than --max-trials 5"),
    "seed key": (["--set", "seed=1,2"], "seeds are swept with --seeds N"),
    "twice": (["--set", "learning_rate=0.1", "--learning-rate", "0.1"],
              "--learning-rate and a sweep of learning_rate are both given"),
    "bad range": (["--sample", "learning_rate=log:0:1"], "a log-uniform range needs LO > 0"),
    "no val": (["--set", "learning_rate=0.1", "--val-fraction", "0"], "--val-fraction must be"),
    "nothing": (["--seeds", "1"], "nothing to sweep"),
    "bad dtype": (["--set", "dtype=bfloat16", "--engine", "ref"], "the ref engine supports"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, data, tmp_path):
    flags, message = BAD[case]
    before = snapshot(tmp_path)
    r = main_cli(sweep(tmp_path / "sweep", data, *TINY, "--seeds", "2", *flags))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("microgpt: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "sweep").exists()


def test_a_directory_that_is_not_a_sweep_is_refused(data, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    r = main_cli(sweep(out, data, *TINY, "--set", "learning_rate=0.1"))
    assert r.returncode == 2 and "holds something that is not a sweep" in r.stderr
    assert snapshot(tmp_path) == before


# --- pieces, against hand-worked cases --------------------------------------------------------


def result(lr: float, seed: int, val: float | None, status: str = "finished") -> dict:
    return {"trial": trial_name({"learning_rate": lr}, seed), "dir": f"trials/{lr},{seed}",
            "config": {"learning_rate": lr}, "seed": seed, "status": status, "val_loss": val,
            "val_bpc": None if val is None else val / math.log(2), "train_loss": 1.0,
            "seconds": 0.5}  # fmt: skip


def test_the_table_ranks_by_mean_validation_loss_with_the_sample_std():
    rows = rank([result(0.1, 1, 2.0), result(0.1, 2, 3.0), result(0.1, 3, 4.0),
                 result(0.2, 1, 2.5), result(0.2, 2, 2.5), result(0.2, 3, 2.5),
                 result(0.3, 1, 1.0), result(0.3, 2, None, "diverged")])  # fmt: skip
    assert [r.config["learning_rate"] for r in rows] == [0.2, 0.1, 0.3]  # diverged: last
    assert rows[0].mean("val_loss") == 2.5 and rows[0].std("val_loss") == 0.0
    assert rows[1].mean("val_loss") == 3.0 and rows[1].std("val_loss") == 1.0  # (2, 3, 4)
    assert rows[2].diverged == 1 and rows[2].std("val_loss") is None  # one finite value


def test_random_draws_are_in_range_and_fixed_by_the_search_seed():
    log = Range("learning_rate", "log", 1e-3, 1e-1, integer=False)
    draws = [draw(log, random.Random(i)) for i in range(400)]
    assert all(1e-3 <= x <= 1e-1 for x in draws)
    below = sum(x < 1e-2 for x in draws) / len(draws)  # 1e-2 is the log-midpoint
    assert 0.4 < below < 0.6
    ints = Range("n_embd", "int", 4, 6, integer=True)
    assert {draw(ints, random.Random(i)) for i in range(50)} == {4, 5, 6}
    a, b = configs([], [log, ints], 5, 0), configs([], [log, ints], 5, 1)
    assert a == configs([], [log, ints], 5, 0) and a != b and len(a) == 5


def test_a_worker_keeps_to_its_seed():
    pending = [{"seed": s, "i": i} for s in (1, 2, 3) for i in range(2)]
    assert pick(pending, 2, busy={1}) == 2  # its own seed first
    assert pick(pending, 9, busy={1}) == 2  # else a seed nobody is on
    assert pick(pending, 9, busy={1, 2, 3}) == 0  # else the first


def test_a_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"trial": "a", "x": 1}\n{"trial": "b", "x"')
    assert list(store.read_results(path)) == ["a"]
    assert path.read_text() == '{"trial": "a", "x": 1}\n'  # so the next append starts clean
    store.append_line(path, '{"trial": "b", "x": 2}')
    assert list(store.read_results(path)) == ["a", "b"]


def test_a_cached_start_is_the_same_run(data):
    cache = runs.DocsCache(size=2)
    spec = runs.RunSpec(data=str(data), val_fraction=0.2, n_embd=8, n_head=2, seed=3)
    for seed in (3, 4, 3):  # a miss, a miss, a hit
        s = runs.RunSpec(**{**spec.__dict__, "seed": seed})
        plain, cached = runs.start(s), runs.start(s, cache=cache)
        a, b = plain.trainer, cached.trainer
        assert list(a.docs) == list(b.docs) and list(a.val_docs) == list(b.val_docs)
        assert a.rng.getstate() == b.rng.getstate()
        assert a.record == b.record
        assert a.fingerprinted() == b.fingerprinted()  # the fingerprint, made when needed
        assert a.engine.parameters() == b.engine.parameters()


def test_a_disk_too_small_for_the_trials_is_refused(data, tmp_path, monkeypatch):
    import shutil

    from microgpt.sweep import command

    full = shutil.disk_usage(tmp_path)._replace(free=100_000)  # 0.1 MB: not 4 tiny trials
    monkeypatch.setattr(command.shutil, "disk_usage", lambda path: full)
    before = snapshot(tmp_path)
    r = main_cli(sweep(tmp_path / "sweep", data, *TINY, "--set", "learning_rate=0.01,0.02",
                       "--seeds", "2"))  # fmt: skip
    assert r.returncode == 2 and "4 trials need about" in r.stderr and "0 MB are free" in r.stderr
    assert snapshot(tmp_path) == before


def test_one_sweep_at_a_time_holds_a_directory(data, tmp_path):
    out = tmp_path / "sweep"
    flags = [*TINY, "--set", "learning_rate=0.01", "--seeds", "2"]
    assert main_cli(sweep(out, data, *flags)).returncode == 0
    held = store.SweepDir(out, json.loads((out / "sweep.json").read_text()))  # another sweep
    try:
        r = main_cli(sweep(out, data, *flags))
        assert r.returncode == 2 and "is in use by another microgpt sweep" in r.stderr
    finally:
        held.close()
    assert main_cli(sweep(out, data, *flags)).returncode == 0


@pytest.mark.slow
def test_default_model_trials_on_the_names_equal_train_alone(names_path, tmp_path):
    """The default model on all 32,033 names: one worker, so the second trial starts from the
    worker's cached documents and fingerprint (runs.DocsCache), and is still train's run."""
    out = tmp_path / "sweep"
    r = main_cli(sweep(out, names_path, "--set", "learning_rate=0.01,0.02", "--seeds", "1",
                       "--workers", "1"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    for row in csv.DictReader((out / "summary.csv").open()):
        alone = tmp_path / f"alone-{row['rank']}"
        assert main_cli([*shlex.split(row["command"])[1:], "--out", alone,
                         "--quiet"]).returncode == 0  # fmt: skip
        trial = out / row["trials"]
        assert metrics(trial) == metrics(alone)
        assert (trial / "model.safetensors").read_bytes() == (
            alone / "model.safetensors").read_bytes()  # the same weights, Adam, RNGs, record
