"""Runs you can trust, part two (issue 13): no command loses a run, every write fails in one
line, edge numbers are refused up front, and the small things (Ctrl-C while starting, a
closed pipe, a byte-order mark, a message naming the wrong flag).

Oracles: a snapshot of every file's bytes and mode before and after (tests/test_bad_input.py's
pattern: "nothing changed" is checked, not assumed); real second processes (a concurrent
writer, a killed one); fault injection (os.write raising ENOSPC at every write of a run in
turn); the loader itself (a checkpoint that loads is valid by its own checks).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_helpers import TINY, cli, main_cli, popen, snapshot

from microgpt import checkpoint as ckpt_io

NAMES = "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n"


def one_line_error(r, phrase: str = "") -> str:
    """The command failed with exactly one line on stderr, no traceback; that line."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("microgpt: error: "), r.stderr
    assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def names(tmp_path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text(NAMES)
    return path


def train(data, out=None, *extra, steps=4):
    argv = ["train", "--data", str(data), "--steps", str(steps), "--num-samples", "1", *TINY,
            "--quiet", *extra]  # fmt: skip
    return argv + (["--out", str(out)] if out is not None else [])


@pytest.fixture
def run_dir(tmp_path, names, cli_env) -> Path:
    """A finished run with a periodic, a best and a final checkpoint."""
    out = tmp_path / "run"
    r = main_cli(train(names, out, "--val-fraction", "0.2", "--eval-every", "2",
                       "--checkpoint-every", "2"), cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


# --- 1. a command never destroys files it should not touch ---------------------------------


def test_resume_from_another_file_never_writes_beside_it(run_dir, tmp_path, cli_env):
    """`--resume DIR/other.safetensors` would replace DIR's later model.safetensors, rewrite
    config.json and cut metrics.jsonl back: refused, every byte kept."""
    shutil.copy(run_dir / "best.safetensors", run_dir / "other.safetensors")
    for name in ("other.safetensors", "best.safetensors"):
        before = snapshot(tmp_path)
        r = main_cli(["train", "--resume", str(run_dir / name), "--steps", "6"], cli_env)
        one_line_error(r, "only a run's latest checkpoint")
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("folder", ["unrelated-config", "other-tools-metrics", "another-run"])
def test_resume_never_overwrites_a_folder_that_is_not_its_run(run_dir, names, tmp_path,
                                                              cli_env, folder):  # fmt: skip
    """A checkpoint copied into a folder of other things (another tool's config.json or
    metrics.jsonl, another microgpt run): resuming there is refused, not overwriting them."""
    elsewhere = tmp_path / "project"
    if folder == "another-run":
        r = main_cli(train(names, elsewhere, "--seed", "7"), cli_env)
        assert r.returncode == 0, r.stderr
    else:
        elsewhere.mkdir()
    shutil.copy(run_dir / "model.safetensors", elsewhere / "model.safetensors")
    if folder == "unrelated-config":
        (elsewhere / "config.json").write_text('{"model_type": "bert"}\n')
    elif folder == "other-tools-metrics":
        (elsewhere / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.9}\n')
    before = snapshot(tmp_path)
    r = main_cli(["train", "--resume", str(elsewhere), "--steps", "6"], cli_env)
    phrase = {"unrelated-config": "not a microgpt run's configuration",
              "other-tools-metrics": "not recognisably this checkpoint's run",
              "another-run": "belongs to another run"}[folder]  # fmt: skip
    one_line_error(r, phrase)
    assert snapshot(tmp_path) == before


def test_force_keeps_the_old_run_until_the_new_has_a_checkpoint(run_dir, names, tmp_path,
                                                                 cli_env):  # fmt: skip
    """The new run diverges before its first checkpoint: the old run is all still there."""
    before = snapshot(tmp_path)
    r = main_cli(train(names, run_dir, "--force", "--learning-rate", "1e300", steps=6), cli_env)
    line = one_line_error(r, "lower --learning-rate")
    assert f"{run_dir} keeps the run that was there" in line
    assert snapshot(tmp_path) == before
    # and a new run that fails before it starts (its data) leaves it too
    r = main_cli(train(tmp_path / "nope.txt", run_dir, "--force"), cli_env)
    one_line_error(r, "does not exist")
    assert snapshot(tmp_path) == before


def test_force_replaces_the_old_run_at_the_new_ones_first_checkpoint(run_dir, names, cli_env):
    r = main_cli(train(names, run_dir, "--force", steps=3), cli_env)
    assert r.returncode == 0, r.stderr
    assert ckpt_io.load(run_dir / "model.safetensors").step == 3
    assert not (run_dir / "best.safetensors").exists()  # the old run's
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_new_run_leaves_no_folder_behind(names, tmp_path, cli_env):
    out = tmp_path / "a" / "b" / "run"
    r = main_cli(train(names, out, "--learning-rate", "1e300", steps=6), cli_env)
    one_line_error(r, "no checkpoint was written yet")
    assert not (tmp_path / "a").exists()


def slow_run(data, out, steps=100000):
    """A run that holds its directory for as long as the test needs (the reference engine)."""
    return ["train", "--engine", "ref", "--data", str(data), "--steps", str(steps),
            "--num-samples", "0", *TINY, "--out", str(out)]  # fmt: skip


def wait_for_step(proc, step: int = 1) -> None:
    for line in proc.stdout:
        if line.startswith(f"step {step:4d}"):
            return
    raise AssertionError(proc.stderr.read())


def test_one_writer_per_run_directory(names, tmp_path, cli_env):
    """A real second writer (new run with --force, or resume) is refused, naming the first;
    once the first is killed (SIGKILL: no chance to clean up), its lock no longer blocks."""
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=2), cli_env).returncode == 0
    first = popen(["train", "--resume", str(out), "--steps", "100000", "--engine", "ref",
                   "--num-samples", "0"], cli_env)  # fmt: skip
    try:
        wait_for_step(first, 3)
        for argv in (train(names, out, "--force", steps=2),
                     ["train", "--resume", str(out), "--steps", "100001"]):  # fmt: skip
            r = cli(argv, cli_env)
            line = one_line_error(r, "is being written by another microgpt")
            assert f"pid {first.pid}: microgpt train --resume" in line
    finally:
        first.kill()
        first.wait(timeout=60)
    r = cli(["train", "--resume", str(out), "--steps", "4", "--quiet"], cli_env)
    assert r.returncode == 0, r.stderr
    assert ckpt_io.load(out / "model.safetensors").step == 4


