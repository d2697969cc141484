"""The reference engine: the original microgpt's model, loss and Adam on scalar `Value`s.

Read it beside the original file: the names (state_dict, linear, softmax, rmsnorm, gpt,
keys, values, m, v, ...) and every floating-point operation are the original's, in the
original's order, so that the losses and samples come out bit for bit the same. Do not
"simplify" the arithmetic: `sum(...) / len(x)`, `(ms + 1e-5) ** -0.5` and
`(1 / n) * sum(losses)` are exactly the operations whose rounding the reference outputs
record. Standard library only.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

from ..config import ModelConfig, OptimConfig
from ..engine import Engine
from ..init import num_params
from ..tensor import Tensor
from .autograd import Value

# Define the model architecture: a function mapping tokens and parameters to logits over
# what comes next. Follow GPT-2, blessed among the GPTs, with minor differences:
# layernorm -> rmsnorm, no biases, GeLU -> ReLU (ReLU squared in the first revision).


def linear(x, w):
    return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]


def softmax(logits):
    max_val = max(val.data for val in logits)
    exps = [(val - max_val).exp() for val in logits]
    total = sum(exps)
    return [e / total for e in exps]


def rmsnorm(x):
    ms = sum(xi * xi for xi in x) / len(x)
    scale = (ms + 1e-5) ** -0.5
    return [xi * scale for xi in x]


def gpt(token_id, pos_id, keys, values, state_dict, config: ModelConfig):
    n_layer, n_head, head_dim = config.n_layer, config.n_head, config.head_dim
    tok_emb = state_dict["wte"][token_id]  # token embedding
    pos_emb = state_dict["wpe"][pos_id]  # position embedding
    x = [t + p for t, p in zip(tok_emb, pos_emb)]  # joint token and position embedding
    x = rmsnorm(x)  # note: not redundant due to backward pass via the residual connection

    for li in range(n_layer):
        # 1) Multi-head Attention block
        x_residual = x
        x = rmsnorm(x)
        q = linear(x, state_dict[f"layer{li}.attn_wq"])
        k = linear(x, state_dict[f"layer{li}.attn_wk"])
        v = linear(x, state_dict[f"layer{li}.attn_wv"])
        keys[li].append(k)  # the KV cache: every earlier position's keys and values
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
            head_out = [
                sum(attn_weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim)
            ]
            x_attn.extend(head_out)
        x = linear(x_attn, state_dict[f"layer{li}.attn_wo"])
        x = [a + b for a, b in zip(x, x_residual)]
        # 2) MLP block
        x_residual = x
        x = rmsnorm(x)
        x = linear(x, state_dict[f"layer{li}.mlp_fc1"])
        if config.mlp == "relu2":
            x = [xi.relu() ** 2 for xi in x]  # first revision: ReLU squared
        else:
            x = [xi.relu() for xi in x]
        x = linear(x, state_dict[f"layer{li}.mlp_fc2"])
        x = [a + b for a, b in zip(x, x_residual)]

    logits = linear(x, state_dict["lm_head"])
    return logits


def sequence_losses(tokens, state_dict, config: ModelConfig):
    """Forward one token sequence, returning the per-position losses as Values."""
    n = len(tokens) - 1
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    losses = []
    for pos_id in range(n):
        token_id, target_id = tokens[pos_id], tokens[pos_id + 1]
        logits = gpt(token_id, pos_id, keys, values, state_dict, config)
        probs = softmax(logits)
        loss_t = -probs[target_id].log()
        losses.append(loss_t)
    return losses


class KVCache(NamedTuple):
    """The original's `keys` and `values`: per layer, every earlier position's k and v."""

    keys: list[list[list[Value]]]
    values: list[list[list[Value]]]


class RefEngine(Engine):
    """The original program's arithmetic behind the engine interface."""

    name = "ref"

    def __init__(
        self,
        config: ModelConfig,
        optim: OptimConfig,
        vocab_size: int,
        params: dict[str, Tensor],
        dtype: str = "float64",
    ):
        super().__init__(config, optim, vocab_size, params, dtype)
        self.state_dict = {
            name: [[Value(x) for x in row] for row in t.rows()] for name, t in params.items()
        }
        # flatten params into a single list[Value], in state_dict order
        self.params = [p for mat in self.state_dict.values() for row in mat for p in row]
        self.m = [0.0] * len(self.params)  # first moment buffer
        self.v = [0.0] * len(self.params)  # second moment buffer

    # a Value with its two tuples and floats takes about 240 bytes
    VALUE_BYTES = 240

    @classmethod
    def memory_estimate(cls, config, vocab_size, batch_size, dtype):
        """Every weight is a Value, and a step builds a graph of about two Values per
        multiply-add of every position (plus attention's and the elementwise ones)."""
        C, L, T, V = config.n_embd, config.n_layer, config.block_size, vocab_size
        per_position = 2 * (12 * C * C * L + V * C) + 4 * T * C * L + 40 * C * L + 10 * V
        graph = batch_size * T * per_position
        return (graph + num_params(config, V)) * cls.VALUE_BYTES

    def forward_backward(self, batch):
        for p in self.params:
            p.grad = 0
        losses = []
        for tokens in batch:
            losses.extend(sequence_losses(tokens, self.state_dict, self.config))
        # NOTE: for one document this is the original's `(1 / n) * sum(losses)`; a batch is
        # the mean over all of its predicted tokens, the same expression over a longer list.
        n = len(losses)
        loss = (1 / n) * sum(losses)  # final average loss over the document sequence(s)
        loss.backward()
        return loss.data

    def adam_step(self, lr, t):
        beta1, beta2, eps_adam = self.optim.beta1, self.optim.beta2, self.optim.eps_adam
        m, v = self.m, self.v
        for i, p in enumerate(self.params):
            m[i] = beta1 * m[i] + (1 - beta1) * p.grad
            v[i] = beta2 * v[i] + (1 - beta2) * p.grad**2
            m_hat = m[i] / (1 - beta1**t)
            v_hat = v[i] / (1 - beta2**t)
            p.data -= lr * m_hat / (v_hat**0.5 + eps_adam)
            p.grad = 0

    # --- state ------------------------------------------------------------------------------
    def _tensors(self, get) -> dict[str, Tensor]:
        out = {}
        for name, mat in self.state_dict.items():
            flat = array("d", (float(get(p)) for row in mat for p in row))
            out[name] = Tensor((len(mat), len(mat[0])), flat)
        return out

    def parameters(self):
        return self._tensors(lambda p: p.data)

    def gradients(self):
        return self._tensors(lambda p: p.grad)

    def _flat_to_tensors(self, flat) -> dict[str, Tensor]:
        out, i = {}, 0
        for name, mat in self.state_dict.items():
            size = len(mat) * len(mat[0])
            out[name] = Tensor((len(mat), len(mat[0])), array("d", flat[i : i + size]))
            i += size
        return out

    def optimizer_state(self):
        return self._flat_to_tensors(self.m), self._flat_to_tensors(self.v)

    def load_optimizer_state(self, m, v):
        self.m = [x for name in self.state_dict for x in m[name].data]
        self.v = [x for name in self.state_dict for x in v[name].data]

    # --- inference ----------------------------------------------------------------------------
    def forward(self, tokens):
        cache = self.new_cache()
        return [self.decode(cache, tok, pos) for pos, tok in enumerate(tokens)]

    def new_cache(self) -> KVCache:
        n_layer = self.config.n_layer
        return KVCache([[] for _ in range(n_layer)], [[] for _ in range(n_layer)])

    def decode(self, cache: KVCache, token_id, pos_id):
        logits = gpt(token_id, pos_id, cache.keys, cache.values, self.state_dict, self.config)
        return [logit.data for logit in logits]
