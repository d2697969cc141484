"""Shared fixtures. Tests never download: the names dataset comes from ../shared/data when
present (the team's machines), else from the user's cache, else the test is skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"


def _find_data(name: str) -> Path | None:
    candidates = [SHARED / "data" / name]
    if name == "names.txt":
        from microgpt.data import cache_dir

        candidates.append(cache_dir() / name)
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def names_path() -> Path:
    path = _find_data("names.txt")
    if path is None:
        pytest.skip("names.txt not found in ../shared/data or the microgpt cache")
    return path


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    path = _find_data("tinyshakespeare.txt")
    if path is None:
        pytest.skip("tinyshakespeare.txt not found in ../shared/data")
    return path


def reference_lines(preset: str) -> list[str]:
    """The original program's output for a preset, with the ` | exact ...` suffix removed."""
    path = REFERENCE / f"microgpt_{preset}_seed42.txt"
    if not path.is_file():
        pytest.skip(f"reference output {path} not found")
    return [line.split(" | exact")[0] for line in path.read_text().splitlines()]


def reference_losses(preset: str) -> list[float]:
    """The exact loss of every step of the original run (repr-exact floats)."""
    path = REFERENCE / f"microgpt_{preset}_seed42.txt"
    if not path.is_file():
        pytest.skip(f"reference output {path} not found")
    lines = path.read_text().splitlines()
    return [float(line.split("exact ")[1]) for line in lines if "exact" in line]


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for CLI subprocesses: an empty cache dir so nothing is downloaded."""
    env = dict(os.environ)
    env["MICROGPT_CACHE_DIR"] = str(tmp_path / "cache")
    env.setdefault("PYTHONHASHSEED", "0")
    return env
