"""Sampling: may the model babble back to us. Engine-agnostic; standard library only.

The engine gives logits; turning them into probabilities and drawing a token happens here,
once, for every engine. The softmax below performs the same float operations as the
original's `softmax([l / temperature for l in logits])` on Values, so with the reference
engine the draws (and samples) are bit for bit the original's.

On top of the original's loop, for real use:
- a prompt: the sample starts with given text (fed after BOS), e.g. names starting "ma";
- top-k: only the k most likely tokens can be drawn (the others get probability 0);
- temperature 0 is greedy (the most likely token, no random draw);
- a sliding window: past block_size tokens of context, each new token is predicted from
  the last block_size tokens, recomputed at positions 0..block_size-1, so a model can write
  on past its context (Shakespeare paragraphs);
With none of these asked for, `generate` makes exactly the original's engine calls and
random draws. Filters over whole samples (novel only, min/max length) are draw.py's; the
report on a set of samples is report.py's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

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


def log_softmax_at(logits: list[float], token_id: int) -> float:
    """log p(token_id) under the model itself (temperature 1, no top-k), in nats.

    NOTE: summed left to right, as in `probabilities`, so that an engine generating whole
    samples (Engine.generate) computes the same number on every Python version.
    """
    top = max(logits)
    total = 0.0
    for x in logits:
        total = total + math.exp(x - top)
    return logits[token_id] - top - math.log(total)


def top_k_logits(logits: list[float], k: int) -> list[float]:
    """The logits with all but the k largest set to -inf (ties: the lower token id wins)."""
    if k >= len(logits):
        return logits
    keep = set(sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:k])
    return [x if i in keep else -math.inf for i, x in enumerate(logits)]


@dataclass
class Sample:
    text: str  # the prompt followed by the generated characters
    tokens: list[int]  # generated token ids, the closing BOS excluded
    logprob: float = 0.0  # sum of log p(token) under the model over the predicted tokens
    predicted: int = 0  # tokens counted in logprob: the generated ones, and the closing BOS
    ended: bool = False  # the model closed the sample with BOS (else it hit a length limit)


def generate_sample(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    temperature: float,
    max_new_tokens: int | None = None,
    prompt: list[int] | None = None,
    top_k: int | None = None,
    stop_after: int | None = None,
) -> Sample:
    """One sample: BOS, then the prompt, then draws until BOS or `max_new_tokens` draws
    (default block_size). `stop_after` gives up as soon as the text (prompt included) is
    longer than that many characters (a sample a --max-length filter would reject anyway).
    """
    block_size = engine.config.block_size
    max_new_tokens = block_size if max_new_tokens is None else max_new_tokens
    prompt = list(prompt or [])
    context = [tokenizer.BOS] + prompt
    cache = engine.new_cache()
    fed = 0  # tokens of `context` already in the KV cache
    out: list[int] = []
    logprob, predicted, ended = 0.0, 0, False
    for _ in range(max_new_tokens):
        if len(context) <= block_size:  # the original's path: extend the KV cache
            while fed < len(context):
                logits = engine.decode(cache, context[fed], fed)
                fed += 1
        else:
            # NOTE: past the context, the positions restart at 0 over the last block_size
            # tokens (the model never learned a position >= block_size), so nothing cached
            # can be reused: recompute the window.
            logits = engine.forward(context[-block_size:])[-1]
        if temperature == 0:  # greedy: the most likely token (the first one on a tie)
            token_id = max(range(len(logits)), key=logits.__getitem__)
        else:
            weights = logits if top_k is None else top_k_logits(logits, top_k)
            probs = probabilities(weights, temperature)
            token_id = rng.choices(range(tokenizer.vocab_size), weights=probs)[0]
        logprob += log_softmax_at(logits, token_id)
        predicted += 1
        if token_id == tokenizer.BOS:
            ended = True
            break
        out.append(token_id)
        context.append(token_id)
        if stop_after is not None and len(prompt) + len(out) > stop_after:
            break
    text = tokenizer.decode(prompt + out)
    return Sample(text=text, tokens=out, logprob=logprob, predicted=predicted, ended=ended)


def generate(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    temperature: float,
    max_tokens: int | None = None,
) -> list[int]:
    """One sample as token ids: start from BOS, draw until BOS or `max_tokens` (default and
    at most block_size). The original's loop."""
    block_size = engine.config.block_size
    max_tokens = block_size if max_tokens is None else min(max_tokens, block_size)
    return generate_sample(engine, tokenizer, rng, temperature, max_tokens).tokens


def sample_lines(
    engine: Engine, tokenizer: Tokenizer, rng: random.Random, num_samples: int, temperature: float
):
    """Yield the original's `sample  k: text` lines (the samples of `generate`, made in
    chunks by generate_samples)."""
    done = 0
    while done < num_samples:
        chunk = min(num_samples - done, GENERATE_CHUNK)
        for s in generate_samples(engine, tokenizer, rng, chunk, temperature):
            done += 1
            yield f"sample {done:2d}: {s.text}"


# Samples asked of an engine's own generation (Engine.generate) per call, at most.
GENERATE_CHUNK = 1024


def generate_samples(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    count: int,
    temperature: float,
    max_new_tokens: int | None = None,
    prompt: list[int] | None = None,
    top_k: int | None = None,
    stop_after: int | None = None,
) -> list[Sample]:
    """`count` samples: exactly those of `count` calls of generate_sample (the same samples,
    the same draws from `rng`), made by the engine in whole samples where it can
    (Engine.generate: no Python call per token), else by the loop."""
    block_size = engine.config.block_size
    max_new = block_size if max_new_tokens is None else max_new_tokens
    prompt = list(prompt or [])
    head, chars = tokenizer.decode(prompt), tokenizer.uchars
    out: list[Sample] = []
    while len(out) < count:
        want = min(count - len(out), GENERATE_CHUNK)
        made = engine.generate(rng, want, temperature, max_new, prompt, top_k, stop_after,
                               tokenizer.BOS)  # fmt: skip
        for tokens, logprob, predicted, ended in made or ():
            # NOTE: tokenizer.decode(prompt + tokens) without its BOS filter (no generated
            # token is BOS) and the copy: a tenth of a sampled name's time with the C engine
            text = head + "".join([chars[t] for t in tokens])
            out.append(Sample(text, tokens, logprob, predicted, ended))
        if made is None or len(made) < want:  # the loop makes the rest (or the next one)
            out.append(generate_sample(engine, tokenizer, rng, temperature, max_new_tokens,
                                       prompt, top_k, stop_after))  # fmt: skip
    return out
