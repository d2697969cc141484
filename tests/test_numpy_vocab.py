"""The NumPy engine on large vocabularies: nothing it holds is O(V^2).

Small vocabularies take one-hot kernels that hold a (V, V) identity; past
layers.ONEHOT_MAX_V the engine takes the plain O(N * V) and O(V * C) kernels instead. The
two paths must give the same numbers: forcing the plain path on a small vocabulary (by
lowering the constant) is checked against the one-hot path and against the reference engine.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from microgpt.config import ModelConfig, get_preset
from microgpt.init import init_params
from microgpt.numpy_engine import layers as L
from microgpt.numpy_engine.model import NumpyEngine
from microgpt.ref.model import RefEngine


def arrays_held(obj) -> list[np.ndarray]:
    """Every NumPy array reachable from obj (and the arrays that views are views of),
    through attributes of microgpt objects, lists, tuples and dicts."""
    found, seen, stack = [], set(), [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):
            found.append(o)
            if o.base is not None:
                stack.append(o.base)
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif type(o).__module__.startswith("microgpt") and hasattr(o, "__dict__"):
            stack.extend(vars(o).values())
    return found


def test_a_30000_character_vocabulary_trains_without_v_squared_arrays():
    V = 30_000
    preset = get_preset("final")
    model = ModelConfig(n_layer=1, n_embd=4, n_head=2, block_size=8)
    engine = NumpyEngine(model, preset.optim, V, init_params(model, V, random.Random(0)))
    assert V > L.ONEHOT_MAX_V and engine._eye is None
    rng = random.Random(1)
    # one sequence (nothing padded) and a padded batch: both cross-entropy paths
    one = [[rng.randrange(V) for _ in range(9)]]
    padded = [[rng.randrange(V) for _ in range(n)] for n in (9, 3, 5)]
    for t, batch in enumerate([one, padded]):
        loss = engine.forward_backward(batch)
        assert math.isclose(loss, math.log(V), rel_tol=0.05)  # near uniform at init
        assert np.isfinite(engine.grad).all() and engine.grad.any()
        before = engine.flat.copy()
        engine.adam_step(0.01, t + 1)
        assert not np.array_equal(engine.flat, before)
    cache = engine.new_cache()
    assert len(engine.decode(cache, 5, 0)) == V
    arrays = arrays_held(engine)
    assert len(arrays) > 50  # the walk reached the workspaces' buffers and views
    biggest = max(arrays, key=lambda a: a.size)
    assert biggest.size < V * V, f"an array of shape {biggest.shape} is O(V^2)"
    owned = {id(a): a for a in arrays if a.base is None}
    assert sum(a.nbytes for a in owned.values()) < 64 * 2**20


CONFIGS = [("final", 1, 16, 4, 16), ("first", 2, 8, 2, 6)]  # (preset, n_layer, n_embd, ...)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("B", [1, 3])
def test_plain_path_equals_onehot_path_and_reference(cfg, B, monkeypatch):
    V = 11
    preset, n_layer, n_embd, n_head, block_size = cfg
    p = get_preset(preset)
    model = dataclasses.replace(
        p.model, n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=block_size
    )
    params = init_params(model, V, random.Random(2))
    onehot = NumpyEngine(model, p.optim, V, params)
    monkeypatch.setattr(L, "ONEHOT_MAX_V", V - 1)  # V is now "large"
    plain = NumpyEngine(model, p.optim, V, params)
    ref = RefEngine(model, p.optim, V, params)
    assert onehot._eye is not None and plain._eye is None
    rng = random.Random(3)
    for step in range(3):
        batch = [[rng.randrange(V) for _ in range(rng.randint(2, block_size + 1))]
                 for _ in range(B)]  # fmt: skip
        losses = [e.forward_backward(batch) for e in (onehot, plain, ref)]
        assert losses[1] == losses[0]  # the forward is the same code
        assert math.isclose(losses[1], losses[2], rel_tol=1e-10)
        np.testing.assert_allclose(plain.grad, onehot.grad, rtol=1e-12, atol=1e-15)
        want = np.concatenate([np.frombuffer(t.data) for t in ref.gradients().values()])
        np.testing.assert_allclose(plain.grad, want, rtol=1e-10, atol=1e-14)
        for e in (onehot, plain, ref):
            e.adam_step(0.01, step + 1)
    # only the one-hot path holds the one-hot scratch
    assert all(hasattr(ws, "tokens") for ws in onehot._workspaces.values())
    assert not any(hasattr(ws, "tokens") for ws in plain._workspaces.values())
