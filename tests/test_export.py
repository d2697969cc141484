"""Edge export, standalone Python file: quantization, the file's logits and samples against the
engines and `microgpt sample`, its isolated-mode run, its header, and the CLI's errors.

Oracles: the reference engine (bit for bit, unquantized), the NumPy engine on the same
dequantized weights (1e-12), `microgpt sample` (same seed, same samples),
`microgpt.sample.probabilities` (bit for bit), hand-worked quantization cases, and the
names dataset for the default model's loss.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.__main__ import main
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.data import read_text, split_lines
from microgpt.engine import EngineError, load_engine
from microgpt.export import Report, export
from microgpt.export.quantize import QUANTIZATIONS, ExportError, quantize
from microgpt.ref.model import RefEngine
from microgpt.sample import probabilities
from microgpt.tensor import Tensor
from microgpt.train import new_trainer


def numpy_engine():
    try:
        return load_engine("numpy")
    except EngineError as e:
        pytest.skip(f"numpy engine unavailable: {e}")


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, names_path) -> Path:
    """A checkpoint of the default shape after a few reference steps on 500 names."""
    docs = split_lines(read_text(names_path)[0])[:500]
    rng = random.Random(3)
    rng.shuffle(docs)
    trainer = new_trainer(
        RefEngine,
        docs,
        ModelConfig(),
        OptimConfig(),
        TrainConfig(num_steps=5),
        rng,
        record=ckpt_io.RunRecord(data_path=str(names_path)),
    )
    while not trainer.done:
        trainer.step()
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    ckpt_io.save(path, trainer.checkpoint())
    return path


def load_module(path: Path):
    """Import an exported file as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def file_logits(module, sd, tokens):
    """Logits at every position, through the file's KV-cache forward (its `gpt`)."""
    keys = [[] for _ in range(module.CONFIG["n_layer"])]
    values = [[] for _ in range(module.CONFIG["n_layer"])]
    return [module.gpt(t, pos, keys, values, sd) for pos, t in enumerate(tokens)]


@pytest.fixture(scope="module")
def exported(small_ckpt, tmp_path_factory):
    """mode -> path of the standalone file (not measured: fast)."""
    out = tmp_path_factory.mktemp("py")
    return {
        m: export(small_ckpt, out / f"model_{m}.py", quantize_mode=m, measure=False).path
        for m in QUANTIZATIONS
    }


# --- quantization ----------------------------------------------------------------------------


def test_int4_hand_worked():
    # amax 7 -> scale 7 / 7 = 1 exactly; round half to even: -3.5 -> -4
    q = quantize({"w": Tensor.from_rows([[7.0, -3.5, 1.0]])}, "int4")
    assert struct.unpack("<e", q.scales) == (1.0,)
    assert q.data == bytes([(7 + 8) | ((-4 + 8) << 4), (1 + 8) | (0 + 8) << 4])
    assert q.values() == [7.0, -4.0, 1.0]


def test_int8_hand_worked_and_zero_row():
    rows = [[0.0, 0.0], [1.27, -0.635]]
    q = quantize({"w": Tensor.from_rows(rows)}, "int8")
    scale = struct.unpack("<e", struct.pack("<e", 1.27 / 127))[0]  # float16 scale
    assert struct.unpack("<2e", q.scales) == (0.0, scale)
    assert struct.unpack("<4b", q.data) == (0, 0, 127, round(-0.635 / scale))
    assert q.values() == [0.0, 0.0, 127 * scale, round(-0.635 / scale) * scale]


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_quantization_error_bounded(small_ckpt, mode):
    ckpt = ckpt_io.load(small_ckpt)
    q = quantize(ckpt.params, mode)
    deq = q.dequantize()
    assert list(deq) == list(ckpt.params) and q.num_values == 4192
    for name, t in ckpt.params.items():
        for r, (row, row_q) in enumerate(zip(t.rows(), deq[name].rows())):
            amax = max(abs(x) for x in row)
            if mode == "none":
                bound = 0.0
            elif mode == "float16":
                bound = amax * 2**-11
            else:  # half a step of the row's grid, plus the float16 scale's rounding
                bound = amax / {"int8": 127, "int4": 7}[mode] * (0.5 + 2**-10)
            err = max(abs(a - b) for a, b in zip(row, row_q))
            assert err <= bound + 1e-300, (name, r, err, bound)


def test_quantized_sizes(small_ckpt):
    ckpt = ckpt_io.load(small_ckpt)
    rows = 27 + 16 + 27 + 4 * 16 + 64 + 16
    sizes = {m: quantize(ckpt.params, m).weight_bytes for m in QUANTIZATIONS}
    assert sizes == {
        "none": 8 * 4192,
        "float16": 2 * 4192,
        "int8": 4192 + 2 * rows,
        "int4": 4192 // 2 + 2 * rows,
    }


