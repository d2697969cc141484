"""Edge export, ONNX: the graph passes onnx.checker, and onnxruntime's float32 logits match the
engines (float64, same dequantized weights) within 1e-5 for a set of prompts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs the optional `onnx` package")
pytest.importorskip("onnxruntime", reason="onnxruntime (a dev dependency) runs the ONNX graph")

from microgpt import checkpoint as ckpt_io  # noqa: E402
from microgpt.config import ModelConfig, OptimConfig, TrainConfig  # noqa: E402
from microgpt.engine import EngineError, load_engine  # noqa: E402
from microgpt.export import export  # noqa: E402
from microgpt.export.onnx_export import run_logits, session  # noqa: E402
from microgpt.export.quantize import QUANTIZATIONS, quantize  # noqa: E402
from microgpt.ref.model import RefEngine  # noqa: E402
from microgpt.train import new_trainer  # noqa: E402

DOCS = [
    "emma",
    "olivia",
    "ava",
    "isabella",
    "sophia",
    "charlotte",
    "mia",
    "amelia",
    "harper",
    "evelyn",
    "abigail",
    "emily",
    "elizabeth",
    "mila",
    "ella",
    "avery",
    "sofia",
    "camila",
]
PROMPTS = ["", "a", "em", "soph", "isabell", "elizabeth", "charlotteavery"]


def engines():
    out = [RefEngine]
    try:
        out.append(load_engine("numpy"))
    except EngineError:
        pass
    return out


@pytest.fixture(
    scope="module",
    params=[("final", ModelConfig()), ("relu2, 2 layers", ModelConfig(n_layer=2, mlp="relu2"))],
    ids=lambda p: p[0],
)
def ckpt_path(request, tmp_path_factory) -> Path:
    rng = random.Random(1)
    docs = list(DOCS)
    trainer = new_trainer(
        RefEngine, docs, request.param[1], OptimConfig(), TrainConfig(num_steps=3), rng
    )
    while not trainer.done:
        trainer.step()
    path = tmp_path_factory.mktemp("onnx") / "model.safetensors"
    ckpt_io.save(path, trainer.checkpoint())
    return path


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_onnx_matches_engines(ckpt_path, tmp_path, mode):
    out = tmp_path / f"m_{mode}.onnx"
    export(ckpt_path, out, fmt="onnx", quantize_mode=mode, measure=False)
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    ckpt = ckpt_io.load(ckpt_path)
    assert json.loads(meta["vocab"]) == ckpt.uchars and meta["quantization"] == mode

    tok = ckpt.tokenizer
    deq = quantize(ckpt.params, mode).dequantize()
    sess = session(out)
    oracles = [cls(ckpt.model, ckpt.optim, tok.vocab_size, deq) for cls in engines()]
    for prompt in PROMPTS:
        tokens = [tok.BOS] + tok.encode(prompt)
        got = run_logits(sess, [tokens])[0]  # (T, V) float32
        for engine in oracles:
            want = engine.forward(tokens)
            worst = max(
                abs(float(g) - w) for grow, wrow in zip(got, want) for g, w in zip(grow, wrow)
            )
            assert worst <= 1e-5, (engine.name, prompt, worst)
    # a batch gives each row what it gives alone
    batch = [[tok.BOS] + tok.encode(p) for p in ("emma", "mila", "ella")]
    together = run_logits(sess, batch)
    for i, tokens in enumerate(batch):
        assert abs(together[i] - run_logits(sess, [tokens])[0]).max() <= 1e-6


def test_onnx_report_loss_matches_engine(ckpt_path, tmp_path):
    data = tmp_path / "few.txt"
    data.write_text("\n".join(DOCS[:6]) + "\n", encoding="utf-8")
    report = export(
        ckpt_path, tmp_path / "m.onnx", fmt="onnx", quantize_mode="int8", data=data, engine="ref"
    )
    ckpt = ckpt_io.load(ckpt_path)
    deq = quantize(ckpt.params, "int8").dequantize()
    oracle = RefEngine(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, deq)
    batch = [ckpt.tokenizer.doc_tokens(d) for d in DOCS[:6]]
    assert report.eval_tokens == sum(len(s) - 1 for s in batch)
    assert abs(report.loss_exported - oracle.loss(batch)) <= 1e-5
    assert report.file_bytes == (tmp_path / "m.onnx").stat().st_size
    assert report.tokens_per_s > 0 and report.peak_rss_bytes > 0
