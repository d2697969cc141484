"""Checkpoints: one safetensors file, written and read with the standard library.

The public safetensors layout (https://huggingface.co/docs/safetensors): an 8-byte
little-endian header length N, N bytes of JSON, then the raw little-endian tensor bytes.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
into the byte buffer after the header) and holds "__metadata__", a str -> str map.

What a microgpt checkpoint holds:
  tensors   every weight under the original's names (float64), and Adam's moments
            as "adam.m.<name>" / "adam.v.<name>" (absent in a weights-only file)
  metadata  format ("microgpt"), format_version, preset, model/optim/train configs (JSON;
            the train config holds the doc mode the documents were split by), vocab (JSON
            list of characters), step (completed steps), rng_state (JSON),
            window_rng_state (JSON), and the run's record (`RunRecord`: engine, dtype,
            data_path, data_sha256, eval_every, checkpoint_every, best_val_loss,
            docs_fingerprint), each a typed field checked on load

Loading never executes anything (no pickle) and validates before it allocates: a
truncated, oversized, malformed or inconsistent file raises CheckpointError with a
one-line reason. Writing is atomic: a temporary file in the same directory is written,
fsynced and renamed over the target, so a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from .config import ConfigError, ModelConfig, OptimConfig, TrainConfig, from_dict, to_dict
from .fingerprint import Fingerprint, FingerprintError
from .init import param_shapes
from .tensor import Tensor
from .tokenizer import Tokenizer, TokenizerError

FORMAT = "microgpt"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024 * 1024  # far above any real header; refuses absurd lengths
ADAM_PREFIXES = ("adam.m.", "adam.v.")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class RunRecord:
    """What a run records beside its weights, one metadata entry per field (all optional).

    Typed here and checked on load, so no caller parses strings: a checkpoint from another
    version may leave any of them out.
    """

    engine: str | None = None  # the engine that wrote it (resume uses it by default)
    dtype: str = "float64"  # the engine's precision
    data_path: str | None = None  # the training data file, resolved
    data_sha256: str | None = None  # its sha256 (resume refuses another file)
    eval_every: int = 0  # the training loop's options, reused on resume
    checkpoint_every: int = 0
    best_val_loss: float | None = None  # lowest validation loss so far (finite)
    fingerprint: str | None = None  # fingerprint.Fingerprint of the training documents, JSON


# metadata key of each RunRecord field (the file format predates the record)
RECORD_KEYS = {"fingerprint": "docs_fingerprint"}
DTYPES = ("float64", "float32", "bfloat16")


@dataclass
class Checkpoint:
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig
    uchars: list[str]
    params: dict[str, Tensor]
    adam_m: dict[str, Tensor] | None = None
    adam_v: dict[str, Tensor] | None = None
    step: int = 0  # completed training steps
    preset: str = "final"
    rng_state: tuple | None = None  # random.Random.getstate() after the last completed step
    window_rng_state: tuple | None = None  # the random-window generator's state (train.py)
    record: RunRecord = field(default_factory=RunRecord)

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.uchars)

    def rng(self) -> random.Random:
        """A generator in the saved state (or a fresh one seeded with the run's seed)."""
        rng = random.Random(self.train.seed)
        if self.rng_state is not None:
            rng.setstate(self.rng_state)
        return rng

    def docs_fingerprint(self) -> Fingerprint | None:
        """The training documents' fingerprint the run recorded (None: an older file)."""
        if self.record.fingerprint is None:
            return None
        try:
            return Fingerprint.from_json(self.record.fingerprint)
        except FingerprintError as e:
            raise CheckpointError(f"the checkpoint's {RECORD_KEYS['fingerprint']}: {e}") from None


# --- writing ----------------------------------------------------------------------------------


def encode(ckpt: Checkpoint) -> bytes:
    """The checkpoint as safetensors bytes."""
    tensors = dict(ckpt.params)
    if ckpt.adam_m is not None and ckpt.adam_v is not None:
        tensors.update({f"adam.m.{k}": t for k, t in ckpt.adam_m.items()})
        tensors.update({f"adam.v.{k}": t for k, t in ckpt.adam_v.items()})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "preset": ckpt.preset,
        "model_config": json.dumps(to_dict(ckpt.model)),
        "optim_config": json.dumps(to_dict(ckpt.optim)),
        "train_config": json.dumps(to_dict(ckpt.train)),
        "vocab": json.dumps(ckpt.uchars, ensure_ascii=False),
        "step": str(ckpt.step),
    }
    for key, state in (("rng_state", ckpt.rng_state), ("window_rng_state", ckpt.window_rng_state)):
        if state is not None:
            version, internal, gauss_next = state
            metadata[key] = json.dumps([version, list(internal), gauss_next])
    metadata.update(encode_record(ckpt.record))

    header: dict = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        blob = tensors[name].to_bytes()
        header[name] = {
            "dtype": "F64",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # align the buffer to 8 bytes
    return struct.pack("<Q", len(header_bytes)) + header_bytes + b"".join(blobs)


def encode_record(record: RunRecord) -> dict[str, str]:
    """The record's fields as metadata strings (None fields are left out)."""
    out = {}
    for f in fields(RunRecord):
        value = getattr(record, f.name)
        if value is None:
            continue
        text = repr(value) if isinstance(value, float) else str(value)  # repr: every bit
        out[RECORD_KEYS.get(f.name, f.name)] = text
    return out


def write_atomic(path: str | os.PathLike, data: bytes, _before_rename=None) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one.

    `_before_rename` is a fault-injection hook for tests: called after the temporary file is
    written and before it replaces `path`.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; a checkpoint is an ordinary (never executable) file
        mode = path.stat().st_mode & 0o666 if path.exists() else 0o644
        os.chmod(tmp, mode)
        if _before_rename is not None:
            _before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    write_atomic(path, encode(ckpt))


# --- reading ----------------------------------------------------------------------------------


def _fail(path, reason: str):
    raise CheckpointError(f"{path}: {reason}")


def _no_duplicates(pairs):
    """json object hook: a key given twice is an edited file, not something to guess about."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _strict_loads(text: str):
    """json.loads that refuses duplicate keys and the non-standard NaN/Infinity constants."""

    def no_constant(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=no_constant)


def read_safetensors(path: str | os.PathLike) -> tuple[dict, dict[str, Tensor]]:
    """Parse and validate a safetensors file holding float64 tensors: (metadata, tensors)."""
    p = Path(path)
    if not p.exists():
        _fail(path, "no such checkpoint file")
    if p.is_dir():
        _fail(path, "is a directory, not a checkpoint file")
    # NOTE: the header is read and checked against the file's size before the tensor bytes
    # are read, so a huge file that is not a checkpoint costs only its first bytes.
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                _fail(path, "not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > size - 8:
                why = "the file is truncated or not a checkpoint"
                _fail(path, f"header length {n} is larger than the file; {why}")
            header_bytes = f.read(n)
            header, buffer_len = _parse_header(path, header_bytes), size - 8 - n
            metadata, spans = _check_entries(path, header, buffer_len)
            buffer = f.read(buffer_len)
    except OSError as e:
        _fail(path, f"cannot read: {e.strerror}")
    if len(buffer) != buffer_len:
        _fail(path, "the file changed while it was read")
    tensors = {}
    for begin, end, name in spans:
        tensors[name] = Tensor.from_bytes(tuple(header[name]["shape"]), buffer[begin:end])
    return metadata, tensors


def _parse_header(path, header_bytes: bytes) -> dict:
    if header_bytes[:1] != b"{":
        _fail(path, "not a safetensors file (its header is not a JSON object)")
    try:
        header = _strict_loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # JSONDecodeError is a ValueError
        _fail(path, "malformed JSON header; the file is corrupt or not a checkpoint")
    if not isinstance(header, dict):
        _fail(path, "malformed header (not a JSON object)")
    return header


def _check_entries(path, header: dict, buffer_len: int) -> tuple[dict, list]:
    """Validate every tensor entry against the buffer's length: (metadata, sorted spans)."""
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        _fail(path, "malformed __metadata__ (must map strings to strings)")
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            _fail(path, f"tensor {name!r}: malformed entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype != "F64":
            _fail(path, f"tensor {name!r} has dtype {dtype!r}; microgpt checkpoints store F64")
        if not (isinstance(shape, list) and all(type(d) is int and 0 <= d for d in shape)):
            _fail(path, f"tensor {name!r}: malformed shape")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= buffer_len
        ):
            _fail(path, f"tensor {name!r}: data offsets out of range")
        begin, end = offsets
        if end - begin != 8 * math.prod(shape):
            _fail(path, f"tensor {name!r}: {end - begin} bytes do not hold shape {shape} in F64")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:], strict=False):
        if begin_b < end_a:
            _fail(path, f"tensors {a!r} and {b!r} overlap")
        if begin_b > end_a:
            _fail(path, f"a gap of {begin_b - end_a} bytes lies between tensors {a!r} and {b!r}")
    if spans and spans[0][0] != 0:
        _fail(path, f"{spans[0][0]} unused bytes before the first tensor; the file is corrupt")
    covered = spans[-1][1] if spans else 0
    if covered != buffer_len:
        _fail(path, f"{buffer_len - covered} bytes after the last tensor; the file is corrupt")
    return metadata, spans


