"""Layout figures of the package: what a change to its structure made better or worse.

Prints the largest modules, the longest functions, the package modules (and heavy libraries) that
``import newsletter.config`` loads, the import cycles between package modules, and the imports written
inside functions. Reads the source with ``ast``; nothing is timed.

    python bench/layout.py [--top 5]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "newsletter"
HEAVY = ("jinja2", "mjml", "httpx", "feedparser", "sklearn", "numpy", "starlette", "uvicorn", "apscheduler")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str], list[str]]:
    """Package modules imported at module level, those imported inside functions, and those imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for child in ast.walk(node):
                if isinstance(child, ast.Import | ast.ImportFrom):
                    inside.add(id(child))
    top: set[str] = set()
    late: list[str] = []
    deferred: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = resolve(name, is_package, node)
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        found = {target for target in targets if target in modules and target != name}
        if not found and isinstance(node, ast.ImportFrom):
            found = {t.rsplit(".", 1)[0] for t in targets if t.rsplit(".", 1)[0] in modules} - {name}
        if id(node) in inside:
            late.append(f"{name}: {ast.unparse(node)}")
            deferred |= found
        elif not _type_checking_only(tree, node):
            top |= found
    return top, deferred, late


def _type_checking_only(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        guarded = isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        if guarded and any(target is child for child in ast.walk(node)):
            return True
    return False


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def functions(path: Path, name: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name} (line {node.lineno})"))
    return found


def loaded_by(module: str) -> tuple[list[str], list[str]]:
    code = f"import sys; import {module}; print('\\n'.join(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    names = out.stdout.split()
    ours = [n for n in names if n == "newsletter" or n.startswith("newsletter.")]
    heavy = [h for h in HEAVY if h in names]
    return ours, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    whole: dict[str, set[str]] = {}
    late: list[str] = []
    for name, path in modules.items():
        graph[name], deferred, inside = imports_of(name, path, modules)
        whole[name] = graph[name] | deferred
        late += inside

    sizes = sorted(
        ((len(p.read_text(encoding="utf-8").splitlines()), n) for n, p in modules.items()), reverse=True
    )
    longest = sorted((f for n, p in modules.items() for f in functions(p, n)), reverse=True)
    ours, heavy = loaded_by("newsletter.config")
    found = cycles(graph)
    found_late = cycles(whole)

    print(f"modules: {len(modules)}, lines: {sum(size for size, _ in sizes)}")
    print("largest modules: " + ", ".join(f"{n} {s}" for s, n in sizes[: args.top]))
    print("longest functions: " + ", ".join(f"{n} {s}" for s, n in longest[: args.top]))
    print(
        f"import newsletter.config loads {len(ours)} of {len(modules)} package modules; heavy: {', '.join(heavy) or 'none'}"
    )
    print(f"import cycles: {len(found)}" + "".join(f"\n  {{{', '.join(c)}}}" for c in found))
    print(
        f"import cycles counting imports inside functions: {len(found_late)}"
        + "".join(f"\n  {{{', '.join(c)}}}" for c in found_late)
    )
    print(f"imports inside functions: {len(late)}" + "".join(f"\n  {line}" for line in late))


if __name__ == "__main__":
    main()
