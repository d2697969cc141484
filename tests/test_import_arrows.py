"""The import arrows of STYLE.md: the core and the reference engine use the standard library
only, engines never import each other, and the reference engine runs where numpy cannot load."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "microgpt"
CORE = ["config", "data", "tokenizer", "tensor", "init", "schedule", "checkpoint", "engine",
        "train", "sample", "evaluate", "fingerprint", "rundir", "distributed"]
ENGINE_PACKAGES = {"ref": "ref", "numpy": "numpy_engine", "torch": "torch_engine"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved inside microgpt)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("microgpt",) + path.relative_to(SRC).parent.parts)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names |= {mod} | {f"{mod}.{a.name}" for a in node.names}
            else:
                names.add(node.module)
    return names


def is_stdlib(name: str) -> bool:
    return name.split(".")[0] in sys.stdlib_module_names or name == "__future__"


@pytest.mark.parametrize("module", CORE)
def test_core_imports_only_stdlib_and_core(module):
    for name in imports_of(SRC / f"{module}.py"):
        if name.startswith("microgpt"):
            top = name.split(".")[1] if "." in name else ""
            assert top in CORE or top == "", f"{module}.py imports {name}"
        else:
            assert is_stdlib(name), f"{module}.py imports {name}"


@pytest.mark.parametrize("engine", sorted(ENGINE_PACKAGES))
def test_engines_never_import_each_other(engine):
    folder = SRC / ENGINE_PACKAGES[engine]
    if not folder.is_dir():
        pytest.skip(f"the {engine} engine is not in this tree")
    others = {f"microgpt.{p}" for e, p in ENGINE_PACKAGES.items() if e != engine}
    for path in folder.rglob("*.py"):
        for name in imports_of(path):
            assert not any(name == o or name.startswith(o + ".") for o in others), (path, name)
            if engine == "ref":
                assert is_stdlib(name) or name.split(".")[1] in CORE + ["ref"], (path, name)


def test_reference_engine_runs_where_numpy_cannot_be_imported(tmp_path):
    """Train and sample through the CLI with `import numpy` (and torch) made to fail."""
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\nisabella\nsophia\n")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("numpy", "torch"):
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
    """))
    out = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys
        from microgpt.__main__ import main
        rc = main(["train", "--engine", "ref", "--data", {str(data)!r}, "--steps", "3",
                   "--num-samples", "2", "--out", {str(out)!r}])
        rc = rc or main(["sample", "--engine", "ref", "--checkpoint",
                         {str(out / "model.safetensors")!r}, "--num-samples", "3"])
        assert "numpy" not in sys.modules
        sys.exit(rc)
    """)
    env = dict(os.environ, PYTHONPATH=str(blocker))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "num docs: 5" and lines[3].startswith("step    1 /    3 | loss")
    assert sum(line.startswith("sample") for line in lines) == 5
    probe = subprocess.run([sys.executable, "-c", "import numpy"], env=env, capture_output=True)
    assert probe.returncode != 0  # the blocker really blocks
