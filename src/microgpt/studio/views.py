"""What the page shows, computed from the engine and nothing else. Standard library only.

Every number here comes from the engine interface (`forward`, `attention`, `parameters`) or
from the sampler's own softmax (`sample.probabilities`); the autograd graph is built by the
reference engine's own `Value`s from the current weights.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ..config import ModelConfig, OptimConfig
from ..engine import Engine
from ..sample import probabilities
from ..tensor import Tensor
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
    BOS): position t's row of probabilities is its prediction of tokens[t + 1]. A word
    longer than the context is cut as training cuts a document (`cut` says so).
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ViewError("temperature must be a number > 0")
    tokens = encode_word(tokenizer, text, engine.config.block_size)
    inputs, targets = tokens[:-1], tokens[1:]
    logits = engine.forward(inputs)  # (T, V)
    attention, attention_engine = attention_weights(engine, inputs)  # (L, NH, T, <=T)
    probs = [probabilities(row, temperature) for row in logits]  # (T, V)
    losses = [log_softmax_at(row, t) for row, t in zip(logits, targets, strict=True)]  # (T,)
    labels = [token_label(tokenizer, i) for i in range(tokenizer.vocab_size)]
    return {
        "text": tokenizer.decode(tokens),
        "word": text,
        "cut": len(text) + 2 > len(tokens),  # [BOS] word [BOS] did not fit the context
        "context": engine.config.block_size,
        "tokens": [token_label(tokenizer, t) for t in tokens],
        "inputs": [token_label(tokenizer, t) for t in inputs],
        "targets": [token_label(tokenizer, t) for t in targets],
        "vocab": labels,
        "temperature": temperature,
        "attention": attention,
        "attention_engine": attention_engine,
        "probs": probs,
        "argmax": [max(range(len(row)), key=row.__getitem__) for row in probs],
        "top": [top_tokens(row, labels) for row in probs],
        "losses": [finite(x) for x in losses],
        "loss": finite(sum(losses) / len(losses)),
    }


def top_tokens(probs: list[float], labels: list[str], k: int = 5) -> list[list]:
    """The k most likely next tokens, [label, probability], most likely first (ties: the
    lower token id first, as the argmax)."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:k]
    return [[labels[i], probs[i]] for i in order]


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


def embeddings_2d(engine: Engine, tokenizer: Tokenizer, previous=None) -> dict:
    """The token embeddings (wte rows) projected on their two principal components.

    `previous` is the components of the last picture (its `pcs`): a component pointing
    against its predecessor is flipped, so a replay of the pictures over training shows
    the points moving, not the axes flipping.
    """
    wte = engine.parameters()["wte"].rows()  # (V, C)
    V, C = len(wte), len(wte[0])
    mean = [sum(row[c] for row in wte) / V for c in range(C)]  # (C,)
    x = [[row[c] - mean[c] for c in range(C)] for row in wte]  # (V, C) centred
    cov = [[sum(r[i] * r[j] for r in x) / V for j in range(C)] for i in range(C)]  # (C, C)
    pcs = _top_eigvecs(cov, min(2, C))  # (2, C)
    while len(pcs) < 2:
        pcs.append([0.0] * C)
    if previous is not None and len(previous[0]) == C:
        pcs = [[-x for x in pc] if sum(a * b for a, b in zip(pc, old)) < 0 else pc
               for pc, old in zip(pcs, previous)]  # fmt: skip
    points = [[sum(r[c] * pc[c] for c in range(C)) for pc in pcs] for r in x]  # (V, 2)
    total = sum(cov[i][i] for i in range(C))
    explained = [
        sum(pc[i] * sum(cov[i][j] * pc[j] for j in range(C)) for i in range(C)) for pc in pcs
    ]
    return {
        "labels": [token_label(tokenizer, i) for i in range(V)],
        "points": points,
        "explained": [e / total if total else 0.0 for e in explained],
        "pcs": pcs,
    }


# --- the autograd graph ------------------------------------------------------------------------

