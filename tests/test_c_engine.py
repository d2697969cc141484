"""The C engine against its oracles: the reference engine (loss, logits and every gradient,
Adam), itself (KV cache vs full sequence, one step at a time vs several per call, the C
sampler vs sample.py's Python loop), float64 (float32), the other engines (checkpoints) and
the original program's printed output (the default runs).

Relative error as in test_numpy_parity.py: element by element against the reference value,
with a floor for elements tiny because terms cancelled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import subprocess
import sys
import textwrap

import pytest
from run_helpers import main_cli, require_engine

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig, get_preset
from microgpt.data import load_docs
from microgpt.engine import DEFAULT_ORDER, Engine, EngineError, default_engine, load_engine
from microgpt.init import init_params
from microgpt.ref.model import RefEngine
from microgpt.sample import generate_sample, generate_samples
from microgpt.schedule import learning_rate
from microgpt.tokenizer import Tokenizer
from microgpt.train import Trainer, TrainingError, new_trainer, run

require_engine("c")
CEngine = load_engine("c")

V = 11  # a small vocabulary keeps the reference engine quick

# (preset, n_layer, n_embd, n_head, block_size): both revisions' MLP, init and Adam settings
CONFIGS = [
    ("final", 1, 16, 4, 16),  # the original's shape
    ("final", 2, 8, 2, 6),
    ("final", 3, 8, 4, 4),
    ("final", 1, 12, 3, 5),
    ("first", 1, 16, 4, 8),  # the first revision's shape (relu^2, zeroed wo / fc2)
    ("first", 2, 8, 2, 6),
    ("first", 3, 12, 1, 5),
    ("final", 1, 40, 4, 6),  # wider than a kernel's tile of rows and outputs
]
# The quick ones (the reference engine is slow): every code path, both revisions, n_layer up
# to 3, one sequence and a batch of different lengths, the default width (n_embd 16, 4 heads:
# the core's unrolled copy of the forward and backward). The whole grid is in the slow suite.
QUICK = {(CONFIGS[0], 2), (CONFIGS[1], 3), (CONFIGS[2], 1), (CONFIGS[3], 2), (CONFIGS[5], 1),
         (CONFIGS[6], 3)}
GRID = [
    pytest.param(cfg, B, id=f"{'-'.join(map(str, cfg))}-B{B}",
                 marks=() if (cfg, B) in QUICK else pytest.mark.slow)
    for cfg in CONFIGS
    for B in ((1, 2, 3) if cfg[2] < 40 else (1,))  # the wide one: 10 s a batch here
]  # fmt: skip


def rel_err(a: list[float], b: list[float]) -> float:
    top = max((abs(x) for x in b), default=0.0)
    floor = max(1e-4 * top, 1e-12)
    return max((abs(x - y) / max(abs(y), floor) for x, y in zip(a, b, strict=True)), default=0)


def worst(got, want) -> tuple[float, str]:
    assert list(got) == list(want)
    return max((rel_err(got[k].data, want[k].data), k) for k in want)


def config(preset, n_layer, n_embd, n_head, block_size) -> tuple[ModelConfig, OptimConfig]:
    p = get_preset(preset)
    model = dataclasses.replace(p.model, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                                block_size=block_size)  # fmt: skip
    return model, p.optim


def engines(cfg, seed=0, dtype="float64"):
    model, optim = config(*cfg)
    params = init_params(model, V, random.Random(seed))
    return RefEngine(model, optim, V, params), CEngine(model, optim, V, params, dtype=dtype)


def random_batch(rng: random.Random, B: int, block_size: int) -> list[list[int]]:
    """B token sequences of 2 .. block_size + 1 tokens: different lengths, one batch."""
    return [[rng.randrange(V) for _ in range(rng.randint(2, block_size + 1))] for _ in range(B)]


# --- parity with the reference engine -----------------------------------------------------------


@pytest.mark.parametrize("cfg,B", GRID)
def test_loss_and_every_gradient_match_reference(cfg, B):
    ref, c = engines(cfg)
    rng = random.Random(10 * CONFIGS.index(cfg) + B)
    for _ in range(2):  # twice: gradients are set, not accumulated
        batch = random_batch(rng, B, cfg[-1])
        loss_ref, loss = ref.forward_backward(batch), c.forward_backward(batch)
        # the forward pass performs the reference's operations in its order: the same bits
        assert loss == loss_ref
        err, name = worst(c.gradients(), ref.gradients())
        assert err < 1e-10, f"gradient of {name}: relative error {err:.2e}"


@pytest.mark.parametrize("cfg", [CONFIGS[1], CONFIGS[4]], ids=lambda c: "-".join(map(str, c)))
def test_logits_and_attention_are_the_references_bits(cfg):
    ref, c = engines(cfg, seed=3)
    tokens = random_batch(random.Random(1), 1, cfg[-1])[0][: cfg[-1]]
    assert c.forward(tokens) == ref.forward(tokens)
    assert c.loss([tokens + [1]]) == ref.forward_backward([tokens + [1]])
    att = c.attention(tokens)
    assert [len(layer) for layer in att] == [cfg[3]] * cfg[1]
    for layer in att:
        for head in layer:
            assert [len(row) for row in head] == list(range(1, len(tokens) + 1))
            assert all(math.isclose(sum(row), 1.0, rel_tol=1e-12) for row in head)


@pytest.mark.parametrize("preset", ["final", "first"])
@pytest.mark.parametrize("B", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_fifty_adam_steps_match_reference(preset, B):
    cfg = (preset, 1, 8, 2, 4)
    ref, c = engines(cfg, seed=1)
    optim = config(*cfg)[1]
    rng = random.Random(7)
    for step in range(50):
        batch = random_batch(rng, B, 4)
        loss_ref, loss = ref.forward_backward(batch), c.forward_backward(batch)
        assert rel_err([loss], [loss_ref]) < 1e-9, f"step {step + 1}"
        lr = learning_rate(optim, step, 50)
        ref.adam_step(lr, step + 1)
        c.adam_step(lr, step + 1)
    err, name = worst(c.parameters(), ref.parameters())
    assert err < 1e-9, f"{name} after 50 steps: relative error {err:.2e}"
    (m, v), (m_ref, v_ref) = c.optimizer_state(), ref.optimizer_state()
    assert worst(m, m_ref)[0] < 1e-9 and worst(v, v_ref)[0] < 1e-9
    # Adam clears the gradients, as the original does
    assert all(not any(t.data) for t in c.gradients().values())


def test_padding_free_batches_mean_every_predicted_token():
    """A batch's loss and gradients are the token-weighted mean of its documents' (the
    oracle: the same engine one document at a time), sequences of 1 token included."""
    _, c = engines(("final", 2, 8, 2, 8), seed=5)
    batch = random_batch(random.Random(5), 4, 8) + [[3]]  # a lone token predicts nothing
    n = sum(len(s) - 1 for s in batch)
    loss = c.forward_backward(batch)
    grads = c.gradients()
    want_loss, want = 0.0, {k: [0.0] * len(t.data) for k, t in grads.items()}
    for seq in batch[:-1]:
        want_loss += c.forward_backward([seq]) * (len(seq) - 1) / n
        for k, t in c.gradients().items():
            want[k] = [a + b * (len(seq) - 1) / n for a, b in zip(want[k], t.data)]
    assert rel_err([loss], [want_loss]) < 1e-13
    for k in want:
        assert rel_err(grads[k].data, want[k]) < 1e-10, k


# --- itself: KV cache, dtypes, state, two engines -------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[6]], ids=str)
def test_kv_cache_decode_equals_full_forward(cfg, dtype):
    """Decoding position by position == the whole sequence at once (n_embd 16 and 4 heads, the
    default width: a decoded position takes the core's unrolled copy of the forward)."""
    _, c = engines(cfg, seed=4, dtype=dtype)
    block_size = cfg[-1]
    tokens = [random.Random(2).randrange(V) for _ in range(block_size)]
    cache = c.new_cache()
    steps = [c.decode(cache, tok, pos) for pos, tok in enumerate(tokens)]
    assert steps == c.forward(tokens)  # the same code on the same numbers: the same bits
    with pytest.raises(EngineError, match="block_size"):
        c.decode(cache, 0, 0)  # the cache holds block_size positions, no more


def test_float32_trains_near_float64():
    ref, c64 = engines(CONFIGS[0], seed=8)
    c32 = CEngine(c64.config, c64.optim, V, c64.parameters(), dtype="float32")
    rng = random.Random(3)
    for step in range(20):
        batch = random_batch(rng, 2, 16)
        l64, l32 = c64.forward_backward(batch), c32.forward_backward(batch)
        assert isinstance(l32, float) and abs(l32 - l64) < 1e-3
        lr = learning_rate(c64.optim, step, 20)
        c64.adam_step(lr, step + 1)
        c32.adam_step(lr, step + 1)
    assert worst(c32.parameters(), c64.parameters())[0] < 1e-1
    assert all(t.data.typecode == "d" for t in c32.parameters().values())


def test_optimizer_state_round_trip_is_bit_exact():
    _, a = engines(("final", 1, 8, 2, 6), seed=10)
    rng = random.Random(5)
    for step in range(3):
        a.forward_backward(random_batch(rng, 2, 6))
        a.adam_step(0.01, step + 1)
    b = CEngine(a.config, a.optim, V, a.parameters())
    b.load_optimizer_state(*a.optimizer_state())
    batch = random_batch(rng, 2, 6)
    assert a.forward_backward(batch) == b.forward_backward(batch)
    a.adam_step(0.01, 4), b.adam_step(0.01, 4)
    assert a.parameters() == b.parameters() and a.optimizer_state() == b.optimizer_state()


def test_two_engines_in_one_process_do_not_interfere():
    """No global state in the core: two models trained in turns end where each ends alone."""
    cfgs = [("final", 1, 16, 4, 16), ("first", 2, 8, 2, 6)]

    def train(engine, rng, step):
        engine.forward_backward(random_batch(rng, 2, engine.config.block_size))
        engine.adam_step(0.01, step + 1)

    alone = []
    for cfg in cfgs:
        _, c = engines(cfg, seed=2)
        rng = random.Random(cfg[1])
        for step in range(10):
            train(c, rng, step)
        alone.append(c.parameters())
    both = [engines(cfg, seed=2)[1] for cfg in cfgs]
    rngs = [random.Random(cfg[1]) for cfg in cfgs]
    caches = [c.new_cache() for c in both]
    for step in range(10):
        for c, rng, cache in zip(both, rngs, caches, strict=True):
            train(c, rng, step)
            if cache.n < c.config.block_size:  # a cache in between, of each model
                c.decode(cache, 1, cache.n)
    assert [c.parameters() for c in both] == alone


# --- several steps per call ----------------------------------------------------------------------


def names_trainer(engine_cls, docs, steps=60, batch_size=1, lr=None, doc_mode="lines",
                  **kwargs) -> Trainer:  # fmt: skip
    optim = OptimConfig() if lr is None else OptimConfig(learning_rate=lr)
    train = TrainConfig(num_steps=steps, batch_size=batch_size, doc_mode=doc_mode)
    model = ModelConfig(n_embd=8, n_head=2, block_size=8)
    return new_trainer(engine_cls, list(docs), model, optim, train, random.Random(1),
                       engine_kwargs=kwargs)  # fmt: skip


DOCS = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "harper",
        "evelyn", "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila"]
