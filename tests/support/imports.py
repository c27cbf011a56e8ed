"""The package's import graph, read from the source with ``ast``: what tests/test_layout.py checks and
bench/layout.py prints."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "newsletter"


@dataclass(slots=True)
class Module:
    name: str  # "newsletter.sources.feed"
    path: Path
    imports: set[str] = field(default_factory=set)  # package modules imported when this one loads
    deferred: set[str] = field(default_factory=set)  # package modules imported inside functions
    inside_functions: list[str] = field(default_factory=list)  # every import statement inside a function


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(package: Path = PACKAGE) -> dict[str, Module]:
    """Every module of ``package`` (a directory) with what it imports."""
    names = {path: module_name(path, package.parent) for path in sorted(package.rglob("*.py"))}
    modules = {name: Module(name, path) for path, name in names.items()}
    for module in modules.values():
        _read_imports(module, modules)
    return modules


def _read_imports(module: Module, modules: dict[str, Module]) -> None:
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    in_function = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.walk(node)
    }
    type_only = {
        id(child)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for child in ast.walk(node)
    }
    is_package = module.path.name == "__init__.py"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or id(node) in type_only:
            continue
        found = _targets(module.name, is_package, node, modules)
        if id(node) in in_function:
            module.inside_functions.append(ast.unparse(node))
            module.deferred |= found
        else:
            module.imports |= found


def _targets(importer: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: dict) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules} - {importer}
    base = node.module or ""
    if node.level:
        parts = importer.split(".") if is_package else importer.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    found = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        found.add(submodule if submodule in modules else base)
    return {name for name in found if name in modules} - {importer}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def functions(module: Module) -> list[tuple[int, str]]:
    """(lines, "module.function (line N)") of every function and method."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"))
    return [
        (node.end_lineno - node.lineno + 1, f"{module.name}.{node.name} (line {node.lineno})")
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
    ]
