"""How good are the samples: novelty, duplicates, lengths beside the training data's, and
the mean log-probability per character under the model. Standard library only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .fingerprint import Fingerprint
from .sample import Sample


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
