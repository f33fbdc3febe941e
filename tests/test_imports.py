"""The package's import structure: no import cycle anywhere (type-only and function-local imports
included), and the runtime path (``import hpu_shim`` under a Gaudi container: sitecustomize, install,
one in-scope import) never imports ``hpu_shim.testing`` or ``hpu_shim.bench``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from _helpers import REPO, run_py

PKG = REPO / "hpu_shim"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts and "_demo_pkg" not in p.parts}


def import_graph() -> dict[str, set[str]]:
    """module -> the hpu_shim modules it imports anywhere in its source (module level, functions,
    ``if TYPE_CHECKING:`` blocks). ``from pkg import name`` counts ``pkg.name`` when that is a module and
    ``pkg`` (its ``__init__``) otherwise."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{alias.name}" for alias in node.names]
                # `from pkg import submodule` depends on the submodule; any other name comes from pkg itself
                targets = subs + ([module] if not all(t in modules for t in subs) else [])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                targets = [node.args[0].value]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    assert "hpu_shim.core.protocols" in graph and "hpu_shim.runtime.runtime" in graph["hpu_shim"]
    found = cycles(graph)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_type_only_and_local_imports():
    """Negative control: the walker must report a cycle hidden under TYPE_CHECKING or inside a function."""
    graph = {"a": {"b"}, "b": set()}
    assert cycles(graph) == []
    graph["b"].add("a")
    assert cycles(graph) == [["a", "b"]]
    src = import_graph()
    # core.finder imports core.protocols only under TYPE_CHECKING; compat.__init__ imports c_ops in a function
    assert "hpu_shim.core.protocols" in src["hpu_shim.core.finder"]
    assert "hpu_shim.compat.c_ops" in src["hpu_shim.compat"]


def test_the_core_never_imports_the_runtime():
    graph = import_graph()
    core = [m for m in graph if m.startswith("hpu_shim.core")]
    leaks = {m: sorted(t for t in graph[m] if t.startswith("hpu_shim.runtime.runtime")) for m in core}
    assert all(not v for v in leaks.values()), leaks
    assert graph["hpu_shim.core.protocols"] == set()


def test_runtime_path_imports_neither_testing_nor_bench(pkgs):
    proc = run_py("""
        import sys
        import lmcache
        before = sorted(m for m in sys.modules if m.startswith(("hpu_shim.testing", "hpu_shim.bench")))
        state = sys.modules["hpu_shim"].status()["state"]
        from hpu_shim.testing import results  # only now, to hand the answer back
        results.emit({"state": state, "loaded": before})
    """, path=[pkgs], env={"PYTHONPATH": str(REPO / "sitecustomize"), "HPU_SHIM": "1", "HPU_SHIM_BACKEND": "cpu"})
    assert proc.results == [{"state": "active", "loaded": []}], proc.stderr
