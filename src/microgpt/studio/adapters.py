"""Where the studio meets parts of microgpt that are still growing.

Each function here is the one place the studio calls for a job that `train.py`, `cli.py` or
`sample.py` may come to own (run setup from flags, a validation split, prompted / top-k
sampling with a report). When they do, switch the body over and the studio follows.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt_io
from ..config import ConfigError
from ..data import DataError, default_names_path, load_docs
from ..engine import Engine, load_engine
from ..sample import probabilities
from ..tokenizer import Tokenizer
from ..train import Trainer, new_trainer


@dataclass
class Run:
    """A trainer plus what the studio shows beside it."""

    trainer: Trainer
    val_docs: list[str]
    data_path: str | None
    source: str  # "data" or "checkpoint"


def split_val(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Hold out the last `fraction` of the (already shuffled) documents for validation."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"--val-split must be in [0, 1), got {fraction!r}")
    n_val = int(len(docs) * fraction)
    if fraction and n_val == 0:
        n_val = 1
    if n_val >= len(docs):
        raise ConfigError("--val-split leaves no training documents; use a smaller fraction")
    return (docs[: len(docs) - n_val], docs[len(docs) - n_val :]) if n_val else (docs, [])


def new_run(args, engine_name: str) -> Run:
    """A fresh run from the training flags, set up exactly as `microgpt train` does it
    (same random stream: shuffle, then weights), so the losses are the CLI's."""
    from ..cli import configs_from_args  # the CLI's own flag handling

    preset, model, optim, train = configs_from_args(args)
    engine_cls = load_engine(engine_name)
    rng = random.Random(train.seed)  # Let there be order among chaos
    data_path = Path(args.data) if args.data else default_names_path()
    docs, data_sha256 = load_docs(data_path, rng)
    docs, val_docs = split_val(docs, args.val_split)
    trainer = new_trainer(
        engine_cls, docs, model, optim, train, rng,
        preset=preset.name, extra={"data_sha256": data_sha256, "data_path": str(data_path)},
    )  # fmt: skip
    return Run(trainer, val_docs, str(data_path), "data")


def checkpoint_run(args, engine_name: str) -> Run:
    """A run continued from a checkpoint. Training needs the documents: --data, else the
    file the checkpoint was trained on (checked against its recorded sha256)."""
    ckpt = ckpt_io.load(args.checkpoint)
    train = ckpt.train
    if args.steps is not None:
        import dataclasses

        train = dataclasses.replace(train, num_steps=args.steps)
        train.validate()
    engine_cls = load_engine(engine_name)
    tokenizer = ckpt.tokenizer
    engine = engine_cls(ckpt.model, ckpt.optim, tokenizer.vocab_size, ckpt.params)
    if ckpt.adam_m is not None and ckpt.adam_v is not None:
        engine.load_optimizer_state(ckpt.adam_m, ckpt.adam_v)
    docs, val_docs, data_path = [], [], args.data or ckpt.extra.get("data_path")
    if data_path and Path(data_path).is_file():
        # The run's first draw shuffled the documents; replay it on a fresh generator.
        docs, digest = load_docs(data_path, random.Random(ckpt.train.seed))
        recorded = ckpt.extra.get("data_sha256")
        if recorded and digest != recorded and not args.data:
            docs = []  # not the file it was trained on: inspect and sample only
        else:
            docs, val_docs = split_val(docs, args.val_split)
            unknown = tokenizer.unknown("".join(docs))
            if unknown:
                raise DataError(
                    f"--data holds characters the checkpoint's vocabulary lacks ({unknown[0]!r});"
                    " pass the file the model was trained on"
                )
    trainer = Trainer(
        engine, tokenizer, docs, ckpt.optim, train, ckpt.rng(), step=ckpt.step,
        preset=ckpt.preset, extra=dict(ckpt.extra),
    )  # fmt: skip
    return Run(trainer, val_docs, data_path if docs else None, "checkpoint")


# --- sampling ---------------------------------------------------------------------------------


def sample_one(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    prompt: str,
    temperature: float,
    top_k: int,
) -> tuple[str, float]:
    """One sample continuing `prompt` (after BOS); returns (text, mean log-prob per token).

    Uses the sampler's own softmax (`sample.probabilities`); top-k keeps the k most likely
    tokens and renormalises.
    """
    block_size = engine.config.block_size
    ids = [tokenizer.BOS] + tokenizer.encode(prompt)
    if len(ids) > block_size:
        raise ConfigError(f"the prompt is longer than the context ({block_size - 1} characters)")
    cache = engine.new_cache()
    for pos_id, token_id in enumerate(ids):
        logits = engine.decode(cache, token_id, pos_id)
    out, logp, drawn = list(ids[1:]), 0.0, 0
    pos_id = len(ids)  # where the next drawn token would be fed
    while True:
        if temperature == 0:  # greedy, as sample.generate: no random draw
            token_id = max(range(len(logits)), key=logits.__getitem__)
            p = 1.0
        else:
            probs = probabilities(logits, temperature)
            if 0 < top_k < len(probs):
                keep = set(sorted(range(len(probs)), key=lambda i: -probs[i])[:top_k])
                kept = sum(probs[i] for i in keep)
                probs = [probs[i] / kept if i in keep else 0.0 for i in range(len(probs))]
            token_id = rng.choices(range(len(probs)), weights=probs)[0]
            p = probs[token_id]
        logp += math.log(p) if p > 0 else -math.inf
        drawn += 1
        if token_id == tokenizer.BOS:
            break
        out.append(token_id)
        if pos_id >= block_size:  # the context is full, as the original's loop ends
            break
        logits = engine.decode(cache, token_id, pos_id)
        pos_id += 1
    return tokenizer.decode(out), logp / drawn


def sample_report(
    engine: Engine,
    tokenizer: Tokenizer,
    rng: random.Random,
    train_docs: set[str],
    prompt: str = "",
    count: int = 10,
    temperature: float = 0.5,
    top_k: int = 0,
    novel: bool = False,
    max_tries: int = 20,
) -> dict:
    """`count` samples and a short report: how many are unique, how many are novel (not a
    training document), their mean length and mean log-prob per token. With `novel`, samples
    that are training documents are drawn again (at most `max_tries` times each)."""
    samples, logps = [], []
    tries = 0
    while len(samples) < count and tries < count * max_tries:
        tries += 1
        text, lp = sample_one(engine, tokenizer, rng, prompt, temperature, top_k)
        if novel and text in train_docs:
            continue
        samples.append(text)
        logps.append(lp)
    n = len(samples)
    report = {
        "count": n,
        "drawn": tries,
        "unique": len(set(samples)),
        "novel": sum(s not in train_docs for s in samples),
        "mean_length": sum(len(s) for s in samples) / n if n else 0.0,
        "mean_logprob": sum(logps) / n if n else 0.0,
    }
    rows = [{"text": s, "novel": s not in train_docs} for s in samples]
    return {"samples": rows, "report": report}
