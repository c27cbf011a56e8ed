"""Layout figures of the package: what a change to its structure made better or worse.

Prints the largest modules, the longest functions, the package modules (and heavy libraries) that
``import newsletter.config`` and ``import newsletter.web`` load, the import cycles between package
modules, and the imports written inside functions. Reads the source with ``ast``; nothing is timed.
tests/test_layout.py checks the same graph against the module map in newsletter/__init__.py.

    python bench/layout.py [--top 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.imports import cycles, functions, read_package  # noqa: E402

HEAVY = ("jinja2", "mjml", "httpx", "feedparser", "sklearn", "numpy", "starlette", "uvicorn", "apscheduler")


def loaded_by(module: str) -> tuple[list[str], list[str]]:
    """The package modules and the heavy libraries that importing ``module`` loads, in a fresh process."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    names = out.stdout.split()
    return [n for n in names if n.split(".")[0] == "newsletter"], [h for h in HEAVY if h in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    modules = read_package()
    sizes = sorted(
        ((len(m.path.read_text(encoding="utf-8").splitlines()), n) for n, m in modules.items()), reverse=True
    )
    longest = sorted((f for module in modules.values() for f in functions(module)), reverse=True)
    direct = cycles({name: module.imports for name, module in modules.items()})
    through = cycles({name: module.imports | module.deferred for name, module in modules.items()})
    late = [
        f"{module.name}: {statement}" for module in modules.values() for statement in module.inside_functions
    ]

    print(f"modules: {len(modules)}, lines: {sum(size for size, _ in sizes)}")
    print("largest modules: " + ", ".join(f"{n} {s}" for s, n in sizes[: args.top]))
    print("longest functions: " + ", ".join(f"{n} {s}" for s, n in longest[: args.top]))
    for entry in ("newsletter.config", "newsletter.web"):
        ours, heavy = loaded_by(entry)
        print(
            f"import {entry} loads {len(ours)} of {len(modules)} package modules; heavy: {', '.join(heavy) or 'none'}"
        )
    for title, found in (
        ("import cycles", direct),
        ("import cycles counting imports inside functions", through),
    ):
        print(f"{title}: {len(found)}" + "".join(f"\n  {{{', '.join(group)}}}" for group in found))
    print(f"imports inside functions: {len(late)}" + "".join(f"\n  {line}" for line in late))


if __name__ == "__main__":
    main()
