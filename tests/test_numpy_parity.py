"""The NumPy engine against its oracle, the reference engine (and itself: KV cache vs full).

Relative error is measured element by element against the reference value, with a floor
for values near zero:

    err = |numpy - ref| / max(|ref|, 1e-4 * max|ref over the tensor|, 1e-12)

Every element larger than 1e-4 of its tensor's largest is held to a plain relative error.
The floor is for the few elements that are tiny because terms cancelled (a gradient entry
of 4e-9 in a matrix whose largest is 8e-3): summing the same terms in another order moves
such an entry by ~1e-16 of the matrix's scale, a large fraction of the entry itself. The
1e-12 covers tensors that are exactly 0 in both engines (the first preset's zeroed
projections give zero gradients to attn_wq and attn_wk).
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from microgpt.config import ModelConfig, get_preset
from microgpt.engine import EngineError, load_engine
from microgpt.init import init_params
from microgpt.numpy_engine.model import NumpyEngine
from microgpt.ref.model import RefEngine
from microgpt.schedule import learning_rate
from microgpt.studio.trace import reference_attention
from microgpt.tensor import Tensor

FLOOR, SCALE_FLOOR = 1e-12, 1e-4
V = 11  # a small vocabulary keeps the reference engine quick

# (preset, n_layer, n_embd, n_head, block_size): both presets' mlp / init / Adam settings
CONFIGS = [
    ("final", 1, 16, 4, 16),  # the original's shape
    ("final", 2, 8, 2, 6),
    ("final", 3, 8, 4, 4),
    ("final", 1, 12, 3, 5),
    ("first", 1, 16, 4, 8),  # the first revision's shape (relu^2, zeroed wo / fc2)
    ("first", 2, 8, 2, 6),
    ("first", 2, 12, 1, 5),
    ("final", 2, 8, 2, 40),  # T * n_embd past Attention.BLOCKED_MAX_TC: per-head attention
    ("final", 1, 40, 4, 6),  # n_embd past layers.REPEAT_MAX: rmsnorm sums into a column
]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    floor = max(SCALE_FLOOR * float(np.max(np.abs(b), initial=0.0)), FLOOR)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor), initial=0.0))


def tensors_rel_err(got: dict[str, Tensor], want: dict[str, Tensor]) -> tuple[float, str]:
    assert list(got) == list(want)
    worst = max((rel_err(got[k].data, want[k].data), k) for k in want)
    for k in want:
        assert got[k].shape == want[k].shape
    return worst


def make_engines(preset: str, n_layer: int, n_embd: int, n_head: int, block_size: int, seed=0):
    p = get_preset(preset)
    model = dataclasses.replace(
        p.model, n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size
    )
    params = init_params(model, V, random.Random(seed))
    return p, RefEngine(model, p.optim, V, params), NumpyEngine(model, p.optim, V, params)


def random_batch(rng: random.Random, B: int, block_size: int) -> list[list[int]]:
    """B token sequences of varying lengths 2 .. block_size + 1 (so B > 1 needs padding)."""
    return [[rng.randrange(V) for _ in range(rng.randint(2, block_size + 1))] for _ in range(B)]


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_loss_and_every_gradient_match_reference(cfg, B):
    _, ref, fast = make_engines(*cfg)
    rng = random.Random(10 * CONFIGS.index(cfg) + B)
    for _ in range(2):  # twice: gradients are set, not accumulated
        batch = random_batch(rng, B, cfg[-1])
        loss_ref, loss = ref.forward_backward(batch), fast.forward_backward(batch)
        assert rel_err(loss, loss_ref) < 1e-10
        err, name = tensors_rel_err(fast.gradients(), ref.gradients())
        assert err < 1e-10, f"gradient of {name}: relative error {err:.2e}"


def test_padding_changes_nothing():
    """A batch's loss is the mean over all of its predicted tokens, whatever the padding."""
    _, _, fast = make_engines("final", 2, 8, 2, 8)
    rng = random.Random(5)
    batch = random_batch(rng, 4, 8)
    batch[0] = batch[0][:2]  # make sure lengths differ
    fast.forward_backward(batch)
    grads = {k: np.frombuffer(t.data).copy() for k, t in fast.gradients().items()}
    # the same mean, computed one document at a time (weights: tokens per document)
    n = sum(len(s) - 1 for s in batch)
    total = {k: np.zeros_like(g) for k, g in grads.items()}
    loss = 0.0
    for seq in batch:
        loss += fast.forward_backward([seq]) * (len(seq) - 1) / n
        for k, t in fast.gradients().items():
            total[k] += np.frombuffer(t.data) * (len(seq) - 1) / n
    assert rel_err(fast.loss(batch), loss) < 1e-12
    for k in grads:
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("preset", ["final", "first"])
# batches of 2 (padding) over 50 steps cost the reference engine ~8 s: in the slow suite
@pytest.mark.parametrize("B", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_fifty_adam_steps_match_reference(preset, B):
    p, ref, fast = make_engines(preset, 2, 8, 2, 6, seed=1)
    rng = random.Random(7)
    num_steps = 50
    for step in range(num_steps):
        batch = random_batch(rng, B, 6)
        loss_ref, loss = ref.forward_backward(batch), fast.forward_backward(batch)
        assert rel_err(loss, loss_ref) < 1e-9, f"step {step + 1}"
        lr = learning_rate(p.optim, step, num_steps)
        ref.adam_step(lr, step + 1)
        fast.adam_step(lr, step + 1)
    err, name = tensors_rel_err(fast.parameters(), ref.parameters())
    assert err < 1e-9, f"{name} after 50 steps: relative error {err:.2e}"
    m_fast, v_fast = fast.optimizer_state()
    m_ref, v_ref = ref.optimizer_state()
    assert tensors_rel_err(m_fast, m_ref)[0] < 1e-9
    assert tensors_rel_err(v_fast, v_ref)[0] < 1e-9
    # Adam clears the gradients, as the original does
    assert all(not any(t.data) for t in fast.gradients().values())


@pytest.mark.parametrize("cfg", CONFIGS[:5] + CONFIGS[-1:], ids=lambda c: "-".join(map(str, c)))
def test_forward_and_attention_match_reference(cfg):
    _, ref, fast = make_engines(*cfg, seed=3)
    tokens = random_batch(random.Random(1), 1, cfg[-1])[0][: cfg[-1]]
    assert rel_err(fast.forward(tokens), ref.forward(tokens)) < 1e-10
    att_ref = reference_attention(ref.parameters(), ref.config, tokens)  # the traced forward
    att = fast.attention(tokens)
    assert len(att) == cfg[1] and len(att[0]) == cfg[3]
    for layer_ref, layer in zip(att_ref, att, strict=True):
        for head_ref, head in zip(layer_ref, layer, strict=True):
            assert [len(row) for row in head] == list(range(1, len(tokens) + 1))
            for row_ref, row in zip(head_ref, head, strict=True):
                assert rel_err(row, row_ref) < 1e-10
                assert math.isclose(sum(row), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[2], CONFIGS[5], CONFIGS[-1]], ids=str)
