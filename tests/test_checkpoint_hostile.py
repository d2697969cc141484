"""Hostile or broken checkpoints are refused with one clean error (CheckpointError); the
loader never executes anything and never allocates more than the file's size.

Oracles: hand-made files with exactly one thing wrong (each must name it), a fuzzer whose
only allowed outcomes are "loads" or CheckpointError, and the public `safetensors` library
(reads our files; writes files we read).
"""

from __future__ import annotations

import json
import random
import struct

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.init import init_params
from microgpt.tensor import Tensor


def make_checkpoint() -> ckpt_io.Checkpoint:
    model = ModelConfig(n_embd=4, n_head=2, block_size=4)
    rng = random.Random(0)
    uchars = list("abcé")
    params = init_params(model, len(uchars) + 1, rng)
    m = {k: Tensor(t.shape, t.data[:]) for k, t in params.items()}
    v = {k: Tensor(t.shape, type(t.data)("d", (x * x for x in t.data))) for k, t in params.items()}
    return ckpt_io.Checkpoint(
        model=model,
        optim=OptimConfig(),
        train=TrainConfig(num_steps=10),
        uchars=uchars,
        params=params,
        adam_m=m,
        adam_v=v,
        step=3,
        rng_state=rng.getstate(),
        window_rng_state=random.Random("w").getstate(),
        record=ckpt_io.RunRecord(data_sha256="00" * 32),
    )


GOOD = ckpt_io.encode(make_checkpoint())


