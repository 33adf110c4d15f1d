"""The rooms and arrows of ARCHITECTURE.md, checked from the source: no import cycles, and
`service → model ← training` with `model/` reading no environment.

Every import counts, including those inside functions (a lazy import is still an arrow).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "service", "training", "benchmarks")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports (``from a.b import c`` names a.b.c when that is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def import_graph() -> nx.DiGraph:
    modules = {
        _module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "results" not in path.parts
    }
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in _imports(path):
            # `from model import bundle` names the module model.bundle; `from model.x import f` names model.x.
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def test_no_import_cycles_anywhere() -> None:
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a cycle of meaning; drop those arrows.
    for node in list(graph):
        for target in list(graph.successors(node)):
            if target.startswith(node + ".") and (ROOT / node.replace(".", "/") / "__init__.py").is_file():
                graph.remove_edge(node, target)
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], f"import cycles: {cycles}"


@pytest.mark.parametrize("forbidden", ["service", "training", "benchmarks"])
def test_model_imports_nothing_from_outside_it(forbidden: str) -> None:
    graph = import_graph()
    arrows = [(a, b) for a, b in graph.edges if a.split(".")[0] == "model" and b.split(".")[0] == forbidden]
    assert arrows == []


def test_service_and_training_never_import_each_other() -> None:
    graph = import_graph()
    arrows = [
        (a, b)
        for a, b in graph.edges
        if {a.split(".")[0], b.split(".")[0]} == {"service", "training"}
        # the service starts training as a separate process; that is not an import
    ]
    assert arrows == []


def test_model_reads_no_environment() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "model").rglob("*.py")
        if "os.environ" in path.read_text(encoding="utf-8") or "getenv" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


# --- the article store (model/store): below the model, the only home of its tables' SQL ----------


def test_the_store_imports_nothing_from_service_training_or_the_model_above_it() -> None:
    graph = import_graph()
    arrows = [
        (a, b)
        for a, b in graph.edges
        if a.startswith("model.store")
        and (b.split(".")[0] in ("service", "training", "benchmarks") or b == "model.news_model")
    ]
    assert arrows == []


def test_service_and_training_both_open_the_store_from_model() -> None:
    graph = import_graph()
    users = {a.split(".")[0] for a, b in graph.edges if b.startswith("model.store")}
    assert {"service", "training"} <= users


# SQL naming the store's tables: the article rows, the editors' tables, the live version, the
# PostgreSQL ingest claims and migrations. The embedding cache (model/encoders) has tables of its own.
_TABLES = r"(articles|corrections|pair_feedback|story_claims|meta|schema_migrations)\b"
STORE_SQL = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+{_TABLES}|\b(story_claims|schema_migrations)\b")


def test_no_sql_against_the_store_s_tables_outside_model_store() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for package in ("service", "training")
        for path in (ROOT / package).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if STORE_SQL.search(line)
    ]
    assert offenders == []
