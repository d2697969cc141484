"""The torch engine against the reference engine: parity, inference, checkpoints, CLI.

Oracles: the reference engine (float64 losses, gradients and Adam on random small configs
with both presets' settings), the engine's own full-sequence forward for its KV cache, the
reference output files for the default run, and the other engines through checkpoints.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="the torch engine needs torch (pip install torch)")


from microgpt import checkpoint as ckpt_io  # noqa: E402
from microgpt.config import PRESETS, ModelConfig  # noqa: E402
from microgpt.engine import EngineError, load_engine  # noqa: E402
from microgpt.init import init_params  # noqa: E402
from microgpt.ref.model import RefEngine  # noqa: E402
from microgpt.studio.trace import reference_attention  # noqa: E402
from microgpt.torch_engine import TorchEngine  # noqa: E402
from microgpt.train import Trainer, new_trainer  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "zoe"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matrices: threads only add synchronisation, and the test machine's cores are shared.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def relative_error(a, b) -> float:
    """max |a - b| / max |a| over two float64 Tensors (absolute when a is all zeros)."""
    scale = max((abs(x) for x in a.data), default=0.0)
    diff = max((abs(x - y) for x, y in zip(a.data, b.data, strict=True)), default=0.0)
    return diff / scale if scale else diff


def random_case(seed: int, preset: str, batch_size: int):
    """A random small model with `preset`'s settings (mlp, init, Adam) and a random batch."""
    gen = random.Random(seed)
    n_head = gen.choice([1, 2, 4])
    model = dataclasses.replace(
        PRESETS[preset].model,
        n_layer=gen.randint(1, 2),
        n_embd=n_head * gen.choice([2, 3, 4]),
        n_head=n_head,
        block_size=gen.randint(2, 8),
    )
    vocab_size = gen.randint(3, 12)
    params = init_params(model, vocab_size, gen)
    batch = [
        [gen.randrange(vocab_size) for _ in range(gen.randint(2, model.block_size + 1))]
        for _ in range(batch_size)
    ]
    return model, PRESETS[preset].optim, vocab_size, params, batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("preset", ["final", "first"])
@pytest.mark.parametrize("seed", range(3))
def test_float64_parity_with_reference(seed, preset, batch_size, device):
    """Loss, every gradient and the weights after Adam, for three steps, within 1e-10."""
    model, optim, V, params, batch = random_case(seed, preset, batch_size)
    ref = RefEngine(model, optim, V, params)
    fast = TorchEngine(model, optim, V, params, device=device)
    assert fast.device.type == device
    for t in range(1, 4):
        loss_ref, loss_fast = ref.forward_backward(batch), fast.forward_backward(batch)
        assert abs(loss_fast - loss_ref) <= 1e-10 * abs(loss_ref)
        g_ref, g_fast = ref.gradients(), fast.gradients()
        assert list(g_fast) == list(g_ref)
        for name in g_ref:
            assert relative_error(g_ref[name], g_fast[name]) <= 1e-10, (t, name)
        ref.adam_step(0.01, t)
        fast.adam_step(0.01, t)
    p_ref, p_fast = ref.parameters(), fast.parameters()
    for name in p_ref:
        assert relative_error(p_ref[name], p_fast[name]) <= 1e-10, name
    m_ref, v_ref = ref.optimizer_state()
    m_fast, v_fast = fast.optimizer_state()
    for name in p_ref:
        assert relative_error(m_ref[name], m_fast[name]) <= 1e-10
        assert relative_error(v_ref[name], v_fast[name]) <= 1e-10


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", ["final", "first"])
def test_inference_parity_and_kv_cache(preset, device):
    model, optim, V, params, batch = random_case(11, preset, 3)
    ref = RefEngine(model, optim, V, params)
    fast = TorchEngine(model, optim, V, params, device=device)
    for _ in range(2):  # train a little so no weight is still zero (first preset)
        ref.forward_backward(batch), fast.forward_backward(batch)
        ref.adam_step(0.05, 1), fast.adam_step(0.05, 1)
    tokens = batch[0][:-1]
    full = fast.forward(tokens)
    cache = fast.new_cache()
    stepwise = [fast.decode(cache, tok, pos) for pos, tok in enumerate(tokens)]
    want = ref.forward(tokens)
    for row_ref, row_full, row_step in zip(want, full, stepwise, strict=True):
        for a, b, c in zip(row_ref, row_full, row_step, strict=True):
            assert abs(a - b) <= 1e-10 * max(1.0, abs(a))
            assert abs(b - c) <= 1e-12 * max(1.0, abs(b))
    att_ref = reference_attention(ref.parameters(), ref.config, tokens)  # the traced forward
    att_fast = fast.attention(tokens)
    assert len(att_fast) == model.n_layer and len(att_fast[0]) == model.n_head
    for layer_ref, layer_fast in zip(att_ref, att_fast, strict=True):
        for head_ref, head_fast in zip(layer_ref, layer_fast, strict=True):
            for row_ref, row_fast in zip(head_ref, head_fast, strict=True):
                assert len(row_fast) == len(row_ref)
                assert max(abs(a - b) for a, b in zip(row_ref, row_fast, strict=True)) < 1e-12
    assert abs(fast.loss(batch) - ref.loss(batch)) <= 1e-10 * ref.loss(batch)


