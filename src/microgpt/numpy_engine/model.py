"""The NumPy engine: the original microgpt, a whole batch of sequences at once.

The model is the reference engine's, layer for layer (see ../ref/model.py):

    x = rmsnorm(wte[tok] + wpe[pos])
    per layer:  x = x + attn_wo @ attention(rmsnorm(x))        (q, k, v = attn_wq/wk/wv)
                x = x + mlp_fc2 @ relu(mlp_fc1 @ rmsnorm(x))    (relu**2 in the first revision)
    logits = lm_head @ x

Every weight lives in ONE flat contiguous array, each matrix a view into it, and so does every
gradient and each Adam moment: Adam is then a dozen vectorised operations on whole arrays,
and the q, k, v matrices, adjacent in the original's state_dict order, form one (3C, C) view
that computes all three projections in a single matmul. See layers.py for the shape letters.

One method runs a transformer layer (_block_forward) and one its backward: training, the
full-sequence forward and the one-position KV-cache decode all run the same block code.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from ..config import ModelConfig, OptimConfig
from ..engine import Engine, EngineError, check_params
from ..tensor import Tensor
from . import layers as L


@dataclass
class Block:
    """One transformer layer's matrices: views into a flat buffer (weights or gradients)."""

    wqkv: np.ndarray  # (3C, C) attn_wq, attn_wk, attn_wv stacked
    wo: np.ndarray  # (C, C) attn_wo
    fc1: np.ndarray  # (4C, C) mlp_fc1
    fc2: np.ndarray  # (C, 4C) mlp_fc2


@dataclass
class Weights:
    """Views of one flat buffer shaped as the model's matrices."""

    wte: np.ndarray  # (V, C)
    wpe: np.ndarray  # (block_size, C)
    lm_head: np.ndarray  # (V, C)
    blocks: list[Block]


@dataclass
class KVCache:
    """Keys and values of every decoded position, per layer, preallocated to block_size."""

    k: np.ndarray  # (n_layer, NH, block_size, HS)
    v: np.ndarray  # (n_layer, NH, block_size, HS)
    att: np.ndarray  # (n_layer, NH, block_size) the last position's attention weights
    n: int = 0  # positions decoded so far


class LayerActivations:
    """One layer's activations for one batch shape, written by the forward and read by the
    backward (as llm.c's ActivationTensors); N = B * T."""

    def __init__(self, B: int, T: int, config: ModelConfig, dtype):
        N, C, R = B * T, config.n_embd, L.summed_width(config.n_embd)
        self.xn1 = np.empty((N, C), dtype)  # (N, C) rmsnorm before attention
        self.rms1 = np.empty((N, R), dtype)  # (N, C) or (N, 1) its divisors
        self.attn = L.Attention(B, T, C, config.n_head, dtype)  # its arrays, views, scratch
        self.qkv = self.attn.qkv  # (N, 3C) q, k, v side by side
        self.att = self.attn.att  # ATT attention probabilities (see L.Attention)
        self.atty = self.attn.out  # (N, C) attention's output, heads side by side
        self.dqkv = self.attn.dqkv  # (N, 3C) the backward's d loss/d qkv
        self.xo = np.empty((N, C), dtype)  # (N, C) after attention's residual
        self.xn2 = np.empty((N, C), dtype)  # (N, C) rmsnorm before the MLP
        self.rms2 = np.empty((N, R), dtype)  # (N, C) or (N, 1)
        self.h = np.empty((N, 4 * C), dtype)  # (N, 4C) mlp_fc1's output, then relu of it
        # (N, 4C) the activation: relu works in place, relu**2 keeps relu(h) in h for backward
        self.a = np.empty((N, 4 * C), dtype) if config.mlp == "relu2" else self.h
        self.out = np.empty((N, C), dtype)  # (N, C) after the MLP's residual


