"""The NumPy engine end to end: the default `microgpt train` reproduces the original's output,
float32 trains to nearly the same loss, and `microgpt bench --quick` runs and reports."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import random

import pytest
from run_helpers import cli, main_cli

from microgpt.config import get_preset
from microgpt.data import load_docs
from microgpt.numpy_engine.model import NumpyEngine
from microgpt.train import new_trainer


def run_cli(args, env):
    """`microgpt ARGS` in this process (bench still measures in fresh processes of its own)."""
    return main_cli(args, env)


@pytest.mark.parametrize("preset", ["final", "first"])
def test_default_engine_reproduces_reference_output(
    preset, names_path, cli_env, tmp_path, reference
):
    """`microgpt train` with the default (numpy) engine prints the original's every line:
    each 4-decimal loss and the same 20 samples. (About a second: not marked slow.)"""
    args = ["train", "--data", str(names_path), "--out", str(tmp_path / "run")]
    if preset != "final":
        args += ["--preset", preset]
    proc = run_cli(args, cli_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == reference.lines(preset)
    # beyond the 4 printed decimals: every step's full loss within 1e-10 of the original's
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    exact = reference.losses(preset)
    assert [m["step"] for m in metrics] == list(range(1, len(exact) + 1))
    for m, want in zip(metrics, exact, strict=True):
        assert abs(m["loss"] - want) <= 1e-10 * want, m


def test_float32_final_loss_close_to_float64(names_path):
    """float32 training of the default run ends within 0.05 of float64's final loss."""
    preset = get_preset("final")
    final = {}
    for dtype in ("float64", "float32"):
        rng = random.Random(preset.train.seed)
        docs, _ = load_docs(names_path, rng)
        trainer = new_trainer(
            NumpyEngine, docs, preset.model, preset.optim, preset.train, rng, dtype=dtype
        )
        while not trainer.done:
            result = trainer.step()
        final[dtype] = result.loss
    assert math.isfinite(final["float32"])
    assert abs(final["float32"] - final["float64"]) < 0.05, final


def test_sample_with_numpy_float32_from_checkpoint(names_path, cli_env, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["train", "--data", str(names_path), "--steps", "30", "--num-samples", "3",
                    "--out", str(out)], cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    trained = [line for line in proc.stdout.splitlines() if line.startswith("sample")]
    ckpt = str(out / "model.safetensors")
    for dtype in ("float64", "float32"):
        proc = run_cli(["sample", "--checkpoint", ckpt, "--num-samples", "3", "--dtype", dtype],
                       cli_env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert len(lines) == 3 and all(line.startswith("sample ") for line in lines)
        if dtype == "float64":  # continues the saved random stream: the same samples
            assert lines == trained


def test_ref_engine_refuses_float32(names_path, cli_env):
    proc = run_cli(["train", "--engine", "ref", "--dtype", "float32", "--data", str(names_path),
                    "--steps", "1"], cli_env)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "microgpt: error: the ref engine supports --dtype float64, not float32"
    ]


@pytest.mark.slow  # every engine row in fresh processes (torch loads in each): ~15 s
def test_bench_quick_reports_every_field(names_path, cli_env):
    """A smoke run of the benchmark: the table and the JSON line, with every field (no time
    is checked, only that it was measured); the engines agree on the loss they reach."""
    # a fresh interpreter: bench limits BLAS to one thread before NumPy loads
    proc = cli(["bench", "--quick", "--data", str(names_path)], cli_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("BLAS threads: 1") for line in lines)
    result = json.loads(lines[-1])["bench"]
    assert result["quick"] is True and result["repeats"] == 1
    assert result["blas_threads"].startswith("1")
    assert result["workload"]["large_config"] == {
        **dataclasses.asdict(get_preset("final").model),
        "n_layer": 4, "n_embd": 128, "n_head": 4, "block_size": 64, "zero_init": [],
        "batch_size": 12, "learning_rate": 1e-3,
    }  # fmt: skip
    rows = {(r["engine"], r["dtype"], r.get("device")): r for r in result["engines"]}
    assert {("ref", "float64", None), ("numpy", "float64", None),
            ("numpy", "float32", None)} <= set(rows)  # fmt: skip
    torch_rows = [key for key in rows if key[0] == "torch"]
    assert {("torch", "float64", "cpu"), ("torch", "float32", "cpu")} <= set(torch_rows)
    torch_spec = importlib.util.find_spec("torch")
    cuda = torch_spec is not None and __import__("torch").cuda.is_available()
    for key in torch_rows:  # measured where torch (and, for a cuda row, a GPU) is present
        assert ("skipped" in rows[key]) == (torch_spec is None or (key[2] == "cuda" and not cuda))
        if "skipped" in rows[key]:
            assert rows[key]["skipped"], key  # the reason, e.g. how to install torch
    measured = {key: row for key, row in rows.items() if "skipped" not in row}
    for (engine, _dtype, _device), row in measured.items():
        train = row["train"]
        for key in ("s_per_step", "cpu_s_per_step", "tokens_per_s", "speedup", "cpu_speedup"):
            assert train[key] > 0, (engine, key)
        assert math.isfinite(train["final_loss"])
        assert row["sample"]["tokens"] > 0 and row["sample"]["tokens_per_s"] > 0
        if engine == "ref":
            assert row["large"] is None
        else:
            assert row["large"]["steps"] == 2 and math.isfinite(row["large"]["final_loss"])
            assert row["large"]["tokens_per_s"] > 0
    # the same run, the same loss at the check step, whichever engine computed it
    check = rows["ref", "float64", None]["train"]["loss_at_step"]
    assert rows["numpy", "float64", None]["train"]["loss_at_step"]["step"] == check["step"]
    assert math.isclose(rows["numpy", "float64", None]["train"]["loss_at_step"]["loss"],
                        check["loss"], rel_tol=1e-10)  # fmt: skip
    assert math.isclose(rows["numpy", "float32", None]["train"]["loss_at_step"]["loss"],
                        check["loss"], rel_tol=1e-4)  # fmt: skip
    for (engine, dtype, _device), row in measured.items():  # torch rows, CPU and GPU
        got = row["train"]["loss_at_step"]
        assert got["step"] == check["step"], (engine, dtype)
        tol = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 3e-2}[dtype]
        assert math.isclose(got["loss"], check["loss"], rel_tol=tol), (engine, dtype, _device)


def test_bench_rejects_unknown_engine(names_path, cli_env):
    proc = run_cli(["bench", "--quick", "--data", str(names_path), "--engines", "nope"], cli_env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("microgpt: error: unknown engine")