def test_unfused_attention_path_matches_fused():
    model, optim, V, params, batch = random_case(5, "final", 4)
    a = TorchEngine(model, optim, V, params, device="cpu")
    b = TorchEngine(model, optim, V, params, device="cpu", fused=False)
    assert abs(a.forward_backward(batch) - b.forward_backward(batch)) < 1e-13
    for name, g in a.gradients().items():
        assert relative_error(g, b.gradients()[name]) < 1e-12


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on 2 cores
def test_compiled_training_step_matches_eager():
    model, optim, V, params, batch = random_case(7, "first", 3)
    eager = TorchEngine(model, optim, V, params, device="cpu")
    compiled = TorchEngine(model, optim, V, params, device="cpu", compile=True)
    for t in (1, 2):
        a, b = eager.forward_backward(batch), compiled.forward_backward(batch)
        assert abs(a - b) <= 1e-12 * a
        for name, g in eager.gradients().items():
            assert relative_error(g, compiled.gradients()[name]) <= 1e-12, name
        eager.adam_step(0.01, t), compiled.adam_step(0.01, t)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 5e-2)])
def test_lower_precision_dtypes_follow_float64(dtype, tol):
    model, optim, V, params, batch = random_case(3, "final", 4)
    exact = TorchEngine(model, optim, V, params, device="cpu")
    low = TorchEngine(model, optim, V, params, dtype=dtype, device="cpu")
    loss64, loss_low = exact.forward_backward(batch), low.forward_backward(batch)
    assert abs(loss_low - loss64) <= tol * loss64
    g64, g_low = exact.gradients(), low.gradients()
    # bfloat16 keeps float32 master weights: the weights come back exactly as they went in
    assert low.model.weights[0].dtype == torch.float32
    for name in g64:
        assert relative_error(g64[name], g_low[name]) <= 20 * tol, name


