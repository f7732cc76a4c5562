"""The import rules of DESIGN.md: no import cycle in ``core``, and Streamlit only in ``core/app/``.

The imports are read from the source with :mod:`ast`; nothing is imported, so the torch-heavy
modules cost nothing here. Every ``import`` and ``from ... import`` statement counts, at module
level and inside functions alike (a function-level import that closes a cycle is a cycle that only
waits for the right call order), except those under ``if TYPE_CHECKING:``, which never run.

An edge goes to the module the statement names: ``import a.b.c`` and ``from a.b.c import x`` are
edges to ``a.b.c``, and ``from a.b import c`` is an edge to ``a.b.c`` when that is a module of
``core``, else to the package ``a.b`` (its ``__init__``). Parent packages are not edges: a package
``__init__`` that imports its own submodules is no cycle unless a submodule imports the package back.
Dynamic imports (``importlib.import_module`` of the CLI's and the benchmarks' name tables) are not
seen; they start from ``core.__main__``, which no module imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    """Every module of ``core``: dotted name -> file (packages by their ``__init__.py``)."""
    return {_module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Import statements anywhere in ``tree`` (functions included), skipping ``if TYPE_CHECKING:`` bodies."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_names(module: str, path: Path, modules: set[str] | dict = frozenset()) -> set[str]:
    """Dotted names of the modules ``path`` imports, e.g. ``{"numpy", "core.geometry", "core.data.scene"}``.

    ``from p import n`` names ``p.n`` when that is one of ``modules``, else ``p`` (``n`` is then a name
    defined in ``p``). Relative imports are resolved against the module's package.
    """
    is_package = path.name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    names = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        for alias in node.names:
            submodule = f"{target}.{alias.name}"
            names.add(submodule if submodule in modules else target)
    return names


def import_graph() -> dict[str, set[str]]:
    """``core`` module -> the ``core`` modules it imports (edges as in the module docstring)."""
    modules = core_modules()
    return {module: (imported_names(module, path, modules) & modules.keys()) - {module}
            for module, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module
    (Tarjan's algorithm, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(_cycle_in(graph, set(component)) for component in components)


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search inside it)."""
    start = min(component)
    previous = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, node, start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_cycle_finder_reports_a_known_cycle_and_accepts_a_tree():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"d"}, "f": {"g"}, "g": {"f"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["f", "g", "f"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_are_read_at_every_level_and_resolved(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("import numpy as np\nfrom . import sibling\nfrom ..up import thing\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from core import hidden\n"
                      "def f():\n    import core.late.module\n    from core.data import scene\n")
    modules = {"core.pkg", "core.pkg.mod", "core.pkg.sibling", "core.up", "core.data", "core.data.scene"}
    names = imported_names("core.pkg.mod", source, modules)
    assert names == {"numpy", "core.pkg.sibling", "core.up", "core.late.module", "core.data.scene", "typing"}
    graph = import_graph()
    assert "core.eval.metrics" in graph["core.runner"]  # module level
    assert "core.models.registry" in graph["core.models.colmap.method"]
    assert len(graph) == len(core_modules()) > 50


def test_core_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles in core (module -> imported module):\n" + "\n".join(
        " -> ".join(cycle) for cycle in found)


def test_only_core_app_imports_streamlit():
    offenders = []
    for module, path in core_modules().items():
        if module == "core.app" or module.startswith("core.app."):
            continue
        names = imported_names(module, path)
        if any(name == "streamlit" or name.startswith("streamlit.") for name in names):
            offenders.append(module)
    assert offenders == [], f"Streamlit imported outside core/app/: {offenders}"