class Workspace:
    """Every buffer of one forward and backward at batch shape (B, T), allocated once and
    reused by every step of that shape, as llm.c allocates its activations up front.
    `onehot`: also the one-hot scratch of L.embedding_backward (small vocabularies only)."""

    def __init__(self, B: int, T: int, config: ModelConfig, V: int, dtype, onehot: bool):
        N, C = B * T, config.n_embd
        self.x0 = np.empty((N, C), dtype)  # (N, C) token + position embedding
        self.norm0 = np.empty((N, C), dtype)  # (N, C) its rmsnorm
        self.rms0 = np.empty((N, L.summed_width(C)), dtype)  # (N, C) or (N, 1)
        self.layers = [LayerActivations(B, T, config, dtype) for _ in range(config.n_layer)]
        self.logits = np.empty((N, V), dtype)  # (N, V), then the probabilities, then d logits
        # the backward's scratch, shared by the layers (they run one after another)
        self.dx = np.empty((N, C), dtype)  # (N, C) d loss/d the residual stream
        self.dnorm = np.empty((N, C), dtype)  # (N, C) d loss/d an rmsnorm's output
        self.dres = np.empty((N, C), dtype)  # (N, C) an rmsnorm's input gradient
        self.dtmp = np.empty((N, L.summed_width(C)), dtype)  # (N, C) or (N, 1) rmsnorm's scratch
        self.dy = np.empty((N, C), dtype)  # (N, C) d loss/d attention's output
        self.dh = np.empty((N, 4 * C), dtype)  # (N, 4C) d loss/d the MLP's hidden layer
        if onehot:
            self.tokens = np.empty((N, V), dtype)  # (N, V) one-hot rows of the input tokens
            self.positions = L.position_onehot(B, T, config.block_size, dtype)  # (N, block)
        # the memory of the arrays that own it (not of the views), each array once
        owners = (self, *self.layers, *(la.attn for la in self.layers))
        arrays = {
            id(a): a
            for obj in owners
            for a in vars(obj).values()
            if isinstance(a, np.ndarray) and a.base is None
        }
        self.nbytes = sum(a.nbytes for a in arrays.values())