OPS = {  # Value._op -> what it computes, for a learner
    "+": "add", "*": "multiply", "**-1": "1/x (softmax's 1/Σ exp)",
    "**-0.5": "1/√x (rmsnorm's 1/rms)", "**2": "square (ReLU²)", "exp": "exp",
    "log": "log (of the target's probability)", "relu": "ReLU: max(0, x)",
    "weight": "a weight (a leaf: Adam updates it)", "constant": "a constant (a leaf)",
}  # fmt: skip
MAX_INPUTS = 48  # inputs shown around the focus (a Σ of 256 terms shows its 48 biggest)


@dataclass
class AdamState:
    """What the next training step's Adam update needs: its moments, lr and step t."""

    optim: OptimConfig
    m: dict[str, Tensor]
    v: dict[str, Tensor]
    lr: float
    t: int  # 1-based, as Trainer.step passes it


def op_of(node, param_names: dict) -> str:
    """Which operation made a `Value`: its `_op` label; a leaf is a weight or a constant."""
    if node._op:
        return node._op
    return "weight" if id(node) in param_names else "constant"


def formula(op: str, terms: int = 0) -> str:
    if terms:
        return f"Σ of {terms} terms"
    if op.startswith("**"):
        k = op[2:]
        return {"-1": "1/x", "-0.5": "1/√x", "2": "x²"}.get(k, f"x^{k}")
    return {"+": "a + b", "*": "a × b", "exp": "exp(x)", "log": "log(x)",
            "relu": "max(0, x)"}.get(op, "")  # fmt: skip


