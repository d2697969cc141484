"""DDP on the CPU: two ranks under torchrun (gloo, loopback only) against one process.

Oracles: a single process (the torch engine, and the reference engine) on the combined
global batch; the other rank; an uninterrupted run. The jobs start real processes through
`python -m torch.distributed.run` (= torchrun), so these tests are slow (~20 s a launch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch (pip install torch)")

import ddp_worker  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)
from run_helpers import assert_same_state  # noqa: E402

from microgpt import checkpoint as ckpt_io  # noqa: E402
from microgpt.ref.model import RefEngine  # noqa: E402
from microgpt.torch_engine import TorchEngine  # noqa: E402
from microgpt.train import new_trainer  # noqa: E402

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, env: dict[str, str] | None = None, nproc: int = 2):
    """Run `torchrun --nproc_per_node=nproc ARGS` on the loopback interface."""
    env = dict(env or os.environ)
    env["OMP_NUM_THREADS"] = "1"  # one OpenMP thread per rank: ranks share the cores
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
        f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def relative_error(a, b) -> float:
    scale = max((abs(x) for x in a), default=0.0)
    diff = max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)
    return diff / scale if scale else diff


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> dict:
    """One DDP training job, then a second job that resumes from its step-20 checkpoint."""
    out = tmp_path_factory.mktemp("ddp")
    results = {}
    for mode in ("train", "resume"):
        proc = torchrun([str(HERE / "ddp_worker.py"), mode, str(out)], cwd=out)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for rank in (0, 1):
            results[mode, rank] = json.loads((out / f"{mode}_rank{rank}.json").read_text())
    results["dir"] = out
    return results


def single_process(engine_cls, **kwargs):
    """The worker's run in this one process: the same docs, seed and global batch."""
    rng = random.Random(ddp_worker.TRAIN.seed)
    docs = ddp_worker.documents(ddp_worker.TRAIN.seed)
    return new_trainer(
        engine_cls, docs, ddp_worker.MODEL, ddp_worker.OPTIM, ddp_worker.TRAIN, rng,
        engine_kwargs=kwargs,
    )  # fmt: skip


def test_one_step_gradients_equal_a_single_process_on_the_combined_batch(job):
    # Compare gradients, not weights: Adam's update is nearly invariant to a gradient's
    # scale, so a sum-versus-mean mistake would hide behind it.
    for cls, kwargs, tol in ((TorchEngine, {"device": "cpu", "distributed": False}, 1e-12),
                             (RefEngine, {}, 1e-10)):  # fmt: skip
        trainer = single_process(cls, **kwargs)
        loss = trainer.engine.forward_backward(trainer.batch(0))
        grads = trainer.engine.gradients()
        for rank in (0, 1):
            got = job["train", rank]
            assert got["world_size"] == 2
            assert abs(got["loss"] - loss) <= tol * loss
            for name, g in grads.items():
                assert relative_error(list(g.data), got["grads"][name]) <= tol, (cls, name)


def test_each_rank_trains_on_its_shard_of_the_global_batch(job):
    batch = single_process(TorchEngine, device="cpu", distributed=False).batch(0)
    tokens = [len(s) - 1 for s in batch]
    for rank in (0, 1):
        stats = job["train", rank]["probe_stats"]
        assert stats["sequences"] == len(batch[rank::2])
        assert stats["tokens"] == sum(tokens[rank::2])
        assert stats["global_tokens"] == sum(tokens)
    # the two shards hold different token counts, so the loss scaling is exercised
    assert sum(tokens[0::2]) != sum(tokens[1::2])


def test_ranks_hold_bitwise_identical_weights_after_50_steps(job):
    a, b = job["train", 0], job["train", 1]
    assert len(a["losses"]) == ddp_worker.TRAIN.num_steps == 50
    assert a["params"] == b["params"]  # floats from repr: equal means bit for bit
    assert a["losses"] == b["losses"]


def test_ddp_run_follows_the_single_process_run(job):
    trainer = single_process(TorchEngine, device="cpu", distributed=False)
    losses = [trainer.step().loss for _ in range(ddp_worker.TRAIN.num_steps)]
    got = job["train", 0]
    assert relative_error(losses, got["losses"]) < 1e-9
    for name, p in trainer.engine.parameters().items():
        assert relative_error(list(p.data), got["params"][name]) < 1e-9, name