class NumpyEngine(Engine):
    """The reference model, vectorised with NumPy: float64 for parity, float32 for speed."""

    name = "numpy"
    dtypes = ("float64", "float32")
    # Workspaces are kept per batch shape; past this many bytes in all they are dropped and
    # made again (an evaluation over documents of every length makes many shapes).
    WORKSPACE_BYTES = 256 * 2**20

    def __init__(
        self,
        config: ModelConfig,
        optim: OptimConfig,
        vocab_size: int,
        params: dict[str, Tensor],
        dtype: str = "float64",
    ):
        super().__init__(config, optim, vocab_size, params, dtype)
        self.np_dtype = np.dtype(dtype)
        self.shapes = check_params(config, vocab_size, params)  # the state_dict's order
        self.offsets: dict[str, tuple[int, int]] = {}
        size = 0
        for name, (nout, nin) in self.shapes.items():
            self.offsets[name] = (size, size + nout * nin)
            size += nout * nin
        self.flat = np.empty(size, dtype=self.np_dtype)  # every weight
        self.grad = np.zeros(size, dtype=self.np_dtype)  # every gradient
        self.m = np.zeros(size, dtype=self.np_dtype)  # Adam first moment
        self.v = np.zeros(size, dtype=self.np_dtype)  # Adam second moment
        self._tmp = np.empty(size, dtype=self.np_dtype)  # Adam scratch
        self._tmp2 = np.empty(size, dtype=self.np_dtype)
        o = optim
        # b1, b2, eps, 1 - b1, 1 - b2, then this step's lr / (1 - b1^t) and 1 / (1 - b2^t)
        self._adam_scalars = tuple(
            L.scalar(x, self.np_dtype)
            for x in (o.beta1, o.beta2, o.eps_adam, 1 - o.beta1, 1 - o.beta2, 0.0, 0.0)
        )
        # NOTE: the original zeroes the gradients after each update; here every backward
        # overwrites all of them, so a flag stands in for the zeroing (see gradients()).
        self._stepped = False
        for name, t in params.items():
            self._view(self.flat, name)[...] = np.frombuffer(t.data, dtype=np.float64).reshape(
                t.shape
            )
        self.w = self._weights(self.flat)
        self.g = self._weights(self.grad)
        V, C = vocab_size, config.n_embd
        self._avg = L.summing_matrix(C, self.np_dtype, 1 / C)  # (C, C) or (C, 1) row means
        self._ones_v = L.summing_matrix(V, self.np_dtype)  # (V, V) or (V, 1) row sums
        # (V, V) one-hot rows for the embedding gradient and the targets, for small V only;
        # larger vocabularies take the plain O(N * V) kernels (see L.ONEHOT_MAX_V)
        self._eye = np.eye(V, dtype=self.np_dtype) if V <= L.ONEHOT_MAX_V else None
        self._workspaces: dict[tuple[int, int], Workspace] = {}  # (B, T) -> buffers
        self._arange = np.arange(config.block_size)  # (block_size,)
        self._relu2 = config.mlp == "relu2"

    # --- the flat buffers -------------------------------------------------------------------
    def _view(self, buf: np.ndarray, name: str) -> np.ndarray:
        start, stop = self.offsets[name]
        return buf[start:stop].reshape(self.shapes[name])

    def _weights(self, buf: np.ndarray) -> Weights:
        C = self.config.n_embd
        blocks = []
        for i in range(self.config.n_layer):
            start = self.offsets[f"layer{i}.attn_wq"][0]
            # NOTE: wq, wk, wv are adjacent in state_dict order, so one view stacks them.
            assert self.offsets[f"layer{i}.attn_wv"][1] == start + 3 * C * C
            blocks.append(
                Block(
                    wqkv=buf[start : start + 3 * C * C].reshape(3 * C, C),
                    wo=self._view(buf, f"layer{i}.attn_wo"),
                    fc1=self._view(buf, f"layer{i}.mlp_fc1"),
                    fc2=self._view(buf, f"layer{i}.mlp_fc2"),
                )
            )
        return Weights(
            wte=self._view(buf, "wte"),
            wpe=self._view(buf, "wpe"),
            lm_head=self._view(buf, "lm_head"),
            blocks=blocks,
        )

    def _workspace(self, B: int, T: int) -> Workspace:
        ws = self._workspaces.get((B, T))
        if ws is None:
            onehot = self._eye is not None
            ws = Workspace(B, T, self.config, self.vocab_size, self.np_dtype, onehot)
            kept = sum(w.nbytes for w in self._workspaces.values())
            if kept + ws.nbytes > self.WORKSPACE_BYTES:
                self._workspaces.clear()
            self._workspaces[B, T] = ws
        return ws

    # --- batches ------------------------------------------------------------------------------
    def _prepare(self, batch: list[list[int]]):
        """Pad the batch: input ids (N,) of B sequences of T tokens, B, T, the scored rows of
        the N positions, their targets, and the (N, 1) weight of each row in the mean (None:
        no padding)."""
        block_size = self.config.block_size
        B = len(batch)
        if B == 1:
            tokens = batch[0]
            T = len(tokens) - 1
            if not 1 <= T <= block_size:
                self._bad_length(len(tokens))
            a = np.array(tokens)  # (T + 1,)
            return a[:-1], 1, T, self._arange[:T], a[1:], None
        lens = [len(s) - 1 for s in batch]
        T = max(lens)
        if T > block_size or min(lens) < 0 or sum(lens) == 0:
            self._bad_length(max(len(s) for s in batch) if T > block_size else 1)
        padded = np.zeros((B, T + 1), dtype=np.intp)  # (B, T + 1); padding is token 0
        for b, s in enumerate(batch):
            padded[b, : len(s)] = s
        valid = self._arange[:T] < np.array(lens)[:, None]  # (B, T)
        rows = np.flatnonzero(valid)  # (n,)
        targets = padded[:, 1:].reshape(-1)[rows]  # (n,)
        # (N, 1): 1/n on scored rows, 0 on padding
        weight = None if valid.all() else (valid.reshape(-1, 1) / len(rows)).astype(self.np_dtype)
        return padded[:, :-1].reshape(-1), B, T, rows, targets, weight

    def _bad_length(self, n: int):
        raise EngineError(
            f"a sequence of {n} tokens does not fit: the model reads 1 to block_size "
            f"({self.config.block_size}) tokens and predicts the next"
        )

    # --- the model ------------------------------------------------------------------------------
    def _forward(self, idx: np.ndarray, B: int, T: int, cache: KVCache | None = None, pos=0):
        """Logits (N, V) for input ids idx (N,), B sequences of T tokens, into the workspace
        of shape (B, T), which keeps every activation for the backward; returns it. The
        logits are valid until the next call of this shape. With a KV cache: one token at
        position `pos`, attending to the cache's earlier positions (decode)."""
        w = self.w
        ws = self._workspace(B, T)
        L.embedding_forward(ws.x0, idx, w.wte, w.wpe[pos:] if pos else w.wpe, B, T)  # (N, C)
        L.rmsnorm_forward(ws.norm0, ws.rms0, ws.x0, self._avg)  # (N, C)
        x = ws.norm0  # (N, C)
        for li, (blk, act) in enumerate(zip(w.blocks, ws.layers, strict=True)):
            self._block_forward(act, x, blk, cache, li)
            x = act.out  # (N, C)
        L.linear_forward(ws.logits, x, w.lm_head)  # (N, V)
        return ws

    def _block_forward(
        self, act: LayerActivations, x: np.ndarray, blk: Block, cache: KVCache | None, li: int
    ) -> None:
        """One transformer layer (number li): x (N, C) -> act.out (N, C), every activation
        kept in act. With a KV cache (decode), attention reads layer li's cache instead."""
        avg = self._avg
        # 1) multi-head attention
        L.rmsnorm_forward(act.xn1, act.rms1, x, avg)  # (N, C)
        L.linear_forward(act.qkv, act.xn1, blk.wqkv)  # (N, 3C)
        if cache is not None:  # one position: (1, C)
            L.attention_decode(act.atty, cache.att[li], act.qkv, cache.k[li], cache.v[li], cache.n)
        elif act.attn.blocked:
            L.attention_forward_blocked(act.atty, act.att, act.qkv, act.attn)  # (T, C)
        else:
            L.attention_forward(act.atty, act.att, act.qkv, act.attn)  # (N, C)
        L.linear_forward(act.xo, act.atty, blk.wo)  # (N, C)
        act.xo += x  # (N, C) residual
        # 2) MLP
        L.rmsnorm_forward(act.xn2, act.rms2, act.xo, avg)  # (N, C)
        L.linear_forward(act.h, act.xn2, blk.fc1)  # (N, 4C)
        if self._relu2:
            L.relu2_forward(act.a, act.h)  # (N, 4C); relu(h) stays in h
        else:
            L.relu_forward(act.a, act.h)  # (N, 4C); a is h
        L.linear_forward(act.out, act.a, blk.fc2)  # (N, C)
        act.out += act.xo  # (N, C) residual

    def _block_backward(
        self, dx: np.ndarray, act: LayerActivations, blk: Block, gblk: Block, ws: Workspace
    ) -> None:
        """_block_forward's backward: dx (N, C) holds d loss/d act.out on entry and d loss/d
        the block's input on return; the block's weight gradients go into gblk."""
        avg = self._avg
        # 2) MLP: dx reaches the block's input both through the residual and the MLP
        L.linear_backward(ws.dh, gblk.fc2, dx, act.a, blk.fc2)  # (N, 4C)
        if self._relu2:
            L.relu2_backward(ws.dh, ws.dh, act.h)  # (N, 4C)
        else:
            L.relu_backward(ws.dh, ws.dh, act.h)  # (N, 4C)
        L.linear_backward(ws.dnorm, gblk.fc1, ws.dh, act.xn2, blk.fc1)  # (N, C)
        L.rmsnorm_backward(ws.dres, ws.dnorm, act.xn2, act.rms2, avg, ws.dtmp)  # (N, C)
        dx += ws.dres  # (N, C)
        # 1) attention
        L.linear_backward(ws.dy, gblk.wo, dx, act.atty, blk.wo)  # (N, C)
        if act.attn.blocked:
            L.attention_backward_blocked(act.dqkv, ws.dy, act.att, act.qkv, act.attn)  # (T, 3C)
        else:
            L.attention_backward(act.dqkv, ws.dy, act.att, act.qkv, act.attn)  # (N, 3C)
        L.linear_backward(ws.dnorm, gblk.wqkv, act.dqkv, act.xn1, blk.wqkv)  # (N, C)
        L.rmsnorm_backward(ws.dres, ws.dnorm, act.xn1, act.rms1, avg, ws.dtmp)  # (N, C)
        dx += ws.dres  # (N, C)

    def _backward(self, ws: Workspace, idx: np.ndarray, B: int, T: int) -> None:
        """Write every gradient into self.grad, given d loss/d logits (N, V) in ws.logits."""
        w, g = self.w, self.g
        L.linear_backward(ws.dx, g.lm_head, ws.logits, ws.layers[-1].out, w.lm_head)  # (N, C)
        for act, blk, gblk in zip(
            reversed(ws.layers), reversed(w.blocks), reversed(g.blocks), strict=True
        ):
            self._block_backward(ws.dx, act, blk, gblk, ws)  # (N, C)
        L.rmsnorm_backward(ws.dres, ws.dx, ws.norm0, ws.rms0, self._avg, ws.dtmp)  # (N, C)
        # d wte (V, C) and d wpe (block_size, C): one-hot products for small V, else a scatter
        if self._eye is not None:
            L.embedding_backward(g.wte, g.wpe, ws.dres, idx, self._eye, ws.tokens, ws.positions)
        else:
            L.embedding_backward_naive(g.wte, g.wpe, ws.dres, idx, B, T)

    # --- training -----------------------------------------------------------------------------
    def forward_backward(self, batch: list[list[int]]) -> float:
        idx, B, T, rows, targets, weight = self._prepare(batch)
        ws = self._forward(idx, B, T)
        self._stepped = False
        probs = ws.logits  # (N, V) the softmax overwrites the logits, then its gradient does
        loss = L.crossentropy_forward(probs, ws.logits, rows, targets, self._ones_v)
        if weight is None and self._eye is not None:  # every row scored, small V
            L.crossentropy_backward(ws.logits, probs, targets, self._eye)  # (N, V)
        else:
            L.crossentropy_backward_naive(ws.logits, probs, rows, targets, weight)  # (N, V)
        self._backward(ws, idx, B, T)
        return loss

    def adam_step(self, lr: float, t: int) -> None:
        """The reference's per-element Adam on the whole flat buffer at once:
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
        p -= lr * (m / (1 - b1^t)) / ((v / (1 - b2^t)) ** 0.5 + eps).

        NOTE: dividing by the bias corrections is written as multiplying by their inverses
        (lr folded in): the same numbers to a rounding, two array operations fewer. The
        scalars are 0-d arrays (see L.scalar).
        """
        b1, b2, eps, one_minus_b1, one_minus_b2, lr_t, inv_t = self._adam_scalars
        m, v, g, tmp, tmp2 = self.m, self.v, self.grad, self._tmp, self._tmp2
        lr_t[...] = lr / (1 - self.optim.beta1**t)
        inv_t[...] = 1 / (1 - self.optim.beta2**t)
        np.multiply(m, b1, m)
        np.multiply(g, one_minus_b1, tmp)
        np.add(m, tmp, m)  # m = b1 * m + (1 - b1) * g
        np.multiply(v, b2, v)
        np.multiply(g, g, tmp)
        np.multiply(tmp, one_minus_b2, tmp)
        np.add(v, tmp, v)  # v = b2 * v + (1 - b2) * g**2
        np.multiply(v, inv_t, tmp2)  # v_hat
        np.sqrt(tmp2, tmp2)
        np.add(tmp2, eps, tmp2)
        np.multiply(m, lr_t, tmp)  # lr * m_hat
        np.divide(tmp, tmp2, tmp)
        np.subtract(self.flat, tmp, self.flat)
        self._stepped = True

    # --- state ------------------------------------------------------------------------------
    def _tensors(self, buf: np.ndarray) -> dict[str, Tensor]:
        out = {}
        for name, shape in self.shapes.items():
            data = array("d")
            data.frombytes(self._view(buf, name).astype(np.float64).tobytes())
            out[name] = Tensor(shape, data)
        return out

    def _load(self, buf: np.ndarray, tensors: dict[str, Tensor], what: str) -> None:
        for name, shape in self.shapes.items():
            t = tensors.get(name)
            if t is None or tuple(t.shape) != shape:
                raise EngineError(f"{what} for {name} is missing or has the wrong shape")
            self._view(buf, name)[...] = np.frombuffer(t.data, dtype=np.float64).reshape(shape)

    def parameters(self) -> dict[str, Tensor]:
        return self._tensors(self.flat)

    def gradients(self) -> dict[str, Tensor]:
        if self._stepped:  # the original zeroes every gradient after the update
            return self._tensors(np.zeros_like(self.grad))
        return self._tensors(self.grad)

    def optimizer_state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return self._tensors(self.m), self._tensors(self.v)

    def load_optimizer_state(self, m: dict[str, Tensor], v: dict[str, Tensor]) -> None:
        self._load(self.m, m, "Adam's first moment")
        self._load(self.v, v, "Adam's second moment")

    # --- inference --------------------------------------------------------------------------
    def forward(self, tokens: list[int]) -> list[list[float]]:
        T = len(tokens)
        if not 1 <= T <= self.config.block_size:
            self._bad_length(T)
        ws = self._forward(np.array(tokens), 1, T)
        return ws.logits.astype(np.float64).tolist()  # (T, V)

    def loss(self, batch: list[list[int]]) -> float:
        idx, B, T, rows, targets, _ = self._prepare(batch)
        ws = self._forward(idx, B, T)
        return L.crossentropy_forward(ws.logits, ws.logits, rows, targets, self._ones_v)

    def attention(self, tokens: list[int]) -> list[list[list[list[float]]]]:
        T = len(tokens)
        if not 1 <= T <= self.config.block_size:
            self._bad_length(T)
        ws = self._forward(np.array(tokens), 1, T)
        # row t keeps positions s <= t only, as the reference reports it
        return [
            [
                [row[: t + 1] for t, row in enumerate(head.astype(np.float64).tolist())]
                for head in act.attn.probabilities()[0]
            ]
            for act in ws.layers
        ]

    def new_cache(self) -> KVCache:
        c = self.config
        shape = (c.n_layer, c.n_head, c.block_size, c.head_dim)
        return KVCache(
            k=np.zeros(shape, self.np_dtype),
            v=np.zeros(shape, self.np_dtype),
            att=np.zeros(shape[:3], self.np_dtype),
        )

    def decode(self, cache: KVCache, token_id: int, pos_id: int) -> list[float]:
        if cache.n >= self.config.block_size or not 0 <= pos_id < self.config.block_size:
            raise EngineError(f"cannot decode past block_size ({self.config.block_size}) positions")
        # the forward's own code on one position, attention reading the cache (1, V)
        ws = self._forward(np.array([token_id]), 1, 1, cache, pos_id)
        cache.n += 1
        return ws.logits[0].tolist()
