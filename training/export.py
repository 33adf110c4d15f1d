"""``python -m training export``: editors' corrections and graded pairs back into training data.

Reads the service's SQLite store file directly (read-only; training never imports `service`) and
writes, through `model.feedback`'s rules (the same the service's ``GET /v1/corrections/export``
uses):

- one seed file per corrected article (``<id>.md``, YAML front matter), corrections applied and
  stamped ``corrected_at``, so reading seeds lets these topics win over the original seed's;
- ``pairs.tsv``: the editors' graded pairs in the format ``fit --pairs`` reads.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model.articles.seeds import write_seed
from model.errors import DataFileError
from model.feedback import (
    CORRECTION_COLUMNS,
    PAIR_FEEDBACK_COLUMNS,
    Correction,
    PairFeedback,
    corrected_record,
    write_pairs_tsv,
)
from model.results import Classification

logger = logging.getLogger(__name__)

STORE_FILE = "articles.sqlite3"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    articles: int
    pairs: int
    pairs_skipped: int  # graded pairs naming an article the store does not hold (e.g. a bundle one)
    seeds_dir: str
    pairs_file: str


class FeedbackTables:
    """The editors' tables, the same SQL on SQLite and PostgreSQL; a reader supplies `_rows`
    (a missing table reads as empty: a store from before the editors' workspace)."""

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def corrections(self) -> list[Correction]:
        rows = self._rows(f"SELECT {CORRECTION_COLUMNS} FROM corrections ORDER BY id")
        return [Correction.from_row(row) for row in rows]

    def pair_feedback(self) -> list[PairFeedback]:
        rows = self._rows(f"SELECT {PAIR_FEEDBACK_COLUMNS} FROM pair_feedback ORDER BY id")
        return [PairFeedback.from_row(row) for row in rows]


class StoreReader(FeedbackTables):
    """Read-only access to the tables export needs; a store from before corrections reads as empty."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir)
        path = path if path.suffix == ".sqlite3" else path / STORE_FILE
        if not path.is_file():
            raise DataFileError(f"{path}: no article store here; pass the service's NEWSDESK_DATA_DIR")
        try:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise DataFileError(f"{path}: cannot open the article store ({error})") from None
        self.path = path

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []  # a store from before the editors' workspace: nothing corrected yet
            raise DataFileError(f"{self.path}: {error}") from None

    def articles(self, ids: list[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """id -> (record, classification) for the stored ones among ``ids``."""
        found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, record, classification FROM articles WHERE id IN ({marks})"
            for article_id, record, classification in self._rows(sql, tuple(chunk)):
                found[article_id] = (json.loads(record), json.loads(classification))
        return found

    def close(self) -> None:
        self._db.close()


class FeedbackReader(Protocol):
    """What export reads from a store: `StoreReader` (SQLite) or the PostgreSQL reader in
    `training.corrections`."""

    def corrections(self) -> list[Correction]: ...

    def pair_feedback(self) -> list[PairFeedback]: ...

    def articles(self, ids: list[str]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]: ...


def corrected_records(reader: FeedbackReader) -> Iterator[tuple[str, dict[str, Any]]]:
    """(article id, seed record with corrections applied) for every corrected stored article."""
    by_article: dict[str, list[Correction]] = {}
    for correction in reader.corrections():
        by_article.setdefault(correction.article_id, []).append(correction)
    stored = reader.articles(list(by_article))
    for article_id, corrections in by_article.items():
        if article_id not in stored:
            continue
        record, classification = stored[article_id]
        yield (
            article_id,
            corrected_record(record, Classification.from_record(classification, article_id), corrections),
        )


def export_feedback(data_dir: str | Path, out: str | Path) -> ExportSummary:
    """Write corrected seeds into ``out`` and the graded pairs to ``out/pairs.tsv``."""
    reader = StoreReader(data_dir)
    try:
        return export_from_reader(reader, out)
    finally:
        reader.close()


def export_from_reader(reader: FeedbackReader, out: str | Path) -> ExportSummary:
    """`export_feedback` from any `FeedbackReader` (the caller closes it)."""
    out = Path(out)
    written = 0
    for article_id, record in corrected_records(reader):
        write_seed(record, out / f"{article_id}.md")
        written += 1
    feedback = reader.pair_feedback()
    records = reader.articles(list(dict.fromkeys(i for f in feedback for i in (f.a, f.b))))
    rows = [(f, records[f.a][0], records[f.b][0]) for f in feedback if f.a in records and f.b in records]
    out.mkdir(parents=True, exist_ok=True)
    pairs = write_pairs_tsv(rows, out / "pairs.tsv")
    skipped = len(feedback) - pairs
    if skipped:
        logger.warning("%d graded pairs name an article the store does not hold; left out", skipped)
    return ExportSummary(written, pairs, skipped, str(out), str(out / "pairs.tsv"))
