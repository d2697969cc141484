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
- filters (novel only, min/max length) by rejection, with a bounded number of tries;
- a quality report over the samples (`make_report`).
With none of these asked for, `generate` makes exactly the original's engine calls and
random draws.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import ConfigError
from .engine import Engine
from .fingerprint import Fingerprint
from .tokenizer import Tokenizer, TokenizerError

TRIES_PER_SAMPLE = 100  # the default bound on tries when samples are filtered


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
    """log p(token_id) under the model itself (temperature 1, no top-k), in nats."""
    top = max(logits)
    return logits[token_id] - top - math.log(sum(math.exp(x - top) for x in logits))


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
    """Yield the original's `sample  k: text` lines, one sample at a time."""
    for sample_idx in range(num_samples):
        text = tokenizer.decode(generate(engine, tokenizer, rng, temperature))
        yield f"sample {sample_idx + 1:2d}: {text}"


# --- asking for what you want: prompt, top-k, filters -------------------------------------------


@dataclass(frozen=True)
class SampleConfig:
    num_samples: int = 20
    temperature: float = 0.5
    top_k: int | None = None  # None: every token can be drawn
    prompt: str = ""
    max_new_tokens: int | None = None  # None: block_size, the original's limit
    novel: bool = False  # keep only samples that are not training documents
    min_length: int | None = None  # characters, prompt included
    max_length: int | None = None
    max_tries: int | None = None  # None: num_samples, or TRIES_PER_SAMPLE x that when filtered

    @property
    def filtered(self) -> bool:
        return self.novel or self.min_length is not None or self.max_length is not None

    def tries(self) -> int:
        if self.max_tries is not None:
            return self.max_tries
        return self.num_samples * (TRIES_PER_SAMPLE if self.filtered else 1)

    def validate(self, block_size: int) -> None:
        def check(name, value, low):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")

        check("--num-samples", self.num_samples, 0)
        check("--top-k", self.top_k, 1)
        check("--max-new-tokens", self.max_new_tokens, 0)
        check("--min-length", self.min_length, 0)
        check("--max-length", self.max_length, 0)
        check("--max-tries", self.max_tries, 1)
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(
                f"--temperature must be a finite number >= 0, got {self.temperature!r}"
            )
        longest = len(self.prompt) + (
            block_size if self.max_new_tokens is None else self.max_new_tokens
        )
        if self.min_length is not None and self.min_length > longest:
            raise ConfigError(
                f"--min-length {self.min_length} cannot be reached: samples have at most "
                f"{longest} characters (prompt + --max-new-tokens); raise --max-new-tokens"
            )
        if self.max_length is not None:
            if self.min_length is not None and self.max_length < self.min_length:
                raise ConfigError(
                    f"--max-length {self.max_length} is below --min-length {self.min_length}"
                )
            if self.max_length < len(self.prompt):
                raise ConfigError(
                    f"--max-length {self.max_length} is shorter than the prompt "
                    f"({len(self.prompt)} characters)"
                )


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids; a character the model never saw is a one-line error."""
    missing = tokenizer.unknown(prompt)
    if missing:
        shown = ", ".join(repr(ch) for ch in missing[:10])
        known = "".join(tokenizer.uchars)
        known = known if len(known) <= 60 else known[:57] + "..."
        raise TokenizerError(
            f"the prompt has characters not in the model's vocabulary: {shown} (it knows {known!r})"
        )
    return tokenizer.encode(prompt)


@dataclass
class Draw:
    """Samples drawn under a SampleConfig; iterate to get them one by one as they are found.

    After iterating, `samples` holds the accepted ones and `tries` how many were generated.
    """

    engine: Engine
    tokenizer: Tokenizer
    rng: random.Random
    config: SampleConfig
    fingerprint: Fingerprint | None = None
    samples: list[Sample] = field(default_factory=list)
    tries: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> samples rejected

    def __post_init__(self):
        self.config.validate(self.engine.config.block_size)
        self.prompt_ids = encode_prompt(self.tokenizer, self.config.prompt)
        if self.config.novel and self.fingerprint is None:
            raise ConfigError(
                "--novel needs the training documents' fingerprint, and this checkpoint has "
                "none (it was saved by an older microgpt); re-train to get one"
            )

    def reject_reason(self, s: Sample) -> str | None:
        c = self.config
        if c.max_length is not None and len(s.text) > c.max_length:
            return "too long"
        if c.min_length is not None and len(s.text) < c.min_length:
            return "too short"
        if c.novel and s.text in self.fingerprint:
            return "in the training data"
        return None

    def __iter__(self) -> Iterator[Sample]:
        c = self.config
        while len(self.samples) < c.num_samples and self.tries < c.tries():
            self.tries += 1
            s = generate_sample(
                self.engine,
                self.tokenizer,
                self.rng,
                c.temperature,
                c.max_new_tokens,
                prompt=self.prompt_ids,
                top_k=c.top_k,
                stop_after=c.max_length,
            )
            reason = self.reject_reason(s)
            if reason is None:
                self.samples.append(s)
                yield s
            else:
                self.rejected[reason] += 1
                if c.temperature == 0:  # greedy: every further try would be this same sample
                    break

    def run(self) -> list[Sample]:
        for _ in self:
            pass
        return self.samples

    @property
    def complete(self) -> bool:
        return len(self.samples) >= self.config.num_samples

    def shortfall(self) -> str:
        """One line saying how many samples were found, and why the others were not."""
        why = ", ".join(f"{n} {reason}" for reason, n in self.rejected.most_common())
        return (
            f"found {len(self.samples)} of {self.config.num_samples} samples in {self.tries} "
            f"tries (rejected: {why or 'none'}); raise --max-tries or --temperature, "
            "or relax the constraints"
        )


# --- how good are the samples ----------------------------------------------------------------


@dataclass
class Report:
    num_samples: int
    novel: float | None  # share of samples that are not training documents (None: unknown)
    false_positive_rate: float | None  # of the fingerprint: a novel sample counted as known
    duplicates: float  # share of samples that repeat an earlier sample
    mean_length: float  # characters
    train_mean_length: float | None
    lengths: list[tuple[str, float, float | None]]  # (length bin, share of samples, of train)
    logprob_per_char: float  # mean log p (nats) over every predicted token, closing BOS included
    bits_per_char: float  # -logprob_per_char / ln 2: comparable with `microgpt eval`
    predicted: int  # tokens in that mean
    tries: int | None = None  # samples generated to find these (None: not filtered)
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> tries rejected

    def __str__(self) -> str:
        return "\n".join(format_report(self))


def length_bins(lengths: list[int], max_bins: int = 20) -> list[tuple[int, int]]:
    """[lo, hi] ranges covering 0..max(lengths): one per length when few, else equal widths."""
    top = max(lengths, default=0)
    width = max(1, math.ceil((top + 1) / max_bins))
    return [(lo, min(lo + width - 1, top)) for lo in range(0, top + 1, width)]


def make_report(
    samples: list[Sample],
    fingerprint: Fingerprint | None = None,
    tries: int | None = None,
    rejected: dict[str, int] | None = None,
) -> Report:
    """The quality report over `samples` (text, logprob, predicted are used); `tries` and
    `rejected` (from a `Draw`) say what the filters removed to find them."""
    n = len(samples)
    texts = [s.text for s in samples]
    lengths = [len(t) for t in texts]
    train_counts = fingerprint.length_counts if fingerprint is not None else {}
    # Only the lengths that occur anywhere decide the bins; empty leading bins are dropped.
    lo_len = min(lengths + list(train_counts), default=0)
    bins = [(lo, hi) for lo, hi in length_bins(lengths + list(train_counts)) if hi >= lo_len]
    train_total = sum(train_counts.values())
    rows = []
    for lo, hi in bins:
        label = str(lo) if lo == hi else f"{lo}-{hi}"
        share = sum(lo <= x <= hi for x in lengths) / n if n else 0.0
        train = (
            sum(c for x, c in train_counts.items() if lo <= x <= hi) / train_total
            if train_total
            else None
        )
        rows.append((label, share, train))
    predicted = sum(s.predicted for s in samples)
    logprob = sum(s.logprob for s in samples) / predicted if predicted else float("nan")
    return Report(
        num_samples=n,
        novel=(
            None
            if fingerprint is None
            else sum(t not in fingerprint for t in texts) / n
            if n
            else float("nan")
        ),
        false_positive_rate=fingerprint.false_positive_rate if fingerprint else None,
        duplicates=(n - len(set(texts))) / n if n else 0.0,
        mean_length=sum(lengths) / n if n else float("nan"),
        train_mean_length=fingerprint.mean_length if fingerprint else None,
        lengths=rows,
        logprob_per_char=logprob,
        bits_per_char=-logprob / math.log(2),
        predicted=predicted,
        tries=tries,
        rejected=dict(rejected or {}),
    )


def format_report(r: Report) -> list[str]:
    """The report as the lines `microgpt sample --report` prints."""

    def pct(x):
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    novel = (
        "unknown (the checkpoint has no training-documents fingerprint)"
        if r.novel is None
        else f"{pct(r.novel).strip()} are not training documents "
        f"(fingerprint false-positive rate {r.false_positive_rate:.0e})"
    )
    train_mean = (
        "" if r.train_mean_length is None else f" (training data: {r.train_mean_length:.2f})"
    )
    lines = [
        f"--- report over {r.num_samples} samples ---",
        f"novel:       {novel}",
        f"duplicates:  {pct(r.duplicates).strip()} repeat an earlier sample",
        f"length:      mean {r.mean_length:.2f} characters{train_mean}",
        f"log-prob:    {r.logprob_per_char:.4f} nats per character under the model "
        f"({r.bits_per_char:.4f} bits/char, {r.predicted} predicted tokens incl. the end)",
        "length   samples  training",
    ]
    if r.tries is not None:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(r.rejected.items()))
        lines.insert(
            1, f"kept:        {r.num_samples} of {r.tries} tries (rejected: {why or 'none'})"
        )
    lines += [f"{label:>6}   {pct(s)}   {pct(t)}" for label, s, t in r.lengths]
    return lines