def test_kv_cache_decode_equals_full_forward(cfg, dtype):
    p, _, fast = make_engines(*cfg, seed=4)
    fast = NumpyEngine(fast.config, p.optim, V, fast.parameters(), dtype=dtype)
    block_size = cfg[-1]
    tokens = [random.Random(2).randrange(V) for _ in range(block_size)]
    full = fast.forward(tokens)
    cache = fast.new_cache()
    steps = [fast.decode(cache, tok, pos) for pos, tok in enumerate(tokens)]
    assert all(isinstance(x, float) for x in steps[-1])
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(steps, full, rtol=tol, atol=tol)
    with pytest.raises(EngineError):
        fast.decode(cache, 0, 0)  # the cache holds block_size positions, no more


def test_decode_matches_reference_decode():
    _, ref, fast = make_engines("final", 1, 16, 4, 16, seed=6)
    c_ref, c = ref.new_cache(), fast.new_cache()
    for pos, tok in enumerate([0, 3, 5, 7, 1]):
        assert rel_err(fast.decode(c, tok, pos), ref.decode(c_ref, tok, pos)) < 1e-10


def test_float32_trains_and_stays_close():
    p, _, f64 = make_engines("final", 1, 16, 4, 16, seed=8)
    f32 = NumpyEngine(f64.config, p.optim, V, f64.parameters(), dtype="float32")
    assert f32.flat.dtype == np.float32
    rng = random.Random(3)
    for step in range(20):
        batch = random_batch(rng, 2, 16)
        l64, l32 = f64.forward_backward(batch), f32.forward_backward(batch)
        assert isinstance(l32, float) and abs(l32 - l64) < 1e-3
        lr = learning_rate(p.optim, step, 20)
        f64.adam_step(lr, step + 1)
        f32.adam_step(lr, step + 1)
    params = f32.parameters()
    assert all(t.data.typecode == "d" for t in params.values())
    assert tensors_rel_err(params, f64.parameters())[0] < 1e-1
    assert abs(f32.loss(batch) - f64.loss(batch)) < 1e-3
    # no float64 constant slipped into the float32 computation
    for ws in f32._workspaces.values():
        for obj in (ws, *ws.layers, *(layer.attn for layer in ws.layers)):
            arrays = [a for a in vars(obj).values() if isinstance(a, np.ndarray)]
            assert arrays and all(a.dtype == np.float32 for a in arrays), type(obj).__name__


