"""The layers of microgpt as paired NumPy forward / backward functions, in the style of llm.c.

Every layer is a `*_forward(inputs..., out) -> out, cache` that works on the whole (padded)
batch of sequences at once, and a `*_backward(dout, cache, ...) -> dinp` that returns the
gradient of its input and, like llm.c, writes its weight gradients into buffers it is handed
(views of the engine's one flat gradient array), so no gradient is copied twice.

Shape letters, used in the comment on every array line:
    B  batch (documents)            T  time (positions, <= block_size)
    C  channels (n_embd)            V  vocabulary size
    NH attention heads (n_head)     HS head size (C // NH)
    N  rows of a flattened batch (B * T)

NOTE: on matrices this small NumPy's per-call overhead, not the arithmetic, is the cost: a
(7, 16) @ (16, 48) product takes ~1.6 us through `np.dot`, ~0.7 us as `x.dot(w, out)`. So,
as llm.c preallocates its activations, every result here goes into a buffer allocated once
per batch shape (`out`; allocating the result costs as much as computing it), products are
the `a.dot(b, out)` method with positional arguments (it skips np.dot's dispatch layer),
and one short sequence's attention is one 2-D product for all heads (see Attention). Short
rows are summed by a product with a square matrix of ones (see summing_matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


def scalar(value: float, dtype) -> np.ndarray:
    """`value` as a 0-d array of `dtype`. NOTE: NumPy converts a Python float operand on
    every call, ~0.3 us here; the layers keep their constants as these instead."""
    return np.array(value, dtype=dtype)


# rmsnorm's epsilon, per dtype
RMS_EPS = {np.dtype(t): scalar(1e-5, t) for t in (np.float64, np.float32)}

# Rows up to this long are summed into a repeated sum (see summing_matrix).
REPEAT_MAX = 32


def summed_width(n: int) -> int:
    """Columns of the sums of rows of length n: n (the sum repeated) or 1 (see below)."""
    return n if n <= REPEAT_MAX else 1


def summing_matrix(n: int, dtype, value: float = 1.0) -> np.ndarray:
    """The matrix that sums rows of length n, each term times `value`: x @ it.

    NOTE: for short rows it is square, (n, n), full of `value`: x @ it holds each row's
    sum repeated along the row, so what follows is a same-shape operation (NumPy
    broadcasting an (N, 1) column costs about 0.8 us more, more than the arithmetic on rows
    this short) and one BLAS call beats `np.sum` on them. Past REPEAT_MAX the square's extra
    multiply-adds cost more than that: it is the (n, 1) column, and what follows broadcasts.
    """
    return np.full((n, summed_width(n)), value, dtype=dtype)


# --- embedding ---------------------------------------------------------------------------------


def embedding_forward(
    wte: np.ndarray, wpe: np.ndarray, idx: np.ndarray, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Token plus position embedding, x[b, t] = wte[idx[b, t]] + wpe[t], into out (N, C)."""
    B, T = idx.shape
    if B == 1:  # NOTE: same-shape addition; broadcasting over B costs NumPy more
        wte.take(idx[0], 0, out)  # (T, C)
        out += wpe[:T]  # (T, C)
    else:
        x = out.reshape(B, T, -1)  # (B, T, C) view of out
        wte.take(idx, 0, x)  # (B, T, C)
        x += wpe[:T]  # (B, T, C)
    return out, idx


def embedding_backward(dout: np.ndarray, cache: np.ndarray, dembed: np.ndarray, onehot) -> None:
    """Write d loss/d wte and d loss/d wpe, given d loss/d x (N, C).

    `dembed` (V + block_size, C) is wte's gradient with wpe's stacked below it (the two are
    adjacent in the flat gradient array). Row n of the (N, V + block_size) `onehot` marks
    the token idx[n] and the position V + t(n) of row n: onehot.T @ dout adds every row's
    gradient to its token's and its position's row in one product (no np.add.at), and rows
    of positions no sequence reached come out exactly 0. `onehot` is an EmbeddingOneHot.
    """
    onehot.fill(cache)  # (N, V + block_size)
    onehot.matrix.T.dot(dout, dembed)  # (V + block_size, C)