def test_unknown_quantization():
    with pytest.raises(ExportError, match="unknown quantization"):
        quantize({}, "int3")


# --- the standalone file ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_file_weights_are_the_dequantized_weights(small_ckpt, exported, mode):
    module = load_module(Path(exported[mode]))
    deq = quantize(ckpt_io.load(small_ckpt).params, mode).dequantize()
    sd = module.load_weights()
    assert {k: [x for row in v for x in row] for k, v in sd.items()} == {
        k: list(t.data) for k, t in deq.items()
    }


def test_unquantized_logits_equal_reference_bit_for_bit(small_ckpt, exported):
    ckpt = ckpt_io.load(small_ckpt)
    module = load_module(Path(exported["none"]))
    tokens = ckpt.tokenizer.doc_tokens("christopher")[:16]
    ref = RefEngine(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, ckpt.params)
    assert file_logits(module, module.load_weights(), tokens) == ref.forward(tokens)


@pytest.mark.parametrize("mode", QUANTIZATIONS)
def test_logits_equal_numpy_engine_on_dequantized_weights(small_ckpt, exported, mode):
    engine_cls = numpy_engine()
    ckpt = ckpt_io.load(small_ckpt)
    deq = quantize(ckpt.params, mode).dequantize()
    engine = engine_cls(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, deq)
    module = load_module(Path(exported[mode]))
    tokens = ckpt.tokenizer.doc_tokens("maximilianus")  # a whole document: 14 tokens
    got = file_logits(module, module.load_weights(), tokens)
    want = engine.forward(tokens)
    assert len(got) == len(want) == len(tokens)
    worst = max(abs(a - b) for ga, wa in zip(got, want) for a, b in zip(ga, wa))
    assert worst <= 1e-12


def test_draw_is_microgpt_sample_probabilities(exported):
    module = load_module(Path(exported["none"]))
    rng = random.Random(0)
    for _ in range(200):
        logits = [rng.gauss(0, 3) for _ in range(27)]
        t = rng.choice([0.1, 0.5, 0.7, 1.0, 1.3, 2.0])
        assert module.softmax([lg * t**-1 for lg in logits]) == probabilities(logits, t)


