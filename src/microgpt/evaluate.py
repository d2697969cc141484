"""Held-out evaluation: mean loss per predicted token and bits per character.

Engine-agnostic; standard library only. A document is scored the way it is trained,
[BOS] + doc + [BOS]; one longer than the context is cut into consecutive windows of
block_size + 1 tokens that overlap by one token, so every token is predicted exactly once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .engine import Engine
from .tokenizer import Tokenizer


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy (nats) per predicted token
    bits_per_char: float  # loss / ln 2: each predicted token is one character (or the end BOS)
    tokens: int  # predicted tokens scored
    docs: int = 0  # documents scored


def windows(tokens: list[int], block_size: int) -> list[list[int]]:
    """Consecutive windows of at most block_size + 1 tokens, overlapping by one."""
    return [tokens[i : i + block_size + 1] for i in range(0, max(len(tokens) - 1, 1), block_size)]


def evaluate(
    engine: Engine, tokenizer: Tokenizer, docs: list[str], batch_size: int = 32
) -> Evaluation:
    """Score `docs` (characters outside the vocabulary raise TokenizerError)."""
    seqs = [w for doc in docs for w in windows(tokenizer.doc_tokens(doc), engine.config.block_size)]
    total, count = 0.0, 0
    for i in range(0, len(seqs), batch_size):
        batch = seqs[i : i + batch_size]
        n = sum(len(s) - 1 for s in batch)
        total += engine.loss(batch) * n
        count += n
    loss = total / count if count else float("nan")
    return Evaluation(loss=loss, bits_per_char=loss / math.log(2), tokens=count, docs=len(docs))