PARAGRAPHS = ["the king shall not speak of love and war", "so the queen", "of war " * 6]


@pytest.mark.parametrize("doc_mode,docs,B", [("lines", DOCS, 1), ("lines", DOCS, 3),
                                             ("paragraphs", PARAGRAPHS, 2)])  # fmt: skip
def test_several_steps_per_call_equal_one_at_a_time(doc_mode, docs, B):
    """Trainer.steps (one engine call) == Trainer.step repeated, bit for bit: losses,
    weights, Adam's moments, and the random windows of long documents."""
    a = names_trainer(CEngine, docs, batch_size=B, doc_mode=doc_mode)
    b = names_trainer(CEngine, docs, batch_size=B, doc_mode=doc_mode)
    one = [a.step() for _ in range(60)]
    several = b.steps(25) + b.steps(7) + b.steps(100)  # the last one stops at the end
    assert one == several and b.done
    assert a.engine.parameters() == b.engine.parameters()
    assert a.engine.optimizer_state() == b.engine.optimizer_state()
    assert a.window_rng.getstate() == b.window_rng.getstate()


def test_run_hands_chunks_to_the_c_engine_and_keeps_its_hooks():
    """train.run with the C engine (chunks of steps per call) == the same loop one step at a
    time (the interface's own train_steps: no chunks): every hook, in order, and the weights."""

    class Chunked(CEngine):
        calls: list[int] = []

        def train_steps(self, batches, lrs, t0):
            self.calls.append(len(batches))
            return super().train_steps(batches, lrs, t0)

    class OneAtATime(CEngine):
        train_steps = Engine.train_steps  # the interface's own loop: no chunks

    def record(engine_cls):
        trainer = names_trainer(engine_cls, DOCS, steps=40)
        trainer.val_docs = ["mia", "zoe"]
        events = []
        run(trainer, eval_every=7, checkpoint_every=10,
            on_step=lambda r: events.append(("step", r)),
            on_eval=lambda s, e, best: events.append(("eval", s, e.loss, best)),
            on_checkpoint=lambda why: events.append(("ckpt", trainer.step_count, why)))  # fmt: skip
        return events, trainer.engine.parameters()

    (chunked, weights), (one, weights_one) = record(Chunked), record(OneAtATime)
    assert chunked == one and weights == weights_one
    assert max(Chunked.calls) > 1  # it did hand over several steps at once
    assert [e for e in chunked if e[0] == "ckpt"] == [
        ("ckpt", 10, "periodic"), ("ckpt", 20, "periodic"), ("ckpt", 30, "periodic"),
        ("ckpt", 40, "final")]  # fmt: skip
    assert [e[1] for e in chunked if e[0] == "eval"] == [7, 14, 21, 28, 35, 40]