def test_bad_dtype_and_device_are_engine_errors():
    model, optim, V, params, _ = random_case(0, "final", 1)
    with pytest.raises(EngineError, match="float64 or float32 or bfloat16"):
        TorchEngine(model, optim, V, params, dtype="float16", device="cpu")
    with pytest.raises(EngineError, match="unknown device"):
        TorchEngine(model, optim, V, params, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            TorchEngine(model, optim, V, params, device="cuda")
    assert load_engine("torch") is TorchEngine


# --- checkpoints across engines ---------------------------------------------------------------


def other_engine(name: str):
    try:
        return load_engine(name)
    except EngineError as e:
        pytest.skip(f"the {name} engine is not available here: {e}")


def small_run(engine_cls, **kwargs) -> Trainer:
    from microgpt.config import OptimConfig, TrainConfig

    model = ModelConfig(n_layer=2, n_embd=8, n_head=2, block_size=8)
    train = TrainConfig(num_steps=6, batch_size=3, seed=3)
    rng = random.Random(train.seed)
    docs = list(DOCS)
    rng.shuffle(docs)
    trainer = new_trainer(engine_cls, docs, model, OptimConfig(), train, rng, engine_kwargs=kwargs)
    for _ in range(3):
        trainer.step()
    return trainer


def reload(trainer: Trainer, path, engine_cls, **kwargs) -> Trainer:
    """Save `trainer`, load the file into `engine_cls` and continue from it."""
    ckpt_io.save(path, trainer.checkpoint())
    ckpt = ckpt_io.load(path)
    engine = engine_cls(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, ckpt.params, **kwargs)
    engine.load_optimizer_state(ckpt.adam_m, ckpt.adam_v)
    return Trainer(engine, ckpt.tokenizer, trainer.docs, ckpt.optim, ckpt.train, ckpt.rng(),
                   step=ckpt.step)  # fmt: skip


def assert_same_model(a: Trainer, b: Trainer, tol: float) -> None:
    for name, p in a.engine.parameters().items():
        assert relative_error(p, b.engine.parameters()[name]) <= tol, name
    tokens = a.tokenizer.doc_tokens("sophia")[:-1]
    for row_a, row_b in zip(a.engine.forward(tokens), b.engine.forward(tokens), strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            assert abs(x - y) <= tol * max(1.0, abs(x))


@pytest.mark.parametrize("other", ["ref", "numpy"])
def test_torch_checkpoint_loads_in_other_engines(tmp_path, other):
    cls = other_engine(other)
    written = small_run(TorchEngine, device="cpu")
    loaded = reload(written, tmp_path / "torch.safetensors", cls)
    assert loaded.step_count == 3
    # the weights cross bit for bit; the logits agree to rounding
    assert written.engine.parameters() == loaded.engine.parameters()
    assert_same_model(written, loaded, 1e-12)
    # and training continues the same way (Adam's moments crossed too)
    for _ in range(3):
        assert abs(written.step().loss - loaded.step().loss) < 1e-10
    assert_same_model(written, loaded, 1e-9)


@pytest.mark.parametrize("other", ["ref", "numpy"])
def test_other_engines_checkpoint_loads_in_torch(tmp_path, other):
    cls = other_engine(other)
    written = small_run(cls)
    loaded = reload(written, tmp_path / f"{other}.safetensors", TorchEngine, device="cpu")
    assert written.engine.parameters() == loaded.engine.parameters()
    assert_same_model(written, loaded, 1e-12)
    for _ in range(3):
        assert abs(written.step().loss - loaded.step().loss) < 1e-10
    assert_same_model(written, loaded, 1e-9)


# --- the command line -------------------------------------------------------------------------


def run_cli(args, env):
    env = {**env, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "microgpt", *args], env=env,
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.slow  # ~15 s a preset on 2 shared cores
@pytest.mark.parametrize("preset", ["final", "first"])
def test_default_run_prints_the_originals_lines(names_path, cli_env, tmp_path, preset, reference):
    """The whole original run (1000 / 500 steps) on the torch engine prints the original's
    lines: every loss to 4 decimals and the 20 samples."""
    out = tmp_path / "run"
    proc = run_cli(["train", "--engine", "torch", "--device", "cpu", "--preset", preset,
                    "--data", str(names_path), "--out", str(out)], cli_env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == reference.lines(preset)
    assert "torch engine on cpu (float64)" in proc.stderr and "tokens/s" in proc.stderr
    # the checkpoint samples the same on the reference engine, and on torch
    for engine in ("ref", "torch"):
        sample = run_cli(["sample", "--checkpoint", str(out / "model.safetensors"),
                          "--engine", engine], cli_env)  # fmt: skip
        assert sample.returncode == 0, sample.stderr
        assert sample.stdout.splitlines() == reference.lines(preset)[-20:]


def test_device_flag_needs_the_torch_engine(cli_env, tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("ann\nbob\n")
    proc = run_cli(["train", "--engine", "ref", "--device", "cpu", "--data", str(data)], cli_env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "microgpt: error: --device needs --engine torch (the ref engine runs on the CPU)"
    )
