"""Every field of a checkpoint's metadata, fuzzed (issue 13, kind 4).

The schema (checkpoint.METADATA, and the fields of the configs and of the fingerprint's JSON
inside it) is walked, and each field is given hostile values: the wrong type (a list where a
number goes, an object, null, a bool), extreme numbers (10**4000, 1e999, -1, 2**63), text
that is not text (a lone surrogate), digits that are not ASCII ("²", "١"), JSON nested
100,000 deep, and, for paths, a FIFO, /dev/zero and a folder. The only outcomes allowed:
a one-line CheckpointError, or a load after which the model samples and the run resumes
(where resuming may itself be refused in one line, e.g. a data path that is a FIFO). The
oracle is the program's own behaviour under those two rules, with a time limit (a FIFO
opened for reading would block forever).
"""

from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest
from run_helpers import TINY, main_cli

from microgpt import checkpoint as ckpt_io
from microgpt import fingerprint, runs
from microgpt.schema import Parsed, Record

NAMES = "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n"
DEEP = "[" * 100000 + "]" * 100000
# JSON values for any field: the wrong types and the extremes
VALUES = [None, True, [1], {"a": 1}, [[[[1]]]], "", "\ud800", "²", "x" * 100000, -1, 0, 1.5,
          2**63, 10**4000, -(10**4000), 3]  # fmt: skip
# raw texts, for the entries that are strings in the metadata (and for JSON ones: not JSON)
TEXTS = ["", "-1", "1e999", "nan", "9" * 5000, "²", "١٢", " 1", "0x10", "\ud800", DEEP,
         "{", "null", "[3, [1, 2], null]", "a\x00b"]  # fmt: skip


def schema_fields() -> list[tuple[str, ...]]:
    """Every field of the metadata schema: (entry,) and (entry, field of its JSON object)."""
    out = []
    for key, (check, _) in ckpt_io.METADATA.items():
        out.append((key,))
        inner = check.check if isinstance(check, Parsed) else check
        if isinstance(inner, Record):
            out += [(key, name) for name in inner.fields]
        if isinstance(check, ckpt_io.FingerprintText):
            out += [(key, name) for name in fingerprint.SCHEMA.fields]
    return out


def split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict, buffer: bytes) -> bytes:
    text = json.dumps(header).encode()  # ensure_ascii: a lone surrogate travels as \\ud800
    text = text.replace(b'"@DEEP@"', DEEP.encode())
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + buffer


def variants(meta: dict, path: tuple[str, ...], paths: dict[str, str]):
    """(name, metadata) with the field at `path` made hostile, or removed."""
    key = path[0]
    if len(path) == 1:
        yield "removed", {k: v for k, v in meta.items() if k != key}
        for text in TEXTS + list(paths.values()):
            yield repr(text)[:30], {**meta, key: text}
        for value in VALUES:
            yield f"json {repr(value)[:24]}", {**meta, key: json.dumps(value)}
        return
    obj = json.loads(meta[key])
    yield "removed", {**meta, key: json.dumps({k: v for k, v in obj.items() if k != path[1]})}
    for value in [*VALUES, *paths.values(), "@DEEP@"]:
        text = json.dumps({**obj, path[1]: value})
        yield f"{repr(value)[:24]}", {**meta, key: text.replace('"@DEEP@"', DEEP)}


class TimeLimit:
    """SIGALRM after `seconds`: a blocked open or an endless read fails the test."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def expired(signum, frame):
            raise TimeoutError("took too long: something blocked or did not end")

        self.previous = signal.signal(signal.SIGALRM, expired)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def outcome(path: Path, run_dir: Path) -> str:
    """'refused' (one line), or 'used' (loaded, sampled, resumed or refused to resume in
    one line). Anything else raises, and fails the test."""
    try:
        ckpt = ckpt_io.load(path)
    except ckpt_io.CheckpointError as e:
        assert "\n" not in str(e)
        return "refused"
    model = runs.model_from_checkpoint(ckpt, runs.EngineSpec(name="ref"))
    model.sample(2, seed=1, max_new_tokens=4)
    if model.fingerprint is not None:
        model.report(model.draw(2, seed=1, novel=True, max_tries=4))
    run_dir.mkdir()
    os.replace(path, run_dir / "model.safetensors")
    try:
        run = runs.resume(runs.ResumeSpec(str(run_dir), steps=ckpt.step + 1))
        runs.train(run)
    except runs.USER_ERRORS as e:
        assert "\n" not in str(e)
        return "used"
    assert ckpt_io.load(run_dir / "model.safetensors").step == ckpt.step + 1
    return "used"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real run's checkpoint (fingerprint, RNG states, record) and hostile paths."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "names.txt"
    data.write_text(NAMES)
    env = {"MICROGPT_CACHE_DIR": str(root / "cache")}
    r = main_cli(["train", "--data", str(data), "--steps", "2", *TINY, "--num-samples", "0",
                  "--out", str(root / "run"), "--val-fraction", "0.2"], env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    fifo = root / "fifo"
    os.mkfifo(fifo)
    paths = {"fifo": str(fifo), "zero": "/dev/zero", "folder": str(root)}
    return (root / "run" / "model.safetensors").read_bytes(), paths


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # a hostile rate diverges
@pytest.mark.parametrize("path", schema_fields(), ids=lambda p: ".".join(p))
def test_every_metadata_field_refuses_or_works(good, path, tmp_path):
    blob, paths = good
    header, buffer = split(blob)
    seen = {"refused": 0, "used": 0}
    for i, (name, meta) in enumerate(variants(header["__metadata__"], path, paths)):
        file = tmp_path / f"case{i}.safetensors"
        file.write_bytes(join({**header, "__metadata__": meta}, buffer))
        with TimeLimit(60):
            try:
                seen[outcome(file, tmp_path / f"run{i}")] += 1
            except Exception as e:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{'.'.join(path)} = {name}: {type(e).__name__}: {e}"[:500])
    print(".".join(path), seen)
    assert seen["refused"] > 0, seen  # the schema checks this field: something was refused


def test_the_fuzzer_covers_the_whole_schema():
    """The cases come from the schema itself: a field added to it is fuzzed too."""
    fields = schema_fields()
    assert ("train_config", "seed") in fields and ("docs_fingerprint", "length_counts") in fields
    assert ("data_path",) in fields and ("window_rng_state",) in fields
    assert len(fields) >= 40, len(fields)
