"""Each NumPy layer's backward against central finite differences of its forward.

An oracle independent of the reference engine: for a random upstream gradient R, the layer's
backward must give d sum(R * forward(inputs)) / d input, which we estimate numerically.
"""

from __future__ import annotations

import numpy as np
import pytest

from microgpt.numpy_engine import layers as L

rng = np.random.default_rng(0)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, one element at a time (x is perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


def assert_close(got, want, tol=1e-6):
    scale = max(float(np.max(np.abs(want))), 1e-3)
    assert np.max(np.abs(got - want)) <= tol * scale


def test_rmsnorm():
    x = rng.normal(size=(5, 8))
    R = rng.normal(size=(5, 8))
    out, cache = L.rmsnorm_forward(x)
    np.testing.assert_allclose(np.mean(out * out, axis=1), 1 / (1 + 1e-5 / np.mean(x * x, 1)))
    dx = L.rmsnorm_backward(R.copy(), cache)
    assert_close(dx, numeric_grad(lambda: np.sum(R * L.rmsnorm_forward(x)[0]), x))


def test_linear():
    x, w = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    R = rng.normal(size=(4, 3))
    out, cache = L.linear_forward(x, w)
    np.testing.assert_allclose(out, [[sum(w[o] * x[n]) for o in range(3)] for n in range(4)])
    dw = np.empty_like(w)
    dx = L.linear_backward(R, cache, dw)
    f = lambda: np.sum(R * L.linear_forward(x, w)[0])
    assert_close(dx, numeric_grad(f, x))
    assert_close(dw, numeric_grad(f, w))


@pytest.mark.parametrize("fwd,bwd", [(L.relu_forward, L.relu_backward),
                                     (L.relu2_forward, L.relu2_backward)])  # fmt: skip
def test_relu_and_relu_squared(fwd, bwd):
    x = rng.normal(size=(3, 8))
    R = rng.normal(size=(3, 8))
    out, cache = fwd(x)
    dx = bwd(R.copy(), cache)
    assert_close(dx, numeric_grad(lambda: np.sum(R * fwd(x)[0]), x))


@pytest.mark.parametrize("B,T,NH", [(1, 5, 2), (3, 4, 1), (2, 6, 4)])
def test_attention(B, T, NH):
    C = 8
    qkv = rng.normal(size=(B * T, 3 * C))
    R = rng.normal(size=(B * T, C))
    mask = L.causal_mask(B, NH, T, np.float64)
    out, cache = L.attention_forward(qkv, B, T, NH, mask)
    # hand-worked oracle for one head of one sequence: softmax over s <= t of q.k / sqrt(HS)
    HS = C // NH
    q, k, v = (qkv[:T, i * C : i * C + HS] for i in range(3))  # head 0 of sequence 0
    for t in range(T):
        logits = q[t] @ k[: t + 1].T / HS**0.5
        p = np.exp(logits - logits.max())
        p /= p.sum()
        np.testing.assert_allclose(out[t, :HS], p @ v[: t + 1], rtol=1e-12)
    dqkv = L.attention_backward(R, cache)
    f = lambda: np.sum(R * L.attention_forward(qkv, B, T, NH, mask)[0])
    assert_close(dqkv, numeric_grad(f, qkv))


def test_attention_decode_is_a_row_of_attention_forward():
    T, C, NH = 6, 8, 2
    qkv = rng.normal(size=(T, 3 * C))
    full, cache = L.attention_forward(qkv, 1, T, NH, L.causal_mask(1, NH, T, np.float64))
    k_cache, v_cache = np.zeros((NH, T, C // NH)), np.zeros((NH, T, C // NH))
    for n in range(T):
        row, weights = L.attention_decode(qkv[n : n + 1], k_cache, v_cache, n, NH)
        np.testing.assert_allclose(row[0], full[n], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(weights, cache[3][0, :, n, : n + 1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("padded", [False, True])
def test_crossentropy(padded):
    N, V = 6, 5
    logits = rng.normal(size=(N, V))
    rows = np.array([0, 1, 3, 4]) if padded else np.arange(N)
    targets = rng.integers(0, V, size=len(rows))
    weight = None
    if padded:
        weight = np.zeros((N, 1))
        weight[rows] = 1 / len(rows)
    loss, cache = L.crossentropy_forward(logits.copy(), rows, targets)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert loss == pytest.approx(-np.mean(logp[rows, targets]), rel=1e-12)
    dlogits = L.crossentropy_backward(cache, weight, np.eye(V))
    f = lambda: L.crossentropy_forward(logits.copy(), rows, targets)[0]
    assert_close(dlogits, numeric_grad(f, logits))


@pytest.mark.parametrize("B", [1, 3])
def test_embedding(B):
    V, C, T, block = 5, 4, 3, 6
    wte, wpe = rng.normal(size=(V, C)), rng.normal(size=(block, C))
    idx = rng.integers(0, V, size=(B, T))
    R = rng.normal(size=(B * T, C))
    out, cache = L.embedding_forward(wte, wpe, idx)
    np.testing.assert_array_equal(out.reshape(B, T, C), wte[idx] + wpe[:T])
    dwte, dwpe = np.empty_like(wte), np.full_like(wpe, np.nan)
    L.embedding_backward(R, cache, dwte, dwpe, np.eye(V))
    f = lambda: np.sum(R * L.embedding_forward(wte, wpe, idx)[0])
    assert_close(dwte, numeric_grad(f, wte))
    assert_close(dwpe, numeric_grad(f, wpe))  # rows T.. are exactly 0, not left as NaN
