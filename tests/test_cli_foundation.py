"""The CLI's contract: the original's lines on stdout, files in --out, one-line errors."""

from __future__ import annotations

import json
import urllib.request

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt import data
from microgpt.__main__ import main

TINY = ["--engine", "ref", "--n-embd", "8", "--n-head", "2", "--block-size", "8"]


@pytest.fixture
def names(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("emma\nolivia\n\nava\n  isabella  \nsophia\n")
    return path


def test_train_prints_the_original_lines_and_writes_the_run(names, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(names), "--steps", "4", "--num-samples", "3",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["num docs: 5", "vocab size: 12", "num params: 1024"]
    assert [line[:16] for line in lines[3:7]] == [f"step    {i} /    4" for i in range(1, 5)]
    assert lines[7:9] == ["", "--- inference (new, hallucinated names) ---"]
    assert [line[:10] for line in lines[9:]] == [f"sample  {i}:" for i in range(1, 4)]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [float(line.split("loss ")[1]) for line in lines[3:7]]
    assert [round(m["loss"], 4) for m in metrics] == losses
    assert metrics[0]["lr"] == 0.01 and metrics[-1]["lr"] == 0.01 * (1 - 3 / 4)
    assert ckpt_io.load(out / "model.safetensors").step == 4


def test_sample_continues_the_training_stream(names, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", *TINY, "--data", str(names), "--steps", "2", "--num-samples", "4",
          "--out", str(out)])
    trained = [x for x in capsys.readouterr().out.splitlines() if x.startswith("sample")]
    assert main(["sample", "--engine", "ref", "--checkpoint", str(out / "model.safetensors"),
                 "--num-samples", "4"]) == 0
    assert capsys.readouterr().out.splitlines() == trained


def one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microgpt: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--data", "/nonexistent/names.txt"], "does not exist"),
    (["--n-embd", "10", "--n-head", "4"], "divisible"),
    (["--steps", "-1"], "steps"),
    (["--learning-rate", "nan"], "learning rate"),
    (["--temperature", "-1"], "temperature"),
    (["--block-size", "0"], "block_size"),
])
def test_bad_train_input_is_one_line(args, needle, names, capsys):
    argv = ["train", "--engine", "ref", "--data", str(names), *args]
    assert main(argv) == 2
    assert needle in one_line_error(capsys)


def test_out_refuses_an_existing_run_unless_forced(names, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", *TINY, "--data", str(names), "--steps", "1", "--num-samples", "0",
          "--out", str(out)])
    before = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["train", *TINY, "--data", str(names), "--steps", "2", "--out", str(out)]) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert (out / "model.safetensors").read_bytes() == before
    assert main(["train", *TINY, "--data", str(names), "--steps", "2", "--num-samples", "0",
                 "--out", str(out), "--force"]) == 0
    assert ckpt_io.load(out / "model.safetensors").step == 2


def test_sample_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["sample", "--engine", "ref", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "no such checkpoint" in one_line_error(capsys)


def test_offline_without_cache_says_how_to_pass_a_file(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["train", "--engine", "ref", "--steps", "1"]) == 2
    assert "--data FILE" in one_line_error(capsys)


def test_cached_names_are_verified(tmp_path, monkeypatch, names_path):
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(names_path.parent))
    assert data.default_names_path(download=False) == names_path
    bad = tmp_path / "names.txt"
    bad.write_text("not the names\n")
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(tmp_path))
    with pytest.raises(data.DataError, match="sha256"):
        data.default_names_path(download=False)
