"""Bounded resources, checked before work starts (issue 13, kind 3): only regular files are
read, a run's memory is estimated from its configs and refused up front when it cannot fit,
and a large file is read as a stream into compact arrays.

Oracles: the kernel (a FIFO with no writer blocks whoever opens it; /dev/zero never ends; a
process's peak resident memory, VmHWM); tracemalloc's count of what each engine allocated,
against the engine's own estimate; the documented bytes per character (README, data.py).
No test asserts a duration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest
from run_helpers import TINY, main_cli

from microgpt import checkpoint as ckpt_io
from microgpt.config import ModelConfig, OptimConfig, TrainConfig
from microgpt.engine import EngineError, load_engine
from microgpt.init import init_params, param_shapes

NAMES = "emma\nolivia\nava\nisabella\nsophia\ncharlotte\nmia\namelia\nharper\nevelyn\n"
GiB = 2**30

# Runs `microgpt ARGV` (argv from sys.argv), then reports this process's peak resident memory
# (VmHWM, KiB) on the last line of stderr. Under an address-space limit, like a small machine.
PEAK = textwrap.dedent(
    """
    import resource, sys
    limit, (_, hard) = int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_AS)
    if limit:
        soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    from microgpt.__main__ import main
    try:
        code = main(sys.argv[2:])
    finally:
        with open("/proc/self/status") as f:
            peak = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
        print(f"peak_kib {peak}", file=sys.stderr)
    sys.exit(code)
    """
)


def run_measured(argv, env, limit: int = 4 * GiB, timeout: int = 120):
    """(exit status, stderr without the peak line, peak resident bytes) of `microgpt ARGV`."""
    env = {**env, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", PEAK, str(limit), *map(str, argv)], env=env,
                       capture_output=True, text=True, timeout=timeout)  # fmt: skip
    lines = r.stderr.splitlines()
    assert lines and lines[-1].startswith("peak_kib "), r.stderr[-3000:]
    return r.returncode, "\n".join(lines[:-1]), int(lines[-1].split()[1]) * 1024


def assert_one_line(code, stderr, phrase=""):
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr and stderr.count("\n") == 0, stderr
    assert stderr.startswith("microgpt: error: ") and phrase in stderr, stderr


@pytest.fixture
def names(tmp_path) -> Path:
    path = tmp_path / "names.txt"
    path.write_text(NAMES)
    return path


# --- only regular files --------------------------------------------------------------------


@pytest.fixture
def not_files(tmp_path):
    """Paths that are not regular files: a FIFO nobody writes to (opening it would block
    forever), devices that never end, a folder, a socket."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = tmp_path / "socket"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    yield {"fifo": fifo, "zero": Path("/dev/zero"), "urandom": Path("/dev/urandom"),
           "folder": tmp_path, "socket": sock}  # fmt: skip
    server.close()


KINDS = ["fifo", "zero", "urandom", "folder", "socket"]


