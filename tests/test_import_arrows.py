"""The import arrows of STYLE.md: no cycles anywhere (function-level imports count), the core
and the reference engine use the standard library only, engines never import each other,
front ends never import each other (only __main__ puts them side by side, and only it imports
microgpt.cli), and the reference engine runs where numpy cannot load."""

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
        "train", "sample", "draw", "report", "evaluate", "fingerprint", "rundir", "distributed",
        "runs", "version", "files", "schema", "resources"]
# The front ends, each a module or a package: thin callers of the run library (runs.py) that
# never import each other. `flags` (the shared command-line flags) is theirs to share.
FRONT_ENDS = ["cli", "api", "bench", "sweep", "export", "studio"]
ENGINE_PACKAGES = {"ref": "ref", "numpy": "numpy_engine", "torch": "torch_engine"}


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved inside microgpt)."""
    package = ".".join(("microgpt",) + path.relative_to(SRC).parent.parts)
    return imports_in(ast.parse(path.read_text()), package)


def imports_in(tree: ast.AST, package: str) -> set[str]:
    """Every import in `tree` (at any depth) of a module in `package`, names made absolute."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names |= {f"{mod}.{a.name}" for a in node.names}
                if node.module:  # `from . import x` imports x, the package only implicitly
                    names.add(mod)
            else:
                names.add(node.module)
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("microgpt",) + parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def module_imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The microgpt modules a file imports, anywhere in it (function-level imports too):
    `from pkg import name` counts as an import of pkg.name when that is a module, else of pkg."""
    out = set()
    for name in imports_of(path):
        if not name.startswith("microgpt"):
            continue
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]  # an attribute, not a module: its module
        out.add(name)
    return out - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: module_imports(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    """The oracle for the test above: hand-made graphs with and without a cycle."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": set(), "x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]


def test_the_graph_sees_function_level_imports():
    """A function-level import is an arrow too (the old cycles hid behind them)."""
    tree = ast.parse("def f():\n    from ..cli import main\n")
    assert "microgpt.cli" in imports_in(tree, "microgpt.studio")


def test_only_main_imports_cli():
    for module, imports in import_graph().items():
        if module != "microgpt.__main__":
            assert "microgpt.cli" not in imports, f"{module} imports microgpt.cli"


def front_end_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FRONT_ENDS else None


def test_front_ends_never_import_each_other():
    for module, imports in import_graph().items():
        mine = front_end_of(module)
        for name in imports:
            theirs = front_end_of(name)
            # __main__ puts the front ends side by side; the package's lazy `load` is the API's
            exempt = module == "microgpt.__main__" or (module, name) == ("microgpt", "microgpt.api")
            if not exempt and theirs is not None:
                assert theirs == mine, f"{module} (a front end: {mine}) imports {name}"


def test_the_core_and_flags_import_no_front_end():
    for module, imports in import_graph().items():
        if module.split(".")[1:2] and module.split(".")[1] in CORE + ["flags"]:
            bad = [n for n in imports if front_end_of(n)]
            assert not bad, f"{module} imports the front end {bad[0]}"


# CPython's own hash modules, renamed in 3.12 (_sha256 -> _sha2): standard library on both
RENAMED_STDLIB = {"_sha2", "_sha256"}


def is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top in RENAMED_STDLIB or name == "__future__"


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


def test_a_command_imports_only_its_own_front_end(tmp_path):
    """`microgpt train` (and sample) load cli's modules, not bench, export, studio or the
    sweep (whose imports cost a quarter of the run's memory); --help still lists every
    command, each from its own front end. In a fresh interpreter: sys.modules is the oracle."""
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\nava\nisabella\nsophia\n")
    code = textwrap.dedent(f"""
        import contextlib, io, sys
        from microgpt.__main__ import COMMANDS, build_parser, main
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["train", "--engine", "ref", "--data", {str(data)!r}, "--steps", "2"])
        others = [m for m in sys.modules for f in ("bench", "export", "studio", "sweep")
                  if m == "microgpt." + f or m.startswith("microgpt." + f + ".")]
        assert rc == 0 and "microgpt.cli" in sys.modules and not others, (rc, others)
        assert "shutil" not in sys.modules  # flags.HelpFormatter: bz2, lzma, zlib stay out
        listed = build_parser()._subparsers._group_actions[0].choices
        assert list(listed) == list(COMMANDS) == ["train", "sample", "bench", "eval", "export",
                                                  "studio", "sweep"]
        assert all(m in sys.modules for m, _ in COMMANDS.values())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("columns", [None, "50", "0", "x", "200"])
def test_help_is_as_wide_as_shutil_would_make_it(monkeypatch, columns):
    """flags.terminal_columns (no shutil import) against shutil.get_terminal_size itself."""
    import shutil

    from microgpt.flags import terminal_columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert terminal_columns() == shutil.get_terminal_size().columns
