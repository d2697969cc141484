"""Held-out evaluation: mean loss per predicted token and bits per character.

Engine-agnostic; standard library only. A document is scored the way it is trained,
[BOS] + doc + [BOS]; one longer than the context is cut into consecutive windows of
block_size + 1 tokens that overlap by one token, so every token is predicted exactly once.
The windows are made a batch at a time, from the documents' characters (data.Documents),
so scoring a whole file takes the memory of one batch, not of the file's tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .data import Documents
from .engine import Engine
from .tokenizer import Tokenizer, TokenizerError


@dataclass
class Evaluation:
    loss: float  # mean cross-entropy (nats) per predicted token
    bits_per_char: float  # loss / ln 2: each predicted token is one character (or the end BOS)
    tokens: int  # predicted tokens scored
    docs: int = 0  # documents scored


def spans(n: int, block_size: int) -> range:
    """Where the windows of a sequence of n tokens start (each is block_size + 1 long)."""
    return range(0, max(n - 1, 1), block_size)


def windows(tokens: list[int], block_size: int) -> list[list[int]]:
    """Consecutive windows of at most block_size + 1 tokens, overlapping by one."""
    return [tokens[i : i + block_size + 1] for i in spans(len(tokens), block_size)]


def sequences(tokenizer: Tokenizer, docs: Sequence[str], block_size: int) -> Iterator[list[int]]:
    """Every window of every document, in order."""
    if not isinstance(docs, Documents):
        for doc in docs:
            yield from windows(tokenizer.doc_tokens(doc), block_size)
        return
    ids, bos = tokenizer.code_ids, tokenizer.BOS
    for i in range(len(docs)):
        n = docs.length(i) + 2
        for lo in spans(n, block_size):
            try:
                yield docs.tokens(i, lo, min(lo + block_size + 1, n), ids, bos)
            except KeyError as e:
                raise TokenizerError(
                    f"characters not in the model's vocabulary: {chr(e.args[0])!r}"
                ) from None


def batches(seqs: Iterator[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    batch = []
    for seq in seqs:
        batch.append(seq)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate(
    engine: Engine, tokenizer: Tokenizer, docs: Sequence[str], batch_size: int = 32
) -> Evaluation:
    """Score `docs` (characters outside the vocabulary raise TokenizerError)."""
    total, count = 0.0, 0
    for batch in batches(sequences(tokenizer, docs, engine.config.block_size), batch_size):
        n = sum(len(s) - 1 for s in batch)
        total += engine.loss(batch) * n
        count += n
    loss = total / count if count else float("nan")
    return Evaluation(loss=loss, bits_per_char=loss / math.log(2), tokens=count, docs=len(docs))
