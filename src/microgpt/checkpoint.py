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
import stat
import struct
from dataclasses import dataclass, field, fields

from . import resources
from .config import (
    FLOAT_MAX,
    MAX_STEPS,
    MODEL_FIELDS,
    OPTIM_FIELDS,
    PRESETS,
    TRAIN_FIELDS,
    ConfigError,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from .files import BINARY, CLOEXEC, NONBLOCK, write_atomic  # write_atomic: tests patch it here
from .fingerprint import Fingerprint, FingerprintError
from .init import param_shapes
from .schema import (
    Check,
    Int,
    Items,
    Json,
    Nullable,
    Number,
    Parsed,
    Record,
    SchemaError,
    Text,
    decimal,
    shown,
    strict_json,
)
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


def save(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    write_atomic(path, encode(ckpt))


# --- the metadata schema ---------------------------------------------------------------------

MAX_VOCAB = 0x110000  # every Unicode code point
ENGINE_NAME = "[A-Za-z_][A-Za-z0-9_]{0,31}"  # ASCII: \\w would take "²" for a digit


class RngState(Check):
    """random.Random.getstate() as JSON: [3, [624 words and an index], null or a float]."""

    label, rule = "rng_state", "a Mersenne Twister state [3, [625 integers], gauss_next]"

    def __call__(self, value):
        if not (type(value) is list and len(value) == 3 and type(value[1]) is list
                and len(value[1]) == 625 and value[0] == 3 and type(value[0]) is int):  # fmt: skip
            self.fail(value)
        version, internal, gauss_next = value
        if not (all(type(x) is int and 0 <= x < 2**32 for x in internal) and internal[-1] <= 624):
            self.fail(value)
        gauss_next = Nullable(Number(-FLOAT_MAX, FLOAT_MAX, "gauss_next", closed=True))(gauss_next)
        state = (version, tuple(internal), gauss_next)
        try:
            random.Random().setstate(state)  # what the generator itself checks
        except (TypeError, ValueError, OverflowError):
            self.fail(value)
        return state


class FingerprintText(Check):
    """The documents' fingerprint, a JSON string checked by fingerprint.SCHEMA."""

    label, rule = "docs_fingerprint", "a documents fingerprint (JSON)"

    def __call__(self, value):
        if type(value) is not str:
            self.fail(value)
        try:
            return Fingerprint.from_json(value)
        except FingerprintError as e:
            raise SchemaError(f"the checkpoint's docs_fingerprint: {e}") from None


def _float_text(text: str) -> float:
    if len(text) > 64:
        raise ValueError(text)
    return float(text)


def _config(cls, checks: dict[str, Check]) -> Check:
    return Json(Record(checks, label=cls.__name__))


# Every metadata entry a checkpoint may hold: its check (type and range, before anything uses
# it) and whether it must be there. Unknown entries are ignored (a newer microgpt may add
# some); RECORD_KEYS maps the RunRecord fields to their entries.
METADATA: dict[str, tuple[Check, bool]] = {
    "format": (Text("format", choices=(FORMAT,)), True),
    "format_version": (Text("format_version", max_len=20), True),
    "preset": (Text("preset", choices=tuple(PRESETS)), False),
    "model_config": (_config(ModelConfig, MODEL_FIELDS), True),
    "optim_config": (_config(OptimConfig, OPTIM_FIELDS), True),
    "train_config": (_config(TrainConfig, TRAIN_FIELDS), True),
    "vocab": (Json(Items(Text("a vocabulary character", max_len=1), 0, MAX_VOCAB, "vocab",
                         rule="a list of distinct characters")), True),  # fmt: skip
    "step": (Parsed(decimal, Int(0, MAX_STEPS, "step")), False),
    "rng_state": (Json(RngState()), False),
    "window_rng_state": (Json(RngState().named("window_rng_state")), False),
    # the RunRecord
    "engine": (Text("engine", pattern=ENGINE_NAME, rule="an engine name"), False),
    "dtype": (Text("dtype", choices=DTYPES), False),
    "data_path": (Text("data_path", max_len=4096, pattern=r"[^\x00]+", rule="a file path"), False),
    "data_sha256": (Text("data_sha256", pattern="[0-9a-f]{64}", rule="a sha256 hex digest"), False),
    "eval_every": (Parsed(decimal, Int(0, MAX_STEPS, "eval_every")), False),
    "checkpoint_every": (Parsed(decimal, Int(0, MAX_STEPS, "checkpoint_every")), False),
    "best_val_loss": (Parsed(_float_text, Number(-FLOAT_MAX, FLOAT_MAX, "best_val_loss",
                                                  closed=True, rule="a finite number")), False),
    "docs_fingerprint": (FingerprintText(), False),
}


# --- reading ----------------------------------------------------------------------------------


def _fail(path, reason: str):
    raise CheckpointError(f"{path}: {reason}")


def _check_file(path) -> int:
    """stat (never open) the checkpoint: only a regular file is read. Its size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _fail(path, "no such checkpoint file")
    except OSError as e:
        _fail(path, f"cannot read: {e.strerror or e}")
    if stat.S_ISDIR(st.st_mode):
        _fail(path, "is a directory, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        _fail(path, "is not a regular file (a pipe, device or socket), not a checkpoint")
    return st.st_size


def read_safetensors(path: str | os.PathLike, check=None) -> tuple[dict, dict[str, Tensor]]:
    """Parse and validate a safetensors file holding float64 tensors: (metadata, tensors).

    `check(metadata, shapes)` is called with the header's metadata and tensor shapes before
    a byte of the tensors is read (load validates everything there), and the tensors are
    read only if they fit in the memory available.
    """
    _check_file(path)
    # NOTE: the header is read and checked against the file's size before the tensor bytes
    # are read, so a huge file that is not a checkpoint costs only its first bytes.
    try:
        fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC | BINARY)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                _fail(path, "is not a regular file, not a checkpoint")
            size = st.st_size
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
            if check is not None:
                check(metadata, {name: tuple(header[name]["shape"]) for _, _, name in spans})
            try:  # the bytes, then the arrays made from them
                resources.check({"its tensors": 2 * buffer_len}, "free some memory",
                                error=CheckpointError)  # fmt: skip
            except CheckpointError as e:
                _fail(path, str(e))
            buffer = f.read(buffer_len)
    except OSError as e:
        _fail(path, f"cannot read: {e.strerror or e}")
    if len(buffer) != buffer_len:
        _fail(path, "the file changed while it was read")
    view = memoryview(buffer)
    tensors = {}
    for begin, end, name in spans:
        tensors[name] = Tensor.from_bytes(tuple(header[name]["shape"]), view[begin:end])
    return metadata, tensors


def _parse_header(path, header_bytes: bytes) -> dict:
    if header_bytes[:1] != b"{":
        _fail(path, "not a safetensors file (its header is not a JSON object)")
    try:
        header = strict_json(header_bytes.decode("utf-8"))
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


def parse_metadata(path, metadata: dict) -> dict:
    """Every entry of METADATA checked against its schema (a missing required one, or one
    of the wrong type or range, is a CheckpointError): key -> value."""
    if metadata.get("format") != FORMAT:
        _fail(path, "not a microgpt checkpoint (no 'format: microgpt' in its metadata)")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        _fail(
            path,
            f"checkpoint format version {shown(version)} is not supported (this microgpt reads "
            f"version {FORMAT_VERSION}); upgrade microgpt or re-train",
        )
    values = {}
    for key, (check, required) in METADATA.items():
        if key not in metadata:
            if required:
                _fail(path, f"metadata has no {key!r}; not a microgpt checkpoint")
            continue
        try:
            values[key] = check(metadata[key])
        except SchemaError as e:
            config = key.endswith("_config") and not str(e).startswith(check.label)
            _fail(path, f"invalid {check.label}: {e}" if config else str(e))
    for key, cls in (("model_config", ModelConfig), ("optim_config", OptimConfig),
                     ("train_config", TrainConfig)):  # fmt: skip
        try:
            values[key] = from_dict(cls, values[key])
            values[key].validate()  # what relates fields (n_embd divisible by n_head)
        except ConfigError as e:
            _fail(path, f"invalid {cls.__name__}: {e}")
    try:
        Tokenizer(list(values["vocab"]))
    except TokenizerError:
        _fail(path, "vocab in metadata is not a list of distinct characters")
    return values


def _check_shapes(path, values: dict, shapes: dict[str, tuple]) -> None:
    """The tensors the header declares are exactly the config's (before any is read)."""
    model = values["model_config"]
    n_matrices = 3 + 6 * model.n_layer
    if n_matrices > len(shapes):  # checked first: a hostile n_layer must not make us loop
        _fail(path, f"config needs {n_matrices} weight matrices, the file has {len(shapes)}")
    expected = param_shapes(model, len(values["vocab"]) + 1)
    groups: dict[str, set[str]] = {"": set(), "adam.m.": set(), "adam.v.": set()}
    for name, shape in shapes.items():
        prefix = next((p for p in ADAM_PREFIXES if name.startswith(p)), "")
        key = name[len(prefix) :]
        if key not in expected:
            _fail(path, f"unexpected tensor {name!r} for this config")
        if shape != expected[key]:
            _fail(path, f"tensor {name!r} has shape {list(shape)}, config needs "
                        f"{list(expected[key])}")  # fmt: skip
        groups[prefix].add(key)
    missing = [k for k in expected if k not in groups[""]]
    if missing:
        more = f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""
        _fail(path, f"missing tensor {missing[0]!r}{more}")
    if groups["adam.m."] or groups["adam.v."]:
        for prefix in ADAM_PREFIXES:
            absent = [k for k in expected if k not in groups[prefix]]
            if absent:
                _fail(path, f"missing tensor {prefix + absent[0]!r}")


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and fully validate a microgpt checkpoint: its metadata against METADATA and the
    tensors' shapes against its config before any tensor byte is read, then their values."""
    values: dict = {}

    def check(metadata: dict, shapes: dict[str, tuple]) -> None:
        values.update(parse_metadata(path, metadata))
        _check_shapes(path, values, shapes)

    metadata, tensors = read_safetensors(path, check)
    model = values["model_config"]
    shapes = param_shapes(model, len(values["vocab"]) + 1)
    for name, t in tensors.items():
        if not all(math.isfinite(x) for x in t.data):
            _fail(path, f"tensor {name!r} holds NaN or infinite values")
        if name.startswith("adam.v.") and any(x < 0 for x in t.data):
            _fail(path, f"tensor {name!r} holds negative values (Adam's second moment cannot)")
    params = {k: tensors[k] for k in shapes}  # the original's order
    adam_m = adam_v = None
    if "adam.m.wte" in tensors:
        adam_m = {k: tensors["adam.m." + k] for k in shapes}
        adam_v = {k: tensors["adam.v." + k] for k in shapes}
    record = RunRecord(
        engine=values.get("engine"), dtype=values.get("dtype", "float64"),
        data_path=values.get("data_path"), data_sha256=values.get("data_sha256"),
        eval_every=values.get("eval_every", 0), checkpoint_every=values.get("checkpoint_every", 0),
        best_val_loss=values.get("best_val_loss"),
        fingerprint=metadata.get("docs_fingerprint"),  # checked: as it was written
    )  # fmt: skip
    return Checkpoint(
        model=model,
        optim=values["optim_config"],
        train=values["train_config"],
        uchars=list(values["vocab"]),
        params=params,
        adam_m=adam_m,
        adam_v=adam_v,
        step=values.get("step", 0),
        preset=values.get("preset", "final"),
        rng_state=values.get("rng_state"),
        window_rng_state=values.get("window_rng_state"),
        record=record,
    )