def test_a_diverging_chunk_stops_where_one_step_at_a_time_stops():
    """The same error at the same step, the last good weights, and every good step's hook."""
    a = names_trainer(CEngine, DOCS, steps=200, lr=0.55)  # inf at step 23, chunk 16..31
    b = names_trainer(CEngine, DOCS, steps=200, lr=0.55)
    a_losses, b_losses = [], []
    with pytest.raises(TrainingError) as one:
        while True:
            a_losses.append(a.step().loss)
    with pytest.raises(TrainingError) as chunked:
        run(b, on_step=lambda r: b_losses.append(r.loss))
    assert str(one.value) == str(chunked.value) and "diverged" in str(one.value)
    assert 10 < a.step_count == b.step_count < 200  # it diverged inside a chunk
    assert a_losses == b_losses and len(b_losses) == b.step_count
    assert a.engine.parameters() == b.engine.parameters()  # the last good step's weights


def test_engine_train_steps_fallback_is_the_loop():
    """Engine.train_steps (what ref, numpy and torch use) == forward_backward + adam_step."""
    ref, _ = engines(("final", 1, 4, 2, 4), seed=6)
    ref2, _ = engines(("final", 1, 4, 2, 4), seed=6)
    rng = random.Random(4)
    batches = [random_batch(rng, 2, 4) for _ in range(4)]
    lrs = [0.01, 0.008, 0.006, 0.004]
    losses = ref.train_steps(batches, lrs, 1)
    want = []
    for i, batch in enumerate(batches):
        want.append(ref2.forward_backward(batch))
        ref2.adam_step(lrs[i], i + 1)
    assert losses == want and ref.parameters() == ref2.parameters()


