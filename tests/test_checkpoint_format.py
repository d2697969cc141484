"""The safetensors checkpoint: round trips, the public library as an oracle, clean refusals."""

from __future__ import annotations

import json
import random
import struct

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.ref.model import RefEngine
from microgpt.train import new_trainer


@pytest.fixture
def trained(tmp_path):
    """A tiny run, two steps in, saved: (trainer, path)."""
    cfg = ModelConfig(n_layer=1, n_embd=8, n_head=2, block_size=6)
    rng = random.Random(7)
    trainer = new_trainer(RefEngine, ["anna", "bob", "émile"], cfg, OptimConfig(),
                          TrainConfig(num_steps=5, seed=7), rng,
                          record=ckpt_io.RunRecord(data_sha256="ab" * 32))
    trainer.step()
    trainer.step()
    path = tmp_path / "model.safetensors"
    ckpt_io.save(path, trainer.checkpoint())
    return trainer, path


def test_round_trip_keeps_every_number(trained):
    trainer, path = trained
    ckpt = ckpt_io.load(path)
    assert ckpt.model == trainer.model and ckpt.train == trainer.train
    assert ckpt.uchars == trainer.tokenizer.uchars and "é" in ckpt.uchars
    assert ckpt.step == 2 and ckpt.record.data_sha256 == "ab" * 32
    assert list(ckpt.params) == list(trainer.engine.parameters())  # the original's key order
    for name, t in trainer.engine.parameters().items():
        assert ckpt.params[name].data == t.data
    m, v = trainer.engine.optimizer_state()
    assert all(ckpt.adam_m[k].data == m[k].data and ckpt.adam_v[k].data == v[k].data for k in m)
    assert ckpt.rng().random() == trainer.rng.random()  # the same random stream continues


def test_public_safetensors_library_reads_it(trained):
    st = pytest.importorskip("safetensors.numpy", reason="dev dependency safetensors missing")
    trainer, path = trained
    tensors = st.load_file(str(path))
    for name, t in trainer.engine.parameters().items():
        assert tensors[name].dtype.str == "<f8" and tensors[name].shape == t.shape
        assert tensors[name].ravel().tolist() == t.data.tolist()


def test_layout_is_the_public_format(trained):
    """Hand-parse the bytes: u64 header length, JSON header, 8-aligned contiguous buffer."""
    _, path = trained
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    assert n % 8 == 0 and header["__metadata__"]["format"] == "microgpt"
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == len(blob) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def corrupt(blob: bytes, how: str) -> bytes:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    if how == "truncated":
        return blob[: len(blob) // 2]
    if how == "short":
        return blob[:5]
    if how == "huge_header_length":
        return struct.pack("<Q", 10**12) + blob[8:]
    if how == "bad_json":
        return blob[:8] + b"{" * n + blob[8 + n :]
    name = next(k for k in header if k != "__metadata__")
    if how == "offsets_out_of_range":
        header[name]["data_offsets"] = [0, 10**9]
    elif how == "overlap":
        other = next(k for k in header if k not in ("__metadata__", name))
        header[other]["data_offsets"] = header[name]["data_offsets"]
        header[other]["shape"] = header[name]["shape"]
    elif how == "wrong_dtype":
        header[name]["dtype"] = "F32"
    elif how == "wrong_shape":
        header["wte"]["shape"] = header["wte"]["shape"][::-1] + [1]
    elif how == "missing_tensor":
        del header["lm_head"]
    elif how == "unknown_version":
        header["__metadata__"]["format_version"] = "99"
    elif how == "not_microgpt":
        del header["__metadata__"]["format"]
    elif how == "nan":
        start = header["wte"]["data_offsets"][0]
        body = bytearray(blob[8 + n :])
        body[start : start + 8] = struct.pack("<d", float("nan"))
        return blob[: 8 + n] + bytes(body)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


@pytest.mark.parametrize("how", [
    "truncated", "short", "huge_header_length", "bad_json", "offsets_out_of_range", "overlap",
    "wrong_dtype", "wrong_shape", "missing_tensor", "unknown_version", "not_microgpt", "nan",
])
def test_broken_files_are_refused_cleanly(trained, tmp_path, how):
    _, path = trained
    bad = tmp_path / f"{how}.safetensors"
    bad.write_bytes(corrupt(path.read_bytes(), how))
    with pytest.raises(ckpt_io.CheckpointError) as e:
        ckpt_io.load(bad)
    assert "\n" not in str(e.value)


def test_interrupted_write_keeps_the_previous_checkpoint(trained):
    trainer, path = trained
    before = path.read_bytes()
    trainer.step()

    def die(tmp):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C between write and rename

    with pytest.raises(KeyboardInterrupt):
        ckpt_io.write_atomic(path, ckpt_io.encode(trainer.checkpoint()), _before_rename=die)
    assert path.read_bytes() == before and ckpt_io.load(path).step == 2
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
