"""The layers of microgpt as paired NumPy forward / backward functions, in the style of llm.c.

Every layer is a `*_forward(...) -> out, cache` that works on the whole (padded) batch of
sequences at once, and a `*_backward(dout, cache, ...) -> dinp` that returns the gradient of
its input and, like llm.c, writes its weight gradients into buffers it is handed (views of
the engine's one flat gradient array), so no gradient is copied twice.

Shape letters, used in the comment on every array line:
    B  batch (documents)            T  time (positions, <= block_size)
    C  channels (n_embd)            V  vocabulary size
    NH attention heads (n_head)     HS head size (C // NH)
    N  rows of a flattened batch (B * T)

NOTE: on matrices this small NumPy's per-call overhead (about a microsecond), not the
arithmetic, is the cost; so the code prefers fewer, fused calls (one QKV matmul, all heads
in one batched matmul, in-place `out=` updates) over clarity where the two disagree.
"""

from __future__ import annotations

import numpy as np

# --- embedding ---------------------------------------------------------------------------------


def embedding_forward(
    wte: np.ndarray, wpe: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Token plus position embedding, x[b, t] = wte[idx[b, t]] + wpe[t], flattened to (N, C)."""
    B, T = idx.shape
    if B == 1:  # NOTE: same-shape addition; broadcasting costs NumPy about a microsecond more
        return wte[idx[0]] + wpe[:T], idx  # (T, C)
    out = wte[idx] + wpe[:T]  # (B, T, C)
    return out.reshape(B * T, -1), idx  # (N, C)


def embedding_backward(
    dout: np.ndarray, cache: np.ndarray, dwte: np.ndarray, dwpe: np.ndarray, eye: np.ndarray
) -> None:
    """Write d loss/d wte and d loss/d wpe, given d loss/d x (N, C). `eye` is the (V, V)
    identity (cached by the caller): a one-hot matmul scatters the rows, faster than np.add.at."""
    idx = cache  # (B, T)
    B, T = idx.shape
    onehot = eye[idx.reshape(-1)]  # (N, V)
    np.dot(onehot.T, dout, out=dwte)  # (V, C)
    if B == 1:
        dwpe[:T] = dout  # (T, C)
    else:
        np.sum(dout.reshape(B, T, -1), axis=0, out=dwpe[:T])  # (T, C)
    dwpe[T:] = 0  # positions no sequence reached get no gradient


# --- rmsnorm -----------------------------------------------------------------------------------

# Row-wise dot products in one call (NumPy >= 2 has the vecdot ufunc; einsum elsewhere).
rowdot = getattr(np, "vecdot", None) or (lambda a, b: np.einsum("...i,...i->...", a, b))


def rmsnorm_forward(x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x * (mean(x^2) + 1e-5) ** -0.5 over the last axis, the original's rmsnorm (no gain)."""
    C = x.shape[-1]
    scale = ((rowdot(x, x) / C + 1e-5) ** -0.5)[:, None]  # (N, 1)
    out = x * scale  # (N, C)
    return out, (out, scale)


def rmsnorm_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dx = s * (dy - y * mean(dy * y)), from y = x * s, s = (mean(x^2) + eps)^-1/2.

    (The textbook s * dy - x * s^3 / C * sum(dy * x), written with y = x * s: fewer calls.)
    """
    y, scale = cache  # (N, C), (N, 1)
    C = y.shape[-1]
    dx = dout - y * (rowdot(dout, y) / C)[:, None]  # (N, C)
    dx *= scale  # (N, C)
    return dx


# --- linear (matmul, no bias) ------------------------------------------------------------------


def linear_forward(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, tuple]:
    """y = x @ w.T with w stored (nout, nin) as in the original's state_dict.

    NOTE: np.dot, not @: for 2-D arrays they compute the same, np.dot with less overhead."""
    out = np.dot(x, w.T)  # (N, nout)
    return out, (x, w)


def linear_backward(dout: np.ndarray, cache: tuple, dw: np.ndarray) -> np.ndarray:
    """Write d loss/d w into `dw` (nout, nin); return d loss/d x."""
    x, w = cache  # (N, nin), (nout, nin)
    np.dot(dout.T, x, out=dw)  # (nout, nin)
    return np.dot(dout, w)  # (N, nin)


# --- causal multi-head self-attention -----------------------------------------------------------


def causal_mask(B: int, n_head: int, T: int, dtype) -> np.ndarray:
    """(B, NH, T, T) additive mask: 0 where s <= t, -inf where s > t (the future).

    Materialised at the full shape of the attention scores because adding a broadcast (T, T)
    costs NumPy more than the addition itself; callers cache it per shape."""
    mask = np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)  # (T, T)
    return np.ascontiguousarray(np.broadcast_to(mask, (B, n_head, T, T)))  # (B, NH, T, T)


def attention_forward(
    qkv: np.ndarray, B: int, T: int, n_head: int, mask: np.ndarray
) -> tuple[np.ndarray, tuple]:
    """softmax(q k^T / sqrt(HS) + mask) v for every head at once; heads concatenated.

    qkv holds q, k and v side by side (the three matmuls fused into one); `mask` is
    causal_mask(B, n_head, T). Position t sees positions s <= t, as the original's growing
    KV cache does; padding sits after every real token, so no real position ever sees it.
    """
    C = qkv.shape[-1] // 3
    HS = C // n_head
    q, k, v = qkv.reshape(B, T, 3, n_head, HS).transpose(2, 0, 3, 1, 4)  # 3 x (B, NH, T, HS)
    att = q @ k.transpose(0, 1, 3, 2)  # (B, NH, T, T)
    att /= HS**0.5  # the original divides each dot product by head_dim**0.5
    att += mask  # (B, NH, T, T)
    att -= np.maximum.reduce(att, axis=-1, keepdims=True)  # (B, NH, T, T)
    np.exp(att, out=att)  # (B, NH, T, T)
    att /= np.add.reduce(att, axis=-1, keepdims=True)  # (B, NH, T, T)
    y = att @ v  # (B, NH, T, HS)
    out = y.transpose(0, 2, 1, 3).reshape(B * T, C)  # (N, C)
    return out, (q, k, v, att)


def attention_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """d loss/d qkv, laid out as attention_forward's input."""
    q, k, v, att = cache  # 3 x (B, NH, T, HS), (B, NH, T, T)
    B, NH, T, HS = q.shape
    dy = dout.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)  # (B, NH, T, HS)
    dqkv = np.empty((3, B, NH, T, HS), dtype=dout.dtype)  # (3, B, NH, T, HS)
    np.matmul(att.transpose(0, 1, 3, 2), dy, out=dqkv[2])  # dv: (B, NH, T, HS)
    datt = dy @ v.transpose(0, 1, 3, 2)  # (B, NH, T, T)
    # softmax backward: d logit = a * (d a - sum(d a * a)); masked entries have a = 0
    datt -= rowdot(datt, att)[..., None]  # (B, NH, T, T)
    datt *= att  # (B, NH, T, T)
    datt /= HS**0.5  # (B, NH, T, T)
    np.matmul(datt, k, out=dqkv[0])  # dq: (B, NH, T, HS)
    np.matmul(datt.transpose(0, 1, 3, 2), q, out=dqkv[1])  # dk: (B, NH, T, HS)
    return dqkv.transpose(1, 3, 0, 2, 4).reshape(B * T, 3 * NH * HS)  # (N, 3C)


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


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """max(x, 0), the final revision's MLP nonlinearity."""
    out = np.maximum(x, 0)  # (N, 4C)
    return out, x


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    x = cache  # (N, 4C)
    # the original's relu passes gradient where x > 0 (float(x > 0)), none at exactly 0
    dout *= x > 0  # (N, 4C)
    return dout


