"""The README's reading order points at real code: each `path` lines A-B (`name`, ...) entry
names functions or classes defined within those lines of that file, and the ranges lie in
the file. (The README is read before the code; a stale line range is a wrong map.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"`(src/microgpt/[\w/]+\.py)` lines (\d+)-(\d+) \(([^)]*)\)", re.S)


def reading_list() -> list[tuple[str, int, int, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Read the algorithm in this order")[1].split("\n## ")[0]
    return [
        (path, int(a), int(b), re.findall(r"`(\w+)`", names))
        for path, a, b, names in ENTRY.findall(section)
    ]


def definitions(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (first line, last line) of every function and class, methods included."""
    tree = ast.parse(path.read_text())
    return {
        node.name: (node.lineno, node.end_lineno)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }


def test_the_reading_list_is_there():
    entries = reading_list()
    assert len(entries) >= 9
    assert [e[0] for e in entries][:3] == [
        "src/microgpt/data.py", "src/microgpt/tokenizer.py", "src/microgpt/ref/autograd.py",
    ]  # fmt: skip


def test_each_range_holds_what_it_names():
    for path, first, last, names in reading_list():
        defs = definitions(ROOT / path)
        assert names, path
        for name in names:
            assert name in defs, f"{path} defines no {name}"
            start, end = defs[name]
            assert first <= start and end <= last, f"{name} is at {path}:{start}-{end}"
        # no wasted range either: it starts at the first named definition's line
        assert first == min(defs[n][0] for n in names), (path, first)
        assert last <= len((ROOT / path).read_text().splitlines())