# --- sampling: the C sampler is sample.py's loop ------------------------------------------------


SAMPLE_CASES = {
    "original": dict(temperature=0.5),
    "prompt-topk": dict(temperature=0.8, prompt=[3, 4], top_k=3),
    "greedy": dict(temperature=0.0, prompt=[2]),
    "slide": dict(temperature=1.0, max_new_tokens=40),  # far past block_size
    "stop-after": dict(temperature=1.5, stop_after=3),
    "prompt-past-the-context": dict(temperature=2.0, prompt=[1, 2, 3] * 4, top_k=2),
}


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_c_sampler_equals_the_python_loop(case, dtype):
    """Whole samples in C (Engine.generate) == sample.generate_sample's Python loop on the same
    engine: the same samples, log-probabilities, and random stream after (its state `==`)."""
    kw = SAMPLE_CASES[case]
    _, c = engines(("final", 1, 16, 4, 8), seed=9, dtype=dtype)
    tok = Tokenizer([chr(ord("a") + i) for i in range(V - 1)])
    fast_rng, loop_rng = random.Random(5), random.Random(5)
    fast = generate_samples(c, tok, fast_rng, 150, **kw)
    loop = [generate_sample(c, tok, loop_rng, **kw) for _ in range(150)]
    assert fast == loop
    assert fast_rng.getstate() == loop_rng.getstate()
    assert fast_rng.random() == loop_rng.random()
    if kw["temperature"] > 0:
        assert len({s.text for s in fast}) > 5  # many draws: several Mersenne twists crossed


