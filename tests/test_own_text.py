"""Your own text: document modes, random windows, the validation split, evaluation logging,
the run directory and the progress bar."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import random
import struct
import subprocess
import sys
import termios

import pytest
from run_helpers import TINY, cli, main_cli, require_engine

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.data import DataError, split_documents, split_validation
from microgpt.engine import load_engine
from microgpt.evaluate import evaluate
from microgpt.train import Trainer, new_trainer, window_rng_for

TEXT = "Première ligne, ça va.\nΔεύτερη γραμμή\n\n第三段落です。\nand more\n\n\nlast: ok\n"


def tiny_trainer(docs, doc_mode, block_size=4, batch_size=3) -> Trainer:
    model = ModelConfig(n_embd=4, n_head=2, block_size=block_size)
    train = TrainConfig(num_steps=5, batch_size=batch_size, doc_mode=doc_mode)
    return new_trainer(load_engine("ref"), docs, model, OptimConfig(), train, random.Random(1))


def contains(seq: list[int], window: list[int]) -> bool:
    n = len(window)
    return any(seq[i : i + n] == window for i in range(len(seq) - n + 1))


def test_paragraph_windows_are_contiguous_random_and_reproducible():
    docs = split_documents(TEXT, "paragraphs")
    assert docs == [
        "Première ligne, ça va.\nΔεύτερη γραμμή",
        "第三段落です。\nand more",
        "last: ok",
    ]
    a, b = tiny_trainer(docs, "paragraphs"), tiny_trainer(docs, "paragraphs")
    starts = set()
    for step in range(200):
        batch = a.batch(step)
        assert batch == b.batch(step)  # the same seed draws the same windows
        for seq, doc in zip(batch, [docs[(step * 3 + i) % 3] for i in range(3)], strict=True):
            full = a.tokenizer.doc_tokens(doc)
            if len(full) > 5:
                assert len(seq) == 5 and contains(full, seq)
                if doc == docs[0]:
                    starts.add(next(i for i in range(len(full)) if full[i : i + 5] == seq))
            else:
                assert seq == full
    # every start position of the 40-token first paragraph is reachable, both ends included
    assert starts == set(range(len(a.tokenizer.doc_tokens(docs[0])) - 4))


def test_lines_mode_is_the_original_truncation_and_draws_nothing():
    docs = ["abcdefghij", "xy"]
    t = tiny_trainer(docs, "lines")
    before = t.window_rng.getstate()
    tok = t.tokenizer
    assert t.batch(0) == [
        tok.doc_tokens("abcdefghij")[:5],
        tok.doc_tokens("xy"),
        tok.doc_tokens("abcdefghij")[:5],
    ]
    assert t.window_rng.getstate() == before == window_rng_for(42).getstate()


def test_text_mode_is_one_document_split_by_characters():
    docs = split_documents(TEXT, "text")
    assert docs == [TEXT]
    train, val = split_validation(docs, 0.25)
    assert train[0] + val[0] == TEXT and len(val[0]) == int(len(TEXT) * 0.25)
    with pytest.raises(DataError):
        split_validation(["ab"], 0.3)


def test_validation_split_is_the_tail_of_the_seeded_shuffle(names_path, tmp_path, cli_env):
    """The held-out documents are the last round(F * n) of the seed-42 shuffle; their loss in
    metrics.jsonl is the loss of the saved model on exactly those documents."""
    out = tmp_path / "run"
    r = main_cli(
        [
            "train",
            "--data",
            str(names_path),
            "--steps",
            "6",
            *TINY,
            "--num-samples",
            "0",
            "--val-fraction",
            "0.0005",
            "--eval-every",
            "3",
            "--out",
            str(out),
        ],
        cli_env,
    )
    assert r.returncode == 0, r.stderr
    docs = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    random.Random(42).shuffle(docs)
    n_val = round(len(docs) * 0.0005)
    config = json.loads((out / "config.json").read_text())
    assert (config["num_train_docs"], config["num_val_docs"]) == (len(docs) - n_val, n_val)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] and [e["step"] for e in evals] == [3, 6]
    assert all(math.isclose(e["val_bpc"], e["val_loss"] / math.log(2)) for e in evals)
    assert "step 3: val loss" in r.stderr and "bits/char" in r.stderr

    final = ckpt_io.load(out / "model.safetensors")
    engine_cls = load_engine(final.record.engine)  # the run's engine: `==` is then fair
    engine = engine_cls(final.model, final.optim, len(final.uchars) + 1, final.params)
    assert evaluate(engine, final.tokenizer, docs[-n_val:]).loss == evals[-1]["val_loss"]
    best = ckpt_io.load(out / "best.safetensors")
    best_eval = min(evals, key=lambda e: e["val_loss"])
    assert best.step == best_eval["step"]
    assert final.record.best_val_loss == best_eval["val_loss"]


def test_unicode_text_trains_and_samples(tmp_path, cli_env):
    data = tmp_path / "poem.txt"
    data.write_text(TEXT * 3, encoding="utf-8")
    r = main_cli(
        [
            "train",
            "--data",
            str(data),
            "--doc-mode",
            "paragraphs",
            "--steps",
            "3",
            *TINY,
            "--num-samples",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
        cli_env,
    )
    assert r.returncode == 0, r.stderr
    vocab = ckpt_io.load(tmp_path / "run" / "model.safetensors").uchars
    assert {"è", "Δ", "第", "\n"} <= set(vocab)
    assert r.stdout.count("sample ") == 2


def test_force_replaces_a_run_and_its_stale_files(tmp_path, cli_env, names_path):
    out = tmp_path / "run"
    base = [
        "train",
        "--data",
        str(names_path),
        "--steps",
        "2",
        *TINY,
        "--num-samples",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main_cli([*base, "--val-fraction", "0.001"], cli_env).returncode == 0
    assert (out / "best.safetensors").exists()
    r = main_cli([*base, "--force"], cli_env)
    assert r.returncode == 0, r.stderr
    assert not (out / "best.safetensors").exists()  # it belonged to the replaced run
    assert r.stderr == ""  # --quiet


def run_on_a_terminal(args, env) -> tuple[str, str]:
    """Run with stderr on a pseudo-terminal; return (stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    # a terminal of 24 x 100 characters (a fresh pty is 0 x 0, and tqdm fits the bar into 0)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "microgpt", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read()
    proc.wait(timeout=60)
    os.close(master)
    return stdout, shown.decode("utf-8", "replace")


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(names_path, tmp_path, cli_env):
    """A run of a few seconds: the bar (steps/s) on a terminal; never in stdout; none with
    --quiet. (Marked slow: the bar waits 2 s before it shows.)"""
    args = [
        "train",
        "--data",
        str(names_path),
        "--steps",
        "100",
        "--n-embd",
        "8",
        "--n-head",
        "2",
        "--num-samples",
        "1",
    ]
    stdout, shown = run_on_a_terminal(args, cli_env)
    assert "step/s" in shown and "loss" in shown
    assert "\r" not in stdout and stdout.count("\nstep ") == 100
    _, shown_quiet = run_on_a_terminal([*args, "--quiet"], cli_env)
    assert "step/s" not in shown_quiet
    piped = cli(args, cli_env)
    assert "step/s" not in piped.stderr


@pytest.mark.slow
def test_tinyshakespeare_recipe_end_to_end(shakespeare_path, tmp_path, cli_env):
    """The README's recipe (paragraphs, a validation split, a bigger model), cut to 40 steps:
    it runs, evaluates, keeps the best checkpoint, and learns (val loss well below uniform)."""
    require_engine("numpy")
    out = tmp_path / "shakespeare"
    r = main_cli(
        [
            "train",
            "--engine",
            "numpy",
            "--data",
            str(shakespeare_path),
            "--doc-mode",
            "paragraphs",
            "--val-fraction",
            "0.1",
            "--eval-every",
            "20",
            "--n-embd",
            "64",
            "--n-head",
            "4",
            "--n-layer",
            "2",
            "--block-size",
            "64",
            "--batch-size",
            "16",
            "--steps",
            "40",
            "--learning-rate",
            "0.005",
            "--num-samples",
            "2",
            "--out",
            str(out),
        ],
        cli_env,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in records if "val_loss" in e]
    vocab = ckpt_io.load(out / "best.safetensors").uchars
    assert [e["step"] for e in evals] == [20, 40]
    assert evals[-1]["val_loss"] < 0.8 * math.log(len(vocab) + 1)  # uniform guessing
    assert r.stdout.count("sample ") == 2
