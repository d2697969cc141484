"""The reference forward pass, traced for the studio's pictures.

`traced_gpt` performs exactly the operations of ref.model.gpt, on the same `Value`s, in the
same order (tests/test_studio_api.py checks its logits against gpt's bit for bit), and also
records what the reference engine keeps to itself: each head's attention weights, and a
name for the Values a learner wants to find in the autograd graph. The reference engine
stays the original's algorithm and nothing else; this is where looking inside happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ModelConfig
from ..ref.autograd import Value
from ..ref.model import linear, rmsnorm, softmax
from ..tensor import Tensor


@dataclass
class Trace:
    """What a traced forward saw: attention[layer][head] holds one row of weights per
    position fed (row t: how much position t attends to positions 0..t), and names maps
    id(Value) to what that Value is."""

    attention: list[list[list[list[float]]]]
    names: dict[int, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, config: ModelConfig) -> Trace:
        return cls([[[] for _ in range(config.n_head)] for _ in range(config.n_layer)])

    def name(self, values, label: str) -> None:
        """Name a Value, or a list of them (label[i] for each)."""
        if isinstance(values, Value):
            self.names.setdefault(id(values), label)
        else:
            for i, v in enumerate(values):
                self.names.setdefault(id(v), f"{label}[{i}]")


def traced_gpt(token_id, pos_id, keys, values, state_dict, config: ModelConfig, trace: Trace):
    """ref.model.gpt, recording into `trace` (the arithmetic is gpt's, line for line)."""
    n_layer, n_head, head_dim = config.n_layer, config.n_head, config.head_dim
    tok_emb = state_dict["wte"][token_id]
    pos_emb = state_dict["wpe"][pos_id]
    x = [t + p for t, p in zip(tok_emb, pos_emb)]
    trace.name(x, f"embedding (token + position {pos_id})")
    x = rmsnorm(x)
    trace.name(x, "rmsnorm of the embedding")

    for li in range(n_layer):
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, state_dict[f"layer{li}.attn_wq"])
        k = linear(x, state_dict[f"layer{li}.attn_wk"])
        v = linear(x, state_dict[f"layer{li}.attn_wv"])
        for vec, what in ((x, "rmsnorm"), (q, "query"), (k, "key"), (v, "value")):
            trace.name(vec, f"layer {li} {what} at position {pos_id}")
        keys[li].append(k)
        values[li].append(v)
        x_attn = []
        for h in range(n_head):
            hs = h * head_dim
            q_h = q[hs : hs + head_dim]
            k_h = [ki[hs : hs + head_dim] for ki in keys[li]]
            v_h = [vi[hs : hs + head_dim] for vi in values[li]]
            attn_logits = [
                sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim**0.5
                for t in range(len(k_h))
            ]
            attn_weights = softmax(attn_logits)
            trace.attention[li][h].append([w.data for w in attn_weights])
            trace.name(attn_logits, f"layer {li} head {h} score of position {pos_id} for")
            trace.name(attn_weights, f"layer {li} head {h} attention of position {pos_id} to")
            head_out = [
                sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)
            ]
            x_attn.extend(head_out)
        x = linear(x_attn, state_dict[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        trace.name(x, f"layer {li} after attention (residual)")
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, state_dict[f"layer{li}.mlp_fc1"])
        trace.name(x, f"layer {li} MLP hidden")
        if config.mlp == "relu2":
            x = [xi.relu() ** 2 for xi in x]
        else:
            x = [xi.relu() for xi in x]
        x = linear(x, state_dict[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, x_residual)]
        trace.name(x, f"layer {li} after the MLP (residual)")

    logits = linear(x, state_dict["lm_head"])
    return logits


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
