"""The reference engine against the original program's own output (tests/reference)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.config import get_preset
from microgpt.data import load_docs
from microgpt.init import num_params
from microgpt.ref.model import RefEngine
from microgpt.train import new_trainer


def microgpt(*args, env, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "microgpt", *map(str, args)],
        capture_output=True, text=True, env=env, check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.parametrize("preset,params", [("final", 4192), ("first", 4064)])
def test_first_steps_are_bit_exact(preset, params, names_path, reference):
    """The quick oracle: the first steps' losses are `==` to the original's, to the last bit."""
    p = get_preset(preset)
    rng = random.Random(p.train.seed)
    docs, _ = load_docs(names_path, rng)
    trainer = new_trainer(RefEngine, docs, p.model, p.optim, p.train, rng)
    assert len(docs) == 32033 and trainer.tokenizer.vocab_size == 27
    assert num_params(p.model, trainer.tokenizer.vocab_size) == params
    expected = reference.losses(preset)[:8]
    assert [trainer.step().loss for _ in expected] == expected


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["final", "first"])
def test_train_cli_reproduces_the_original(preset, names_path, tmp_path, cli_env, reference):
    out = tmp_path / "run"
    proc = microgpt("train", "--engine", "ref", "--preset", preset, "--data", names_path,
                    "--out", out, env=cli_env)
    expected = reference.lines(preset)
    assert proc.stdout.splitlines() == expected  # `diff` against the original is empty
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in metrics] == reference.losses(preset)  # `==`, every step
    assert [m["step"] for m in metrics] == list(range(1, len(metrics) + 1))

    # Without --seed, `sample` continues the saved random stream: the original's samples.
    ckpt = out / "model.safetensors"
    samples = [line for line in expected if line.startswith("sample")]
    proc = microgpt("sample", "--checkpoint", ckpt, "--engine", "ref", env=cli_env)
    assert proc.stdout.splitlines() == samples
    # With --seed the stream starts afresh: reproducible, and 20 lines of the same form.
    first = microgpt("sample", "--checkpoint", ckpt, "--engine", "ref", "--seed", 42, env=cli_env)
    again = microgpt("sample", "--checkpoint", ckpt, "--engine", "ref", "--seed", 42, env=cli_env)
    assert first.stdout == again.stdout
    assert [line[:10] for line in first.stdout.splitlines()] == [s[:10] for s in samples]

    # The public safetensors library reads the same numbers our reader does.
    st = pytest.importorskip("safetensors.numpy", reason="dev dependency safetensors missing")
    theirs = st.load_file(str(ckpt))
    ours = ckpt_io.load(ckpt)
    for name, t in ours.params.items():
        assert theirs[name].shape == t.shape
        assert theirs[name].ravel().tolist() == t.data.tolist()
    assert set(theirs) == set(ours.params) | {f"adam.{k}.{n}" for k in "mv" for n in ours.params}
