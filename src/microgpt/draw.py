"""Asking the model for what you want: a number of samples that pass filters (novel only,
min/max length), found by rejection with a bounded number of tries. Standard library only.

A `Draw` generates samples with sample.generate_samples and keeps those that pass, so the
samples kept are exactly the model's samples that pass the filters.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import ConfigError, temperature_check
from .engine import Engine
from .fingerprint import Fingerprint
from .sample import Sample, generate_samples
from .schema import SchemaError
from .tokenizer import Tokenizer, TokenizerError

TRIES_PER_SAMPLE = 100  # the default bound on tries when samples are filtered


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
        try:
            temperature_check("--temperature")(self.temperature)
        except SchemaError as e:
            raise ConfigError(str(e)) from None
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
            # NOTE: as many samples at once as will surely be tried (each try is one sample,
            # and at least this many are still needed), so the random stream advances exactly
            # as one try at a time would advance it; an engine can then make them in one call
            # (sample.generate_samples). Greedy draws take no random numbers: whatever is made
            # and not used after a rejection (below) leaves the stream as it was.
            count = min(c.num_samples - len(self.samples), c.tries() - self.tries)
            batch = generate_samples(
                self.engine,
                self.tokenizer,
                self.rng,
                count,
                c.temperature,
                c.max_new_tokens,
                prompt=self.prompt_ids,
                top_k=c.top_k,
                stop_after=c.max_length,
            )
            for s in batch:
                self.tries += 1
                reason = self.reject_reason(s)
                if reason is None:
                    self.samples.append(s)
                    yield s
                else:
                    self.rejected[reason] += 1
                    if c.temperature == 0:  # greedy: every further try would be this same one
                        return

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