@pytest.mark.parametrize("how", ["--force", "--resume"])
def test_two_writers_started_together_leave_one_whole_run(names, tmp_path, cli_env, how):
    """Two `train --out DIR --force` (or two `--resume DIR`) started at once: one trains,
    the other is refused; config, checkpoint and metrics are all the one's that ran."""
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=2), cli_env).returncode == 0
    # long enough (seconds of the reference engine) that the two overlap
    if how == "--force":
        argvs = [slow_run(names, out, steps=200) + ["--force", "--seed", str(seed)]
                 for seed in (1, 2)]  # fmt: skip
    else:
        argvs = [["train", "--resume", str(out), "--steps", str(steps), "--engine", "ref",
                  "--num-samples", "0"] for steps in (200, 250)]  # fmt: skip
    procs = [popen(argv, cli_env) for argv in argvs]
    results = [(p.communicate(timeout=300), p.returncode) for p in procs]
    assert sorted(code for _, code in results) == [0, 2], results
    (_, refused), _ = next(r for r in results if r[1] == 2)
    assert refused.count("\n") == 1 and "being written by another microgpt" in refused
    winner = argvs[[code for _, code in results].index(0)]
    ckpt = ckpt_io.load(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    if how == "--force":
        seed = int(winner[-1])
        assert ckpt.train.seed == config["train"]["seed"] == seed
        assert steps == list(range(1, 201))
    else:
        total = int(winner[4])
        assert ckpt.step == config["train"]["num_steps"] == total
        assert steps == list(range(1, total + 1))


# --- 2. non-finite numbers never become "best" or "last good" --------------------------------


@pytest.mark.parametrize("lr", ["0.7", "30", "1e6", "1e36"])
def test_every_checkpoint_a_diverging_run_leaves_works(names, tmp_path, cli_env, lr):
    out = tmp_path / "run"
    loop = ["--val-fraction", "0.2", "--eval-every", "1", "--checkpoint-every", "1"]
    r = main_cli(train(names, out, "--learning-rate", lr, *loop, steps=8), cli_env)
    assert r.returncode in (0, 2), r.stderr
    left = [p for p in (out / "model.safetensors", out / "best.safetensors") if p.exists()]
    if r.returncode == 2:
        assert "is kept" in one_line_error(r)
    for path in left:
        ckpt = ckpt_io.load(path)  # the loader refuses NaN and infinity: loading is the check
        assert ckpt.record.best_val_loss is None or ckpt.record.best_val_loss < float("inf")
        s = main_cli(["sample", "--checkpoint", str(path), "--num-samples", "2"], cli_env)
        assert s.returncode == 0, s.stderr
        copy = tmp_path / f"copy_{path.stem}"
        copy.mkdir()
        shutil.copy(path, copy / "model.safetensors")
        resumed = main_cli(["train", "--resume", str(copy), "--steps", str(ckpt.step),
                            "--quiet"], cli_env)  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr


# --- 5. operating-system errors: one line, nothing half-written ------------------------------


class DiskFull:
    """os.write raising ENOSPC at its `fail_at`-th call on a file under `root`, else counting
    those calls (other descriptors, such as the test runner's pipes, are left alone)."""

    def __init__(self, root: Path, fail_at: int | None = None):
        self.root, self.fail_at, self.calls = str(root), fail_at, 0
        self.real = os.write

    def __call__(self, fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(self.root):
            self.calls += 1
            if self.calls == self.fail_at:
                raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd, data)


def writes_of(argv, env, root, monkeypatch) -> int:
    """How many times the command calls os.write on files under `root` (it must succeed)."""
    counter = DiskFull(root)
    monkeypatch.setattr(os, "write", counter)
    assert main_cli(argv, env).returncode == 0
    monkeypatch.setattr(os, "write", counter.real)
    return counter.calls


def with_disk_full(argv, env, root, n, monkeypatch):
    monkeypatch.setattr(os, "write", DiskFull(root, fail_at=n))
    r = main_cli(argv, env)
    monkeypatch.undo()
    one_line_error(r, "No space left on device")


def assert_whole_run(out: Path, env) -> int:
    """A run folder after a failure: its checkpoint loads, metrics.jsonl logs every step up
    to it, nothing temporary is left, and it resumes. Its step."""
    step = ckpt_io.load(out / "model.safetensors").step
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m][:step] == list(range(1, step + 1))
    assert "microgpt_version" in json.loads((out / "config.json").read_text())
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    r = main_cli(["train", "--resume", str(out), "--quiet"], env)
    assert r.returncode == 0, r.stderr
    return step


