"""Shared fixtures. Tests never download: the names dataset comes from ../shared/data when
present (the team's machines), else from the user's cache, else the test is skipped. The
original program's printed outputs (facts: its losses and samples) live in tests/reference,
so the bit-exact tests run in a fresh clone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = Path(__file__).resolve().parent / "reference"


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


class Reference:
    """The original program's output for each preset (final, first), seed 42."""

    def text(self, preset: str) -> str:
        return (REFERENCE / f"microgpt_{preset}_seed42.txt").read_text()

    def lines(self, preset: str) -> list[str]:
        """What the original prints, line for line (the ` | exact ...` suffix removed)."""
        return [line.split(" | exact")[0] for line in self.text(preset).splitlines()]

    def losses(self, preset: str) -> list[float]:
        """The exact loss of every step (repr-exact floats)."""
        lines = self.text(preset).splitlines()
        return [float(line.split("exact ")[1]) for line in lines if "exact" in line]


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for CLI subprocesses: an empty cache dir so nothing is downloaded."""
    env = dict(os.environ)
    env["MICROGPT_CACHE_DIR"] = str(tmp_path / "cache")
    env.setdefault("PYTHONHASHSEED", "0")
    return env