@pytest.mark.parametrize("cfg", [("final", 1, 8, 2, 6), ("final", 1, 16, 4, 6)], ids=str)
def test_samples_are_the_reference_engines(cfg):
    """float64: the reference engine's own loop makes the same samples (its logits are the
    same bits), at the default width too (the C core's unrolled decode)."""
    ref, c = engines(cfg, seed=11)
    tok = Tokenizer([chr(ord("a") + i) for i in range(V - 1)])
    for kw in (dict(temperature=0.5), dict(temperature=0.9, prompt=[4], top_k=4)):
        a, b = random.Random(1), random.Random(1)
        assert generate_samples(c, tok, a, 4, **kw) == generate_samples(ref, tok, b, 4, **kw)
        assert a.getstate() == b.getstate()


# --- sizes are refused in Python, before C --------------------------------------------------------


def test_bad_sizes_are_engine_errors_never_a_crash():
    _, c = engines(("final", 1, 8, 2, 4))
    bad_batches = [[], [[]], [[1]], [[0] * 6], [[0, 1], [0] * 7], [[0, V]], [[-1, 0]],
                   [[0, 1], [2, 3 * V]]]  # fmt: skip
    for batch in bad_batches:
        for call in (c.forward_backward, c.loss, lambda b: c.train_steps([b], [0.01], 1)):
            with pytest.raises(EngineError):
                call(batch)
    for tokens in ([], [0] * 5, [V], [-2]):
        for call in (c.forward, c.attention):
            with pytest.raises(EngineError):
                call(tokens)
    cache = c.new_cache()
    for token, pos in ((V, 0), (-1, 0), (0, 4), (0, -1)):
        with pytest.raises(EngineError):
            c.decode(cache, token, pos)
    with pytest.raises(EngineError):
        c.adam_step(0.01, 0)
    with pytest.raises(EngineError):
        c.train_steps([[[0, 1]]], [0.01, 0.02], 1)
    with pytest.raises(EngineError, match="float16"):
        CEngine(c.config, c.optim, V, c.parameters(), dtype="float16")
    with pytest.raises(EngineError, match="shape"):
        CEngine(c.config, c.optim, V + 1, c.parameters())
    with pytest.raises(EngineError, match="n_embd"):
        CEngine.memory_estimate(dataclasses.replace(c.config, n_embd=1 << 21), V, 1, "float64")
    # and what was refused left the model as it was
    assert c.forward([0, 1]) == engines(("final", 1, 8, 2, 4))[1].forward([0, 1])


def test_memory_estimate_counts_the_buffers():
    model, _ = config("final", 1, 16, 4, 16)
    small = CEngine.memory_estimate(model, 27, 1, "float64")
    assert small > 4 * 4192 * 8  # weights, gradients, Adam's m and v, and activations
    assert CEngine.memory_estimate(model, 27, 16, "float64") > small
    assert CEngine.memory_estimate(model, 27, 1, "float32") < small


# --- the other engines' checkpoints, and the default runs -----------------------------------------