def test_disk_full_at_every_write_of_a_new_run(names, tmp_path, cli_env, monkeypatch):
    """A run whose one checkpoint is its last: a full disk at any write leaves nothing."""
    out = tmp_path / "run"
    argv = train(names, out)
    total = writes_of(argv, cli_env, tmp_path, monkeypatch)
    assert total >= 7  # the lock, config.json, a metrics line per step, the checkpoint
    shutil.rmtree(out)
    before = snapshot(tmp_path)
    for n in range(1, total + 1):
        with_disk_full(argv, cli_env, tmp_path, n, monkeypatch)
        assert snapshot(tmp_path) == before, f"write {n} of {total} left something behind"


def test_disk_full_at_every_write_of_a_resumed_run(run_dir, tmp_path, cli_env, monkeypatch):
    """Resuming changes nothing in place before its checkpoint is on disk: a full disk at any
    write before it leaves every file of the run byte-identical, and at any write after it
    a whole run that resumes."""
    spare = tmp_path / "spare"
    shutil.copytree(run_dir, spare)
    argv = ["train", "--resume", str(spare), "--steps", "9", "--quiet"]
    total = writes_of(argv, cli_env, tmp_path, monkeypatch)
    before = snapshot(run_dir)
    untouched = 0
    for n in range(1, total + 1):
        shutil.rmtree(spare)
        shutil.copytree(run_dir, spare)
        with_disk_full(argv, cli_env, tmp_path, n, monkeypatch)
        if snapshot(spare) == {k.replace(str(run_dir), str(spare)): v for k, v in before.items()}:
            untouched += 1
        else:
            assert assert_whole_run(spare, cli_env) > 4, f"write {n} of {total}"
    assert 0 < untouched < total  # failures both before and after its first checkpoint


