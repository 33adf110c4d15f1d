"""`SqliteArticleStore`: the embedded default backend, one SQLite file beside the service.

WAL mode (readers never block the writer) and ``synchronous=FULL`` (a committed ingest survives
a power cut).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.language import record_language
from model.feedback import CORRECTION_COLUMNS, PAIR_FEEDBACK_COLUMNS, Correction, PairFeedback
from model.store.base import ArticleQuery, RestoreRow, StoredArticle, StoreError, StorySummary
from model.store.filters import SQLITE, article_filters

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3

_CREATE_V1 = """
CREATE TABLE IF NOT EXISTS articles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    canonical_url TEXT,
    record TEXT NOT NULL,
    embedding BLOB NOT NULL,
    story_id TEXT NOT NULL,
    classification TEXT NOT NULL,
    duplicate_of TEXT,
    model_version TEXT,
    published_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_story ON articles (story_id, published_at);
CREATE INDEX IF NOT EXISTS articles_url ON articles (canonical_url);
"""

# Each step takes a store from version N to N + 1, in one transaction: old stores are upgraded in
# place, never refused. A new store is created at version 1 and walks the same steps.
_MIGRATIONS: dict[int, str] = {
    # 1 -> 2: the editors' workspace. Effective labels and ingest-time uncertainty as columns (the
    # inbox filters by label, the review queue sorts by uncertainty), the seed's related ids, and
    # editors' corrections and graded pairs beside (never inside) the model's classification.
    1: """
    ALTER TABLE articles ADD COLUMN labels TEXT;
    ALTER TABLE articles ADD COLUMN uncertainty REAL;
    ALTER TABLE articles ADD COLUMN related TEXT;
    UPDATE articles SET
        labels = (SELECT json_group_array(json_extract(t.value, '$.label'))
                  FROM json_each(articles.classification, '$.topics') AS t),
        uncertainty = json_extract(classification, '$.uncertainty');
    CREATE INDEX IF NOT EXISTS articles_uncertainty ON articles (uncertainty);
    CREATE TABLE IF NOT EXISTS corrections (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        article_id TEXT NOT NULL,
        topics TEXT,
        quality REAL,
        note TEXT,
        editor TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS corrections_article ON corrections (article_id, id);
    CREATE TABLE IF NOT EXISTS pair_feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        a TEXT NOT NULL,
        b TEXT NOT NULL,
        verdict TEXT NOT NULL,
        note TEXT,
        editor TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS pair_feedback_a ON pair_feedback (a);
    CREATE INDEX IF NOT EXISTS pair_feedback_b ON pair_feedback (b);
    """,
    # 2 -> 3: each article's language (filtered by the inbox and /v1/similar); rows stored before
    # get theirs from their record in the same transaction (`_fill_languages`).
    2: """
    ALTER TABLE articles ADD COLUMN language TEXT;
    CREATE INDEX IF NOT EXISTS articles_language ON articles (language, published_at);
    """,
}


# What opening a store from before the editors' workspace read-only (no migration) reports.
_MISSING_WORKSPACE = frozenset(f"no such table: {table}" for table in ("corrections", "pair_feedback"))


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _labels_json(labels: Sequence[str]) -> str:
    return json.dumps(list(labels), ensure_ascii=False)


class SqliteArticleStore:
    """`ArticleStore` in one SQLite file, shared by the event loop's worker threads under a lock."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only:
            self._db = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            # WAL: readers never block the writer; FULL: the commit is on disk before we answer.
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.executescript(_CREATE_V1)
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1')")
            found = int(self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: store schema version {found} is newer than this service reads "
                    f"({SCHEMA_VERSION}); run a newer service or point NEWSDESK_DATA_DIR at a new folder"
                )
            for version in range(found, SCHEMA_VERSION):
                self._migrate(version)
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the article store at {self.path}: {error}") from error
        logger.info("article store %s (journal %s, %d articles)", self.path, mode, self.count())

    def _open_read_only(self) -> sqlite3.Connection:
        """The file as it is: nothing created, no schema migrated (a reader such as training must
        leave the service's file alone); what an older store lacks reads as empty (`_query`)."""
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no article store here")
        try:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: cannot open the article store ({error})") from None

    def _migrate(self, version: int) -> None:
        """Run the step from ``version`` to ``version + 1`` in one transaction."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    self._db.execute(statement)
            if version == 2:
                self._fill_languages()
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version + 1),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        logger.info(
            "article store %s: schema migrated from version %d to %d", self.path, version, version + 1
        )

    def _fill_languages(self, chunk: int = 1000) -> None:
        """Each stored row's language from its record (inside the migration's transaction)."""
        seq = 0
        while rows := self._db.execute(
            "SELECT seq, record FROM articles WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk)
        ).fetchall():
            updates = [(language, language, row_seq) for row_seq, record in rows
                       for language in [record_language(json.loads(record))]]  # fmt: skip
            self._db.executemany(
                "UPDATE articles SET language = ?, record = json_set(record, '$.language', ?) WHERE seq = ?",
                updates,
            )
            seq = rows[-1][0]

    _COLUMNS = (
        "seq, id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
        "model_version, published_at, created_at, related, labels"
    )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredArticle:
        (
            seq,
            id_,
            url,
            record,
            blob,
            story,
            classification,
            dup,
            version,
            published,
            created,
            related,
            labels,
        ) = row
        return StoredArticle(
            id=id_,
            record=json.loads(record),
            embedding=np.frombuffer(blob, dtype=np.float32).copy(),
            story_id=story,
            classification=json.loads(classification),
            created_at=datetime.fromisoformat(created),
            canonical_url=url,
            published_at=datetime.fromisoformat(published) if published else None,
            duplicate_of=dup,
            model_version=version,
            seq=seq,
            related_ids=tuple(json.loads(related)) if related else (),
            labels=tuple(json.loads(labels)) if labels is not None else None,
        )

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            if str(error) in _MISSING_WORKSPACE:
                return []  # a store from before the editors' workspace, read as is: nothing corrected
            raise StoreError(f"article store {self.path}: {error}") from error

    def put_many(self, articles: Sequence[StoredArticle]) -> list[bool]:
        rows = [
            (
                a.id,
                a.canonical_url,
                json.dumps(a.record, ensure_ascii=False, default=str),
                np.ascontiguousarray(a.embedding, dtype=np.float32).tobytes(),
                a.story_id,
                json.dumps(a.classification, ensure_ascii=False),
                a.duplicate_of,
                a.model_version,
                _iso(a.published_at),
                _iso(a.created_at),
                json.dumps(list(a.related_ids), ensure_ascii=False) if a.related_ids else None,
                _labels_json(a.effective_labels),
                a.uncertainty,
                a.record.get("language"),
            )
            for a in articles
        ]
        insert = (
            "INSERT OR IGNORE INTO articles (id, canonical_url, record, embedding, story_id, "
            "classification, duplicate_of, model_version, published_at, created_at, "
            "related, labels, uncertainty, language) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        cursors = self._write([(insert, row) for row in rows])
        return [cursor.rowcount == 1 for cursor in cursors]

    def get(self, article_id: str) -> StoredArticle | None:
        rows = self._query(f"SELECT {self._COLUMNS} FROM articles WHERE id = ?", (article_id,))
        return self._row(rows[0]) if rows else None

    def get_many(self, article_ids: Sequence[str]) -> dict[str, StoredArticle]:
        found: dict[str, StoredArticle] = {}
        ids = list(dict.fromkeys(article_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {self._COLUMNS} FROM articles WHERE id IN ({marks})", chunk):
                article = self._row(row)
                found[article.id] = article
        return found

    def by_story(self, story_id: str, limit: int = 1000) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM articles WHERE story_id = ? "
            "ORDER BY published_at IS NULL, published_at DESC, seq DESC LIMIT ?",
            (story_id, limit),
        )
        return [self._row(row) for row in rows]

    def iter_since(self, seq: int = 0, chunk: int = 1000) -> Iterator[StoredArticle]:
        # Keyset pages, not one long cursor: the lock is held per page, so ingests interleave.
        while True:
            rows = self._query(
                f"SELECT {self._COLUMNS} FROM articles WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk)
            )
            if not rows:
                return
            for row in rows:
                yield self._row(row)
            seq = rows[-1][0]

    def restore_rows(self, seq: int = 0, chunk: int = 5000) -> Iterator[RestoreRow]:
        """`iter_since` for a restart: only the columns a restore needs (see `base.restore_rows`)."""
        while True:
            rows = self._query(
                "SELECT seq, id, record, embedding, story_id, published_at FROM articles "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, chunk),
            )
            if not rows:
                return
            for seq_, id_, record, blob, story, published in rows:
                yield RestoreRow(
                    seq_,
                    id_,
                    json.loads(record),
                    np.frombuffer(blob, dtype=np.float32),
                    story,
                    datetime.fromisoformat(published) if published else None,
                )
            seq = rows[-1][0]

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM articles")[0][0])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM articles")[0][0])

    # --- the editors' workspace -------------------------------------------------------------

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[sqlite3.Cursor]:
        """Run ``statements`` in one durable transaction."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    cursors = [self._db.execute(sql, params) for sql, params in statements]
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise StoreError(f"article store {self.path}: cannot write: {error}") from error
        return cursors

    # --- meta (which encoder made the stored vectors: `model.store.base.VECTORS_KEY`) ----------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._write([("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))])

    def replace_embeddings(self, rows: Sequence[tuple[str, npt.NDArray[np.float32]]]) -> None:
        """Overwrite stored vectors (another encoder's, re-embedded), one transaction."""
        self._write(
            [
                (
                    "UPDATE articles SET embedding = ? WHERE id = ?",
                    (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), article_id),
                )
                for article_id, vector in rows
            ]
        )

    def list_articles(self, query: ArticleQuery, limit: int) -> list[StoredArticle]:
        clause, params = article_filters(query, SQLITE)
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM articles {clause}ORDER BY seq DESC LIMIT ?", [*params, limit]
        )
        return [self._row(row) for row in rows]

    def list_stories(self, limit: int, before_seq: int | None = None) -> list[StorySummary]:
        having = "HAVING MAX(seq) < ? " if before_seq is not None else ""
        params: list[Any] = [before_seq] if before_seq is not None else []
        rows = self._query(
            "SELECT story_id, COUNT(*), MAX(seq), MIN(published_at), MAX(published_at), "
            "(SELECT json_extract(m.record, '$.title') FROM articles AS m "
            " WHERE m.story_id = articles.story_id "
            " ORDER BY m.published_at IS NULL, m.published_at, m.seq LIMIT 1) "
            f"FROM articles GROUP BY story_id {having}ORDER BY MAX(seq) DESC LIMIT ?",
            [*params, limit],
        )
        return [
            StorySummary(story, int(count), int(last), str(title or ""), _time(first), _time(latest))
            for story, count, last, first, latest, title in rows
        ]

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(story_ids))
        sizes: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT story_id, COUNT(*) FROM articles WHERE story_id IN ({marks}) GROUP BY story_id",
                chunk,
            )
            sizes.update({story: int(count) for story, count in rows})
        return sizes

    def review_queue(self, limit: int) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM articles "
            "WHERE id NOT IN (SELECT article_id FROM corrections) "
            "ORDER BY json_array_length(coalesce(labels, '[]')) > 0, uncertainty IS NULL, uncertainty, "
            "seq DESC LIMIT ?",
            (limit,),
        )
        return [self._row(row) for row in rows]

    def add_correction(self, correction: Correction) -> Correction:
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT INTO corrections (article_id, topics, quality, note, editor, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    correction.article_id,
                    _labels_json(correction.topics) if correction.topics is not None else None,
                    correction.quality,
                    correction.note,
                    correction.editor,
                    _iso(correction.created_at),
                ),
            )
        ]
        if correction.topics is not None:
            statements.append(
                (
                    "UPDATE articles SET labels = ? WHERE id = ?",
                    (_labels_json(correction.topics), correction.article_id),
                )
            )
        cursor = self._write(statements)[0]
        return replace(correction, id=int(cursor.lastrowid or 0))

    def corrections(self, article_id: str | None = None) -> list[Correction]:
        columns = CORRECTION_COLUMNS
        if article_id is None:
            rows = self._query(f"SELECT {columns} FROM corrections ORDER BY id")
        else:
            rows = self._query(
                f"SELECT {columns} FROM corrections WHERE article_id = ? ORDER BY id", (article_id,)
            )
        return [Correction.from_row(row) for row in rows]

    def add_pair_feedback(self, feedback: PairFeedback) -> PairFeedback:
        cursor = self._write(
            [
                (
                    "INSERT INTO pair_feedback (a, b, verdict, note, editor, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        feedback.a,
                        feedback.b,
                        feedback.verdict,
                        feedback.note,
                        feedback.editor,
                        _iso(feedback.created_at),
                    ),
                )
            ]
        )[0]
        return replace(feedback, id=int(cursor.lastrowid or 0))

    def pair_feedback(self, article_id: str | None = None) -> list[PairFeedback]:
        columns = PAIR_FEEDBACK_COLUMNS
        if article_id is None:
            rows = self._query(f"SELECT {columns} FROM pair_feedback ORDER BY id")
        else:
            rows = self._query(
                f"SELECT {columns} FROM pair_feedback WHERE a = ? OR b = ? ORDER BY id",
                (article_id, article_id),
            )
        return [PairFeedback.from_row(row) for row in rows]

    def set_classifications(self, updates: Sequence[tuple[str, dict[str, Any], str]]) -> int:
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "UPDATE articles SET classification = ?, model_version = ?, uncertainty = ?, "
                "labels = CASE WHEN EXISTS (SELECT 1 FROM corrections AS c "
                "WHERE c.article_id = articles.id AND c.topics IS NOT NULL) THEN labels ELSE ? END "
                "WHERE id = ?",
                (
                    json.dumps(classification, ensure_ascii=False),
                    version,
                    classification.get("uncertainty"),
                    _labels_json([str(t["label"]) for t in classification.get("topics", [])]),
                    article_id,
                ),
            )
            for article_id, classification, version in updates
        ]
        if not statements:
            return 0
        return sum(max(cursor.rowcount, 0) for cursor in self._write(statements))

    def delete(self, article_id: str) -> bool:
        cursors = self._write(
            [
                ("DELETE FROM articles WHERE id = ?", (article_id,)),
                ("DELETE FROM corrections WHERE article_id = ?", (article_id,)),
                ("DELETE FROM pair_feedback WHERE a = ? OR b = ?", (article_id, article_id)),
            ]
        )
        return cursors[0].rowcount > 0

    def ping(self) -> None:
        self._query("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
