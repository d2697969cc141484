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


# rows up to REPEAT_MAX long are summed into a repeated sum, longer ones into a column
@pytest.mark.parametrize("C", [8, L.REPEAT_MAX + 8])
def test_rmsnorm(C):
    x = rng.normal(size=(5, C))
    R = rng.normal(size=(5, C))
    avg = L.summing_matrix(C, np.float64, 1 / C)
    assert avg.shape == (C, C if C <= L.REPEAT_MAX else 1)

    def forward():
        return L.rmsnorm_forward(x, np.empty_like(x), np.empty((5, avg.shape[1])), avg)

    out, cache = forward()
    np.testing.assert_allclose(np.mean(out * out, axis=1), 1 / (1 + 1e-5 / np.mean(x * x, 1)))
    np.testing.assert_allclose(out, x * (np.mean(x * x, 1, keepdims=True) + 1e-5) ** -0.5)
    dx = L.rmsnorm_backward(R, cache, np.empty_like(x), np.empty_like(x))
    assert_close(dx, numeric_grad(lambda: np.sum(R * forward()[0]), x))


def test_linear():
    x, w = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    R = rng.normal(size=(4, 3))
    out, cache = L.linear_forward(x, w, np.empty((4, 3)))
    np.testing.assert_allclose(out, [[sum(w[o] * x[n]) for o in range(3)] for n in range(4)])
    dw = np.empty_like(w)
    dx = L.linear_backward(R, cache, dw, np.empty_like(x))
    f = lambda: np.sum(R * L.linear_forward(x, w, np.empty((4, 3)))[0])
    assert_close(dx, numeric_grad(f, x))
    assert_close(dw, numeric_grad(f, w))


@pytest.mark.parametrize("fwd,bwd", [(L.relu_forward, L.relu_backward),
                                     (L.relu2_forward, L.relu2_backward)])  # fmt: skip
def test_relu_and_relu_squared(fwd, bwd):
    x = rng.normal(size=(3, 8))
    x[0, :2] = 0  # the original passes no gradient at exactly 0
    R = rng.normal(size=(3, 8))
    # relu2_forward overwrites its input with relu(x): each call gets a copy
    out, cache = fwd(x.copy(), np.empty_like(x))
    np.testing.assert_array_equal(out, np.maximum(x, 0) ** (2 if fwd is L.relu2_forward else 1))
    dx = bwd(R.copy(), cache)
    assert not dx[0, :2].any()
    f = lambda: np.sum(R * fwd(x.copy(), np.empty_like(x))[0])
    assert_close(dx[1:], numeric_grad(f, x)[1:])  # (no derivative at the kink itself)