def test_disk_full_at_every_write_once_a_run_has_checkpoints(names, tmp_path, cli_env,
                                                             monkeypatch):  # fmt: skip
    """A new run with periodic and best checkpoints: a full disk at any write leaves either
    nothing (before the first) or a whole run that resumes."""
    out = tmp_path / "run"
    argv = train(names, out, "--checkpoint-every", "2", "--val-fraction", "0.2",
                 "--eval-every", "1", steps=5)  # fmt: skip
    total = writes_of(argv, cli_env, tmp_path, monkeypatch)
    kinds = set()
    for n in range(1, total + 1):
        shutil.rmtree(out, ignore_errors=True)
        with_disk_full(argv, cli_env, tmp_path, n, monkeypatch)
        kinds.add(assert_whole_run(out, cli_env) if out.exists() else "nothing")
    assert "nothing" in kinds and len(kinds) >= 3, kinds


@pytest.mark.parametrize("where", ["/proc/microgpt-run", "/sys/microgpt-run", "readonly"])
def test_out_where_nothing_can_be_written(names, tmp_path, cli_env, where):
    if where == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        where = str(folder / "run")
    before = snapshot(tmp_path)
    one_line_error(main_cli(train(names, where), cli_env), "cannot")
    assert snapshot(tmp_path) == before


def test_stdout_to_dev_full_is_one_line(names, tmp_path, cli_env):
    out = tmp_path / "run"
    with open("/dev/full", "w") as full:
        for argv in (train(names, out, steps=400), train(names, None, steps=2)):
            r = subprocess.run([sys.executable, "-m", "microgpt", *argv], stdout=full,
                               stderr=subprocess.PIPE, env=cli_env, text=True, timeout=300)
            line = one_line_error(r, "cannot write to standard output: No space left on device")
            assert "Exception" not in line
    assert not out.exists()  # the first failed before its checkpoint: nothing left


def test_a_data_file_name_that_is_not_utf8(tmp_path, cli_env):
    bad = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    with open(bad, "wb") as f:
        f.write(NAMES.encode())
    out = tmp_path / "run"
    r = main_cli(train(os.fsdecode(bad), out), cli_env)
    one_line_error(r, "not valid UTF-8")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["not-utf8", "garbage-line", "config-is-a-folder",
                                    "best-is-a-folder"])  # fmt: skip
def test_a_damaged_run_folder_on_resume(run_dir, tmp_path, cli_env, damage):
    if damage == "not-utf8":
        (run_dir / "metrics.jsonl").write_bytes(b'{"step": 1}\n\xff\xfe\n')
    elif damage == "garbage-line":
        text = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run_dir / "metrics.jsonl").write_text("".join(text[:2] + ["[[[\n"] + text[2:]))
    elif damage == "config-is-a-folder":
        (run_dir / "config.json").unlink()
        (run_dir / "config.json").mkdir()
    else:
        (run_dir / "best.safetensors").unlink()
        (run_dir / "best.safetensors").mkdir()
    before = snapshot(tmp_path)
    one_line_error(main_cli(["train", "--resume", str(run_dir), "--steps", "6"], cli_env))
    assert snapshot(tmp_path) == before


# --- 6. numbers at the edge --------------------------------------------------------------------