def test_workspaces_dropped_past_their_budget_give_the_same_numbers():
    _, _, kept = make_engines("final", 2, 8, 2, 6, seed=11)
    _, _, dropped = make_engines("final", 2, 8, 2, 6, seed=11)
    dropped.WORKSPACE_BYTES = 1  # every new batch shape drops the ones before it
    rng = random.Random(6)
    batches = [random_batch(rng, B, 6) for B in (1, 3, 1, 2, 3, 1)]
    for batch in batches * 2:
        assert dropped.forward_backward(batch) == kept.forward_backward(batch)
        assert dropped.grad.tolist() == kept.grad.tolist()
        assert len(dropped._workspaces) == 1
    assert len(kept._workspaces) > 1


def test_loss_without_gradients_equals_forward_backward():
    _, ref, fast = make_engines("first", 2, 8, 2, 6, seed=9)
    batch = random_batch(random.Random(4), 5, 6)
    fast_loss = fast.loss(batch)
    assert rel_err(fast_loss, fast.forward_backward(batch)) < 1e-14
    assert rel_err(fast_loss, ref.loss(batch)) < 1e-10


def test_optimizer_state_round_trip():
    p, _, a = make_engines("final", 1, 8, 2, 6, seed=10)
    rng = random.Random(5)
    for step in range(3):
        a.forward_backward(random_batch(rng, 2, 6))
        a.adam_step(0.01, step + 1)
    b = NumpyEngine(a.config, p.optim, V, a.parameters())
    b.load_optimizer_state(*a.optimizer_state())
    batch = random_batch(rng, 2, 6)
    a.forward_backward(batch), b.forward_backward(batch)
    a.adam_step(0.01, 4), b.adam_step(0.01, 4)
    for k, t in a.parameters().items():
        assert t.data == b.parameters()[k].data


def test_user_errors_are_engine_errors():
    p, _, fast = make_engines("final", 1, 8, 2, 4)
    with pytest.raises(EngineError, match="block_size"):
        fast.forward([0] * 5)
    with pytest.raises(EngineError, match="block_size"):
        fast.forward_backward([[0] * 6])
    with pytest.raises(EngineError, match="float32"):
        RefEngine(fast.config, p.optim, V, fast.parameters(), dtype="float32")
    wrong = init_params(
        ModelConfig(n_layer=1, n_embd=8, n_head=2, block_size=5), V, random.Random()
    )
    with pytest.raises(EngineError, match="shape"):
        NumpyEngine(fast.config, p.optim, V, wrong)
    assert load_engine("numpy") is NumpyEngine