def relu2_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """relu(x) ** 2, the first revision's MLP nonlinearity."""
    r = np.maximum(x, 0)  # (N, 4C)
    return r * r, r


def relu2_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    r = cache  # (N, 4C), zero wherever x <= 0, so it also masks the gradient
    return dout * (r + r)  # (N, 4C)


# --- softmax cross-entropy ---------------------------------------------------------------------


def crossentropy_forward(
    logits: np.ndarray, rows: np.ndarray, targets: np.ndarray
) -> tuple[float, tuple]:
    """Mean of -log softmax(logits)[target] over the scored rows (padding is not scored).

    logits (N, V); rows (n,) indexes the N rows that predict a real token, targets (n,) says
    which token.
    """
    probs = logits - np.maximum.reduce(logits, axis=-1, keepdims=True)  # (N, V)
    np.exp(probs, out=probs)  # (N, V)
    probs /= np.add.reduce(probs, axis=-1, keepdims=True)  # (N, V)
    # the original's (1 / n) * sum(losses), losses = -log(p): the sum negated once
    loss = -float(np.add.reduce(np.log(probs[rows, targets]))) * (1 / len(rows))
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
        dlogits -= eye[targets]  # (N, V)
        dlogits *= 1 / len(rows)
    else:
        dlogits[rows, targets] -= 1
        dlogits *= row_weight  # (N, V)
    return dlogits