def _json_meta(path, metadata: dict, key: str):
    if key not in metadata:
        _fail(path, f"metadata has no {key!r}; not a microgpt checkpoint")
    try:
        return _strict_loads(metadata[key])
    except (ValueError, RecursionError):
        _fail(path, f"metadata {key!r} is not valid JSON")


def _config(path, cls, data):
    if not isinstance(data, dict):
        _fail(path, f"{cls.__name__} in metadata is not a JSON object")
    try:
        config = from_dict(cls, data)
        config.validate()
    except (ConfigError, TypeError) as e:
        _fail(path, f"invalid {cls.__name__}: {e}")
    return config


def _rng_state(path, data):
    try:
        version, internal, gauss_next = data
        state = (version, tuple(internal), gauss_next)
        random.Random().setstate(state)  # validates version and the Mersenne Twister state
    except (TypeError, ValueError, OverflowError):
        _fail(path, "rng_state in metadata is malformed")
    if not (gauss_next is None or isinstance(gauss_next, float)):
        _fail(path, "rng_state in metadata is malformed")
    return state


def _rng_state_meta(path, metadata: dict, key: str):
    if key not in metadata:
        return None
    state = _rng_state(path, _json_meta(path, metadata, key))
    return state


def _count(path, metadata: dict, key: str) -> int:
    text = metadata.get(key, "0")
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        _fail(path, f"{key} in metadata is not a non-negative integer: {text[:20]!r}")
    return int(text)


