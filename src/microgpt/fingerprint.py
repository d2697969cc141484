"""A compact fingerprint of the training documents: a Bloom filter plus their lengths.

`microgpt sample --novel` must tell a new sample from a training document without the data
file, so `train` stores this in the checkpoint's metadata (key `docs_fingerprint`, one JSON
string). Standard library only.

A Bloom filter (Bloom 1970, "Space/time trade-offs in hash coding with allowable errors")
answers "was this document added?" with no false negatives: every training document is
recognised, so `--novel` never returns one. It can answer "yes" for a document that was not
added (a false positive), which only costs a genuinely new sample that gets discarded. With
m bits, k hash functions and n documents the false-positive rate is (1 - e^(-kn/m))^k; we
size m for FALSE_POSITIVE_RATE (1e-5, about 24 bits = 3 bytes per document, k = 17: the
32,033 names take 94 KiB) and record the rate actually achieved. The k bit positions come
from one 128-bit BLAKE2b digest by double hashing, h1 + i*h2 mod m (Kirsch & Mitzenmacher
2006, "Less hashing, same performance"), so the fingerprint is the same on every machine.

>>> fp = Fingerprint.from_docs(["emma", "olivia", "ava"])
>>> "emma" in fp, "emily" in fp, fp.num_docs, sorted(fp.length_counts.items())
(True, False, 3, [(3, 1), (4, 1), (6, 1)])
>>> Fingerprint.from_json(fp.to_json()).bits == fp.bits
True
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field

try:  # NOTE: CPython's own BLAKE2b, not hashlib's import of OpenSSL (3.6 MB; see data.py)
    from _blake2 import blake2b
except ImportError:  # another Python
    from hashlib import blake2b

METADATA_KEY = "docs_fingerprint"
FALSE_POSITIVE_RATE = 1e-5
MAX_BITS = 1 << 26  # 8 MiB of filter at most; a larger corpus gets a higher (recorded) rate
VERSION = 1


class FingerprintError(ValueError):
    """A fingerprint in a checkpoint that cannot be read."""


def _positions(doc: str, m: int, k: int) -> list[int]:
    digest = blake2b(doc.encode("utf-8"), digest_size=16).digest()
    h1 = int.from_bytes(digest[:8], "little")
    h2 = int.from_bytes(digest[8:], "little") | 1  # odd: never a zero stride
    return [(h1 + i * h2) % m for i in range(k)]


def bloom_size(n: int, rate: float = FALSE_POSITIVE_RATE) -> tuple[int, int]:
    """(m bits, k hashes) of the smallest filter holding n items at false-positive `rate`."""
    n = max(n, 1)
    m = math.ceil(-n * math.log(rate) / math.log(2) ** 2)
    m = min(max(64, m + (-m % 8)), MAX_BITS)
    k = max(1, round(m / n * math.log(2)))
    return m, k


@dataclass
class Fingerprint:
    m: int  # filter size in bits
    k: int  # bit positions per document
    num_docs: int  # documents added (duplicates counted once per occurrence)
    bits: bytearray
    length_counts: dict[int, int] = field(default_factory=dict)  # characters -> documents

    @classmethod
    def from_docs(cls, docs: list[str], rate: float = FALSE_POSITIVE_RATE) -> Fingerprint:
        m, k = bloom_size(len(docs), rate)
        fp = cls(m=m, k=k, num_docs=0, bits=bytearray(m // 8))
        for doc in docs:
            fp.add(doc)
        return fp

    def add(self, doc: str) -> None:
        for p in _positions(doc, self.m, self.k):
            self.bits[p >> 3] |= 1 << (p & 7)
        self.num_docs += 1
        self.length_counts[len(doc)] = self.length_counts.get(len(doc), 0) + 1

    def __contains__(self, doc: str) -> bool:
        return all(self.bits[p >> 3] >> (p & 7) & 1 for p in _positions(doc, self.m, self.k))

    @property
    def false_positive_rate(self) -> float:
        """The chance a document that was never added is reported as added."""
        return (1 - math.exp(-self.k * self.num_docs / self.m)) ** self.k

    @property
    def mean_length(self) -> float:
        total = sum(n * c for n, c in self.length_counts.items())
        return total / self.num_docs if self.num_docs else float("nan")

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": "bloom-blake2b",
                "version": VERSION,
                "m": self.m,
                "k": self.k,
                "num_docs": self.num_docs,
                "false_positive_rate": self.false_positive_rate,
                "length_counts": {str(n): c for n, c in sorted(self.length_counts.items())},
                "bits": base64.b64encode(bytes(self.bits)).decode("ascii"),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        try:
            d = json.loads(text)
            if d.get("kind") != "bloom-blake2b" or d.get("version") != VERSION:
                raise FingerprintError("unknown fingerprint kind or version")
            m, k, n = d["m"], d["k"], d["num_docs"]
            bits = bytearray(base64.b64decode(d["bits"], validate=True))
            lengths = {int(a): int(b) for a, b in d["length_counts"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FingerprintError(f"malformed training-documents fingerprint ({e})") from None
        ok_ints = all(type(x) is int for x in (m, k, n))
        if not (
            ok_ints
            and 8 <= m <= MAX_BITS
            and m % 8 == 0
            and 1 <= k <= 64
            and n >= 0
            and len(bits) == m // 8
        ):
            raise FingerprintError("malformed training-documents fingerprint (sizes disagree)")
        return cls(m=m, k=k, num_docs=n, bits=bits, length_counts=lengths)