@pytest.mark.parametrize("temperature", ["1e-310", "5e-324", "0.0009"])
def test_a_temperature_whose_inverse_overflows_is_refused(names, tmp_path, cli_env,
                                                          temperature):  # fmt: skip
    r = main_cli(train(names, None, "--temperature", temperature), cli_env)
    one_line_error(r, "temperature must be 0 (greedy) or a finite number >= 0.001")
    assert r.stdout == ""  # refused up front: not one step trained
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=1), cli_env).returncode == 0
    r = main_cli(["sample", "--checkpoint", str(out / "model.safetensors"), "--temperature",
                  temperature], cli_env)  # fmt: skip
    one_line_error(r, "--temperature must be 0 (greedy) or a finite number >= 0.001")


def test_the_smallest_temperatures_accepted_sample(names, tmp_path, cli_env):
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=1), cli_env).returncode == 0
    for t in ("0", "0.001"):
        r = main_cli(["sample", "--checkpoint", str(out / "model.safetensors"),
                      "--temperature", t, "--num-samples", "3"], cli_env)  # fmt: skip
        assert r.returncode == 0 and r.stdout.count("sample") == 3, r.stderr


EDGES = [  # a numeric (or path) flag, a value just past its edge, a phrase of the refusal
    ("--steps", str(10**18 + 1), "steps must be"),
    ("--seed", str(2**64), "seed must be an integer of at most 64 bits"),
    ("--seed", str(-(2**64)), "seed must be"),
    ("--batch-size", str(2**31), "batch size must be"),
    ("--n-layer", str(2**31), "n_layer must be"),
    ("--num-samples", str(2**31), "num samples must be"),
    ("--eval-every", str(10**18 + 1), "--eval-every must be"),
    ("--checkpoint-every", str(10**18 + 1), "--checkpoint-every must be"),
    ("--val-fraction", "nan", "val fraction"),
    ("--val-fraction", "1", "val fraction"),
    ("--learning-rate", "1e309", "learning rate"),
    ("--learning-rate", "-0.0", "learning rate"),
    ("--data", "", "--data needs a file"),
]


@pytest.mark.parametrize("flag, value, phrase", EDGES, ids=[f"{f}={v[:8]}" for f, v, _ in EDGES])
def test_numeric_flags_past_their_edge(names, tmp_path, cli_env, flag, value, phrase):
    extra = ["--val-fraction", "0.2"] if flag == "--eval-every" else []
    argv = train(names, tmp_path / "run", *extra, flag, value)
    before = snapshot(tmp_path)
    one_line_error(main_cli(argv, cli_env), phrase)
    assert snapshot(tmp_path) == before


