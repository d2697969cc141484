"""Helpers for the run / resume / bad-input tests: engines to parametrize over, the CLI in
this process (`main_cli`) or in a fresh interpreter (`cli`, for signals, kills and terminals),
and snapshots of a directory tree."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from microgpt import checkpoint as ckpt_io
from microgpt.engine import EngineError, load_engine

ENGINE_NAMES = ["ref", "numpy"]

# A tiny model: the reference engine does a step of it in a few milliseconds.
TINY = ["--n-embd", "4", "--n-head", "2", "--n-layer", "1", "--block-size", "8"]


def require_engine(name: str) -> str:
    """Skip (only) when the engine is not part of this installation; fail instead when
    $MICROGPT_REQUIRE_ENGINES names it (CI sets it where the engine must have been built)."""
    try:
        load_engine(name)
    except EngineError as e:
        if name in os.environ.get("MICROGPT_REQUIRE_ENGINES", "").split(","):
            pytest.fail(f"engine {name!r} is required here (MICROGPT_REQUIRE_ENGINES) but: {e}")
        pytest.skip(f"engine {name!r} unavailable: {e}", allow_module_level=True)
    return name


@dataclass
class Result:
    """What a command did, as subprocess.CompletedProcess reports it."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def environment(env: dict[str, str] | None):
    """os.environ with `env`'s differing entries set, restored afterwards."""
    changed = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    saved = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main_cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    """`microgpt ARGS` through `microgpt.__main__.main` in this process: the same exit status,
    stdout and stderr as the real command, without an interpreter's start-up. An exception
    (a traceback in the real command) propagates and fails the test."""
    from microgpt.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's errors and --help
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return Result(code, out.getvalue(), err.getvalue())


def cli(args: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    """`microgpt ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "microgpt", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def popen(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    env = {**env, "PYTHONUNBUFFERED": "1"}  # step lines arrive as they are printed
    return subprocess.Popen(
        [sys.executable, "-m", "microgpt", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` with its bytes (and mode, to catch chmods)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                out[str(p)] = p.read_bytes() + oct(p.stat().st_mode).encode()
            except PermissionError:
                out[str(p)] = b"<unreadable>" + oct(p.stat().st_mode).encode()
    return out


def assert_same_state(a: ckpt_io.Checkpoint, b: ckpt_io.Checkpoint) -> None:
    """Every weight and every Adam moment `==` (bit for bit), and the same step / RNGs."""
    assert a.step == b.step
    assert list(a.params) == list(b.params)
    for name in a.params:
        assert a.params[name].data == b.params[name].data, name
        assert a.adam_m[name].data == b.adam_m[name].data, name
        assert a.adam_v[name].data == b.adam_v[name].data, name
    assert a.rng_state == b.rng_state
    assert a.window_rng_state == b.window_rng_state