def _record(path, metadata: dict) -> RunRecord:
    """The run's record from the metadata, every field checked by type and range."""
    engine = metadata.get("engine")
    if engine is not None and not (engine.isascii() and engine.isidentifier() and len(engine) < 32):
        _fail(path, f"engine in metadata is not an engine name: {engine[:20]!r}")
    dtype = metadata.get("dtype", "float64")
    if dtype not in DTYPES:
        _fail(path, f"dtype in metadata must be one of {', '.join(DTYPES)}: {dtype[:20]!r}")
    data_path = metadata.get("data_path")
    if data_path is not None and not (0 < len(data_path) <= 4096 and "\0" not in data_path):
        _fail(path, "data_path in metadata is not a file path")
    digest = metadata.get("data_sha256")
    if digest is not None and not (
        len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        _fail(path, "data_sha256 in metadata is not a sha256 hex digest")
    best = None
    if "best_val_loss" in metadata:
        try:
            best = float(metadata["best_val_loss"])
        except ValueError:
            best = math.nan
        if not math.isfinite(best):
            _fail(path, "best_val_loss in metadata is not a finite number")
    return RunRecord(
        engine=engine, dtype=dtype, data_path=data_path, data_sha256=digest,
        eval_every=_count(path, metadata, "eval_every"),
        checkpoint_every=_count(path, metadata, "checkpoint_every"),
        best_val_loss=best, fingerprint=metadata.get(RECORD_KEYS["fingerprint"]),
    )  # fmt: skip


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and fully validate a microgpt checkpoint."""
    metadata, tensors = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        _fail(path, "not a microgpt checkpoint (no 'format: microgpt' in its metadata)")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        _fail(
            path,
            f"checkpoint format version {version!r} is not supported (this microgpt reads "
            f"version {FORMAT_VERSION}); upgrade microgpt or re-train",
        )
    model = _config(path, ModelConfig, _json_meta(path, metadata, "model_config"))
    optim = _config(path, OptimConfig, _json_meta(path, metadata, "optim_config"))
    train = _config(path, TrainConfig, _json_meta(path, metadata, "train_config"))
    uchars = _json_meta(path, metadata, "vocab")
    try:
        if not isinstance(uchars, list) or not all(isinstance(c, str) for c in uchars):
            raise TokenizerError
        Tokenizer(uchars)
    except TokenizerError:
        _fail(path, "vocab in metadata is not a list of distinct characters")
    step = _count(path, metadata, "step")
    rng_state = _rng_state_meta(path, metadata, "rng_state")
    window_rng_state = _rng_state_meta(path, metadata, "window_rng_state")
    record = _record(path, metadata)

    n_matrices = 3 + 6 * model.n_layer
    if n_matrices > len(tensors):  # checked first: a hostile n_layer must not make us loop
        _fail(path, f"config needs {n_matrices} weight matrices, the file has {len(tensors)}")
    shapes = param_shapes(model, len(uchars) + 1)
    groups: dict[str, dict[str, Tensor]] = {"": {}, "adam.m.": {}, "adam.v.": {}}
    for name, t in tensors.items():
        prefix = next((p for p in ADAM_PREFIXES if name.startswith(p)), "")
        key = name[len(prefix) :]
        if key not in shapes:
            _fail(path, f"unexpected tensor {name!r} for this config")
        if t.shape != shapes[key]:
            need = list(shapes[key])
            _fail(path, f"tensor {name!r} has shape {list(t.shape)}, config needs {need}")
        if not all(math.isfinite(x) for x in t.data):
            _fail(path, f"tensor {name!r} holds NaN or infinite values")
        if prefix == "adam.v." and any(x < 0 for x in t.data):
            _fail(path, f"tensor {name!r} holds negative values (Adam's second moment cannot)")
        groups[prefix][key] = t
    missing = [k for k in shapes if k not in groups[""]]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        _fail(path, f"missing tensor {missing[0]!r}{more}")
    params = {k: groups[""][k] for k in shapes}  # the original's order
    adam_m = adam_v = None
    if groups["adam.m."] or groups["adam.v."]:
        for prefix in ADAM_PREFIXES:
            absent = [k for k in shapes if k not in groups[prefix]]
            if absent:
                _fail(path, f"missing tensor {prefix + absent[0]!r}")
        adam_m = {k: groups["adam.m."][k] for k in shapes}
        adam_v = {k: groups["adam.v."][k] for k in shapes}
    return Checkpoint(
        model=model,
        optim=optim,
        train=train,
        uchars=uchars,
        params=params,
        adam_m=adam_m,
        adam_v=adam_v,
        step=step,
        preset=metadata.get("preset", "final"),
        rng_state=rng_state,
        window_rng_state=window_rng_state,
        record=record,
    )
