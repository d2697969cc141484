"""The training-documents fingerprint: no false negatives, and the false-positive rate it
states is the one measured on strings that were never added."""

from __future__ import annotations

import dataclasses
import random

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.fingerprint import (
    FALSE_POSITIVE_RATE,
    Fingerprint,
    FingerprintError,
    bloom_size,
)


def test_every_real_name_is_recognised(names_path):
    docs = names_path.read_text().split()
    fp = Fingerprint.from_docs(docs)
    assert all(doc in fp for doc in docs)  # a Bloom filter has no false negatives
    assert fp.num_docs == len(docs) == 32033
    assert fp.false_positive_rate <= 1.01 * FALSE_POSITIVE_RATE
    assert fp.m // 8 < 100 * 1024  # compact: under 100 KiB for the names
    # round trip through the checkpoint's metadata string
    back = Fingerprint.from_json(fp.to_json())
    assert (back.m, back.k, back.num_docs, back.bits) == (fp.m, fp.k, fp.num_docs, fp.bits)
    assert back.length_counts == fp.length_counts
    assert back.mean_length == pytest.approx(sum(map(len, docs)) / len(docs))


@pytest.mark.parametrize("rate", [0.01, 0.001])
def test_measured_false_positive_rate_matches_the_stated_one(rate):
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    added = {"".join(rng.choices(letters, k=8)) for _ in range(5000)}
    fp = Fingerprint.from_docs(sorted(added), rate=rate)
    assert fp.false_positive_rate == pytest.approx(rate, rel=0.05)
    probes = [f"{i}-never-added" for i in range(40000)]  # digits: never among `added`
    measured = sum(p in fp for p in probes) / len(probes)
    # Binomial(40000, rate): the measured rate lies within a few standard deviations
    sd = (rate * (1 - rate) / len(probes)) ** 0.5
    assert abs(measured - fp.false_positive_rate) < 5 * sd + 1e-4


def test_default_rate_on_non_names(names_path):
    fp = Fingerprint.from_docs(names_path.read_text().split())
    probes = [f"zq{i}" for i in range(100000)]
    assert sum(p in fp for p in probes) <= 10  # expected 1 at 1e-5


def test_bloom_size_formula():
    m, k = bloom_size(1000, 0.01)
    assert m == 9592 and k == 7  # m = -n ln p / ln(2)^2 rounded up to bytes, k = m/n ln 2
    assert bloom_size(0)[0] >= 64


@pytest.mark.parametrize(
    "bad",
    ["not json", "{}", '{"kind":"bloom-blake2b","version":1,"m":64,"k":1,"num_docs":0,'
     '"length_counts":{},"bits":"AAAA"}'],
)  # fmt: skip
def test_malformed_fingerprint_is_refused(bad, tmp_path):
    with pytest.raises(FingerprintError):
        Fingerprint.from_json(bad)


def test_corrupt_fingerprint_in_a_checkpoint_is_a_one_line_error(tmp_path, cli_env):
    from run_helpers import main_cli
    from test_sample import TINY, build_checkpoint

    path = build_checkpoint(tmp_path / "m.safetensors", ["ab", "ba"], TINY, steps=1)
    ckpt = ckpt_io.load(path)
    ckpt.record = dataclasses.replace(ckpt.record, fingerprint="{broken")
    ckpt_io.save(path, ckpt)
    r = main_cli(["sample", "--checkpoint", str(path), "--novel"], cli_env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "malformed training-documents fingerprint" in r.stderr
