"""Runs you can trust: stop a run at any moment, resume it, and end bit-identical (every
weight and Adam moment `==`) to the same run done without interruption, on every engine.

The oracle is always the uninterrupted run of the same command.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
from run_helpers import ENGINE_NAMES, TINY, assert_same_state, cli, popen, require_engine

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.data import load_docs, split_validation
from microgpt.engine import load_engine
from microgpt.train import new_trainer, resume_trainer, run

STEPS = 16


def paragraphs_text() -> str:
    """A small corpus of blank-line separated paragraphs, most longer than the context."""
    rng = random.Random(7)
    words = ["the", "king", "queen", "shall", "not", "speak", "of", "love", "and", "war", "so"]
    paras = []
    for _ in range(20):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) for _ in range(2)]
        paras.append("\n".join(lines))
    return "\n\n".join(paras) + "\n"


@pytest.fixture(params=ENGINE_NAMES)
def engine_name(request) -> str:
    return require_engine(request.param)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(paragraphs_text(), encoding="utf-8")
    return path


def train_args(engine_name: str, data, out, *extra: str) -> list[str]:
    return [
        "train",
        "--engine",
        engine_name,
        "--data",
        str(data),
        "--doc-mode",
        "paragraphs",
        "--val-fraction",
        "0.1",
        "--eval-every",
        "6",
        "--steps",
        str(STEPS),
        "--num-samples",
        "4",
        *TINY,
        "--out",
        str(out),
        *extra,
    ]


def straight(engine_name, corpus, tmp_path, cli_env):
    out = tmp_path / "straight"
    r = cli(train_args(engine_name, corpus, out), cli_env)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def read_until_step(proc, step: int) -> list[str]:
    """Stdout lines up to and including `step N / ...`."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step {step:4d} /"):
            return lines
    raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()}")


def finish(proc) -> tuple[str, str]:
    """The rest of stdout and stderr. NOTE: not `communicate`, which reads the raw pipe and
    would skip lines that `read_until_step` already buffered in `proc.stdout`."""
    rest, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=120)
    return rest, err


# --- in-process: the Trainer itself -------------------------------------------------------------


def test_trainer_resume_is_bit_identical(engine_name, corpus):
    """Train 10 steps straight vs 5 + (checkpoint bytes -> load -> resume) + 5."""
    model = ModelConfig(n_embd=4, n_head=2, block_size=8)
    optim = OptimConfig()
    train = TrainConfig(num_steps=10, batch_size=2, doc_mode="paragraphs", val_fraction=0.1)
    engine_cls = load_engine(engine_name)

    def fresh():
        rng = random.Random(train.seed)
        docs, _ = load_docs(corpus, rng, train.doc_mode)
        tr, val = split_validation(docs, train.val_fraction)
        return new_trainer(engine_cls, tr, model, optim, train, rng, val_docs=val), tr, val

    a, _, _ = fresh()
    losses_a = []
    run(a, eval_every=4, on_step=lambda r: losses_a.append(r.loss))

    b, tr, val = fresh()
    losses_b = []
    for _ in range(5):
        losses_b.append(b.step().loss)
    b.best_val_loss = 1.5
    saved = ckpt_io.encode(b.checkpoint())
    path = corpus.parent / "mid.safetensors"
    ckpt_io.write_atomic(path, saved)
    c = resume_trainer(engine_cls, ckpt_io.load(path), tr, val)
    assert c.step_count == 5 and c.best_val_loss == 1.5
    run(c, eval_every=4, on_step=lambda r: losses_b.append(r.loss))

    assert losses_a == losses_b
    assert_same_state(a.checkpoint(), c.checkpoint())
    # the windows really were random windows (documents longer than the context)
    assert any(len(c.tokenizer.doc_tokens(d)) > model.block_size + 1 for d in tr)


# --- subprocesses: signals, kills ---------------------------------------------------------------


# `microgpt ARGS` that sends itself signal SIG right after step AT (a real signal, through
# the real handler, but landing at a step chosen by the test even on a fast engine).
SIGNAL_AT = textwrap.dedent(
    """
    import os, sys
    from microgpt import train
    from microgpt.__main__ import main
    sig, at = int(sys.argv[1]), int(sys.argv[2])
    original = train.Trainer.step
    def step(self):
        result = original(self)
        if result.step == at:
            os.kill(os.getpid(), sig)
        return result
    train.Trainer.step = step
    sys.exit(main(sys.argv[3:]))
    """
)


