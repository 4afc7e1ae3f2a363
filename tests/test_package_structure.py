"""The generated package's imports: no cycle anywhere, and no module reaching into another folder's
private (`_`-prefixed) module. Read from the source with `ast`, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import TEST_PACKAGE


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(src: Path) -> dict[str, Path]:
    return {module_name(p, src): p for p in (src / TEST_PACKAGE).rglob("*.py")}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `path` (module `name`) imports, anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules.keys()
            # `from . import x` of a submodule needs x, not the package body (Python loads parents first).
            found |= submodules if node.module is None and len(submodules) == len(node.names) else {target}
            found |= submodules
    return {m for m in found if m in modules and m != name}


def import_graph(src: Path) -> dict[str, set[str]]:
    modules = package_modules(src)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_finds_one_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_generated_package_has_no_import_cycle(project):
    graph = import_graph(project / "src")
    assert len(graph) > 40 and f"{TEST_PACKAGE}.registry" in graph[f"{TEST_PACKAGE}.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_private_module_of_another_folder(project):
    graph = import_graph(project / "src")
    modules = package_modules(project / "src")
    offenders = []
    for name, imports in graph.items():
        folder = modules[name].parent
        for target in imports:
            private = target.rpartition(".")[2].startswith("_") and not target.endswith(("__init__", "__main__"))
            if private and modules[target].parent != folder:
                offenders.append(f"{name} imports {target}")
    assert not offenders, offenders


# Each folder's meaning, as an import rule: helpers below layers below callbacks, never upwards.
MAY_NOT_IMPORT = {"utils": ("callbacks", "layers"), "layers": ("callbacks",)}


def test_folders_import_only_downwards(project):
    graph = import_graph(project / "src")
    offenders = []
    for name, imports in graph.items():
        folder = name.split(".")[1] if name.count(".") else ""
        for forbidden in MAY_NOT_IMPORT.get(folder, ()):
            offenders += [f"{name} imports {t}" for t in imports if t.startswith(f"{TEST_PACKAGE}.{forbidden}")]
    assert {"utils", "layers"} <= {name.split(".")[1] for name in graph if name.count(".")}
    assert not offenders, offenders