@dataclass
class EmbeddingOneHot:
    """The (N, V + block_size) one-hot matrix of embedding_backward, for one (B, T)."""

    matrix: np.ndarray  # (N, V + block_size)
    tokens: np.ndarray  # (V, V + block_size) identity, zero-padded: row v marks token v
    positions: np.ndarray  # (N, V + block_size): row n marks position V + (n mod T)

    @classmethod
    def alloc(cls, B: int, T: int, V: int, block_size: int, dtype) -> EmbeddingOneHot:
        width = V + block_size
        positions = np.zeros((B, T, width), dtype)  # (B, T, V + block_size)
        positions[:, np.arange(T), V + np.arange(T)] = 1
        return cls(
            matrix=np.empty((B * T, width), dtype),
            tokens=np.eye(V, width, dtype=dtype),
            positions=positions.reshape(B * T, width),
        )

    def fill(self, idx: np.ndarray) -> None:
        self.tokens.take(idx.reshape(-1), 0, self.matrix)  # (N, V + block_size)
        self.matrix += self.positions  # (N, V + block_size)


# --- rmsnorm -----------------------------------------------------------------------------------


def rmsnorm_forward(
    x: np.ndarray, out: np.ndarray, rms: np.ndarray, avg: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """out = x / sqrt(mean(x^2) + 1e-5) over the last axis, the original's rmsnorm (no gain).

    Writes out (N, C) and rms (N, C) or (N, 1), each row's divisor (repeated along the row);
    `avg` is summing_matrix(C, dtype, 1 / C), so that x^2 @ avg holds each row's mean. (The
    reference
    multiplies by (ms + 1e-5) ** -0.5; dividing by the square root is the same number to a
    rounding.)
    """
    np.multiply(x, x, out)  # (N, C) squares, out as scratch
    out.dot(avg, rms)  # (N, C) mean of squares
    np.add(rms, RMS_EPS[rms.dtype], rms)  # (N, C)
    np.sqrt(rms, rms)  # (N, C)
    np.divide(x, rms, out)  # (N, C)
    return out, (out, rms, avg)


def rmsnorm_backward(dout: np.ndarray, cache: tuple, dx: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """dx = (dy - y * mean(dy * y)) / rms, from y = x / rms, rms = sqrt(mean(x^2) + eps).

    (The textbook dy / rms - x / rms^3 * mean(dy * x), written with y: fewer calls.)
    Writes and returns dx (N, C); tmp (N, C) is scratch.
    """
    y, rms, avg = cache  # (N, C), (N, C) or (N, 1), (C, C) or (C, 1)
    np.multiply(dout, y, tmp)  # (N, C)
    k = tmp.dot(avg)  # (N, C) or (N, 1) mean(dy * y) (repeated along the row)
    np.multiply(y, k, dx)  # (N, C)
    np.subtract(dout, dx, dx)  # (N, C)
    np.divide(dx, rms, dx)  # (N, C)
    return dx


# --- linear (matmul, no bias) ------------------------------------------------------------------


def linear_forward(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, tuple]:
    """out = x @ w.T with w stored (nout, nin) as in the original's state_dict."""
    x.dot(w.T, out)  # (N, nout)
    return out, (x, w)


def linear_backward(dout: np.ndarray, cache: tuple, dw: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Write d loss/d w into `dw` (nout, nin) and d loss/d x into `dx` (N, nin); return dx."""
    x, w = cache  # (N, nin), (nout, nin)
    dout.T.dot(x, dw)  # (nout, nin)
    dout.dot(w, dx)  # (N, nin)
    return dx


# --- causal multi-head self-attention -----------------------------------------------------------


def diagonal_blocks(a: np.ndarray, n: int) -> np.ndarray:
    """A writable view (n, R / n, S / n) of the n diagonal blocks of a (R, S) array."""
    (R, S), (sr, ss) = a.shape, a.strides
    r, s = R // n, S // n
    return as_strided(a, (n, r, s), (r * sr + s * ss, sr, ss))


def causal_mask(T: int, dtype) -> np.ndarray:
    """(T, T) additive mask: 0 where s <= t, -inf where s > t (the future)."""
    return np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)  # (T, T)


class Attention:
    """One layer's attention buffers for one batch shape (B, T), and views into them.

    Two ways to compute every head at once, the same numbers either way:

    - per head: q, k, v viewed as (B, NH, T, HS) straight out of qkv (no copies), and
      batched products over the B * NH heads.
    - block-diagonal (`blocked`), for one short sequence, where NumPy's per-call overhead
      and not the arithmetic is the cost: K, a (C, NH * T) matrix that is zero except its
      diagonal blocks, block h = head h's keys transposed (HS, T). Then q @ K (T, NH * T)
      holds every head's scores side by side (q's head-h columns only meet block h), and
      with V (NH * T, C), block h = head h's values (T, HS), probabilities @ V is every
      head's output already concatenated: plain 2-D products, for NH times the
      multiply-adds and two copies.

    The scores' shape is written ATT below: (B, NH, T, T) per head, (T, NH * T) blocked.
    """

    # NOTE: measured (fwd + bwd, 2-core x86, one BLAS thread): one sequence of the original's
    # size (n_embd 16, 4 heads, T = 8) takes 14.0 us block-diagonal, 16.3 us per head; at
    # T * n_embd = 256 the two tie, and past it (or with B > 1) per head wins, by 2x at
    # n_embd 128.
    BLOCKED_MAX_TC = 256

    def __init__(self, B: int, T: int, C: int, n_head: int, dtype, blocked: bool | None = None):
        NH, HS, N = n_head, C // n_head, B * T
        if blocked is None:
            blocked = B == 1 and T * C <= self.BLOCKED_MAX_TC
        self.blocked = blocked
        self.scale = scalar(HS**-0.5, dtype)  # the original divides by head_dim**0.5
        self.qkv = np.empty((N, 3 * C), dtype)  # (N, 3C) the input: q, k, v side by side
        self.out = np.empty((N, C), dtype)  # (N, C) the output, heads concatenated
        self.dqkv = np.empty((N, 3 * C), dtype)  # (N, 3C) the backward's output
        # q, k, v and d q, d k, d v as views of qkv and dqkv: (B, T, NH, HS) each
        q, k, v = np.moveaxis(self.qkv.reshape(B, T, 3, NH, HS), 2, 0)
        dq, dk, dv = np.moveaxis(self.dqkv.reshape(B, T, 3, NH, HS), 2, 0)
        if blocked:  # B == 1: 2-D arrays
            self.att = np.empty((T, NH * T), dtype)  # scores, then probabilities
            self.mask = np.tile(causal_mask(T, dtype), (1, NH))  # (T, NH * T)
            self.keys = np.zeros((C, NH * T), dtype)  # K, block-diagonal
            self.values = np.zeros((NH * T, C), dtype)  # V, block-diagonal
            self.dkeys = np.empty_like(self.keys)  # (C, NH * T)
            self.dvalues = np.empty_like(self.values)  # (NH * T, C)
            self.dq = np.empty((T, C), dtype)  # (T, C)
            self.q = self.qkv[:, :C]  # (T, C)
            self.q_t = self.q.T  # (C, T)
            self.k = k[0].transpose(1, 2, 0)  # (NH, HS, T)
            self.v = v[0].transpose(1, 0, 2)  # (NH, T, HS)
            self.keys_diag = diagonal_blocks(self.keys, NH)  # (NH, HS, T)
            self.values_diag = diagonal_blocks(self.values, NH)  # (NH, T, HS)
            self.keys_t, self.values_t = self.keys.T, self.values.T  # (NH * T, C), (C, NH * T)
            self.dq_slot = self.dqkv[:, :C]  # (T, C)
            self.dk_slot = dk[0].transpose(1, 2, 0)  # (NH, HS, T)
            self.dv_slot = dv[0].transpose(1, 0, 2)  # (NH, T, HS)
            self.dkeys_diag = diagonal_blocks(self.dkeys, NH)  # (NH, HS, T)
            self.dvalues_diag = diagonal_blocks(self.dvalues, NH)  # (NH, T, HS)
            self.y = self.out  # (T, C)
        else:
            self.att = np.empty((B, NH, T, T), dtype)  # scores, then probabilities
            self.mask = np.broadcast_to(causal_mask(T, dtype), (B, NH, T, T)).copy()
            self.q, self.k, self.v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # (B, NH, T, HS)
            self.q_t, self.k_t, self.v_t = (a.swapaxes(-1, -2) for a in (self.q, self.k, self.v))
            self.dq_slot, self.dk_slot, self.dv_slot = (
                a.transpose(0, 2, 1, 3) for a in (dq, dk, dv)
            )  # (B, NH, T, HS) each
            self.y = self.out.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
        self.att_t = np.swapaxes(self.att, -1, -2)  # ATT with the last two axes swapped
        self.datt = np.empty_like(self.att)  # ATT
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


def attention_forward(qkv: np.ndarray, buf: Attention) -> tuple[np.ndarray, Attention]:
    """softmax(q k^T / sqrt(HS) + mask) v for every head at once; heads concatenated.

    `qkv` must be buf.qkv (N, 3C): q, k and v side by side, written by the fused QKV linear.
    Position t sees positions s <= t, as the original's growing KV cache does; padding sits
    after every real token, so no real position ever sees it. Returns buf.out (N, C).
    """
    assert qkv is buf.qkv, "attention reads its input through views of buf.qkv"
    att, rows = buf.att, buf.att_rows
    if buf.blocked:
        buf.keys_diag[...] = buf.k  # (NH, HS, T) into K's blocks
        buf.values_diag[...] = buf.v  # (NH, T, HS) into V's blocks
        buf.q.dot(buf.keys, att)  # (T, NH * T) q . k, every head
    else:
        np.matmul(buf.q, buf.k_t, att)  # (B, NH, T, T)
    np.multiply(att, buf.scale, att)  # ATT; the original divides each dot by sqrt(HS)
    att += buf.mask  # ATT
    np.subtract(rows, np.maximum.reduce(rows, 1, None, None, True), rows)  # (N * NH, T)
    np.exp(rows, rows)  # (N * NH, T)
    rows.dot(buf.ones, buf.rowsum)  # (N * NH, T) or (N * NH, 1) each row's sum
    np.divide(rows, buf.rowsum, rows)  # (N * NH, T)
    if buf.blocked:
        att.dot(buf.values, buf.y)  # (T, C)
    else:
        np.matmul(att, buf.v, buf.y)  # (B, NH, T, HS), a view of out (N, C)
    return buf.out, buf


def attention_backward(dout: np.ndarray, buf: Attention) -> np.ndarray:
    """d loss/d qkv (N, 3C), laid out as attention_forward's input (buf.dqkv)."""
    datt, rows = buf.datt, buf.datt_rows
    if buf.blocked:
        dout.dot(buf.values_t, datt)  # (T, NH * T)
        buf.att_t.dot(dout, buf.dvalues)  # (NH * T, C) only its diagonal blocks matter
        buf.dv_slot[...] = buf.dvalues_diag  # (NH, T, HS)
    else:
        B, NH, T, HS = buf.y.shape
        dy = dout.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
        np.matmul(dy, buf.v_t, datt)  # (B, NH, T, T)
        np.matmul(buf.att_t, dy, buf.dv_slot)  # (B, NH, T, HS)
    # softmax backward: d score = a * (d a - sum(d a * a)); masked entries have a = 0
    np.multiply(rows, buf.att_rows, buf.scratch_rows)  # (N * NH, T)
    buf.scratch_rows.dot(buf.ones, buf.rowsum)  # (N * NH, T) or (N * NH, 1) sum(d a * a)
    np.subtract(rows, buf.rowsum, rows)  # (N * NH, T)
    np.multiply(datt, buf.att, datt)  # ATT
    np.multiply(datt, buf.scale, datt)  # ATT: d (q . k)
    if buf.blocked:
        datt.dot(buf.keys_t, buf.dq)  # (T, C)
        buf.dq_slot[...] = buf.dq  # (T, C)
        buf.q_t.dot(datt, buf.dkeys)  # (C, NH * T) only its diagonal blocks matter
        buf.dk_slot[...] = buf.dkeys_diag  # (NH, HS, T)
    else:
        np.matmul(datt, buf.k, buf.dq_slot)  # (B, NH, T, HS)
        np.matmul(np.swapaxes(datt, -1, -2), buf.q, buf.dk_slot)  # (B, NH, T, HS)
    return buf.dqkv


def attention_decode(
    qkv: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n: int, n_head: int
) -> tuple[np.ndarray, np.ndarray]:
    """One new position's attention, reading and extending a KV cache (inference only).

    qkv (1, 3C) is the new position's q, k, v; k_cache and v_cache (NH, block_size, HS) hold
    the n earlier positions. The new k and v go to slot n; the query sees slots 0..n, exactly
    the row t = n of attention_forward. Returns the (1, C) output and the (NH, n + 1) weights.
    """
    C = qkv.shape[-1] // 3
    HS = C // n_head
    q, k, v = qkv.reshape(3, n_head, HS)  # 3 x (NH, HS)
    k_cache[:, n] = k  # (NH, HS)
    v_cache[:, n] = v  # (NH, HS)
    att = k_cache[:, : n + 1] @ q[:, :, None]  # (NH, n + 1, 1)
    att /= HS**0.5  # (NH, n + 1, 1)
    att -= att.max(1, keepdims=True)  # (NH, n + 1, 1)
    np.exp(att, out=att)  # (NH, n + 1, 1)
    att /= att.sum(1, keepdims=True)  # (NH, n + 1, 1)
    y = att.transpose(0, 2, 1) @ v_cache[:, : n + 1]  # (NH, 1, HS)
    return y.reshape(1, C), att[:, :, 0]


# --- ReLU and ReLU squared ---------------------------------------------------------------------


def relu_forward(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(x, 0), the final revision's MLP nonlinearity. `out` may be x itself."""
    np.maximum(x, 0.0, out=out)  # (N, 4C)
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """In place on dout. The original's relu passes gradient where x > 0 (float(x > 0)),
    none at exactly 0; the output is > 0 exactly there."""
    out = cache  # (N, 4C)
    # NOTE: sign(out) is the same 0/1 mask as out > 0 (out >= 0), and multiplying by a
    # float array is twice as fast as by a bool one (no casting loop)
    dout *= np.sign(out)  # (N, 4C)
    return dout


def relu2_forward(x: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """relu(x) ** 2, the first revision's MLP nonlinearity. NOTE: overwrites x with relu(x)
    (the backward's cache), so `out` must be another buffer."""
    np.maximum(x, 0.0, out=x)  # (N, 4C)
    np.multiply(x, x, out)  # (N, 4C)
    return out, x


def relu2_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """In place on dout: d relu(x)^2 = 2 relu(x), zero wherever x <= 0."""
    r = cache  # (N, 4C)
    dout *= r  # (N, 4C)
    dout *= 2  # (N, 4C)
    return dout


# --- softmax cross-entropy ---------------------------------------------------------------------


def crossentropy_forward(
    logits: np.ndarray, rows: np.ndarray, targets: np.ndarray, ones: np.ndarray
) -> tuple[float, tuple]:
    """Mean of -log softmax(logits)[target] over the scored rows (padding is not scored).

    logits (N, V), overwritten with the probabilities; rows (n,) indexes the N rows that
    predict a real token, targets (n,) says which token; ones is summing_matrix(V, dtype).
    """
    probs = logits  # (N, V)
    np.subtract(probs, np.maximum.reduce(probs, 1, None, None, True), probs)  # (N, V)
    np.exp(probs, probs)  # (N, V)
    np.divide(probs, probs.dot(ones), probs)  # (N, V) over the row sums
    # the original's (1 / n) * sum(losses), losses = -log(p), summed left to right
    loss = (1 / len(rows)) * -sum(np.log(probs[rows, targets]).tolist())
    return loss, (probs, rows, targets)


def crossentropy_backward(
    cache: tuple, row_weight: np.ndarray | None, eye: np.ndarray
) -> np.ndarray:
    """d loss/d logits = (probs - onehot(target)) / n on scored rows, 0 on padding.

    `row_weight` (N, 1) is 1/n on scored rows and 0 on padding, or None when nothing is
    padded; `eye` is the (V, V) identity. Overwrites the cached probabilities.
    """
    probs, rows, targets = cache  # (N, V), (n,), (n,)
    dlogits = probs  # (N, V)
    if row_weight is None:  # every row is scored: rows == 0..N-1
        dlogits -= eye.take(targets, 0)  # (N, V) NOTE: take, 3x faster than eye[targets]
        dlogits *= 1 / len(rows)
    else:
        dlogits[rows, targets] -= 1
        dlogits *= row_weight  # (N, V)
    return dlogits