def signal_at(sig: int, step: int, args: list[str], env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_AT, str(int(sig)), str(step), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_resumed_equals_straight(out, ref_out, env) -> str:
    r = cli(["train", "--resume", str(out)], env)
    assert r.returncode == 0, r.stderr
    assert_same_state(
        ckpt_io.load(ref_out / "model.safetensors"), ckpt_io.load(out / "model.safetensors")
    )
    assert (out / "metrics.jsonl").read_text() == (ref_out / "metrics.jsonl").read_text()
    return r.stdout


def test_sigint_at_a_random_step_then_resume(engine_name, corpus, tmp_path, cli_env):
    ref_out, ref_stdout = straight(engine_name, corpus, tmp_path, cli_env)
    k = random.Random(os.urandom(8)).randint(1, STEPS - 1)
    out = tmp_path / "interrupted"
    r = signal_at(signal.SIGINT, k, train_args(engine_name, corpus, out, "--quiet"), cli_env)
    assert r.returncode == 128 + signal.SIGINT, (k, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"interrupted by SIGINT at step {k} of {STEPS}" in r.stderr
    assert f"--resume {out}" in r.stderr
    assert ckpt_io.load(out / "model.safetensors").step == k

    resumed_stdout = check_resumed_equals_straight(out, ref_out, cli_env)
    assert ckpt_io.load(ref_out / "best.safetensors").params["wte"].data == (
        ckpt_io.load(out / "best.safetensors").params["wte"].data
    )
    # stdout of the interrupted run, then of the resumed one, is the uninterrupted stdout
    assert r.stdout + resumed_stdout == ref_stdout, f"interrupted at step {k}"


def test_sigint_from_outside_then_resume(corpus, tmp_path, cli_env):
    """The same with the signal sent by another process, whenever it lands."""
    ref_out, ref_stdout = straight("ref", corpus, tmp_path, cli_env)
    k = random.Random(os.urandom(8)).randint(2, STEPS - 3)
    out = tmp_path / "interrupted"
    proc = popen(train_args("ref", corpus, out, "--quiet"), cli_env)
    first = read_until_step(proc, k)
    proc.send_signal(signal.SIGINT)
    rest, err = finish(proc)
    assert proc.returncode == 128 + signal.SIGINT, (k, err)
    assert err.count("\n") == 1 and "interrupted by SIGINT" in err, err
    assert k <= ckpt_io.load(out / "model.safetensors").step <= STEPS
    resumed_stdout = check_resumed_equals_straight(out, ref_out, cli_env)
    assert "".join(first) + rest + resumed_stdout == ref_stdout, f"interrupted at step {k}"


def test_sigterm_writes_a_checkpoint(engine_name, corpus, tmp_path, cli_env):
    out = tmp_path / "run"
    r = signal_at(signal.SIGTERM, 3, train_args(engine_name, corpus, out, "--quiet"), cli_env)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert "interrupted by SIGTERM at step 3" in r.stderr and r.stderr.count("\n") == 1
    assert ckpt_io.load(out / "model.safetensors").step == 3


def test_sigkill_after_a_periodic_checkpoint_then_resume(engine_name, corpus, tmp_path, cli_env):
    ref_out, _ = straight(engine_name, corpus, tmp_path, cli_env)
    out = tmp_path / "killed"
    args = train_args(engine_name, corpus, out, "--checkpoint-every", "4")
    r = signal_at(signal.SIGKILL, 10, args, cli_env)  # two steps after the step-8 checkpoint
    assert r.returncode == -signal.SIGKILL
    assert ckpt_io.load(out / "model.safetensors").step == 8
    # killed inside step 10, before its line: steps 9 is logged, and is cut back on resume
    assert '"step": 9,' in (out / "metrics.jsonl").read_text()
    check_resumed_equals_straight(out, ref_out, cli_env)


# A process that dies (SIGKILL) in the middle of writing its second checkpoint: the temporary
# file is written, the rename over model.safetensors has not happened.
KILL_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from microgpt import checkpoint
    from microgpt.__main__ import main
    original, calls = checkpoint.write_atomic, []
    def write_atomic(path, data, _before_rename=None):
        if str(path).endswith("model.safetensors"):
            calls.append(path)
            if len(calls) == 2:
                def die(tmp):
                    with open(tmp, "r+b") as f:  # a half-written file, to be sure
                        f.truncate(len(data) // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                _before_rename = die
        return original(path, data, _before_rename=_before_rename)
    checkpoint.write_atomic = write_atomic
    sys.exit(main(sys.argv[1:]))
    """
)


def test_kill_in_the_middle_of_a_checkpoint_write(engine_name, corpus, tmp_path, cli_env):
    ref_out, _ = straight(engine_name, corpus, tmp_path, cli_env)
    out = tmp_path / "torn"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_MID_WRITE,
            *train_args(engine_name, corpus, out, "--checkpoint-every", "4"),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert list(out.glob(".model.safetensors.*.tmp")), "the torn temporary file is there"
    assert ckpt_io.load(out / "model.safetensors").step == 4  # the previous checkpoint
    check_resumed_equals_straight(out, ref_out, cli_env)
    assert not list(out.glob(".model.safetensors.*.tmp"))


def test_write_atomic_failure_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.safetensors"
    ckpt_io.write_atomic(path, b"old contents")

    def fail(tmp):
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="simulated"):
        ckpt_io.write_atomic(path, b"new contents", _before_rename=fail)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_resume_can_extend_a_finished_run(corpus, tmp_path, cli_env):
    out = tmp_path / "run"
    r = cli(train_args("ref", corpus, out), cli_env)
    assert r.returncode == 0, r.stderr
    r = cli(["train", "--resume", str(out), "--steps", str(STEPS + 4)], cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(f"step {STEPS + 1:4d} / {STEPS + 4:4d}")
    assert ckpt_io.load(out / "model.safetensors").step == STEPS + 4