class Graph:
    """The reference engine's computation graph of one position's loss, after backward.

    Built by the traced forward (studio.trace) on fresh Values of `params`, so every Value
    has a name. Nodes are numbered in topological order (children first; the loss is the
    last). As shown, a sum's chain of additions is one Σ node whose inputs are its terms;
    its partial sums are left out (each has the Σ's gradient).
    """

    def __init__(self, params: dict[str, Tensor], model: ModelConfig, tokenizer: Tokenizer,
                 text: str, position: int, adam: AdamState | None = None):  # fmt: skip
        from ..ref.autograd import topological_order
        from .trace import Trace, traced_sequence_losses, value_state_dict

        tokens = encode_word(tokenizer, text, model.block_size)
        n = len(tokens) - 1
        if not 0 <= position < n:
            raise ViewError(f"position {position} is not in {text!r}: pick 0 to {n - 1}")

        def label(i: int) -> str:
            return "BOS" if i == tokenizer.BOS else repr(tokenizer.uchars[i])

        state_dict = value_state_dict(params)
        self.param_names = {}
        for name, mat in state_dict.items():
            row = label if name in ("wte", "lm_head") else str
            for r, values in enumerate(mat):
                for c, p in enumerate(values):
                    self.param_names[id(p)] = (name, r, c, f"{name}[{row(r)}][{c}]")
        self.trace = Trace.empty(model)
        # The same forward as training, on fresh Values: the engine's own gradients stay.
        losses = traced_sequence_losses(tokens[: position + 2], state_dict, model, self.trace,
                                        label)  # fmt: skip
        loss = losses[position]
        loss.backward()
        self.nodes = topological_order(loss)
        self.index = {id(v): i for i, v in enumerate(self.nodes)}
        self.ops = [op_of(v, self.param_names) for v in self.nodes]
        self.tokens = tokens
        self.token_labels = [token_label(tokenizer, t) for t in tokens]
        self.position = position
        self.loss = loss.data
        self.adam = adam
        self.root = len(self.nodes) - 1
        # the graph as shown: Σ nodes take their terms as inputs; partial sums are folded
        sums, partials = self.trace.sums, self.trace.partials
        self.children: list[list[int]] = []
        for v in self.nodes:
            kids = sums[id(v)] if id(v) in sums else v._children
            self.children.append([self.index[id(c)] for c in kids])
        self.parents: list[list[int]] = [[] for _ in self.nodes]
        self.via = [-1] * len(self.nodes)  # the path back to the loss (breadth first)
        order, seen = [self.root], {self.root}
        for i in order:
            for c in self.children[i]:
                self.parents[c].append(i)
                if c not in seen:
                    seen.add(c)
                    self.via[c] = i
                    order.append(c)
        self.shown = seen
        self.folded = sum(1 for v in self.nodes if id(v) in partials)

    def summary(self) -> dict:
        counts = Counter(self.ops)
        matrices = Counter(self.param_names[id(v)][0] for v, op in zip(self.nodes, self.ops)
                           if op == "weight")  # fmt: skip
        return {
            "nodes": len(self.nodes),
            "shown": len(self.shown),
            "folded": self.folded,
            "ops": [[op, n, OPS.get(op, op)] for op, n in counts.most_common()],
            "params": sorted(matrices.items(), key=lambda kv: -kv[1]),
            "loss": self.loss,
            "root": self.root,
        }

    def name(self, i: int) -> str:
        v = self.nodes[i]
        if id(v) in self.param_names:
            return "weight " + self.param_names[id(v)][3]
        named = self.trace.names.get(id(v))
        if named is not None:
            return named
        return f"constant {v.data:g}" if not v._op else formula(v._op)

    def node(self, i: int) -> dict:
        v = self.nodes[i]
        terms = self.trace.sums.get(id(v))
        kids = self.children[i]
        if terms is not None:  # d Σ / d term = 1
            flows = [float(v.grad)] * len(kids)
        else:
            flows = [float(lg * v.grad) for lg in v._local_grads]
        return {
            "id": i,
            "name": self.name(i),
            "op": "Σ" if terms is not None else self.ops[i],
            "formula": formula(self.ops[i], len(terms) if terms is not None else 0),
            "data": finite(float(v.data)),
            "grad": finite(float(v.grad)),
            "children": kids,
            "flows": [finite(f) for f in flows],
            "used_by": len(self.parents[i]),
        }

    def path(self, i: int) -> list[int]:
        """The nodes from the loss to node i, each an input of the one before."""
        out = [i]
        while self.via[out[-1]] >= 0:
            out.append(self.via[out[-1]])
        return out[::-1]

    def view(self, focus: int | None = None) -> dict:
        """Node `focus` (default: the loss) with what it is made of (its inputs, and
        theirs), what uses it, and the path to it from the loss; a weight gets the Adam
        update the next step would make with this gradient."""
        i = self.root if focus is None else focus
        if i not in self.shown:
            raise ViewError(f"no node {i} in this graph: click a node shown")
        inputs = self.children[i]
        if len(inputs) > MAX_INPUTS:  # the largest gradient flows, in their order
            flows = self.node(i)["flows"]
            keep = sorted(range(len(inputs)), key=lambda k: -abs(flows[k] or 0))[:MAX_INPUTS]
            inputs = [inputs[k] for k in sorted(keep)]
        second = {c: self.children[c][:8] for c in inputs} if len(inputs) <= 4 else {}
        used_by = self.parents[i][:8]
        ids = {i, *inputs, *used_by, *self.path(i)}
        for kids in second.values():
            ids.update(kids)
        return {
            "tokens": self.token_labels,
            "position": self.position,
            "summary": self.summary(),
            "focus": i,
            "inputs": inputs,
            "inputs_total": len(self.children[i]),
            "second": {str(k): v for k, v in second.items()},
            "used_by": used_by,
            "used_by_total": len(self.parents[i]),
            "path": self.path(i),
            "nodes": [self.node(k) for k in sorted(ids)],
            "adam": self.adam_update(i),
        }

    def adam_update(self, i: int) -> dict | None:
        """For a weight: Adam's update if the next step's gradient were this position's
        (ref.model.RefEngine.adam_step's arithmetic, on the run's moments)."""
        v = self.nodes[i]
        if self.adam is None or id(v) not in self.param_names:
            return None
        name, r, c, label = self.param_names[id(v)]
        a, o = self.adam, self.adam.optim
        k = r * a.m[name].shape[1] + c
        m0, v0, g = a.m[name].data[k], a.v[name].data[k], v.grad
        m1 = o.beta1 * m0 + (1 - o.beta1) * g
        v1 = o.beta2 * v0 + (1 - o.beta2) * g**2
        m_hat = m1 / (1 - o.beta1**a.t)
        v_hat = v1 / (1 - o.beta2**a.t)
        step = a.lr * m_hat / (v_hat**0.5 + o.eps_adam)
        return {
            "weight": label, "data": v.data, "grad": float(g), "m": m0, "v": v0,
            "m_new": m1, "v_new": v1, "m_hat": m_hat, "v_hat": v_hat, "lr": a.lr, "t": a.t,
            "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps_adam,
            "update": -step, "new": v.data - step,
        }  # fmt: skip
