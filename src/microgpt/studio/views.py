"""What the page shows, computed from the engine and nothing else. Standard library only.

Every number here comes from the engine interface (`forward`, `attention`, `parameters`) or
from the sampler's own softmax (`sample.probabilities`); the autograd graph is built by the
reference engine's own `Value`s from the current weights.
"""

from __future__ import annotations

import math
from collections import Counter

from ..engine import Engine
from ..sample import probabilities
from ..tokenizer import Tokenizer, TokenizerError


class ViewError(ValueError):
    """A request the views cannot answer; the message is shown to the user."""


def finite(x: float) -> float | None:
    """JSON has no NaN or infinity: send null instead."""
    return x if math.isfinite(x) else None


def encode_word(tokenizer: Tokenizer, text: str, block_size: int) -> list[int]:
    """[BOS] + text + [BOS], cut to block_size + 1 tokens as training cuts a document."""
    try:
        tokens = tokenizer.doc_tokens(text)
    except TokenizerError as e:
        raise ViewError(str(e)) from None
    return tokens[: block_size + 1]


def token_label(tokenizer: Tokenizer, token_id: int) -> str:
    return "BOS" if token_id == tokenizer.BOS else tokenizer.uchars[token_id]


def log_softmax_at(logits: list[float], target: int) -> float:
    """-log softmax(logits)[target], computed as Engine.loss does (max-shifted log-sum-exp)."""
    top = max(logits)
    log_z = top + math.log(sum(math.exp(x - top) for x in logits))
    return log_z - logits[target]


def attention_weights(engine: Engine, tokens: list[int]) -> tuple[list, str]:
    """The engine's attention weights; for an engine that does not expose them (the
    reference engine keeps them to itself), the traced reference forward's on the same
    weights (the same function, so the same numbers)."""
    try:
        return engine.attention(tokens), engine.name
    except NotImplementedError:
        from .trace import reference_attention

        return reference_attention(engine.parameters(), engine.config, tokens), "ref"


