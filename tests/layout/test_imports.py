"""The layout rules ARCHITECTURE.md states, checked on the source.

- The library (``commit_train``, ``evaluation``) never imports kfp or the code built on it
  (``components``, ``pipelines``): components depend on the library, never the reverse.
- No import circles inside the library, counting imports inside functions too: a lazy
  import that closes a circle still ties two modules' roles together, and breaks as soon
  as someone moves it to the top of the file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ("commit_train", "evaluation")
FORBIDDEN = ("kfp", "components", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module this file imports, at any depth of the file (absolute names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            # `from pkg import mod` imports the submodule `pkg.mod` when there is one
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _library_graph() -> dict[str, set[str]]:
    files = [p for pkg in LIBRARY for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_package_init(graph: dict[str, set[str]], module: str) -> bool:
    return any(m.startswith(module + ".") for m in graph)


def test_library_never_imports_kfp_or_the_pipeline_code():
    bad = []
    for pkg in LIBRARY:
        for path in (ROOT / pkg).rglob("*.py"):
            for name in _imports(path):
                if name.split(".")[0] in FORBIDDEN:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_no_import_circles_in_the_library():
    graph = _library_graph()
    # A package's __init__ re-exporting its modules is not a circle of roles: drop the
    # edges *into* package inits (``from commit_train.data import X`` resolves to a module).
    pruned = {
        m: {i for i in deps if not _is_package_init(graph, i)}
        for m, deps in graph.items()
        if not _is_package_init(graph, m)
    }
    cycles = _cycles(pruned)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("pkg", LIBRARY)
def test_the_library_is_scanned(pkg):
    assert any(m.startswith(pkg) for m in _library_graph())