def attention(qkv: np.ndarray, B: int, T: int, NH: int, blocked=None):
    buf = L.Attention(B, T, qkv.shape[1] // 3, NH, np.float64, blocked=blocked)
    buf.qkv[...] = qkv
    return L.attention_forward(buf.qkv, buf)


# block-diagonal attention is for one sequence (B = 1); per head for any batch
@pytest.mark.parametrize("B,T,NH,blocked", [(1, 5, 2, True), (1, 7, 4, True), (1, 5, 2, False),
                                            (3, 4, 1, False), (2, 6, 4, False),
                                            (1, L.REPEAT_MAX + 2, 2, False)])  # fmt: skip
def test_attention(B, T, NH, blocked):
    C = 8
    qkv = rng.normal(size=(B * T, 3 * C))
    R = rng.normal(size=(B * T, C))
    out, buf = attention(qkv, B, T, NH, blocked)
    assert buf.blocked == blocked
    # hand-worked oracle for every head of every sequence: softmax over s <= t of
    # q.k / sqrt(HS), weights on v
    HS = C // NH
    for b in range(B):
        for h in range(NH):
            q, k, v = (qkv[b * T : (b + 1) * T, i * C + h * HS : i * C + (h + 1) * HS]
                       for i in range(3))  # fmt: skip
            for t in range(T):
                logits = q[t] @ k[: t + 1].T / HS**0.5
                p = np.exp(logits - logits.max())
                p /= p.sum()
                got = out[b * T + t, h * HS : (h + 1) * HS]
                np.testing.assert_allclose(got, p @ v[: t + 1], rtol=1e-12)
                probs = buf.probabilities()[b, h, t]
                np.testing.assert_allclose(probs[: t + 1], p, rtol=1e-12)
                assert not probs[t + 1 :].any()  # the future gets exactly 0
    dqkv = L.attention_backward(R, buf).copy()
    f = lambda: np.sum(R * attention(qkv, B, T, NH, blocked)[0])
    assert_close(dqkv, numeric_grad(f, qkv))


def test_one_short_sequence_attends_block_diagonal_the_rest_per_head():
    T = L.Attention.BLOCKED_MAX_TC // 16
    assert L.Attention(1, T, 16, 4, np.float64).blocked
    assert not L.Attention(1, T + 1, 16, 4, np.float64).blocked
    assert not L.Attention(2, T, 16, 4, np.float64).blocked


def test_diagonal_blocks_is_a_writable_view():
    a = np.zeros((6, 9))
    want = np.arange(1, 19).reshape(3, 2, 3)
    L.diagonal_blocks(a, 3)[...] = want  # (3, 2, 3)
    for h in range(3):
        np.testing.assert_array_equal(a[2 * h : 2 * h + 2, 3 * h : 3 * h + 3], want[h])
    assert np.count_nonzero(a) == 18  # everything off the blocks untouched


@pytest.mark.parametrize("blocked", [True, False], ids=["block-diagonal", "per-head"])
def test_attention_decode_is_a_row_of_attention_forward(blocked):
    T, C, NH = 6, 8, 2
    qkv = rng.normal(size=(T, 3 * C))
    full, buf = attention(qkv, 1, T, NH, blocked)
    k_cache, v_cache = np.zeros((NH, T, C // NH)), np.zeros((NH, T, C // NH))
    for n in range(T):
        row, weights = L.attention_decode(qkv[n : n + 1], k_cache, v_cache, n, NH)
        np.testing.assert_allclose(row[0], full[n], rtol=1e-12, atol=1e-15)
        want = buf.probabilities()[0, :, n, : n + 1]
        np.testing.assert_allclose(weights, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("V", [5, L.REPEAT_MAX + 3])
@pytest.mark.parametrize("padded", [False, True])
def test_crossentropy(padded, V):
    N = 6
    logits = rng.normal(size=(N, V))
    rows = np.array([0, 1, 3, 4]) if padded else np.arange(N)
    targets = rng.integers(0, V, size=len(rows))
    weight = None
    if padded:
        weight = np.zeros((N, 1))
        weight[rows] = 1 / len(rows)
    ones = L.summing_matrix(V, np.float64)
    loss, cache = L.crossentropy_forward(logits.copy(), rows, targets, ones)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert loss == pytest.approx(-np.mean(logp[rows, targets]), rel=1e-12)
    dlogits = L.crossentropy_backward(cache, weight, np.eye(V))
    f = lambda: L.crossentropy_forward(logits.copy(), rows, targets, ones)[0]
    assert_close(dlogits, numeric_grad(f, logits))


@pytest.mark.parametrize("B", [1, 3])
def test_embedding(B):
    V, C, T, block = 5, 4, 3, 6
    wte, wpe = rng.normal(size=(V, C)), rng.normal(size=(block, C))
    idx = rng.integers(0, V, size=(B, T))
    R = rng.normal(size=(B * T, C))
    f = lambda: np.sum(R * L.embedding_forward(wte, wpe, idx, np.empty((B * T, C)))[0])
    out, cache = L.embedding_forward(wte, wpe, idx, np.empty((B * T, C)))
    np.testing.assert_array_equal(out.reshape(B, T, C), wte[idx] + wpe[:T])
    dembed = np.full((V + block, C), np.nan)  # wte's gradient, then wpe's
    L.embedding_backward(R, cache, dembed, L.EmbeddingOneHot.alloc(B, T, V, block, np.float64))
    assert_close(dembed[:V], numeric_grad(f, wte))
    assert_close(dembed[V:], numeric_grad(f, wpe))  # rows T.. are exactly 0, not left as NaN