def test_resume_under_torchrun_ends_identical_to_the_uninterrupted_run(job):
    ckpt = ckpt_io.load(job["dir"] / "checkpoint.safetensors")
    assert ckpt.step == ddp_worker.STOP
    uninterrupted = job["train", 0]
    for rank in (0, 1):
        resumed = job["resume", rank]
        assert resumed["stats"]["steps"] == ddp_worker.TRAIN.num_steps - ddp_worker.STOP
        assert resumed["losses"] == uninterrupted["losses"][ddp_worker.STOP :]
        assert resumed["params"] == uninterrupted["params"]  # bit for bit


def test_cli_under_torchrun(tmp_path, cli_env):
    """`torchrun -m microgpt train`: one set of output lines, rank 0's files, each rank's log."""
    data = tmp_path / "names.txt"
    data.write_text("\n".join(ddp_worker.documents(0)) + "\n")
    flags = ["train", "--engine", "torch", "--device", "cpu", "--data", str(data), "--steps",
             "20", "--batch-size", "4", "--n-embd", "8", "--num-samples", "3"]  # fmt: skip
    proc = torchrun(["-m", "microgpt", *flags, "--out", str(tmp_path / "ddp")], tmp_path, cli_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-m", "microgpt", *flags, "--out", str(tmp_path / "one")],
        cwd=tmp_path, env={**cli_env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    # rank 0 alone printed: the same lines as one process with the same --batch-size
    assert proc.stdout == single.stdout
    assert proc.stdout.count("step ") == 20
    assert "effective batch 4 sequences per step" in proc.stderr
    assert "rank 0/2" in proc.stderr and "rank 1/2" in proc.stderr
    metrics = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 20
    a = ckpt_io.load(tmp_path / "ddp" / "model.safetensors")
    b = ckpt_io.load(tmp_path / "one" / "model.safetensors")
    assert a.step == b.step == 20
    for name in a.params:
        assert relative_error(list(b.params[name].data), list(a.params[name].data)) < 1e-9


# --- the CLI under torchrun: killed, signalled, resumed ------------------------------------------

CLI_STEPS = 300  # enough that a run is still going when the test acts on it


def cli_flags(data: Path, *extra: str) -> list[str]:
    """`-m microgpt train` flags of a small DDP run (2 ranks, 2 sequences each per step)."""
    return ["-m", "microgpt", "train", "--engine", "torch", "--device", "cpu", "--data",
            str(data), "--steps", str(CLI_STEPS), "--batch-size", "4", "--n-embd", "8",
            "--num-samples", "3", "--quiet", *extra]  # fmt: skip


def torchrun_popen(args: list[str], cwd: Path, env: dict[str, str], stderr_path: Path):
    """torchrun in its own session, like a job in a shell: its stdout (rank 0's lines)
    piped line by line, its stderr (both ranks' and torchrun's) to a file."""
    env = {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args,
    ]  # fmt: skip
    with open(stderr_path, "w") as err:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True, start_new_session=True)  # fmt: skip


def read_until_step(proc, step: int, stderr_path: Path) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(f"step {step:4d} /"):
            return lines
    proc.wait(timeout=60)
    raise AssertionError(f"the run ended before step {step}: {stderr_path.read_text()[-3000:]}")


def ranks_of(pid: int) -> dict[int, int]:
    """{rank: pid} of the workers torchrun `pid` started (its children, by RANK)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            rank = next(int(v[5:]) for v in env if v.startswith(b"RANK="))
            out[rank] = int(entry.name)
    return out


def wait_gone(pids, timeout: float = 60.0) -> None:
    """Wait until every pid has exited (an orphan is reaped by init)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists():
            stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
            if stat and stat.rsplit(")", 1)[1].split()[0] == "Z":
                break  # exited, not yet reaped
            assert time.monotonic() < deadline, f"process {pid} still runs"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp_cli") / "names.txt"
    path.write_text("\n".join(ddp_worker.documents(0)) + "\n")
    return path


@pytest.fixture(scope="module")
def straight_cli_run(cli_data, tmp_path_factory) -> tuple[Path, str]:
    """The uninterrupted DDP run through the CLI: its directory and stdout (the oracle)."""
    out = tmp_path_factory.mktemp("ddp_straight") / "run"
    env = {**os.environ, "MICROGPT_CACHE_DIR": str(out.parent / "cache")}
    proc = torchrun(cli_flags(cli_data, "--out", str(out)), out.parent, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout


def resume_and_compare(run_dir: Path, straight: tuple[Path, str], cwd: Path, env) -> None:
    """`torchrun -m microgpt train --resume DIR` ends `==` to the uninterrupted run."""
    proc = torchrun(["-m", "microgpt", "train", "--resume", str(run_dir), "--quiet"], cwd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref_out, ref_stdout = straight
    assert_same_state(
        ckpt_io.load(ref_out / "model.safetensors"), ckpt_io.load(run_dir / "model.safetensors")
    )
    assert (run_dir / "metrics.jsonl").read_text() == (ref_out / "metrics.jsonl").read_text()
    assert ref_stdout.endswith(proc.stdout)  # the remaining step lines, then the same samples
    assert proc.stdout.count("step ") < CLI_STEPS


def test_sigkill_of_a_torchrun_job_after_a_periodic_checkpoint_then_resume(
    cli_data, straight_cli_run, tmp_path, cli_env
):
    """Kill torchrun and its ranks (as a lost machine would) two steps after the step-10
    checkpoint; resuming under torchrun ends bit-identical to the uninterrupted run."""
    out = tmp_path / "killed"
    err = tmp_path / "stderr.txt"
    proc = torchrun_popen(cli_flags(cli_data, "--out", str(out), "--checkpoint-every", "10"),
                          tmp_path, cli_env, err)  # fmt: skip
    try:
        read_until_step(proc, 1, err)
        ranks = ranks_of(proc.pid)  # before the step that matters: /proc is slow to scan
        read_until_step(proc, 12, err)
        assert sorted(ranks) == [0, 1], ranks
        # the ranks run in sessions of their own: kill torchrun's group, then each rank's
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in ranks.values():
            os.killpg(pid, signal.SIGKILL)
        proc.wait(timeout=60)
        wait_gone(ranks.values())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    ckpt = ckpt_io.load(out / "model.safetensors")
    assert ckpt.step % 10 == 0 and 10 <= ckpt.step < CLI_STEPS, ckpt.step
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) >= 11  # steps past the checkpoint were logged; resume cuts them back
    resume_and_compare(out, straight_cli_run, tmp_path, cli_env)


def test_a_signal_to_one_rank_stops_every_rank_at_one_step_then_resume(
    cli_data, straight_cli_run, tmp_path, cli_env
):
    """SIGTERM reaches rank 1 alone: the ranks agree to stop before the same step (no rank
    is left waiting in DDP's all-reduce), rank 0 checkpoints it, every rank exits."""
    out = tmp_path / "stopped"
    err = tmp_path / "stderr.txt"
    proc = torchrun_popen(cli_flags(cli_data, "--out", str(out)), tmp_path, cli_env, err)
    try:
        read_until_step(proc, 1, err)
        ranks = ranks_of(proc.pid)
        read_until_step(proc, 5, err)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGTERM)
        proc.stdout.read()
        proc.wait(timeout=120)
        wait_gone(ranks.values())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    stderr = err.read_text()
    said = [line for line in stderr.splitlines() if "interrupted by SIGTERM at step" in line]
    assert len(said) == 2, stderr[-3000:]  # both ranks, each once
    steps = {line.split(" at step ")[1].split()[0] for line in said}
    assert len(steps) == 1, said  # one agreed step
    step = int(steps.pop())
    assert 5 <= step < CLI_STEPS
    # no rank failed in microgpt's code (torchrun itself reports the exit codes 143 with a
    # traceback of its own)
    frames = [line for line in stderr.splitlines() if line.lstrip().startswith('File "')]
    assert not [f for f in frames if "microgpt" in f], stderr[-3000:]
    assert "KeyboardInterrupt" not in stderr
    assert ckpt_io.load(out / "model.safetensors").step == step
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, step + 1))
    resume_and_compare(out, straight_cli_run, tmp_path, cli_env)
