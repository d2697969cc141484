"""The layers of microgpt as paired NumPy forward / backward functions, in the style of llm.c.

One calling convention for every layer, as llm.c's `matmul_forward(out, inp, weight, bias,
B, T, C, OC)` and `matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC)`:

    *_forward(outputs..., inputs..., sizes and buffers...)
    *_backward(gradients out..., dout, what the forward stored..., sizes and buffers...)

where a backward's gradients out are those of its inputs and weights (dinp, dweight).

Nothing comes back but the loss. Every result goes into an array the caller allocated once
per batch shape (the engine's Workspace, as llm.c's ActivationTensors), and each backward
reads the activations its forward wrote there. Weight gradients go into views of the
engine's one flat gradient array, so no gradient is copied twice. Gradients are set, not
accumulated.

Beside each optimised kernel stands a plain version of the same math, `*_naive`, to read
first (tests/test_numpy_layers.py checks that each pair agrees, forward and backward):

    optimised                        what it optimises                 plain version
    rmsnorm_forward / _backward      row sums as products with ones    rmsnorm_*_naive
    attention_forward / _backward    per head on views, no allocation  attention_*_naive
    attention_forward_blocked / ...  2-D products, block-diagonal K V  attention_*_naive
    crossentropy_forward             row sums as products with ones    crossentropy_*_naive
    crossentropy_backward            rows of an identity, no indexing  crossentropy_*_naive
    embedding_backward               products with one-hot matrices    embedding_backward_naive

The one-hot kernels need a (V, V) identity, so the engine takes them only for vocabularies
up to ONEHOT_MAX_V; past it, the plain versions are its path (they are O(N * V) and O(V * C)).
linear, relu, relu2 and attention_decode have one version each: they are plain already.

Shape letters, used in the comment on every array line:
    B  batch (documents)            T  time (positions, <= block_size)
    C  channels (n_embd)            V  vocabulary size
    NH attention heads (n_head)     HS head size (C // NH)
    N  rows of a flattened batch (B * T)

NOTE: on matrices this small NumPy's per-call overhead, not the arithmetic, is the cost
(bench.py measures it). So, as llm.c preallocates its activations, every result here goes
into a buffer allocated once per batch shape (allocating a result costs about as much as
computing it), products are the `a.dot(b, out)` method with positional arguments (it skips
np.dot's dispatch layer), and constants are 0-d arrays (see scalar).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def scalar(value: float, dtype) -> np.ndarray:
    """`value` as a 0-d array of `dtype`. NOTE: NumPy converts a Python float operand on
    every call; the layers keep their constants as these instead."""
    return np.array(value, dtype=dtype)


# rmsnorm's epsilon, per dtype
RMS_EPS = {np.dtype(t): scalar(1e-5, t) for t in (np.float64, np.float32)}

# Rows up to this long are summed into a repeated sum (see summing_matrix).
REPEAT_MAX = 32

# Vocabularies up to this size take the one-hot kernels (embedding_backward,
# crossentropy_backward), which hold a (V, V) identity; larger ones the plain versions.
# NOTE: measured on whole training steps (one BLAS thread), the one-hot path is the faster
# on the default config up to V = 128 (by 5-10%) and about even at 256; on the larger config
# (n_embd 128, 12 x 64 positions) the two are within 3% of each other up to V = 256. So 128:
# never slower, and the identity stays at 128 KiB.
ONEHOT_MAX_V = 128


def summed_width(n: int) -> int:
    """Columns of the sums of rows of length n: n (the sum repeated) or 1 (see below)."""
    return n if n <= REPEAT_MAX else 1


def summing_matrix(n: int, dtype, value: float = 1.0) -> np.ndarray:
    """The matrix that sums rows of length n, each term times `value`: x @ it.

    NOTE: for short rows it is square, (n, n), full of `value`: x @ it holds each row's
    sum repeated along the row, so what follows is a same-shape operation (NumPy costs more
    to broadcast an (N, 1) column than the arithmetic on rows this short) and one BLAS call
    beats `np.sum` on them. Past REPEAT_MAX the square's extra multiply-adds cost more than
    that: it is the (n, 1) column, and what follows broadcasts.
    """
    return np.full((n, summed_width(n)), value, dtype=dtype)


# --- embedding ---------------------------------------------------------------------------------


def embedding_forward(
    out: np.ndarray, idx: np.ndarray, wte: np.ndarray, wpe: np.ndarray, B: int, T: int
) -> None:
    """out[b * T + t] = wte[idx[b * T + t]] + wpe[t]: token plus position embedding.

    idx (N,) holds the B sequences of T token ids one after another, as llm.c's `inp`.
    (Decoding one position p passes wpe[p:], so that its t = 0 is position p.)
    """
    wte.take(idx, 0, out)  # (N, C)
    if B == 1:  # NOTE: same-shape addition; broadcasting over B costs NumPy more
        out += wpe[:T]  # (T, C)
    else:
        x = out.reshape(B, T, -1)  # (B, T, C) view of out
        x += wpe[:T]  # (B, T, C)


def embedding_backward_naive(
    dwte: np.ndarray, dwpe: np.ndarray, dout: np.ndarray, idx: np.ndarray, B: int, T: int
) -> None:
    """d loss/d wte (V, C) and d loss/d wpe (block_size, C), given d loss/d out (N, C).

    Row n of out came from token idx[n] and position n mod T, so its gradient is added to
    those two rows; rows of tokens and positions that no sequence used get 0.
    """
    dwte.fill(0)  # (V, C)
    np.add.at(dwte, idx, dout)  # (V, C) dwte[idx[n]] += dout[n], repeated tokens summed
    dwpe.fill(0)  # (block_size, C)
    dwpe[:T] = dout.reshape(B, T, -1).sum(0)  # (T, C) summed over the sequences


def embedding_backward(
    dwte: np.ndarray,
    dwpe: np.ndarray,
    dout: np.ndarray,
    idx: np.ndarray,
    eye: np.ndarray,
    tokens: np.ndarray,
    positions: np.ndarray,
) -> None:
    """embedding_backward_naive as one product per table: BLAS instead of a scatter.

    tokens (N, V) is scratch for the one-hot rows of idx, taken from eye, the (V, V)
    identity; positions (N, block_size) marks each row's position (fixed per batch shape).
    tokens.T @ dout adds every row's gradient to its token's row in one call, and rows of
    tokens that never occur come out exactly 0 (so with positions). Only for small V
    (ONEHOT_MAX_V): eye is (V, V) and the products cost N * V * C.
    """
    eye.take(idx, 0, tokens)  # (N, V)
    tokens.T.dot(dout, dwte)  # (V, C)
    positions.T.dot(dout, dwpe)  # (block_size, C)


def position_onehot(B: int, T: int, block_size: int, dtype) -> np.ndarray:
    """(N, block_size): row b * T + t is 1 at column t (embedding_backward's positions)."""
    positions = np.zeros((B * T, block_size), dtype)  # (N, block_size)
    positions[np.arange(B * T), np.tile(np.arange(T), B)] = 1
    return positions


# --- rmsnorm -----------------------------------------------------------------------------------


def rmsnorm_forward_naive(out: np.ndarray, rms: np.ndarray, x: np.ndarray) -> None:
    """out = x / rms with rms = sqrt(mean(x^2) + 1e-5) per row: the original's rmsnorm (no
    gain). Writes out (N, C) and rms (N, 1), which the backward reads. (The reference
    multiplies by (ms + 1e-5) ** -0.5; dividing by the square root is the same to a rounding.)
    """
    rms[...] = np.sqrt(np.mean(x * x, axis=1, keepdims=True) + 1e-5)  # (N, 1)
    out[...] = x / rms  # (N, C)


def rmsnorm_backward_naive(
    dx: np.ndarray, dout: np.ndarray, out: np.ndarray, rms: np.ndarray
) -> None:
    """dx = (dout - out * mean(dout * out)) / rms, from out = x / rms.

    (The textbook dout / rms - x / rms^3 * mean(dout * x), written with out = x / rms.)
    """
    dx[...] = (dout - out * np.mean(dout * out, axis=1, keepdims=True)) / rms  # (N, C)


def rmsnorm_forward(out: np.ndarray, rms: np.ndarray, x: np.ndarray, avg: np.ndarray) -> None:
    """rmsnorm_forward_naive with each row's mean as a product: x^2 @ avg, where avg is
    summing_matrix(C, dtype, 1 / C); rms is then (N, C), each row's divisor repeated along
    the row, or (N, 1)."""
    np.multiply(x, x, out)  # (N, C) squares, out as scratch
    out.dot(avg, rms)  # (N, C) or (N, 1) mean of squares
    np.add(rms, RMS_EPS[rms.dtype], rms)  # (N, C) or (N, 1)
    np.sqrt(rms, rms)  # (N, C) or (N, 1)
    np.divide(x, rms, out)  # (N, C)


def rmsnorm_backward(
    dx: np.ndarray,
    dout: np.ndarray,
    out: np.ndarray,
    rms: np.ndarray,
    avg: np.ndarray,
    tmp: np.ndarray,
) -> None:
    """rmsnorm_backward_naive with the mean as a product with avg (see rmsnorm_forward);
    tmp, shaped as rms, is scratch. dx (N, C) must be another array than dout and out."""
    np.multiply(dout, out, dx)  # (N, C) dx as scratch
    dx.dot(avg, tmp)  # (N, C) or (N, 1) mean(dout * out) (repeated along the row)
    np.multiply(out, tmp, dx)  # (N, C)
    np.subtract(dout, dx, dx)  # (N, C)
    np.divide(dx, rms, dx)  # (N, C)


# --- linear (matmul, no bias) ------------------------------------------------------------------


def linear_forward(out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """out = x @ w.T with w stored (nout, nin) as in the original's state_dict."""
    x.dot(w.T, out)  # (N, nout)


def linear_backward(
    dx: np.ndarray, dw: np.ndarray, dout: np.ndarray, x: np.ndarray, w: np.ndarray
) -> None:
    """d loss/d x (N, nin) into dx and d loss/d w (nout, nin) into dw."""
    dout.T.dot(x, dw)  # (nout, nin)
    dout.dot(w, dx)  # (N, nin)


# --- causal multi-head self-attention -----------------------------------------------------------


def causal_mask(T: int, dtype) -> np.ndarray:
    """(T, T) additive mask: 0 where s <= t, -inf where s > t (the future)."""
    return np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)  # (T, T)


def split_heads(qkv: np.ndarray, B: int, T: int, NH: int) -> np.ndarray:
    """q, k, v of every head, (3, B, NH, T, HS), a view of qkv (N, 3C)."""
    HS = qkv.shape[1] // 3 // NH
    return qkv.reshape(B, T, 3, NH, HS).transpose(2, 0, 3, 1, 4)  # (3, B, NH, T, HS)


def attention_forward_naive(
    out: np.ndarray, att: np.ndarray, qkv: np.ndarray, B: int, T: int, NH: int
) -> None:
    """out = softmax(q k^T / sqrt(HS) + mask) v for every head of every sequence.

    qkv (N, 3C) is q, k and v side by side, each C wide, head h in columns h*HS..(h+1)*HS.
    Position t sees positions s <= t, as the original's growing KV cache does; padding sits
    after every real token, so no real position ever sees it. Writes out (N, C), the heads
    side by side, and att (B, NH, T, T), the probabilities (0 on the future).
    """
    C = qkv.shape[1] // 3
    q, k, v = split_heads(qkv, B, T, NH)  # (B, NH, T, HS) each
    scores = q @ k.swapaxes(-1, -2) / (C // NH) ** 0.5  # (B, NH, T, T)
    scores += causal_mask(T, qkv.dtype)  # (B, NH, T, T)
    scores -= scores.max(-1, keepdims=True)  # (B, NH, T, T)
    p = np.exp(scores)  # (B, NH, T, T)
    att[...] = p / p.sum(-1, keepdims=True)  # (B, NH, T, T)
    y = att @ v  # (B, NH, T, HS)
    out[...] = y.transpose(0, 2, 1, 3).reshape(B * T, C)  # (N, C)


def attention_backward_naive(
    dqkv: np.ndarray,
    dout: np.ndarray,
    att: np.ndarray,
    qkv: np.ndarray,
    B: int,
    T: int,
    NH: int,
) -> None:
    """d loss/d qkv (N, 3C), laid out as qkv, given d loss/d out (N, C)."""
    C = qkv.shape[1] // 3
    HS = C // NH
    q, k, v = split_heads(qkv, B, T, NH)  # (B, NH, T, HS) each
    dy = dout.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
    datt = dy @ v.swapaxes(-1, -2)  # (B, NH, T, T)
    dv = att.swapaxes(-1, -2) @ dy  # (B, NH, T, HS)
    # softmax backward: d score = a * (d a - sum(d a * a)); the future has a = 0
    dscores = att * (datt - (datt * att).sum(-1, keepdims=True)) / HS**0.5  # (B, NH, T, T)
    dq = dscores @ k  # (B, NH, T, HS)
    dk = dscores.swapaxes(-1, -2) @ q  # (B, NH, T, HS)
    dqkv_heads = split_heads(dqkv, B, T, NH)  # (3, B, NH, T, HS) view of dqkv
    dqkv_heads[0], dqkv_heads[1], dqkv_heads[2] = dq, dk, dv  # (B, NH, T, HS) each


def diagonal_blocks(a: np.ndarray, n: int) -> np.ndarray:
    """A writable view (n, R / n, S / n) of the n diagonal blocks of a (R, S) array."""
    (R, S), (sr, ss) = a.shape, a.strides
    r, s = R // n, S // n
    return as_strided(a, (n, r, s), (r * sr + s * ss, sr, ss))


class Attention:
    """One layer's attention arrays for one batch shape (B, T), the views into them that the
    optimised kernels work on, and their scratch. Allocated once per shape.

    Two optimised ways to compute attention_forward_naive's math for every head at once:

    - per head (attention_forward): q, k, v viewed as (B, NH, T, HS) straight out of qkv
      (no copies), and batched products over the B * NH heads.
    - block-diagonal (attention_forward_blocked, `blocked`), for one short sequence, where
      NumPy's per-call overhead and not the arithmetic is the cost: K, a (C, NH * T) matrix
      that is zero except its diagonal blocks, block h = head h's keys transposed (HS, T).
      Then q @ K (T, NH * T) holds every head's scores side by side (q's head-h columns only
      meet block h), and with V (NH * T, C), block h = head h's values (T, HS),
      probabilities @ V is every head's output already concatenated: plain 2-D products,
      for NH times the multiply-adds and two copies.

    The probabilities' shape is written ATT below: (B, NH, T, T) per head, (T, NH * T)
    blocked (one row per position, the heads side by side).
    """

    # NOTE: measured (forward + backward, one BLAS thread): on one sequence of the original's
    # size (n_embd 16, 4 heads, T = 8) block-diagonal is faster; at T * n_embd = 256 the two
    # tie, and past it (or with B > 1) per head wins, by 2x at n_embd 128.
    BLOCKED_MAX_TC = 256

    def __init__(self, B: int, T: int, C: int, n_head: int, dtype, blocked: bool | None = None):
        NH, HS, N = n_head, C // n_head, B * T
        if blocked is None:
            blocked = B == 1 and T * C <= self.BLOCKED_MAX_TC
        self.blocked = blocked
        self.scale = scalar(HS**-0.5, dtype)  # the original divides by head_dim**0.5
        # the arrays the forward reads and writes, and the backward's output
        self.qkv = np.empty((N, 3 * C), dtype)  # (N, 3C) the input: q, k, v side by side
        self.att = np.empty((T, NH * T) if blocked else (B, NH, T, T), dtype)  # ATT
        self.out = np.empty((N, C), dtype)  # (N, C) the output, heads side by side
        self.dqkv = np.empty((N, 3 * C), dtype)  # (N, 3C) d loss/d qkv
        # views: q, k, v and d q, d k, d v, each (B, NH, T, HS)
        self.q, self.k, self.v = split_heads(self.qkv, B, T, NH)
        dq, dk, dv = split_heads(self.dqkv, B, T, NH)
        if blocked:  # B == 1: 2-D arrays
            self.mask = np.tile(causal_mask(T, dtype), (1, NH))  # (T, NH * T)
            self.keys = np.zeros((C, NH * T), dtype)  # K, block-diagonal
            self.values = np.zeros((NH * T, C), dtype)  # V, block-diagonal
            self.dkeys = np.empty_like(self.keys)  # (C, NH * T)
            self.dvalues = np.empty_like(self.values)  # (NH * T, C)
            self.dq = np.empty((T, C), dtype)  # (T, C)
            self.q = self.qkv[:, :C]  # (T, C) every head's queries
            self.q_t = self.q.T  # (C, T)
            self.k = self.k[0].swapaxes(-1, -2)  # (NH, HS, T)
            self.v = self.v[0]  # (NH, T, HS)
            self.keys_diag = diagonal_blocks(self.keys, NH)  # (NH, HS, T)
            self.values_diag = diagonal_blocks(self.values, NH)  # (NH, T, HS)
            self.keys_t, self.values_t = self.keys.T, self.values.T  # (NH * T, C), (C, NH * T)
            self.dq_slot = self.dqkv[:, :C]  # (T, C)
            self.dk_slot = dk[0].swapaxes(-1, -2)  # (NH, HS, T)
            self.dv_slot = dv[0]  # (NH, T, HS)
            self.dkeys_diag = diagonal_blocks(self.dkeys, NH)  # (NH, HS, T)
            self.dvalues_diag = diagonal_blocks(self.dvalues, NH)  # (NH, T, HS)
        else:
            self.mask = np.broadcast_to(causal_mask(T, dtype), (B, NH, T, T)).copy()
            self.k_t = self.k.swapaxes(-1, -2)  # (B, NH, HS, T)
            self.v_t = self.v.swapaxes(-1, -2)  # (B, NH, HS, T)
            self.dq_slot, self.dk_slot, self.dv_slot = dq, dk, dv  # (B, NH, T, HS) each
            self.y = self.out.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
            self.dy_shape = (B, T, NH, HS)
        self.att_t = self.att.swapaxes(-1, -2)  # ATT with the last two axes swapped
        self.datt = np.empty_like(self.att)  # ATT
        self.datt_t = self.datt.swapaxes(-1, -2)  # ATT with the last two axes swapped
        # the softmax works on rows of T entries: one per (sequence, position, head)
        self.att_rows = self.att.reshape(N * NH, T)  # (N * NH, T)
        self.datt_rows = self.datt.reshape(N * NH, T)  # (N * NH, T)
        self.scratch_rows = np.empty((N * NH, T), dtype)  # (N * NH, T)
        self.ones = summing_matrix(T, dtype)  # (T, T) or (T, 1)
        self.rowsum = np.empty((N * NH, summed_width(T)), dtype)  # (N * NH, T) or (N * NH, 1)

    def probabilities(self) -> np.ndarray:
        """The last forward's attention weights, (B, NH, T, T) (a copy)."""
        if not self.blocked:
            return self.att.copy()
        T = self.att.shape[0]
        att = self.att.reshape(1, T, -1, T)  # (1, T, NH, T)
        return att.transpose(0, 2, 1, 3).copy()  # (1, NH, T, T)


def masked_softmax_forward(att: np.ndarray, buf: Attention) -> None:
    """att = softmax(att * scale + mask) along each row, in place on ATT; the rows are summed
    by a product with ones (see summing_matrix)."""
    rows = buf.att_rows  # (N * NH, T) view of att
    np.multiply(att, buf.scale, att)  # ATT; the original divides each dot by sqrt(HS)
    att += buf.mask  # ATT
    np.subtract(rows, np.maximum.reduce(rows, 1, None, None, True), rows)  # (N * NH, T)
    np.exp(rows, rows)  # (N * NH, T)
    rows.dot(buf.ones, buf.rowsum)  # (N * NH, T) or (N * NH, 1) each row's sum
    np.divide(rows, buf.rowsum, rows)  # (N * NH, T)


def masked_softmax_backward(datt: np.ndarray, att: np.ndarray, buf: Attention) -> None:
    """d loss/d (q . k) from d loss/d att, in place on datt (ATT):
    d score = a * (d a - sum(d a * a)) * scale; the future has a = 0."""
    rows = buf.datt_rows  # (N * NH, T) view of datt
    np.multiply(rows, buf.att_rows, buf.scratch_rows)  # (N * NH, T)
    buf.scratch_rows.dot(buf.ones, buf.rowsum)  # (N * NH, T) or (N * NH, 1) sum(d a * a)
    np.subtract(rows, buf.rowsum, rows)  # (N * NH, T)
    np.multiply(datt, att, datt)  # ATT
    np.multiply(datt, buf.scale, datt)  # ATT


def attention_forward(out: np.ndarray, att: np.ndarray, qkv: np.ndarray, buf: Attention) -> None:
    """attention_forward_naive on views of qkv and out: no copies, no allocation.

    out, att and qkv must be buf's arrays (buf.out, buf.att, buf.qkv): the views are theirs.
    """
    assert out is buf.out and att is buf.att and qkv is buf.qkv, "pass buf's own arrays"
    np.matmul(buf.q, buf.k_t, att)  # (B, NH, T, T) q . k
    masked_softmax_forward(att, buf)  # (B, NH, T, T)
    np.matmul(att, buf.v, buf.y)  # (B, NH, T, HS), a view of out (N, C)


def attention_backward(
    dqkv: np.ndarray, dout: np.ndarray, att: np.ndarray, qkv: np.ndarray, buf: Attention
) -> None:
    """attention_backward_naive on views of dqkv, qkv and dout (dqkv must be buf.dqkv)."""
    assert dqkv is buf.dqkv and att is buf.att and qkv is buf.qkv, "pass buf's own arrays"
    datt = buf.datt  # (B, NH, T, T)
    dy = dout.reshape(buf.dy_shape).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
    np.matmul(dy, buf.v_t, datt)  # (B, NH, T, T)
    np.matmul(buf.att_t, dy, buf.dv_slot)  # (B, NH, T, HS)
    masked_softmax_backward(datt, att, buf)  # (B, NH, T, T) d (q . k)
    np.matmul(datt, buf.k, buf.dq_slot)  # (B, NH, T, HS)
    np.matmul(buf.datt_t, buf.q, buf.dk_slot)  # (B, NH, T, HS)


def attention_forward_blocked(
    out: np.ndarray, att: np.ndarray, qkv: np.ndarray, buf: Attention
) -> None:
    """attention_forward_naive for one sequence as 2-D products with block-diagonal K and V
    (see Attention): fewer calls, for NH times the multiply-adds. att is (T, NH * T)."""
    assert out is buf.out and att is buf.att and qkv is buf.qkv, "pass buf's own arrays"
    buf.keys_diag[...] = buf.k  # (NH, HS, T) into K's blocks
    buf.values_diag[...] = buf.v  # (NH, T, HS) into V's blocks
    buf.q.dot(buf.keys, att)  # (T, NH * T) q . k, every head
    masked_softmax_forward(att, buf)  # (T, NH * T)
    att.dot(buf.values, out)  # (T, C) every head's output, side by side


def attention_backward_blocked(
    dqkv: np.ndarray, dout: np.ndarray, att: np.ndarray, qkv: np.ndarray, buf: Attention
) -> None:
    """attention_backward_naive with the block-diagonal K and V the forward filled."""
    assert dqkv is buf.dqkv and att is buf.att and qkv is buf.qkv, "pass buf's own arrays"
    datt = buf.datt  # (T, NH * T)
    dout.dot(buf.values_t, datt)  # (T, NH * T)
    buf.att_t.dot(dout, buf.dvalues)  # (NH * T, C) only its diagonal blocks matter
    buf.dv_slot[...] = buf.dvalues_diag  # (NH, T, HS)
    masked_softmax_backward(datt, att, buf)  # (T, NH * T) d (q . k)
    datt.dot(buf.keys_t, buf.dq)  # (T, C)
    buf.dq_slot[...] = buf.dq  # (T, C)
    buf.q_t.dot(datt, buf.dkeys)  # (C, NH * T) only its diagonal blocks matter
    buf.dk_slot[...] = buf.dkeys_diag  # (NH, HS, T)


def attention_decode(
    out: np.ndarray,
    att: np.ndarray,
    qkv: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    n: int,
) -> None:
    """One new position's attention, reading and extending a KV cache (inference only).

    qkv (1, 3C) is the new position's q, k, v; k_cache and v_cache (NH, block_size, HS) hold
    the n earlier positions. The new k and v go to slot n; the query sees slots 0..n, exactly
    the row t = n of attention_forward_naive. Writes out (1, C) and the weights into
    att[:, :n + 1] (att is (NH, block_size)).
    """
    NH, _, HS = k_cache.shape
    q, k, v = qkv.reshape(3, NH, HS)  # 3 x (NH, HS)
    k_cache[:, n] = k  # (NH, HS)
    v_cache[:, n] = v  # (NH, HS)
    a = k_cache[:, : n + 1] @ q[:, :, None]  # (NH, n + 1, 1)
    a /= HS**0.5  # (NH, n + 1, 1)
    a -= a.max(1, keepdims=True)  # (NH, n + 1, 1)
    np.exp(a, out=a)  # (NH, n + 1, 1)
    a /= a.sum(1, keepdims=True)  # (NH, n + 1, 1)
    y = a.transpose(0, 2, 1) @ v_cache[:, : n + 1]  # (NH, 1, HS)
    out[...] = y.reshape(1, NH * HS)  # (1, C)
    att[:, : n + 1] = a[:, :, 0]  # (NH, n + 1)


# --- ReLU and ReLU squared ---------------------------------------------------------------------


def relu_forward(out: np.ndarray, x: np.ndarray) -> None:
    """out = max(x, 0), the final revision's MLP nonlinearity. out may be x itself."""
    np.maximum(x, 0.0, out=out)  # (N, 4C)


def relu_backward(dx: np.ndarray, dout: np.ndarray, r: np.ndarray) -> None:
    """dx = dout where x > 0, else 0, from r = relu(x). The original's relu passes gradient
    where x > 0 (float(x > 0)), none at exactly 0; r is > 0 exactly there. dx may be dout."""
    # NOTE: sign(r) is the same 0/1 mask as r > 0 (r >= 0), and multiplying by a float
    # array is faster than by a bool one (no casting loop)
    np.multiply(dout, np.sign(r), dx)  # (N, 4C)


def relu2_forward(out: np.ndarray, x: np.ndarray) -> None:
    """out = relu(x) ** 2, the first revision's MLP nonlinearity. NOTE: also overwrites x
    with relu(x), which relu2_backward reads, so out must be another array."""
    np.maximum(x, 0.0, out=x)  # (N, 4C)
    np.multiply(x, x, out)  # (N, 4C)


def relu2_backward(dx: np.ndarray, dout: np.ndarray, r: np.ndarray) -> None:
    """dx = dout * 2 relu(x), zero wherever x <= 0, from r = relu(x). dx may be dout."""
    np.multiply(dout, r, dx)  # (N, 4C)
    dx *= 2  # (N, 4C)


# --- softmax cross-entropy ---------------------------------------------------------------------


def crossentropy_forward_naive(
    probs: np.ndarray, logits: np.ndarray, rows: np.ndarray, targets: np.ndarray
) -> float:
    """Mean of -log softmax(logits)[target] over the scored rows (padding is not scored).

    rows (n,) indexes the N rows that predict a real token, targets (n,) says which token.
    Writes probs (N, V), the softmax of every row, which the backward reads.
    """
    e = np.exp(logits - logits.max(1, keepdims=True))  # (N, V)
    probs[...] = e / e.sum(1, keepdims=True)  # (N, V)
    return float(-np.mean(np.log(probs[rows, targets])))


def crossentropy_forward(
    probs: np.ndarray,
    logits: np.ndarray,
    rows: np.ndarray,
    targets: np.ndarray,
    ones: np.ndarray,
) -> float:
    """crossentropy_forward_naive with the row sums as a product with ones,
    summing_matrix(V, dtype). probs may be logits itself (the engine's is)."""
    np.subtract(logits, np.maximum.reduce(logits, 1, None, None, True), probs)  # (N, V)
    np.exp(probs, probs)  # (N, V)
    np.divide(probs, probs.dot(ones), probs)  # (N, V) over the row sums
    # the original's (1 / n) * sum(losses), losses = -log(p), summed left to right
    return (1 / len(rows)) * -sum(np.log(probs[rows, targets]).tolist())


def crossentropy_backward_naive(
    dlogits: np.ndarray,
    probs: np.ndarray,
    rows: np.ndarray,
    targets: np.ndarray,
    row_weight: np.ndarray | None,
) -> None:
    """d loss/d logits = (probs - onehot(target)) / n on the n scored rows, 0 on padding.

    row_weight (N, 1) is 1/n on scored rows and 0 on padding, or None when every row is
    scored. dlogits may be probs itself.
    """
    np.copyto(dlogits, probs)  # (N, V)
    dlogits[rows, targets] -= 1  # (N, V)
    dlogits *= 1 / len(rows) if row_weight is None else row_weight  # (N, V)


def crossentropy_backward(
    dlogits: np.ndarray, probs: np.ndarray, targets: np.ndarray, eye: np.ndarray
) -> None:
    """crossentropy_backward_naive where every row is scored (no padding), subtracting rows
    of eye, the (V, V) identity, in place of a fancy-index update (only for small V).
    dlogits may be probs itself."""
    np.subtract(probs, eye.take(targets, 0), dlogits)  # (N, V)
    dlogits *= 1 / len(targets)  # (N, V)