def test_values_at_the_edge_are_kept_and_load_again(names, tmp_path, cli_env):
    """What the flags accept, the checkpoint stores and the loader accepts: the same schema."""
    out = tmp_path / "run"
    r = main_cli(train(names, out, "--seed", str(2**64 - 1), "--val-fraction", "0.2",
                       "--eval-every", str(10**18), "--checkpoint-every", str(10**18),
                       "--temperature", "0.001", steps=2), cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = ckpt_io.load(out / "model.safetensors")
    assert ckpt.train.seed == 2**64 - 1 and ckpt.record.eval_every == 10**18
    r = main_cli(["train", "--resume", str(out), "--steps", "3", "--quiet"], cli_env)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("argv", [["sample", "--checkpoint", ""],
                                  ["eval", "--checkpoint", "", "--data", "x"]])  # fmt: skip
def test_empty_paths_are_usage_errors(cli_env, argv):
    one_line_error(main_cli(argv, cli_env), "needs a")


# --- 7. the small ones -------------------------------------------------------------------------

BOOT = """
import os, runpy, sys
sys.argv[0] = "-m"  # what `python -m` sets while it finds the module
import microgpt  # what `python -m microgpt` imports first: from its first line, it is ours
os.write(int(os.environ["READY_FD"]), b".")
runpy.run_module("microgpt", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_at_any_moment_of_the_first_80_ms_prints_no_traceback(names, tmp_path, cli_env):
    """SIGINT 0-80 ms after the package's first line ran (importing the command's modules,
    reading the data, training): exit 130 or a normal end, never a traceback. (Before that,
    in the interpreter's own start-up, no package can catch it.)"""
    argv = train(names, None, steps=50)
    for i in range(41):
        ready_r, ready_w = os.pipe()
        proc = subprocess.Popen([sys.executable, "-c", BOOT, *argv], pass_fds=(ready_w,),
                                env={**cli_env, "READY_FD": str(ready_w)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"."
        os.close(ready_r)
        time.sleep(i * 0.002)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err and "Exception" not in err, (i * 2, err)
        assert proc.returncode in (0, 130, 128 + signal.SIGINT), (i * 2, proc.returncode, err)
        assert err.count("\n") <= 1, err


def test_the_exported_file_under_head_exits_quietly(names, tmp_path, cli_env):
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=1), cli_env).returncode == 0
    exported = tmp_path / "model.py"
    r = main_cli(["export", "--checkpoint", str(out / "model.safetensors"), "--out",
                  str(exported), "--no-measure"], cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    proc = subprocess.run(f"{sys.executable} -I {exported} --num-samples 100000 | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.stdout.startswith("sample  1: ") and proc.stdout.count("\n") == 1
    assert proc.stderr == "", proc.stderr


def test_a_byte_order_mark_is_not_a_character(tmp_path, cli_env):
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_bytes(NAMES.encode())
    marked.write_bytes(b"\xef\xbb\xbf" + NAMES.encode())
    runs = {}
    for path in (plain, marked):
        out = tmp_path / f"run_{path.stem}"
        assert main_cli(train(path, out, steps=2), cli_env).returncode == 0
        runs[path.stem] = ckpt_io.load(out / "model.safetensors")
    assert "\ufeff" not in runs["marked"].uchars
    assert runs["marked"].uchars == runs["plain"].uchars
    assert runs["marked"].params["wte"].data == runs["plain"].params["wte"].data


def test_divergence_with_checkpoint_every_does_not_tell_to_add_it(names, tmp_path, cli_env):
    r = main_cli(train(names, tmp_path / "run", "--learning-rate", "1e300",
                       "--checkpoint-every", "50", steps=60), cli_env)  # fmt: skip
    line = one_line_error(r, "the first was due at step 50")
    assert "add --checkpoint-every" not in line


def test_a_moved_data_file_on_resume_names_the_recorded_path(names, tmp_path, cli_env):
    out = tmp_path / "run"
    assert main_cli(train(names, out, steps=2), cli_env).returncode == 0
    names.rename(tmp_path / "moved.txt")
    line = one_line_error(main_cli(["train", "--resume", str(out), "--steps", "3"], cli_env))
    assert "the run recorded this path" in line and "given to --data" not in line


def test_compact_documents_give_the_originals_documents_and_fingerprint(tmp_path, cli_env):
    """The oracle is the original's way: a list of stripped lines, `random.shuffle`d with the
    seed; the held-out tail; the fingerprint of the rest (now made at the first checkpoint,
    from the compact arrays, a block at a time)."""
    import random

    from microgpt.fingerprint import Fingerprint

    lines = [f"  {n}{i % 7}\r\n" if i % 5 else "\n" for i, n in enumerate(NAMES.split() * 30)]
    data = tmp_path / "names.txt"
    data.write_text("\ufeff" + "".join(lines), newline="")
    out = tmp_path / "run"
    r = main_cli(train(data, out, "--val-fraction", "0.25", "--seed", "3", steps=1), cli_env)
    assert r.returncode == 0, r.stderr
    docs = [line.strip() for line in "".join(lines).splitlines() if line.strip()]
    random.Random(3).shuffle(docs)
    n_val = round(len(docs) * 0.25)
    ckpt = ckpt_io.load(out / "model.safetensors")
    assert ckpt.record.fingerprint == Fingerprint.from_docs(docs[:-n_val]).to_json()
    config = json.loads((out / "config.json").read_text())
    assert (config["num_train_docs"], config["num_val_docs"]) == (len(docs) - n_val, n_val)
    assert config["vocab"] == "".join(sorted(set("".join(docs))))