@pytest.mark.parametrize("other", ["ref", "numpy", pytest.param("torch", marks=pytest.mark.slow)])
def test_checkpoints_cross_engines_with_equal_logits(other, tmp_path):
    other_cls = load_engine(require_engine(other))
    kwargs = {"device": "cpu"} if other == "torch" else {}
    for writer, reader in ((CEngine, other_cls), (other_cls, CEngine)):
        trainer = names_trainer(writer, DOCS, steps=6, batch_size=2,
                                **(kwargs if writer is other_cls else {}))  # fmt: skip
        for _ in range(3):
            trainer.step()
        path = tmp_path / f"{writer.name}.safetensors"
        ckpt_io.save(path, trainer.checkpoint())
        ckpt = ckpt_io.load(path)
        engine = reader(ckpt.model, ckpt.optim, ckpt.tokenizer.vocab_size, ckpt.params,
                        **(kwargs if reader is other_cls else {}))  # fmt: skip
        engine.load_optimizer_state(ckpt.adam_m, ckpt.adam_v)
        assert engine.parameters() == trainer.engine.parameters()
        tokens = trainer.tokenizer.doc_tokens("sophia")[:-1]
        got, want = engine.forward(tokens), trainer.engine.forward(tokens)
        if other == "ref":
            assert got == want  # the reference's own bits
        else:
            assert max(rel_err(a, b) for a, b in zip(got, want, strict=True)) < 1e-12
        batch = [trainer.tokenizer.doc_tokens(d) for d in ("ava", "mila")]
        assert rel_err([engine.forward_backward(batch)], [trainer.engine.forward_backward(batch)]
                       ) < 1e-12  # fmt: skip


@pytest.mark.parametrize("preset", ["final", "first"])
def test_default_runs_print_the_originals_lines(preset, names_path, tmp_path, reference):
    """The whole original run on the C engine: every step's loss to 4 decimals and the 20
    samples, `==` the original program's output; the first steps' losses to the last bit."""
    out = tmp_path / "run"
    r = main_cli(["train", "--engine", "c", "--preset", preset, "--data", names_path,
                  "--out", out, "--quiet"])  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == reference.lines(preset)
    metrics = (out / "metrics.jsonl").read_text().splitlines()
    exact = reference.losses(preset)
    losses = [json.loads(line)["loss"] for line in metrics]
    assert losses[:3] == exact[:3]
    assert max(rel_err([a], [b]) for a, b in zip(losses, exact, strict=True)) < 1e-12
    # the saved random stream continues into `sample`: the same 20 samples
    r = main_cli(["sample", "--checkpoint", out / "model.safetensors", "--engine", "c"])
    assert r.stdout.splitlines() == reference.lines(preset)[-20:]


def test_float32_default_run_ends_near_float64(names_path):
    """float32's final loss on the original's whole run within 0.05 of float64's."""
    p = get_preset("final")
    finals = {}
    for dtype in ("float64", "float32"):
        rng = random.Random(p.train.seed)
        docs, _ = load_docs(names_path, rng)
        trainer = new_trainer(CEngine, docs, p.model, p.optim, p.train, rng, dtype=dtype)
        losses = []
        run(trainer, on_step=lambda r, losses=losses: losses.append(r.loss))
        finals[dtype] = sum(losses[-50:]) / 50  # the last 50 steps' mean: less noisy
        finals[dtype + " last"] = losses[-1]
    assert abs(finals["float32 last"] - finals["float64 last"]) < 0.05, finals
    assert abs(finals["float32"] - finals["float64"]) < 0.01, finals


def test_c_is_the_default_engine_where_it_is_built():
    assert DEFAULT_ORDER[0] == "c" and default_engine() == "c"


# --- installs without the compiled part, and the C path without NumPy ---------------------------


BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def python(code: str, tmp_path, blocked=(), env=None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter, where importing any of `blocked` fails."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK.format(blocked=set(blocked)))
    path = os.pathsep.join([str(site), *sys.path])
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_without_the_compiled_part_c_says_how_to_get_it(tmp_path):
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\n")
    code = f"""
        import sys
        from microgpt.__main__ import main
        from microgpt.engine import default_engine
        print(default_engine())
        sys.exit(main(["train", "--engine", "c", "--data", {str(data)!r}, "--steps", "2"]))
    """
    r = python(code, tmp_path, blocked=["microgpt.c_engine._core64"])
    assert r.returncode == 2 and r.stdout == "numpy\n", r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "c engine was not compiled" in r.stderr and "C compiler" in r.stderr
    assert "pip install" in r.stderr


def test_the_c_path_never_imports_numpy(tmp_path):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(DOCS) + "\n")
    code = f"""
        import sys
        from microgpt.__main__ import main
        rc = main(["train", "--data", {str(data)!r}, "--steps", "30", "--num-samples", "3"])
        assert "numpy" not in sys.modules, "numpy was imported"
        sys.exit(rc)
    """
    r = python(code, tmp_path, blocked=["numpy"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("sample") == 3 and "step   30 /   30" in r.stdout