def run_file(path, *args, cwd):
    return subprocess.run(
        [sys.executable, "-I", str(path), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.mark.parametrize("mode", ["none", "int8"])
def test_runs_isolated_and_prints_samples(small_ckpt, exported, mode, tmp_path):
    proc = run_file(
        exported[mode],
        "--num-samples",
        "10",
        "--temperature",
        "0.5",
        "--prompt",
        "ka",
        "--seed",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln[:11] for ln in lines] == [f"sample {i:2d}: " for i in range(1, 11)]
    vocab = set(ckpt_io.load(small_ckpt).uchars)
    assert all(ln[11:].startswith("ka") and set(ln[11:]) <= vocab for ln in lines)


@pytest.mark.parametrize(
    "args",
    [
        ["--seed", "7"],
        ["--seed", "3", "--temperature", "1.0"],
        ["--seed", "5", "--temperature", "0"],
    ],
)
def test_samples_equal_microgpt_sample(small_ckpt, exported, args, tmp_path, cli_env):
    want = subprocess.run(
        [
            sys.executable,
            "-m",
            "microgpt",
            "sample",
            "--checkpoint",
            str(small_ckpt),
            "--num-samples",
            "12",
            *args,
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        cwd=tmp_path,
        timeout=300,
    )
    assert want.returncode == 0, want.stderr
    got = run_file(exported["none"], "--num-samples", "12", *args, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == want.stdout


def test_top_k_1_is_greedy(exported):
    module = load_module(Path(exported["int8"]))
    sd = module.load_weights()
    for prompt in [(), (0,), (10, 0)]:
        greedy = module.generate(sd, random.Random(0), 0.0, prompt=prompt)
        top1 = module.generate(sd, random.Random(1), 0.9, top_k=1, prompt=prompt)
        assert top1 == greedy and list(greedy[: len(prompt)]) == list(prompt)


def test_top_k_ties_go_to_the_lower_token_id_as_in_microgpt_sample(exported, monkeypatch):
    """Three tokens share the largest logit and top_k is 2: the file keeps the two lower ids,
    as microgpt.sample.top_k_logits does (oracle: its probabilities drawn with the same rng)."""
    from microgpt.sample import probabilities, top_k_logits

    module = load_module(Path(exported["none"]))
    logits = [0.0] * (module.BOS + 1)
    logits[1] = logits[2] = logits[3] = 2.0
    monkeypatch.setattr(module, "gpt", lambda *args: list(logits))
    got = module.generate(module.load_weights(), random.Random(5), 0.7, top_k=2)
    rng, want = random.Random(5), []
    weights = probabilities(top_k_logits(logits, 2), 0.7)
    for _ in range(module.CONFIG["block_size"]):
        want.append(rng.choices(range(len(logits)), weights=weights)[0])
    assert got == want and set(got) == {1, 2}


@pytest.mark.parametrize(
    "args",
    [["--prompt", "K!"], ["--temperature", "-1"], ["--num-samples", "-2"], ["--prompt", "a" * 16]],
)
def test_file_rejects_bad_arguments(exported, args, tmp_path):
    proc = run_file(exported["int8"], *args, cwd=tmp_path)
    assert proc.returncode == 2 and "error:" in proc.stderr and not proc.stdout


def test_header_says_what_it_is(small_ckpt, tmp_path):
    out = tmp_path / "m.py"
    report = export(small_ckpt, out, quantize_mode="int8", measure=True)
    text = out.read_text(encoding="utf-8")
    head = text.split('"""')[1]
    assert hashlib.sha256(small_ckpt.read_bytes()).hexdigest() in head
    assert f"{len(text.encode()):,} bytes" in head and report.file_bytes == len(text.encode())
    assert "int8 per-row symmetric" in head and f"{report.weight_bytes:,} bytes" in head
    assert "tokens/s" in head and "MiB peak RSS" in head
    assert report.tokens_per_s > 0 and report.peak_rss_bytes > 0
    assert "loss     not measured" in head  # no --data given


# --- the command line ------------------------------------------------------------------------


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_and_refuses_to_overwrite(small_ckpt, tmp_path, capsys):
    out = tmp_path / "model.py"
    args = [
        "export",
        "--checkpoint",
        str(small_ckpt),
        "--out",
        str(out),
        "--quantize",
        "int4",
        "--no-measure",
    ]
    assert run_cli(args, capsys)[0] == 0
    before = out.read_bytes()
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert err.count("\n") == 1 and err.startswith("microgpt: error: ")
    assert out.read_bytes() == before
    assert run_cli([*args[:-3], "--quantize", "int8", "--no-measure", "--force"], capsys)[0] == 0
    assert out.read_bytes() != before and "QUANTIZATION = 'int8'" in out.read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--format": "tflite"}, "unknown format 'tflite'"),
        ({"--quantize": "int3"}, "unknown quantization 'int3'"),
        ({"--checkpoint": "BAD"}, "not a safetensors file"),
        ({"--checkpoint": "MISSING"}, "no such checkpoint file"),
        ({"--out": "NODIR"}, "does not exist"),
        ({"--out": "DIR"}, "is a directory"),
        ({"--data": "MISSING"}, "does not exist"),
    ],
)
def test_cli_errors_are_one_line(small_ckpt, tmp_path, capsys, change, message):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"hi")
    paths = {
        "BAD": str(bad),
        "MISSING": str(tmp_path / "missing"),
        "NODIR": str(tmp_path / "no" / "such" / "m.py"),
        "DIR": str(tmp_path),
    }
    opts = {
        "--checkpoint": str(small_ckpt),
        "--out": str(tmp_path / "m.py"),
        "--format": "py",
        "--quantize": "int8",
    }
    opts.update({k: paths.get(v, v) for k, v in change.items()})
    code, out, err = run_cli(["export", *[x for kv in opts.items() for x in kv]], capsys)
    assert code == 2 and not out
    assert err.startswith("microgpt: error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "m.py").exists()


# --- the default names model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def names_model(tmp_path_factory, names_path) -> Path:
    """The default model (the original run, 1000 steps), trained with the NumPy engine
    (seconds; the reference engine would take minutes)."""
    numpy_engine()
    out = tmp_path_factory.mktemp("names")
    assert (
        main(
            [
                "train",
                "--engine",
                "numpy",
                "--data",
                str(names_path),
                "--out",
                str(out),
                "--num-samples",
                "0",
            ]
        )
        == 0
    )
    return out / "model.safetensors"


def test_default_model_int8(names_model, names_path, tmp_path):
    out = tmp_path / "names_int8.py"
    report: Report = export(names_model, out, quantize_mode="int8", data=names_path)
    assert report.eval_tokens == 228146  # every name of names.txt plus its closing BOS
    assert abs(report.loss_delta) <= 1e-3
    assert out.stat().st_size == report.file_bytes <= 12_000
    assert math.isfinite(report.loss_original) and report.loss_original < 2.5
    proc = run_file(out, "--num-samples", "3", cwd=tmp_path)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