def split(blob: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def join(header: dict, buffer: bytes, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + buffer


def edited(edit) -> bytes:
    header, buffer = split(GOOD)
    result = edit(header, buffer)
    return result if isinstance(result, bytes) else join(header, buffer)


def set_meta(key, value):
    def edit(h, b):
        h["__metadata__"][key] = value

    return edit


def set_config(key, field, value):
    def edit(h, b):
        config = json.loads(h["__metadata__"][key])
        config[field] = value
        h["__metadata__"][key] = json.dumps(config)

    return edit


def first_tensor(h):
    return sorted(k for k in h if k != "__metadata__")[0]


def set_tensor(field, value):
    def edit(h, b):
        h[first_tensor(h)][field] = value

    return edit


def without_tensor(name) -> bytes:
    """A file written by our own writer with one tensor left out (so no gap is left)."""
    ckpt = make_checkpoint()
    if name.startswith("adam."):
        (ckpt.adam_m if name.startswith("adam.m.") else ckpt.adam_v).pop(name[7:])
    else:
        for group in (ckpt.params, ckpt.adam_m, ckpt.adam_v):
            group.pop(name)
    return ckpt_io.encode(ckpt)


def overlap(h, b):
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
    a, c = h[names[0]], h[names[1]]
    c["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + 8 * len_of(c)]


def len_of(info):
    n = 1
    for d in info["shape"]:
        n *= d
    return n


def nan_weight(h, b):
    begin = h["wte"]["data_offsets"][0]
    return join(h, b[:begin] + struct.pack("<d", float("nan")) + b[begin + 8 :])


def negative_v(h, b):
    begin = h["adam.v.wte"]["data_offsets"][0]
    return join(h, b[:begin] + struct.pack("<d", -1.0) + b[begin + 8 :])


# (id, the bytes of the broken file, a phrase the message must contain)
HOSTILE = [
    ("empty-file", b"", "shorter than"),
    ("wrong-magic", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "larger than the file"),
    ("zip-file", b"PK\x03\x04" + b"\x00" * 100, "larger than the file"),
    ("truncated-header", GOOD[:200], "larger than the file"),
    ("truncated-data", GOOD[: len(GOOD) - 8], "out of range"),
    ("header-length-huge", struct.pack("<Q", 2**63) + GOOD[8:], "larger than the file"),
    ("header-not-json", join({}, b"", raw=b"{not json at all}"), "malformed JSON"),
    ("header-not-object", join({}, b"", raw=b"[1, 2, 3]"), "not a JSON object"),
    ("header-bad-utf8", join({}, b"", raw=b'{"\xff": 1}'), "malformed JSON"),
    (
        "header-deep-nesting",
        join({}, b"", raw=b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}"),
        "malformed",
    ),
    (
        "header-duplicate-key",
        join({}, b"", raw=b'{"__metadata__": {}, "__metadata__": {}}'),
        "malformed JSON",
    ),
    ("header-nan-constant", join({}, b"", raw=b'{"x": NaN}'), "malformed JSON"),
    ("trailing-bytes", GOOD + b"\x00" * 16, "after the last tensor"),
    ("offsets-out-of-range", edited(set_tensor("data_offsets", [0, 10**12])), "out of range"),
    ("offsets-reversed", edited(set_tensor("data_offsets", [64, 0])), "out of range"),
    ("offsets-negative", edited(set_tensor("data_offsets", [-8, 0])), "out of range"),
    ("offsets-not-ints", edited(set_tensor("data_offsets", [0.0, 8.0])), "out of range"),
    ("offsets-overlap", edited(overlap), "overlap"),
    ("dtype-f32", edited(set_tensor("dtype", "F32")), "dtype 'F32'"),
    ("dtype-missing", edited(set_tensor("dtype", None)), "dtype None"),
    ("shape-mismatch-bytes", edited(set_tensor("shape", [3, 3])), "do not hold shape"),
    ("shape-negative", edited(set_tensor("shape", [-1, 4])), "malformed shape"),
    ("shape-huge", edited(set_tensor("shape", [10**30, 10**30])), "do not hold shape"),
    (
        "tensor-entry-not-object",
        edited(set_tensor("dtype", "F64") and (lambda h, b: h.update({first_tensor(h): 5}))),
        "malformed entry",
    ),
    ("missing-tensor", without_tensor("lm_head"), "missing tensor 'lm_head'"),
    ("missing-adam-tensor", without_tensor("adam.v.wpe"), "missing tensor 'adam.v.wpe'"),
    ("nan-in-weights", edited(nan_weight), "NaN"),
    ("negative-adam-v", edited(negative_v), "negative"),
    ("no-format", edited(lambda h, b: h["__metadata__"].pop("format")), "not a microgpt"),
    ("format-version-99", edited(set_meta("format_version", "99")), "version '99'"),
    ("metadata-not-strings", edited(set_meta("step", 3)), "malformed __metadata__"),
    (
        "metadata-not-object",
        edited(lambda h, b: h.update({"__metadata__": [1]})),
        "malformed __metadata__",
    ),
    ("model-config-not-json", edited(set_meta("model_config", "{")), "not valid JSON"),
    ("model-config-unknown-key", edited(set_config("model_config", "n_kv_head", 2)), "unknown"),
    ("model-config-bool-size", edited(set_config("model_config", "n_layer", True)), "n_layer"),
    ("model-config-zero-heads", edited(set_config("model_config", "n_head", 0)), "n_head"),
    ("model-config-wrong-shape", edited(set_config("model_config", "n_embd", 8)), "shape"),
    (
        "model-config-hostile-layers",
        edited(set_config("model_config", "n_layer", 10**9)),
        "weight matrices",
    ),
    (
        "optim-config-nan-lr",
        edited(set_config("optim_config", "learning_rate", "nan")),
        "OptimConfig",
    ),
    (
        "train-config-bad-doc-mode",
        edited(set_config("train_config", "doc_mode", "pages")),
        "doc mode",
    ),
    ("vocab-not-a-list", edited(set_meta("vocab", '"abc"')), "vocab"),
    ("vocab-duplicates", edited(set_meta("vocab", '["a", "a", "b", "c"]')), "vocab"),
    ("vocab-wrong-size", edited(set_meta("vocab", '["a", "b"]')), "shape"),
    ("step-negative", edited(set_meta("step", "-1")), "step"),
    ("step-not-a-number", edited(set_meta("step", "3.5")), "step"),
    ("step-absurd", edited(set_meta("step", "9" * 5000)), "step"),
    ("rng-state-malformed", edited(set_meta("rng_state", "[3, [1, 2], null]")), "rng_state"),
    ("rng-state-dict", edited(set_meta("rng_state", '{"a": 1, "b": 2, "c": 3}')), "rng_state"),
    ("window-rng-state-malformed", edited(set_meta("window_rng_state", "[]")), "rng_state"),
    ("best-val-loss-nan", edited(set_meta("best_val_loss", "nan")), "best_val_loss"),
    ("unexpected-tensor", edited(lambda h, b: h.update({"evil": dict(h["wte"])})), "overlap"),
]


@pytest.mark.parametrize("blob, phrase", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_checkpoint_is_refused(tmp_path, blob, phrase):
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    with pytest.raises(ckpt_io.CheckpointError) as e:
        ckpt_io.load(path)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path))
    assert phrase in message, message


def test_the_good_file_loads_and_round_trips(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(GOOD)
    ckpt = ckpt_io.load(path)
    original = make_checkpoint()
    assert ckpt.step == 3 and ckpt.uchars == list("abcé")
    assert ckpt.rng_state == original.rng_state
    assert ckpt.window_rng_state == original.window_rng_state
    assert all(ckpt.params[k].data == t.data for k, t in original.params.items())
    assert ckpt_io.encode(ckpt) == GOOD


# --- the fuzzer -----------------------------------------------------------------------------


def random_json(rng: random.Random, depth: int = 0):
    choice = rng.randrange(9 if depth < 3 else 6)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice([0, 1, -1, 4, 8, 2**63]),
        lambda: rng.uniform(-1e9, 1e9),
        lambda: rng.choice(["", "F64", "x" * 50, "é", "NaN", "1"]),
        lambda: [random_json(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {str(i): random_json(rng, depth + 1) for i in range(rng.randrange(3))},
        lambda: [rng.randrange(-4, 1 << 12) for _ in range(2)],
    ][choice]()


def mutate(rng: random.Random, blob: bytes) -> bytes:
    kind = rng.randrange(6)
    if kind >= 3:
        try:
            header, buffer = split(blob)
            header["__metadata__"].keys()
        except Exception:  # an earlier mutation broke the header: mutate bytes instead
            kind = 0
    if kind == 0:  # flip 1-8 random bits anywhere
        data = bytearray(blob)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 1:  # flip bits in the header length or the JSON header only
        data = bytearray(blob)
        (n,) = struct.unpack("<Q", blob[:8])
        i = rng.randrange(min(8 + n, len(data)))
        data[i] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == 2:  # truncate or extend
        cut = rng.randrange(len(blob))
        return blob[:cut] if rng.random() < 0.8 else blob + bytes(rng.randrange(1, 64))
    if kind == 3:  # replace one tensor field with random JSON
        name = rng.choice(sorted(k for k in header if k != "__metadata__") or ["x"])
        header[name] = header.get(name) if isinstance(header.get(name), dict) else {}
        header[name][rng.choice(["dtype", "shape", "data_offsets", "extra"])] = random_json(rng)
    elif kind == 4:  # replace one metadata entry, or one field of a config inside it
        meta = header["__metadata__"]
        key = rng.choice(sorted(meta) or ["step"])
        if key.endswith("_config") and isinstance(meta.get(key), str) and rng.random() < 0.7:
            try:
                config = json.loads(meta[key])
                config.keys()
            except Exception:
                config = {}
            config[rng.choice(sorted(config) + ["bogus"])] = random_json(rng)
            meta[key] = json.dumps(config)
        elif rng.random() < 0.5:
            meta[key] = json.dumps(random_json(rng))
        else:
            meta[key] = random_json(rng) if rng.random() < 0.3 else str(random_json(rng))
    else:  # delete or duplicate a random entry
        key = rng.choice(sorted(header))
        if rng.random() < 0.5:
            del header[key]
        else:
            header[key + ".copy"] = header[key]
    return join(header, buffer)


def test_fuzzed_checkpoints_only_raise_the_clean_error(tmp_path):
    rng = random.Random(1234)
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(1500):
        blob = mutate(rng, GOOD)
        if rng.random() < 0.3:  # mutations on mutations
            blob = mutate(rng, blob) if len(blob) > 8 else blob
        path.write_bytes(blob)
        try:
            ckpt = ckpt_io.load(path)
        except ckpt_io.CheckpointError as e:
            assert "\n" not in str(e)
            outcomes["refused"] += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutation {i} raised {type(e).__name__}: {e}")
        else:
            assert ckpt.model.n_layer >= 1
            outcomes["loaded"] += 1
    # the fuzzer really exercised both outcomes (bit flips in weights still load)
    assert outcomes["refused"] > 1000 and outcomes["loaded"] > 10, outcomes


# --- the public safetensors library is the other oracle ---------------------------------------


def test_public_safetensors_library_reads_ours_and_we_read_its(tmp_path):
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    ours = tmp_path / "ours.safetensors"
    ours.write_bytes(GOOD)
    tensors = st.load_file(str(ours))
    original = make_checkpoint()
    for name, t in original.params.items():
        assert tensors[name].dtype == np.float64 and tensors[name].shape == t.shape
        assert tensors[name].ravel().tolist() == t.data.tolist()
    with safe_open(str(ours), framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["format"] == "microgpt" and metadata["step"] == "3"

    theirs = tmp_path / "theirs.safetensors"
    st.save_file(tensors, str(theirs), metadata=metadata)
    ckpt = ckpt_io.load(theirs)
    assert all(ckpt.params[k].data == t.data for k, t in original.params.items())
    assert ckpt.adam_v["wte"].data == original.adam_v["wte"].data
    assert ckpt.window_rng_state == original.window_rng_state


def test_a_huge_file_is_refused_from_its_header_alone(tmp_path):
    """A 64 GiB sparse file whose header is broken: refused without reading its body (if the
    loader read it, this test would run out of memory rather than pass)."""
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 2) + b"[]")
        f.truncate(64 * 2**30)
    with pytest.raises(ckpt_io.CheckpointError, match="not a JSON object"):
        ckpt_io.load(path)
    with open(path, "wb") as f:  # a valid header, then far more bytes than its tensors hold
        f.write(GOOD)
        f.truncate(64 * 2**30)
    with pytest.raises(ckpt_io.CheckpointError, match="after the last tensor"):
        ckpt_io.load(path)
