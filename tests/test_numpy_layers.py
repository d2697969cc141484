"""Each NumPy layer against two oracles that do not involve the reference engine.

1. Every plain layer (`*_naive`, linear, relu, relu2) against the math written out by hand,
   and its backward against central finite differences of its forward: for a random
   upstream gradient R, the backward must give d sum(R * forward(inputs)) / d input.
2. Every optimised kernel against its plain version on random float64 inputs, forward
   outputs and backward gradients, to ~1e-12: both attention modes (block-diagonal and per
   head), both shapes of the summing matrix (the square of ones for short rows, the column
   for long ones), one sequence and a padded batch.
"""

from __future__ import annotations

import numpy as np
import pytest

from microgpt.numpy_engine import layers as L

rng = np.random.default_rng(0)
EXACT = 1e-12  # optimised against plain, float64: the same math up to rounding
LONG = L.REPEAT_MAX + 8  # rows this long are summed into a column, shorter ones a square


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
    """|got - want| <= tol * the largest |want| (elementwise, one scale per array)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1e-3)
    assert np.max(np.abs(got - want)) <= tol * scale


def nans(*shape) -> np.ndarray:
    """An output buffer full of NaN: whatever a kernel leaves unwritten shows."""
    return np.full(shape, np.nan)


# --- rmsnorm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("C", [8, LONG])
def test_rmsnorm_naive(C):
    x, R = rng.normal(size=(5, C)), rng.normal(size=(5, C))

    def forward():
        out = nans(5, C)
        L.rmsnorm_forward_naive(out, nans(5, 1), x)
        return out

    np.testing.assert_allclose(forward(), x * (np.mean(x * x, 1, keepdims=True) + 1e-5) ** -0.5)
    out, rms = nans(5, C), nans(5, 1)
    L.rmsnorm_forward_naive(out, rms, x)
    dx = nans(5, C)
    L.rmsnorm_backward_naive(dx, R, out, rms)
    assert_close(dx, numeric_grad(lambda: np.sum(R * forward()), x))


# the square of ones (C <= REPEAT_MAX) and the column (C > REPEAT_MAX)
@pytest.mark.parametrize("C", [8, L.REPEAT_MAX, LONG])
def test_rmsnorm_equals_naive(C):
    N = 6
    x, R = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    avg = L.summing_matrix(C, np.float64, 1 / C)
    assert avg.shape == (C, C if C <= L.REPEAT_MAX else 1)
    out, rms = nans(N, C), nans(N, avg.shape[1])
    L.rmsnorm_forward(out, rms, x, avg)
    out_naive, rms_naive = nans(N, C), nans(N, 1)
    L.rmsnorm_forward_naive(out_naive, rms_naive, x)
    assert_close(out, out_naive, EXACT)
    assert_close(rms, np.broadcast_to(rms_naive, rms.shape), EXACT)
    dx, dx_naive = nans(N, C), nans(N, C)
    L.rmsnorm_backward(dx, R, out, rms, avg, nans(*rms.shape))
    L.rmsnorm_backward_naive(dx_naive, R, out_naive, rms_naive)
    assert_close(dx, dx_naive, EXACT)


# --- linear, relu, relu squared ----------------------------------------------------------------


def test_linear():
    x, w = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    R = rng.normal(size=(4, 3))

    def forward():
        out = nans(4, 3)
        L.linear_forward(out, x, w)
        return out

    np.testing.assert_allclose(forward(), [[sum(w[o] * x[n]) for o in range(3)] for n in range(4)])
    dx, dw = nans(4, 6), nans(3, 6)
    L.linear_backward(dx, dw, R, x, w)
    f = lambda: np.sum(R * forward())
    assert_close(dx, numeric_grad(f, x))
    assert_close(dw, numeric_grad(f, w))


@pytest.mark.parametrize("fwd,bwd", [(L.relu_forward, L.relu_backward),
                                     (L.relu2_forward, L.relu2_backward)])  # fmt: skip
def test_relu_and_relu_squared(fwd, bwd):
    x = rng.normal(size=(3, 8))
    x[0, :2] = 0  # the original passes no gradient at exactly 0
    R = rng.normal(size=(3, 8))

    def forward(h):  # relu2_forward overwrites its input with relu(x): a copy each call
        out = nans(3, 8)
        fwd(out, h)
        return out

    h = x.copy()
    out = forward(h)
    np.testing.assert_array_equal(out, np.maximum(x, 0) ** (2 if fwd is L.relu2_forward else 1))
    # the backward reads relu(x): relu's output, or what relu2 left in its input
    r = out if fwd is L.relu_forward else h
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    dx = nans(3, 8)
    bwd(dx, R, r)
    assert not dx[0, :2].any()
    f = lambda: np.sum(R * forward(x.copy()))
    assert_close(dx[1:], numeric_grad(f, x)[1:])  # (no derivative at the kink itself)


def test_relu_in_place():
    """The engine runs relu with out = x and its backward with dx = dout."""
    x, R = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    h, want = x.copy(), np.maximum(x, 0)
    L.relu_forward(h, h)
    np.testing.assert_array_equal(h, want)
    d = R.copy()
    L.relu_backward(d, d, h)
    np.testing.assert_array_equal(d, R * (x > 0))


# --- attention ---------------------------------------------------------------------------------


def attention_naive(qkv: np.ndarray, B: int, T: int, NH: int):
    C = qkv.shape[1] // 3
    out, att = nans(B * T, C), nans(B, NH, T, T)
    L.attention_forward_naive(out, att, qkv, B, T, NH)
    return out, att


def attention_fast(qkv: np.ndarray, B: int, T: int, NH: int, blocked: bool):
    """The optimised forward of the mode asked for; returns (out, buf)."""
    buf = L.Attention(B, T, qkv.shape[1] // 3, NH, np.float64, blocked=blocked)
    buf.qkv[...] = qkv
    buf.out.fill(np.nan)
    forward = L.attention_forward_blocked if blocked else L.attention_forward
    forward(buf.out, buf.att, buf.qkv, buf)
    return buf.out, buf


@pytest.mark.parametrize("B,T,NH", [(1, 5, 2), (3, 4, 1), (2, 6, 4)])
def test_attention_naive(B, T, NH):
    C = 8
    qkv = rng.normal(size=(B * T, 3 * C))
    R = rng.normal(size=(B * T, C))
    out, att = attention_naive(qkv, B, T, NH)
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
                np.testing.assert_allclose(out[b * T + t, h * HS : (h + 1) * HS], p @ v[: t + 1])
                np.testing.assert_allclose(att[b, h, t, : t + 1], p)
                assert not att[b, h, t, t + 1 :].any()  # the future gets exactly 0
    dqkv = nans(B * T, 3 * C)
    L.attention_backward_naive(dqkv, R, att, qkv, B, T, NH)
    f = lambda: np.sum(R * attention_naive(qkv, B, T, NH)[0])
    assert_close(dqkv, numeric_grad(f, qkv))


# block-diagonal attention is for one sequence (B = 1); per head for any batch; past
# REPEAT_MAX positions the softmax sums its rows into a column
@pytest.mark.parametrize("B,T,NH,blocked", [(1, 5, 2, True), (1, 7, 4, True), (1, 1, 2, True),
                                            (1, 5, 2, False), (3, 4, 1, False), (2, 6, 4, False),
                                            (1, LONG, 2, False), (2, LONG, 4, False),
                                            (1, LONG, 2, True)])  # fmt: skip
def test_attention_equals_naive(B, T, NH, blocked):
    C = 8
    qkv = rng.normal(size=(B * T, 3 * C))
    R = rng.normal(size=(B * T, C))
    out, buf = attention_fast(qkv, B, T, NH, blocked)
    assert buf.blocked == blocked
    out_naive, att_naive = attention_naive(qkv, B, T, NH)
    assert_close(out, out_naive, EXACT)
    assert_close(buf.probabilities(), att_naive, EXACT)
    backward = L.attention_backward_blocked if blocked else L.attention_backward
    buf.dqkv.fill(np.nan)
    backward(buf.dqkv, R, buf.att, buf.qkv, buf)
    dqkv_naive = nans(B * T, 3 * C)
    L.attention_backward_naive(dqkv_naive, R, att_naive, qkv, B, T, NH)
    assert_close(buf.dqkv, dqkv_naive, EXACT)


def test_attention_refuses_arrays_that_are_not_its_own():
    buf = L.Attention(1, 4, 8, 2, np.float64)
    with pytest.raises(AssertionError, match="own arrays"):
        L.attention_forward_blocked(np.empty((4, 8)), buf.att, buf.qkv, buf)


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


def test_attention_decode_is_a_row_of_attention():
    T, C, NH = 6, 8, 2
    qkv = rng.normal(size=(T, 3 * C))
    full, att = attention_naive(qkv, 1, T, NH)
    k_cache, v_cache = np.zeros((NH, T, C // NH)), np.zeros((NH, T, C // NH))
    weights = np.zeros((NH, T))
    for n in range(T):
        row = nans(1, C)
        L.attention_decode(row, weights, qkv[n : n + 1], k_cache, v_cache, n)
        np.testing.assert_allclose(row[0], full[n], rtol=EXACT, atol=1e-15)
        np.testing.assert_allclose(weights[:, : n + 1], att[0, :, n, : n + 1], rtol=EXACT)


# --- cross-entropy -----------------------------------------------------------------------------


def scored(N: int, V: int, padded: bool):
    """rows, targets and the (N, 1) row weight (None: nothing padded) of a batch of N rows."""
    rows = np.array([0, 1, 3, 4]) if padded else np.arange(N)
    targets = rng.integers(0, V, size=len(rows))
    weight = None
    if padded:
        weight = np.zeros((N, 1))
        weight[rows] = 1 / len(rows)
    return rows, targets, weight


@pytest.mark.parametrize("V", [5, LONG])
@pytest.mark.parametrize("padded", [False, True])
def test_crossentropy_naive(padded, V):
    N = 6
    logits = rng.normal(size=(N, V))
    rows, targets, weight = scored(N, V, padded)
    probs = nans(N, V)
    loss = L.crossentropy_forward_naive(probs, logits, rows, targets)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert loss == pytest.approx(-np.mean(logp[rows, targets]), rel=1e-12)
    dlogits = nans(N, V)
    L.crossentropy_backward_naive(dlogits, probs, rows, targets, weight)
    f = lambda: L.crossentropy_forward_naive(nans(N, V), logits, rows, targets)
    assert_close(dlogits, numeric_grad(f, logits))
    if padded:
        assert not dlogits[[2, 5]].any()  # padding rows are not scored


# the square of ones (V <= REPEAT_MAX) and the column; the engine runs both in place
@pytest.mark.parametrize("V", [5, L.REPEAT_MAX, LONG])
@pytest.mark.parametrize("padded", [False, True])
def test_crossentropy_equals_naive(padded, V):
    N = 6
    logits = rng.normal(size=(N, V))
    rows, targets, weight = scored(N, V, padded)
    probs_naive = nans(N, V)
    loss_naive = L.crossentropy_forward_naive(probs_naive, logits, rows, targets)
    probs = logits.copy()
    loss = L.crossentropy_forward(probs, probs, rows, targets, L.summing_matrix(V, np.float64))
    assert loss == pytest.approx(loss_naive, rel=EXACT)
    assert_close(probs, probs_naive, EXACT)
    dlogits_naive = nans(N, V)
    L.crossentropy_backward_naive(dlogits_naive, probs_naive, rows, targets, weight)
    in_place = probs_naive.copy()
    L.crossentropy_backward_naive(in_place, in_place, rows, targets, weight)
    np.testing.assert_array_equal(in_place, dlogits_naive)
    if not padded:  # the one-hot kernel is for batches where every row is scored
        L.crossentropy_backward(probs, probs, targets, np.eye(V))
        assert_close(probs, dlogits_naive, EXACT)


# --- embedding ---------------------------------------------------------------------------------


def embed(idx, wte, wpe, B, T):
    out = nans(B * T, wte.shape[1])
    L.embedding_forward(out, idx, wte, wpe, B, T)
    return out


@pytest.mark.parametrize("B", [1, 3])
def test_embedding_naive(B):
    V, C, T, block = 5, 4, 3, 6
    wte, wpe = rng.normal(size=(V, C)), rng.normal(size=(block, C))
    idx = rng.integers(0, V, size=B * T)
    R = rng.normal(size=(B * T, C))
    out = embed(idx, wte, wpe, B, T)
    np.testing.assert_array_equal(out.reshape(B, T, C), wte[idx.reshape(B, T)] + wpe[:T])
    dwte, dwpe = nans(V, C), nans(block, C)
    L.embedding_backward_naive(dwte, dwpe, R, idx, B, T)
    f = lambda: np.sum(R * embed(idx, wte, wpe, B, T))
    assert_close(dwte, numeric_grad(f, wte))
    assert_close(dwpe, numeric_grad(f, wpe))  # rows T.. are exactly 0, not left as NaN


def test_embedding_of_one_position_further_on():
    """Decoding position p passes wpe[p:]: the one token gets wpe[p]."""
    wte, wpe = rng.normal(size=(5, 4)), rng.normal(size=(6, 4))
    np.testing.assert_array_equal(embed(np.array([3]), wte, wpe[4:], 1, 1)[0], wte[3] + wpe[4])


@pytest.mark.parametrize("B,T", [(1, 6), (1, 2), (3, 4)])
def test_embedding_equals_naive(B, T):
    V, C, block = 7, 4, 6
    idx = rng.integers(0, V - 2, size=B * T)  # tokens V - 2 and V - 1 never occur
    R = rng.normal(size=(B * T, C))
    want_wte, want_wpe = nans(V, C), nans(block, C)
    L.embedding_backward_naive(want_wte, want_wpe, R, idx, B, T)
    dwte, dwpe = nans(V, C), nans(block, C)
    positions = L.position_onehot(B, T, block, np.float64)
    L.embedding_backward(dwte, dwpe, R, idx, np.eye(V), nans(B * T, V), positions)
    assert_close(dwte, want_wte, EXACT)
    assert_close(dwpe, want_wpe, EXACT)
    assert not dwte[V - 2 :].any() and not dwpe[T:].any()  # exactly 0, not NaN
