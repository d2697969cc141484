"""Parameter initialisation in the original's key order and draw order. Standard library only.

The original draws `random.gauss(0, std)` element by element, row by row, for wte, wpe,
lm_head, then for each layer attn_wq, attn_wk, attn_wv, attn_wo, mlp_fc1, mlp_fc2. Every
engine starts from these exact floats, so every engine starts from the same model.
"""

from __future__ import annotations

import random

from .config import ModelConfig
from .tensor import Tensor


def param_shapes(config: ModelConfig, vocab_size: int) -> dict[str, tuple[int, int]]:
    """Name -> (nout, nin) of every matrix, in the original's order (the state_dict order)."""
    C = config.n_embd
    shapes = {"wte": (vocab_size, C), "wpe": (config.block_size, C), "lm_head": (vocab_size, C)}
    for i in range(config.n_layer):
        shapes[f"layer{i}.attn_wq"] = (C, C)
        shapes[f"layer{i}.attn_wk"] = (C, C)
        shapes[f"layer{i}.attn_wv"] = (C, C)
        shapes[f"layer{i}.attn_wo"] = (C, C)
        shapes[f"layer{i}.mlp_fc1"] = (4 * C, C)
        shapes[f"layer{i}.mlp_fc2"] = (C, 4 * C)
    return shapes


def num_params(config: ModelConfig, vocab_size: int) -> int:
    return sum(r * c for r, c in param_shapes(config, vocab_size).values())


def init_params(config: ModelConfig, vocab_size: int, rng: random.Random) -> dict[str, Tensor]:
    """Draw every weight from gauss(0, std), consuming `rng` exactly as the original does."""
    params = {}
    for name, (nout, nin) in param_shapes(config, vocab_size).items():
        # NOTE: the first revision draws attn_wo and mlp_fc2 with std 0; the draws still
        # advance the generator, so what follows (sampling) sees the same random stream.
        std = 0 if name.split(".")[-1] in config.zero_init else config.init_std
        rows = [[rng.gauss(0, std) for _ in range(nin)] for _ in range(nout)]
        params[name] = Tensor.from_rows(rows)
    return params
