"""``fit --corrections SRC``: the editors' corrections and graded pairs as training data.

SRC is one of

- a service data folder (or its ``articles.sqlite3``): read-only, through `training.export`;
- a PostgreSQL URL (``postgresql://...``): the shared store's tables, read-only;
- a JSON-lines file as ``GET /v1/corrections/export`` or ``training export`` writes it.

Each is turned into seed files in a scratch folder (corrected records stamped ``corrected_at``,
so their topics override the seeds' for the same article id) and, when editors graded pairs, a
``pairs.tsv`` that joins ``--pairs``. Training never imports `service`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.articles.seeds import read_seeds
from model.errors import DataFileError
from training.export import FeedbackTables, StoreReader, export_from_reader

logger = logging.getLogger(__name__)

_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


@dataclass
class CorrectionData:
    """Corrections made ready for `fit`: seed paths, a pairs file (or None), and what they hold."""

    seeds: list[Path] = field(default_factory=list)
    pairs: Path | None = None
    corrected_ids: set[str] = field(default_factory=set)
    pair_count: int = 0
    source: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"source": self.source, "articles": len(self.corrected_ids), "pairs": self.pair_count}


def describe_source(src: str) -> str:
    """The source for logs and manifests, without a password."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", src)


class PgStoreReader(FeedbackTables):
    """The PostgreSQL store's corrections, pair feedback and articles, read-only."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - psycopg is a runtime dependency
            raise DataFileError(
                "reading corrections from PostgreSQL needs psycopg: pip install psycopg"
            ) from None
        try:
            self._conn = psycopg.connect(url, autocommit=True)
            self._conn.read_only = True
        except psycopg.Error as error:
            raise DataFileError(
                f"{describe_source(url)}: cannot read the article store ({str(error).splitlines()[0]})"
            ) from None
        self._error = psycopg.Error

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(query, params).fetchall()  # type: ignore[arg-type]
        except self._error as error:
            if "does not exist" in str(error):
                return []  # a store from before the editors' workspace: nothing corrected yet
            raise DataFileError(f"article store: {str(error).splitlines()[0]}") from None

    def articles(self, ids: list[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        if not ids:
            return {}
        rows = self._rows("SELECT id, record, classification FROM articles WHERE id = ANY(%s)", (ids,))
        return {
            article_id: (
                record if isinstance(record, dict) else json.loads(record),
                classification if isinstance(classification, dict) else json.loads(classification),
            )
            for article_id, record, classification in rows
        }

    def close(self) -> None:
        self._conn.close()


def load_corrections(src: str, scratch: Path) -> CorrectionData:
    """Turn ``src`` into seeds (and pairs) under ``scratch``; see the module docstring."""
    data = CorrectionData(source=describe_source(src))
    if _URL.match(src):
        reader: StoreReader | PgStoreReader = PgStoreReader(src)
    else:
        path = Path(src)
        if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
            target = scratch / "corrections" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            data.seeds = [target]
            data.corrected_ids = set(read_seeds(data.seeds, progress=False).articles)
            return data
        if not path.exists():
            raise DataFileError(
                f"{src}: no such corrections source; expected a service data folder, its "
                "articles.sqlite3, a postgresql:// URL or an exported .jsonl file"
            )
        reader = StoreReader(path)
    out = scratch / "corrections"
    try:
        summary = export_from_reader(reader, out)
    finally:
        reader.close()
    if summary.articles:
        data.seeds = [out]
        data.corrected_ids = set(read_seeds(data.seeds, progress=False).articles)
    if summary.pairs:
        data.pairs = Path(summary.pairs_file)
        data.pair_count = summary.pairs
    logger.info(
        "corrections from %s: %d corrected articles, %d graded pairs",
        data.source,
        len(data.corrected_ids),
        data.pair_count,
    )
    return data
