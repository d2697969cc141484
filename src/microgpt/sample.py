"""Sampling: may the model babble back to us. Engine-agnostic; standard library only.

The engine gives logits; turning them into probabilities and drawing a token happens here,
once, for every engine. The softmax below performs the same float operations as the
original's `softmax([l / temperature for l in logits])` on Values, so with the reference
engine the draws (and samples) are bit for bit the original's.
"""

from __future__ import annotations

import math
import random

from .engine import Engine
from .tokenizer import Tokenizer


def probabilities(logits: list[float], temperature: float) -> list[float]:
    """softmax(logits / temperature) with the original's operation order.

    NOTE: Value division is `self * other**-1`, and `sum` over Values is a left-to-right
    chain of additions starting from 0; the explicit loop keeps that order on every Python
    (3.12's built-in float `sum` is compensated and would round differently).
    """
    inv_t = temperature**-1
    scaled = [logit * inv_t for logit in logits]
    max_val = max(scaled)
    exps = [math.exp(s - max_val) for s in scaled]
    total = 0
    for e in exps:
        total = total + e
    inv_total = total**-1
    return [e * inv_total for e in exps]


def generate(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    temperature: float,
    max_tokens: int | None = None,
) -> list[int]:
    """One sample: start from BOS, draw until BOS or `max_tokens` (default block_size)."""
    block_size = engine.config.block_size
    max_tokens = block_size if max_tokens is None else min(max_tokens, block_size)
    cache = engine.new_cache()
    token_id = tokenizer.BOS
    out = []
    for pos_id in range(max_tokens):
        logits = engine.decode(cache, token_id, pos_id)
        if temperature == 0:  # greedy: the most likely token (the first one on a tie)
            token_id = max(range(len(logits)), key=logits.__getitem__)
        else:
            probs = probabilities(logits, temperature)
            token_id = rng.choices(range(tokenizer.vocab_size), weights=probs)[0]
        if token_id == tokenizer.BOS:
            break
        out.append(token_id)
    return out


def sample_lines(
    engine: Engine, tokenizer: Tokenizer, rng: random.Random, num_samples: int, temperature: float
):
    """Yield the original's `sample  k: text` lines, one sample at a time."""
    for sample_idx in range(num_samples):
        text = tokenizer.decode(generate(engine, tokenizer, rng, temperature))
        yield f"sample {sample_idx + 1:2d}: {text}"