@pytest.mark.parametrize("kind", KINDS)
def test_data_that_is_not_a_regular_file(names, tmp_path, cli_env, not_files, kind):
    path = not_files[kind]
    ckpt = tmp_path / "run" / "model.safetensors"
    r = main_cli(["train", "--data", names, "--steps", "1", *TINY, "--out", ckpt.parent,
                  "--num-samples", "0"], cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for argv in (["train", "--data", path, "--steps", "1", *TINY],
                 ["sample", "--checkpoint", path],
                 ["eval", "--checkpoint", ckpt, "--data", path]):  # fmt: skip
        code, err, _ = run_measured(argv, cli_env, timeout=60)  # a blocked open would time out
        assert_one_line(code, err, "is a directory" if kind == "folder" else "regular file")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_stored_data_path_that_is_not_a_regular_file(names, tmp_path, cli_env, not_files,
                                                       kind):  # fmt: skip
    """A checkpoint's recorded data file, read again on resume."""
    out = tmp_path / "run"
    r = main_cli(["train", "--data", names, "--steps", "1", *TINY, "--out", out,
                  "--num-samples", "0"], cli_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    ckpt = ckpt_io.load(out / "model.safetensors")
    ckpt.record = dataclasses.replace(ckpt.record, data_path=str(not_files[kind]))
    ckpt_io.save(out / "model.safetensors", ckpt)
    code, err, _ = run_measured(["train", "--resume", out, "--steps", "2"], cli_env, timeout=60)
    assert_one_line(code, err, "regular file")


# --- memory, estimated and checked before anything is allocated --------------------------------

ABSURD = [  # flags, the flag the refusal must name among what to lower
    (["--n-embd", "100000"], "--n-embd"),
    (["--block-size", "1000000000"], "--block-size"),
    (["--batch-size", "1000000000"], "lower --batch-size"),
    (["--n-layer", "100000", "--n-embd", "512"], "--n-layer"),
]


@pytest.mark.parametrize("flags, phrase", ABSURD, ids=[f[0][0] for f in ABSURD])
def test_absurd_sizes_are_refused_before_allocating(names, cli_env, flags, phrase):
    """Refused from the configs alone: the process never grows past its start-up size."""
    for engine in ("ref", "numpy"):
        argv = ["train", "--engine", engine, "--data", names, "--steps", "1", *flags]
        code, err, peak = run_measured(argv, cli_env)
        assert_one_line(code, err, phrase)
        assert "needs about" in err
        assert peak < 400 * 2**20, peak


def cjk(n: int) -> list[str]:
    """n distinct characters from U+4E00 on (lone surrogates skipped: they are not text)."""
    return [chr(c) for c in range(0x4E00, 0x4E00 + n + 2048) if not 0xD800 <= c < 0xE000][:n]


def sparse_checkpoint(path: Path, n_embd: int, vocab: int) -> int:
    """A checkpoint whose valid header declares a model of width n_embd over `vocab`
    characters, its tensor bytes a hole (a sparse file: no disk used). Its size in bytes."""
    model = ModelConfig(n_embd=n_embd, n_head=1, block_size=8)
    tiny = ModelConfig(n_embd=1, n_head=1, block_size=8)
    params = init_params(tiny, 2, random.Random(0))
    ckpt = ckpt_io.Checkpoint(tiny, OptimConfig(), TrainConfig(), ["a"], params)
    blob = ckpt_io.encode(ckpt)
    (n,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8 : 8 + n])["__metadata__"]
    meta["model_config"] = json.dumps({**json.loads(meta["model_config"]), "n_embd": n_embd})
    meta["vocab"] = json.dumps(cjk(vocab - 1), ensure_ascii=False)
    header, offset = {"__metadata__": meta}, 0
    for name, (rows, cols) in sorted(param_shapes(model, vocab).items()):
        header[name] = {"dtype": "F64", "shape": [rows, cols],
                        "data_offsets": [offset, offset + 8 * rows * cols]}  # fmt: skip
        offset += 8 * rows * cols
    text = json.dumps(header, ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + offset)
    return 8 + len(text) + offset


def test_a_checkpoint_too_large_for_memory_is_refused_from_its_header(tmp_path, cli_env):
    """A 100,000-character vocabulary at n_embd 20,000: ~100 GiB of tensors (a hole on disk)
    declared by a valid header: refused before a tensor byte is read."""
    path = tmp_path / "huge" / "model.safetensors"
    path.parent.mkdir()
    size = sparse_checkpoint(path, n_embd=20000, vocab=100000)
    assert size > 50 * GiB
    for argv in (["sample", "--checkpoint", path], ["train", "--resume", path.parent]):
        code, err, peak = run_measured(argv, cli_env)
        assert_one_line(code, err, "needs about")
        assert peak < 400 * 2**20, peak


def test_a_100000_character_vocabulary_fits_and_samples(tmp_path, cli_env):
    """The same vocabulary at a small width is a small model: it trains, loads and samples
    (no engine holds a vocab x vocab array)."""
    chars = "".join(cjk(100000))
    data = tmp_path / "cjk.txt"
    data.write_text("\n".join(chars[i : i + 7] for i in range(0, len(chars), 7)) + "\n")
    out = tmp_path / "run"
    code, err, peak = run_measured(["train", "--data", data, "--steps", "2", *TINY, "--out",
                                    out, "--num-samples", "2", "--quiet"], cli_env)  # fmt: skip
    assert code == 0, err
    assert peak < 1 * GiB, peak
    code, err, _ = run_measured(["sample", "--checkpoint", out / "model.safetensors",
                                 "--num-samples", "2"], cli_env)  # fmt: skip
    assert code == 0, err


CONFIGS = [  # (n_embd, n_layer, block_size, batch_size, vocab_size)
    (16, 1, 16, 1, 27),
    (64, 2, 64, 8, 100),
    (32, 1, 256, 4, 3000),
    (16, 1, 16, 32, 30000),
    (8, 1, 512, 2, 50),
]


@pytest.mark.parametrize("engine", ["numpy", "ref"])
def test_the_memory_estimate_bounds_what_each_engine_allocates(engine):
    """tracemalloc counts every allocation of Python objects and NumPy arrays: drawing the
    weights, building the engine, two training steps at full (batch, block_size), the
    checkpoint's copies. The engine's estimate is at least that, and not wildly more."""
    try:
        cls = load_engine(engine)
    except EngineError as e:
        pytest.skip(str(e))
    configs = CONFIGS if engine == "numpy" else [(8, 1, 8, 2, 50), (16, 1, 16, 1, 27)]
    for C, L, T, B, V in configs:
        config = ModelConfig(n_embd=C, n_layer=L, n_head=2, block_size=T)
        rng = random.Random(0)
        batch = [[rng.randrange(V) for _ in range(T + 1)] for _ in range(B)]
        tracemalloc.start()
        try:
            eng = cls(config, OptimConfig(), V, init_params(config, V, rng))
            for t in (1, 2):
                eng.forward_backward(batch)
                eng.adam_step(0.01, t)
            eng.parameters(), eng.optimizer_state()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        estimate = cls.memory_estimate(config, V, B, "float64")
        assert peak <= estimate + 2**20, (C, L, T, B, V, peak, estimate)
        assert estimate <= 3 * peak + 2**20, (C, L, T, B, V, peak, estimate)


# torch and the C engine allocate outside tracemalloc's view: the growth of the process's peak
# resident memory from a warmed-up engine (its own one-time allocations excluded) is measured
ENGINE_GROWTH = textwrap.dedent(
    """
    import random, sys
    from microgpt.config import ModelConfig, OptimConfig
    from microgpt.engine import load_engine
    from microgpt.init import init_params

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    name = sys.argv[1]
    kwargs = {"device": "cpu"} if name == "torch" else {}
    if name == "torch":
        import torch
        torch.set_num_threads(1)
    cls = load_engine(name)
    C, L, T, B, V = map(int, sys.argv[2:7])
    warm = ModelConfig(n_embd=4, n_head=2, block_size=4)
    e = cls(warm, OptimConfig(), 5, init_params(warm, 5, random.Random(0)), **kwargs)
    e.forward_backward([[0, 1, 2]])
    e.adam_step(0.01, 1)
    base = status("VmRSS:")
    config, rng = ModelConfig(n_embd=C, n_layer=L, n_head=2, block_size=T), random.Random(0)
    batch = [[rng.randrange(V) for _ in range(T + 1)] for _ in range(B)]
    e = cls(config, OptimConfig(), V, init_params(config, V, rng), **kwargs)
    for t in (1, 2):
        e.forward_backward(batch)
        e.adam_step(0.01, t)
    e.parameters(), e.optimizer_state()
    print(status("VmHWM:") - base, cls.memory_estimate(config, V, B, "float64"))
    """
)


@pytest.mark.parametrize("engine", ["torch", "c"])
@pytest.mark.parametrize("config", [(64, 2, 64, 8, 100), (16, 1, 16, 32, 30000)])
def test_an_engines_growth_outside_python_stays_within_its_estimate(cli_env, engine, config):
    try:
        load_engine(engine)
    except EngineError as e:
        pytest.skip(str(e))
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", ENGINE_GROWTH, engine, *map(str, config)],
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    growth, estimate = map(int, r.stdout.split())
    print(engine, config, growth, estimate)
    assert growth <= estimate, (engine, config, growth, estimate)


# --- a large file, streamed -----------------------------------------------------------------

# The documented cost of documents in memory (README "Your own text", data.py): 1 byte per
# character of a Latin-1 text, and 8 bytes per document (where it ends, its shuffled place).
BYTES_PER_CHAR, BYTES_PER_DOC = 1, 8


@pytest.mark.slow
def test_a_300_mb_file_is_streamed_into_compact_arrays(names_path, tmp_path, cli_env):
    """A names-like file of 300 MB (MICROGPT_STREAM_MB to change it) trains a step with a
    peak memory within the documented cost of its documents plus a fixed 320 MiB (the
    interpreter, NumPy, the fingerprint, one chunk of text being split)."""
    size = int(os.environ.get("MICROGPT_STREAM_MB", "300")) * 10**6
    names = names_path.read_text().split()
    rng = random.Random(0)
    path, written, docs = tmp_path / "big.txt", 0, 0
    with open(path, "w") as f:
        while written < size:
            chunk = rng.choices(names, k=100000)
            text = "\n".join(chunk) + "\n"
            f.write(text)
            written, docs = written + len(text), docs + len(chunk)
    chars = written - docs  # ASCII: a byte per character, less the newlines
    bound = chars * BYTES_PER_CHAR + docs * BYTES_PER_DOC + 320 * 2**20
    argv = ["train", "--engine", "numpy", "--data", path, "--steps", "1", "--num-samples", "0"]
    code, err, peak = run_measured(argv, cli_env, limit=0, timeout=1800)
    assert code == 0, err
    mib = 2**20
    print(f"\n{written / 1e6:.0f} MB, {docs:,} documents: peak {peak / mib:,.0f} MiB, bound "
          f"{bound / mib:,.0f} MiB")
    assert peak <= bound, (peak, bound)
