"""The module graph of src/: dependencies run one way and nothing imports in a circle.

    tst (torch only)  ←  tst_train (run directory, data, model, loop, checkpoint, evaluation)
                      ←  tst_train.experiments (arms, compare, sweep, analysis, report)  ←  tst_train.cli

Every import statement counts, including the ones inside functions (a lazy import is still a
dependency). Read from the source with ``ast``; nothing is imported.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Core modules that hold a kernel for an optional accelerator library, and the library each may import.
#: Nothing else in the core may name them at module level, so ``import tst`` never needs the library
#: (checked statically and in a fresh interpreter below).
OPTIONAL_KERNEL_MODULES = {"tst.fused_triton": {"triton"}}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_nodes(tree: ast.AST, module_level: bool):
    """Every import node of ``tree``, or with ``module_level`` only those run at import time (not in a def)."""
    if not module_level:
        yield from ast.walk(tree)
        return
    for node in ast.iter_child_nodes(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield node
            yield from _import_nodes(node, True)


def imports_of(path: Path, module_level: bool = False) -> set[str]:
    """Absolute names of every module ``path`` imports (``from X import y`` also counts X.y when it is a module);
    with ``module_level``, only the imports that run when the module is imported (lazy ones left out)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in _import_nodes(ast.parse(path.read_text()), module_level):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    ours = set(files)
    g = {}
    for name, path in files.items():
        # an edge to our module; `from pkg import name` where name is not a module is an edge to pkg
        g[name] = {m for m in imports_of(path) if m in ours and m != name}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer(mod: str) -> int:
    """0: the tst core, 1: the trainer, 2: experiments, 3: the command line."""
    if mod == "tst" or (mod.startswith("tst.") and not mod.startswith("tst.integrations") and mod != "tst.__main__"):
        return 0
    if mod.startswith("tst_train.cli"):
        return 3
    if mod.startswith("tst_train.experiments"):
        return 2
    return 1


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_graph_is_read_correctly():
    """The checks below mean something only if the reader sees real edges, lazy ones included."""
    g = graph()
    assert "tst.loss" in g["tst.fused"] and "tst.schedule" in g["tst.loss"]
    assert "tst_train.experiments.arms" in g["tst_train.experiments.sweep"]
    assert "tst.integrations.torchtitan.classes" in g["tst.integrations.torchtitan"]  # inside __getattr__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_dependencies_run_one_way():
    wrong = [f"{m} (layer {layer(m)}) imports {d} (layer {layer(d)})"
             for m, deps in graph().items() for d in deps
             if layer(d) > layer(m) and m != "tst.__main__"]
    assert wrong == []


def test_integrations_use_the_core_only():
    """The adapters are for outside trainers: they build on ``tst``, never on the reference trainer."""
    wrong = [(m, d) for m, deps in graph().items() if m.startswith("tst.integrations") for d in deps
             if d.startswith("tst_train")]
    assert wrong == []


def test_only_the_entry_point_imports_the_cli():
    users = sorted(m for m, deps in graph().items() for d in deps
                   if d.startswith("tst_train.cli") and not m.startswith("tst_train.cli"))
    assert users == ["tst.__main__"]


@pytest.mark.parametrize("path", sorted(p for p in (SRC / "tst").rglob("*.py") if "integrations" not in p.parts
                                        and p.name != "__main__.py"), ids=lambda p: p.name)
def test_core_imports_only_torch(path):
    """The tst core imports the standard library, torch and itself — nothing else, not even numpy — except
    that a kernel module of OPTIONAL_KERNEL_MODULES may import its accelerator library."""
    allowed = set(sys.stdlib_module_names) | {"torch", "tst", "__future__"}
    allowed |= OPTIONAL_KERNEL_MODULES.get(module_name(path), set())
    top = {m.split(".")[0] for m in imports_of(path) if m}
    assert top <= allowed, f"{path.name} imports {sorted(top - allowed)}"


def test_optional_kernel_modules_are_imported_only_lazily():
    """No module imports a kernel module at import time; ``import tst`` loads neither it nor its library."""
    eager = [(module_name(p), m) for p in SRC.rglob("*.py") for m in imports_of(p, module_level=True)
             if m in OPTIONAL_KERNEL_MODULES]
    assert eager == []
    assert "tst.fused" in graph() and "tst.fused_triton" in graph()["tst.fused"]  # the lazy edge is seen
    probe = (f"import sys, tst; loaded = sorted({sorted(OPTIONAL_KERNEL_MODULES)!r} & sys.modules.keys()); "
             "print(loaded); assert not loaded")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=SRC)
    assert out.returncode == 0, out.stdout + out.stderr