def look_inside(engine: Engine, tokenizer: Tokenizer, text: str, temperature: float) -> dict:
    """Attention weights, next-token probabilities and per-position loss for one word.

    The model reads tokens[:-1] (BOS + the word) and is scored on tokens[1:] (the word +
    BOS): position t's row of probabilities is its prediction of tokens[t + 1].
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ViewError("temperature must be a number > 0")
    tokens = encode_word(tokenizer, text, engine.config.block_size)
    inputs, targets = tokens[:-1], tokens[1:]
    logits = engine.forward(inputs)  # (T, V)
    attention, attention_engine = attention_weights(engine, inputs)  # (L, NH, T, <=T)
    probs = [probabilities(row, temperature) for row in logits]  # (T, V)
    losses = [log_softmax_at(row, t) for row, t in zip(logits, targets, strict=True)]  # (T,)
    return {
        "text": tokenizer.decode(tokens),
        "tokens": [token_label(tokenizer, t) for t in tokens],
        "inputs": [token_label(tokenizer, t) for t in inputs],
        "targets": [token_label(tokenizer, t) for t in targets],
        "vocab": [token_label(tokenizer, i) for i in range(tokenizer.vocab_size)],
        "temperature": temperature,
        "attention": attention,
        "attention_engine": attention_engine,
        "probs": probs,
        "argmax": [max(range(len(row)), key=row.__getitem__) for row in probs],
        "losses": [finite(x) for x in losses],
        "loss": finite(sum(losses) / len(losses)),
    }


# --- embeddings ---------------------------------------------------------------------------------


def _top_eigvecs(cov: list[list[float]], k: int, iters: int = 200) -> list[list[float]]:
    """The k leading eigenvectors of a symmetric PSD matrix: power iteration with deflation.
    Signs are fixed (largest-magnitude entry positive) so the picture does not flip."""
    n = len(cov)
    a = [row[:] for row in cov]
    vecs = []
    for j in range(k):
        v = [1.0 / math.sqrt(n) + 1e-3 * ((i * 7 + j) % 5) for i in range(n)]
        lam = 0.0
        for _ in range(iters):
            w = [sum(a[i][c] * v[c] for c in range(n)) for i in range(n)]
            norm = math.sqrt(sum(x * x for x in w))
            if norm == 0:
                break
            w = [x / norm for x in w]
            done = max(abs(x - y) for x, y in zip(w, v, strict=True)) < 1e-12
            v, lam = w, norm
            if done:
                break
        big = max(range(n), key=lambda i: abs(v[i]))
        if v[big] < 0:
            v = [-x for x in v]
        vecs.append(v)
        a = [[a[i][c] - lam * v[i] * v[c] for c in range(n)] for i in range(n)]
    return vecs


def embeddings_2d(engine: Engine, tokenizer: Tokenizer) -> dict:
    """The token embeddings (wte rows) projected on their two principal components."""
    wte = engine.parameters()["wte"].rows()  # (V, C)
    V, C = len(wte), len(wte[0])
    mean = [sum(row[c] for row in wte) / V for c in range(C)]  # (C,)
    x = [[row[c] - mean[c] for c in range(C)] for row in wte]  # (V, C) centred
    cov = [[sum(r[i] * r[j] for r in x) / V for j in range(C)] for i in range(C)]  # (C, C)
    pcs = _top_eigvecs(cov, min(2, C))  # (2, C)
    while len(pcs) < 2:
        pcs.append([0.0] * C)
    points = [[sum(r[c] * pc[c] for c in range(C)) for pc in pcs] for r in x]  # (V, 2)
    total = sum(cov[i][i] for i in range(C))
    explained = [
        sum(pc[i] * sum(cov[i][j] * pc[j] for j in range(C)) for i in range(C)) for pc in pcs
    ]
    return {
        "labels": [token_label(tokenizer, i) for i in range(V)],
        "points": points,
        "explained": [e / total if total else 0.0 for e in explained],
    }


# --- the autograd graph ------------------------------------------------------------------------


def op_of(node, param_names: dict[int, str]) -> str:
    """Which operation made a `Value`: its `_op` label; a leaf is a weight or a constant."""
    if node._op:
        return node._op if not node._op.startswith("**") else "pow"
    return "param" if id(node) in param_names else "const"


class Graph:
    """The reference engine's computation graph of one position's loss, after backward.

    Nodes are numbered in topological order (children first); the loss is the last.
    """

    def __init__(self, engine: Engine, tokenizer: Tokenizer, text: str, position: int):
        from ..ref.autograd import Value, topological_order
        from ..ref.model import sequence_losses

        tokens = encode_word(tokenizer, text, engine.config.block_size)
        n = len(tokens) - 1
        if not 0 <= position < n:
            raise ViewError(f"position must be between 0 and {n - 1} for {text!r}")
        state_dict = {
            name: [[Value(x) for x in row] for row in t.rows()]
            for name, t in engine.parameters().items()
        }
        self.param_names = {
            id(p): f"{name}[{r}][{c}]"
            for name, mat in state_dict.items()
            for r, row in enumerate(mat)
            for c, p in enumerate(row)
        }
        # The same forward as training, on fresh Values: the engine's own gradients stay.
        loss = sequence_losses(tokens[: position + 2], state_dict, engine.config)[position]
        loss.backward()
        self.nodes = topological_order(loss)
        self.index = {id(v): i for i, v in enumerate(self.nodes)}
        self.ops = [op_of(v, self.param_names) for v in self.nodes]
        self.tokens = tokens
        self.position = position
        self.loss = loss.data

    def summary(self) -> dict:
        counts = Counter(self.ops)
        names = [self.param_names[id(v)] for v, op in zip(self.nodes, self.ops, strict=True)
                 if op == "param"]  # fmt: skip
        matrices = Counter(name.split("[")[0] for name in names)
        return {
            "nodes": len(self.nodes),
            "ops": sorted(counts.items(), key=lambda kv: -kv[1]),
            "params": sorted(matrices.items(), key=lambda kv: -kv[1]),
            "loss": self.loss,
            "root": len(self.nodes) - 1,
        }

    def node(self, i: int) -> dict:
        v = self.nodes[i]
        label = self.param_names.get(id(v), "")
        return {
            "id": i,
            "op": self.ops[i],
            "label": label,
            "data": finite(float(v.data)),
            "grad": finite(float(v.grad)),
            "children": [self.index[id(c)] for c in v._children],
        }

    def subgraph(self, root: int, depth: int = 3, max_nodes: int = 40) -> list[dict]:
        """Nodes reachable from `root` within `depth` edges, breadth first, at most
        `max_nodes`; a node whose children are not all included can be expanded later."""
        if not 0 <= root < len(self.nodes):
            raise ViewError(f"no node {root} in this graph")
        seen, order, frontier = {root}, [root], [root]
        for _ in range(depth):
            nxt = []
            for i in frontier:
                for c in self.node(i)["children"]:
                    if c not in seen and len(order) < max_nodes:
                        seen.add(c)
                        order.append(c)
                        nxt.append(c)
            frontier = nxt
        return [self.node(i) for i in order]
