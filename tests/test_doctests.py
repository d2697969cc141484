"""The examples in the docstrings run, and print what they say (every module that has one)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "microgpt"
WITH_EXAMPLES = sorted(
    ".".join(("microgpt", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
    if ">>> " in p.read_text()
)


def test_there_are_examples():
    assert "microgpt.fingerprint" in WITH_EXAMPLES and "microgpt.tokenizer" in WITH_EXAMPLES


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:  # an optional dependency (torch, onnx) is missing
        pytest.skip(f"{name} needs {e.name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
