"""The run library (runs.py), the one door every front end goes through: a spec gives the
same run from the library as from `microgpt train`; a checkpoint is scored on the documents
its training split; the CLI and the studio resume through one function with one rule for a
changed data file."""

from __future__ import annotations

import dataclasses
import json

import pytest

import microgpt
from microgpt import checkpoint as ckpt_io
from microgpt import runs
from microgpt.__main__ import build_parser, main
from microgpt.data import DataError
from microgpt.studio.cli import build_session

# Three paragraphs of a few lines each: lines, paragraphs and the whole text split it apart.
TEXT = "".join(
    f"{name} the {i}th\nsaid hello to all\nand went home\n\n"
    for i, name in enumerate(["anna", "bob", "carl", "dora", "emma", "fred"] * 3)
)
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "12", "--engine", "numpy"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def train_cli(data, out, *flags) -> None:
    args = ["train", "--data", str(data), "--out", str(out), "--steps", "6", "--num-samples",
            "1", "--quiet", *TINY, *flags]  # fmt: skip
    assert main(args) == 0


@pytest.mark.parametrize("doc_mode", ["lines", "paragraphs", "text"])
def test_api_evaluate_equals_cli_eval_in_each_doc_mode(doc_mode, text_file, tmp_path, capsys):
    """A model trained on paragraphs is scored on paragraphs by both doors (it once was
    scored line by line by the API: 1.6326 against `microgpt eval`'s 1.6561)."""
    out = tmp_path / "run"
    train_cli(text_file, out, "--doc-mode", doc_mode)
    ckpt = out / "model.safetensors"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(text_file), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = microgpt.load(ckpt).evaluate(text_file)
    assert cli["doc_mode"] == doc_mode
    assert (api.loss, api.tokens, api.docs) == (cli["loss"], cli["tokens"], cli["docs"])
    # the oracle: the documents split by hand as training split them
    expected_docs = {"lines": 3 * 18, "paragraphs": 18, "text": 1}[doc_mode]
    assert api.docs == expected_docs
    if doc_mode != "lines":  # another split scores other windows: the mode matters
        assert microgpt.load(ckpt).evaluate(text_file, doc_mode="lines").loss != api.loss


def test_the_doc_mode_is_stored_in_the_checkpoint(text_file, tmp_path):
    out = tmp_path / "run"
    train_cli(text_file, out, "--doc-mode", "paragraphs")
    metadata, _ = ckpt_io.read_safetensors(out / "model.safetensors")
    assert json.loads(metadata["train_config"])["doc_mode"] == "paragraphs"


def test_a_spec_gives_the_clis_run(text_file, tmp_path):
    """runs.start + runs.train with a RunSpec == `microgpt train` with the same flags."""
    out_cli, out_lib = tmp_path / "cli", tmp_path / "lib"
    train_cli(text_file, out_cli, "--val-fraction", "0.2", "--eval-every", "3")
    spec = runs.RunSpec(data=str(text_file), engine=runs.EngineSpec("numpy"), n_embd=8,
                        n_head=2, block_size=12, steps=6, num_samples=1, val_fraction=0.2,
                        eval_every=3)  # fmt: skip
    run = runs.start(spec, out=out_lib)
    assert runs.train(run) is True
    a = (out_cli / "metrics.jsonl").read_text()
    assert a == (out_lib / "metrics.jsonl").read_text() and a.count("val_loss") == 2
    cli_ckpt, lib_ckpt = (ckpt_io.load(d / "model.safetensors") for d in (out_cli, out_lib))
    assert all(cli_ckpt.params[k].data == lib_ckpt.params[k].data for k in cli_ckpt.params)


def test_spec_fields_are_the_train_flags():
    """A sweep sets RunSpec fields by the train flag's name: every field is one."""
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {a.dest for a in train._actions}
    fields = {f.name for f in dataclasses.fields(runs.RunSpec)} - {"engine"}
    assert fields <= dests, fields - dests


def studio_args(ckpt, *flags):
    return build_parser().parse_args(["studio", "--checkpoint", str(ckpt), "--port", "0",
                                      *flags])  # fmt: skip


def test_cli_and_studio_resume_through_one_function(text_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    train_cli(text_file, out, "--checkpoint-every", "3")
    calls = []
    real = runs.resume

    def spy(spec, write=True):
        calls.append((spec.run, write))
        return real(spec, write)

    monkeypatch.setattr(runs, "resume", spy)
    assert main(["train", "--resume", str(out), "--steps", "8", "--quiet"]) == 0
    session = build_session(studio_args(out / "model.safetensors"))
    try:
        assert session.state()["can_train"] and session.run.trainer.step_count == 8
    finally:
        session.close()
    assert calls == [(str(out), True), (str(out / "model.safetensors"), False)]


def test_cli_and_studio_refuse_a_changed_data_file_the_same_way(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    train_cli(text_file, out)
    text_file.write_text(TEXT.replace("hello", "hallo"))  # same characters, other bytes
    assert main(["train", "--resume", str(out), "--steps", "8"]) == 2
    cli_error = capsys.readouterr().err.strip()
    with pytest.raises(DataError) as studio_error:
        build_session(studio_args(out / "model.safetensors"))
    assert cli_error == f"microgpt: error: {studio_error.value}"
    assert "is not the one this run trained on" in cli_error
    # and the same explicit way out in both: --allow-data-change / --data
    assert main(["train", "--resume", str(out), "--steps", "8", "--allow-data-change",
                 "--quiet"]) == 0  # fmt: skip
    session = build_session(studio_args(out / "model.safetensors", "--data", str(text_file)))
    session.close()


def test_resume_refuses_what_would_change_the_run(text_file, tmp_path):
    out = tmp_path / "run"
    train_cli(text_file, out)
    with pytest.raises(runs.ConfigError, match="fewer than the 6 steps"):
        runs.resume(runs.ResumeSpec(str(out), steps=5))
    with pytest.raises(runs.ConfigError, match="--eval-every must be an integer >= 0"):
        runs.resume(runs.ResumeSpec(str(out), eval_every=-1))
