"""The package's layers, read from its imports (function-level imports included).

``helpers`` has four layers, lowest first (ARCHITECTURE.md): ``engine`` (models, hooks, the exact
decompositions, text embeddings, caches), ``methods`` (what the papers do with the terms:
ablation, TextSpan, head roles, maps, metrics, segmentation, spurious cues, second-order
effects), ``data`` (datasets, text pools, the synthetic world, training and measuring the
offline model) and ``course`` (presets, figures, prose, plots, widgets, exercises, the main
job). A module may import its own layer and the layers below it; the import graph has no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "helpers"
LAYERS = ("engine", "methods", "data", "course")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The helpers modules that ``name`` imports anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def add(target: str) -> None:
        # "helpers.engine.models.load_model" -> the longest known module prefix
        parts = target.split(".")
        for k in range(len(parts), 0, -1):
            if ".".join(parts[:k]) in known:
                found.add(".".join(parts[:k]))
                return

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "helpers":
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "helpers":
                target = node.module
            else:
                continue
            for alias in node.names:  # "from . import world" names a module
                add(f"{target}.{alias.name}")
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) for name, path in mods.items()}


@pytest.fixture(scope="module")
def package_graph() -> dict[str, set[str]]:
    """The package's import graph, read once for the tests below."""
    return graph()


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1:
        return -1  # the package itself
    if parts[1] not in LAYERS:
        raise AssertionError(f"{name} is in no layer: put it under helpers/{{{','.join(LAYERS)}}}/")
    return LAYERS.index(parts[1])


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_sits_in_a_layer():
    for name in modules():
        layer(name)


def test_no_import_cycles(package_graph):
    found = cycles(package_graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_upward_imports(package_graph):
    g = package_graph
    upward = sorted(f"{a} -> {b}" for a, deps in g.items() for b in deps
                    if layer(b) > layer(a) and not (b.startswith(a + ".") and a.count(".") == 1))
    assert not upward, "imports from a lower layer up to a higher one:\n  " + "\n  ".join(upward)


def test_the_package_itself_imports_nothing_heavy(package_graph):
    # `import helpers` stays instant: layers are imported where they are used
    assert package_graph["helpers"] == set()


# --- the checker itself, on small made-up packages -------------------------------------------


def test_checker_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "helpers"
    for sub in ("engine", "methods"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "a.py").write_text("def f():\n    from ..methods import b\n")
    (pkg / "methods" / "b.py").write_text("from ..engine.a import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    g = graph()
    assert g["helpers.engine.a"] == {"helpers.methods.b"} and g["helpers.methods.b"] == {"helpers.engine.a"}
    assert cycles(g) == [["helpers.engine.a", "helpers.methods.b"]]
    with pytest.raises(AssertionError, match="lower layer up"):
        test_no_upward_imports(graph())
