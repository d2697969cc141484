"""The reference forward pass, traced for the studio's pictures.

`traced_gpt` performs exactly the operations of ref.model.gpt, on the same `Value`s, in the
same order, and `traced_sequence_losses` those of ref.model.sequence_losses (tests check
their logits and losses against the reference's bit for bit). Beside the arithmetic they
record what the reference engine keeps to itself: each head's attention weights, and, for
the autograd graph, a name for every Value saying what it computes ("logit of 'e'",
"Σ exp", "1/Σ exp", "-log p('e')"). The names come from `Value._op` and from where in the
model a Value was made; nothing here changes a number. The reference engine stays the
original's algorithm and nothing else; this is where looking inside happens.

A sum in the model is Python's `sum`, a chain of additions ((0 + t0) + t1) + ...; the trace
records each chain's terms (`Trace.sums`) so the graph can show it as one Σ node, and marks
its partial sums (`Trace.partials`), whose gradient is the Σ's own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import ModelConfig
from ..ref.autograd import Value
from ..ref.model import linear, rmsnorm, softmax
from ..tensor import Tensor


@dataclass
class Trace:
    """What a traced forward saw: attention[layer][head] holds one row of weights per
    position fed (row t: how much position t attends to positions 0..t); names maps
    id(Value) to what that Value is; sums maps id(Σ) to its terms, in order."""

    attention: list[list[list[list[float]]]]
    names: dict[int, str] = field(default_factory=dict)
    sums: dict[int, list[Value]] = field(default_factory=dict)
    partials: set[int] = field(default_factory=set)
    # NOTE: names are keyed by id(); a named Value the loss does not use (the probability
    # of every other token) would be freed and its id reused, so the trace keeps them alive
    kept: list[Value] = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, config: ModelConfig) -> Trace:
        return cls([[[] for _ in range(config.n_head)] for _ in range(config.n_layer)])

    def name(self, values, label: str) -> None:
        """Name a Value, or a list of them (label[i] for each)."""
        if isinstance(values, Value):
            self.kept.append(values)
            self.names.setdefault(id(values), label)
        else:
            for i, v in enumerate(values):
                self.kept.append(v)
                self.names.setdefault(id(v), f"{label}[{i}]")

    def sum_of(self, total: Value, n: int, label: str,
               term: Callable[[int], str] | None = None) -> list[Value]:  # fmt: skip
        """`total` is Python's sum of n Values, ((0 + t0) + t1) + ... + t(n-1): name it and
        its terms, record the terms, mark the partial sums. Returns the terms."""
        terms, node = [], total
        for _ in range(n - 1):  # p_i = p_(i-1) + t_i
            if node is not total:
                self.partials.add(id(node))
            node, t = node._children
            terms.append(t)
        if node is not total:
            self.partials.add(id(node))
        first, zero = node._children  # p_0 = t0 + 0: sum() starts from the int 0
        terms.append(first)
        terms.reverse()
        self.sums[id(total)] = terms
        self.name(total, label)
        self.name(zero, "0, where the sum starts")
        if term is not None:
            for j, t in enumerate(terms):
                self.name(t, term(j))
        return terms


# --- the reference's building blocks, named -------------------------------------------------


def _linear(x, w, trace: Trace, out: str, weight: str, inp: str, row=str):
    """ref.model.linear, naming each output (a Σ) and its products weight × input."""
    y = linear(x, w)
    for i, yi in enumerate(y):
        trace.sum_of(yi, len(x), f"{out}[{i}]",
                     lambda j, i=i: f"{weight}[{row(i)}][{j}] × {inp}[{j}]")  # fmt: skip
    return y


def _rmsnorm(x, trace: Trace, out: str, inp: str):
    """ref.model.rmsnorm, naming x[i] × 1/rms, 1/rms, the mean square and Σ squares."""
    y = rmsnorm(x)
    trace.name(y, out)
    scale = y[0]._children[1]  # x[i] * scale
    ms_eps = scale._children[0]  # (ms + 1e-5) ** -0.5
    ms, eps = ms_eps._children
    sum_sq, inv_n = ms._children  # sum(...) / n is sum(...) * (1/n)
    trace.name(scale, f"1/rms of {inp}")
    trace.name(ms_eps, f"mean square + ε of {inp}")
    trace.name(eps, "ε = 1e-5")
    trace.name(ms, f"mean square of {inp}")
    trace.name(inv_n, f"1/{len(x)}")
    trace.sum_of(sum_sq, len(x), f"Σ squares of {inp}", lambda j: f"{inp}[{j}]²")
    return y


def _softmax(logits, trace: Trace, prob: Callable[[int], str], logit: Callable[[int], str],
             what: str):  # fmt: skip
    """ref.model.softmax, naming each probability, exp, 1/Σ exp and Σ exp."""
    p = softmax(logits)
    total = p[0]._children[1]._children[0]  # e / total is e * total**-1, one per e
    exps = trace.sum_of(total, len(logits), f"Σ exp ({what})")
    for i, (pi, e) in enumerate(zip(p, exps, strict=True)):
        trace.name(pi, prob(i))
        trace.name(pi._children[1], f"1/Σ exp ({what})")
        shifted = e._children[0]  # (logit - max).exp()
        trace.name(e, f"exp({logit(i)} − max)")
        trace.name(shifted, f"{logit(i)} − max")
        trace.name(shifted._children[1], f"−max ({what}, for stability)")
    return p


def traced_gpt(token_id, pos_id, keys, values, state_dict, config: ModelConfig, trace: Trace,
               label: Callable[[int], str] = str):  # fmt: skip
    """ref.model.gpt, recording into `trace` (the arithmetic is gpt's, line for line).
    `label` names a token id ("'e'", "BOS")."""
    n_layer, n_head, head_dim = config.n_layer, config.n_head, config.head_dim
    at = f"@{pos_id}"  # the position a name belongs to
    tok_emb = state_dict["wte"][token_id]
    pos_emb = state_dict["wpe"][pos_id]
    x = [t + p for t, p in zip(tok_emb, pos_emb)]
    trace.name(x, f"embedding of {label(token_id)}{at}")
    x = _rmsnorm(x, trace, f"x{at} (normed embedding)", f"embedding{at}")

    for li in range(n_layer):
        L = f"layer {li} "
        x_residual = x
        x = _rmsnorm(x, trace, f"{L}attention input{at}", f"{L}x{at}")
        q = _linear(x, state_dict[f"layer{li}.attn_wq"], trace, f"{L}query{at}",
                    f"layer{li}.attn_wq", f"{L}attention input{at}")  # fmt: skip
        k = _linear(x, state_dict[f"layer{li}.attn_wk"], trace, f"{L}key{at}",
                    f"layer{li}.attn_wk", f"{L}attention input{at}")  # fmt: skip
        v = _linear(x, state_dict[f"layer{li}.attn_wv"], trace, f"{L}value{at}",
                    f"layer{li}.attn_wv", f"{L}attention input{at}")  # fmt: skip
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(n_head):
            H = f"{L}head {h} "
            hs = h * head_dim
            q_h = q[hs : hs + head_dim]
            k_h = [ki[hs : hs + head_dim] for ki in keys[li]]
            v_h = [vi[hs : hs + head_dim] for vi in values[li]]
            attn_logits = [
                sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim**0.5
                for t in range(len(k_h))
            ]
            for s, score in enumerate(attn_logits):
                dot, inv_sqrt = score._children  # q·k / √d is q·k * d**-0.5
                trace.name(score, f"{H}score {pos_id}→{s} (q·k/√{head_dim})")
                trace.name(inv_sqrt, f"1/√{head_dim}")
                trace.sum_of(dot, head_dim, f"{H}q{at}·k@{s}",
                             lambda j, s=s, H=H: f"{H}q{at}[{j}] × k@{s}[{j}]")  # fmt: skip
            attn_weights = _softmax(attn_logits, trace,
                                    lambda s, H=H: f"{H}attention {pos_id}→{s}",
                                    lambda s, H=H: f"{H}score {pos_id}→{s}",
                                    f"{H}attention{at}")  # fmt: skip
            trace.attention[li][h].append([w.data for w in attn_weights])
            head_out = [
                sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)
            ]
            for j, o in enumerate(head_out):
                trace.sum_of(o, len(v_h), f"{H}output{at}[{j}]",
                             lambda s, H=H, j=j: f"{H}attention {pos_id}→{s} × value@{s}[{j}]")
            x_attn.extend(head_out)
        trace.name(x_attn, f"{L}heads' outputs{at}")
        x = _linear(x_attn, state_dict[f"layer{li}.attn_wo"], trace, f"{L}attention out{at}",
                    f"layer{li}.attn_wo", f"{L}heads' outputs{at}")  # fmt: skip
        x = [a + b for a, b in zip(x, x_residual)]
        trace.name(x, f"{L}x{at} after attention (+ residual)")
        x_residual = x
        x = _rmsnorm(x, trace, f"{L}MLP input{at}", f"{L}x{at} after attention")
        x = _linear(x, state_dict[f"layer{li}.mlp_fc1"], trace, f"{L}MLP hidden{at}",
                    f"layer{li}.mlp_fc1", f"{L}MLP input{at}")  # fmt: skip
        if config.mlp == "relu2":
            x = [xi.relu() ** 2 for xi in x]
            for xi in x:
                trace.name(xi._children[0], "ReLU")
            trace.name(x, f"{L}ReLU² of MLP hidden{at}")
        else:
            x = [xi.relu() for xi in x]
            trace.name(x, f"{L}ReLU of MLP hidden{at}")
        x = _linear(x, state_dict[f"layer{li}.mlp_fc2"], trace, f"{L}MLP out{at}",
                    f"layer{li}.mlp_fc2", f"{L}ReLU of MLP hidden{at}")  # fmt: skip
        x = [a + b for a, b in zip(x, x_residual)]
        trace.name(x, f"{L}x{at} after the MLP (+ residual)")

    logits = _linear(x, state_dict["lm_head"], trace, f"logit{at}", "lm_head", f"final x{at}",
                     row=label)  # fmt: skip
    for i, logit in enumerate(logits):  # named by the token they score
        trace.names[id(logit)] = f"logit of {label(i)}{at}"
    return logits


def traced_sequence_losses(tokens, state_dict, config: ModelConfig, trace: Trace,
                           label: Callable[[int], str] = str):  # fmt: skip
    """ref.model.sequence_losses, traced: the per-position losses as Values."""
    n = len(tokens) - 1
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    losses = []
    for pos_id in range(n):
        token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
        logits = traced_gpt(token_id, pos_id, keys, values, state_dict, config, trace, label)
        at = f"@{pos_id}"
        probs = _softmax(logits, trace, lambda i, at=at: f"p({label(i)}){at}",
                         lambda i, at=at: f"logit of {label(i)}{at}", f"logits{at}")  # fmt: skip
        loss_t = -probs[target_id].log()
        log_p = loss_t._children[0]  # -x is x * -1
        trace.name(loss_t, f"loss{at} = −log p({label(target_id)})")
        trace.name(log_p, f"log p({label(target_id)}){at}")
        trace.name(loss_t._children[1], "−1")
        losses.append(loss_t)
    return losses


def value_state_dict(params: dict[str, Tensor]) -> dict[str, list[list[Value]]]:
    """Fresh Values of the weights, as the reference engine holds them."""
    return {name: [[Value(x) for x in row] for row in t.rows()] for name, t in params.items()}


def reference_attention(
    params: dict[str, Tensor], config: ModelConfig, tokens: list[int]
) -> list[list[list[list[float]]]]:
    """Attention weights [layer][head][t][s] of the reference forward over `tokens`."""
    state_dict = value_state_dict(params)
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    trace = Trace.empty(config)
    for pos, tok in enumerate(tokens):
        traced_gpt(tok, pos, keys, values, state_dict, config, trace)
    return trace.attention
