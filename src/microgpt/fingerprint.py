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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .schema import Int, Json, Mapping, Number, Parsed, Record, SchemaError, Text, decimal

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
    def from_docs(cls, docs: Sequence[str], rate: float = FALSE_POSITIVE_RATE) -> Fingerprint:
        m, k = bloom_size(len(docs), rate)
        fp = cls(m=m, k=k, num_docs=0, bits=bytearray(m // 8))
        # NOTE: the filter and the length counts do not depend on the documents' order, so
        # compact documents (data.Documents) are read a block at a time, as stored
        for block in docs.blocks() if hasattr(docs, "blocks") else [docs]:
            fp.add_all(block)
        return fp

    def add_all(self, docs: list[str]) -> None:
        """`add` for each document (the same bits), with the loop's lookups hoisted: tens of
        millions of documents (a 300 MB file of names) spend most of their time here."""
        m, k, bits = self.m, self.k, self.bits
        for doc in docs:
            digest = blake2b(doc.encode("utf-8"), digest_size=16).digest()
            h1 = int.from_bytes(digest[:8], "little")
            if k == 1:
                p = h1 % m
                bits[p >> 3] |= 1 << (p & 7)
                continue
            h2 = int.from_bytes(digest[8:], "little") | 1
            for i in range(k):
                p = (h1 + i * h2) % m
                bits[p >> 3] |= 1 << (p & 7)
        self.num_docs += len(docs)
        counts = self.length_counts
        for n, c in Counter(map(len, docs)).items():
            counts[n] = counts.get(n, 0) + c

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
        """The fingerprint `to_json` wrote, every field checked against SCHEMA first."""
        try:
            d = FROM_JSON(text)
        except SchemaError as e:
            raise FingerprintError(f"malformed training-documents fingerprint ({e})") from None
        m, bits, counts = d["m"], base64.b64decode(d["bits"]), d["length_counts"]
        if m % 8 or len(bits) != m // 8 or sum(counts.values()) != d["num_docs"]:
            raise FingerprintError("malformed training-documents fingerprint (sizes disagree)")
        return cls(m=m, k=d["k"], num_docs=d["num_docs"], bits=bytearray(bits),
                   length_counts=counts)  # fmt: skip


MAX_DOCS = 10**15
BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
# The JSON of a fingerprint (metadata key docs_fingerprint): its schema
SCHEMA = Record(
    {
        "kind": Text("fingerprint kind", choices=("bloom-blake2b",)),
        "version": Int(VERSION, VERSION, "fingerprint version"),
        "m": Int(8, MAX_BITS, "fingerprint m"),
        "k": Int(1, 64, "fingerprint k"),
        "num_docs": Int(0, MAX_DOCS, "fingerprint num_docs"),
        "false_positive_rate": Number(0, 1, "fingerprint false_positive_rate", closed=True),
        "length_counts": Mapping(
            Parsed(decimal, Int(0, MAX_DOCS, "a document length")),
            Int(1, MAX_DOCS, "a length count"), MAX_BITS, "fingerprint length_counts",
        ),  # fmt: skip
        "bits": Text("fingerprint bits", max_len=4 * MAX_BITS // 24 + 4,
                     pattern=BASE64, rule="base64 text"),  # fmt: skip
    },
    label="docs_fingerprint",
)
FROM_JSON = Json(SCHEMA)
