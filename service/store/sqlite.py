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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.store.base import StoredArticle, StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


class SqliteArticleStore:
    """`ArticleStore` in one SQLite file, shared by the event loop's worker threads under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            # WAL: readers never block the writer; FULL: the commit is on disk before we answer.
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
            )
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open the article store at {self.path}: {error}") from error
        if int(found) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {found}, this service reads {SCHEMA_VERSION}; "
                "point NEWSDESK_DATA_DIR at a new folder or migrate the store"
            )
        logger.info("article store %s (journal %s, %d articles)", self.path, mode, self.count())

    _COLUMNS = (
        "seq, id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
        "model_version, published_at, created_at"
    )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> StoredArticle:
        seq, id_, url, record, blob, story, classification, dup, version, published, created = row
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
        )

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as error:
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
            )
            for a in articles
        ]
        inserted = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for row in rows:
                        cursor = self._db.execute(
                            "INSERT OR IGNORE INTO articles (id, canonical_url, record, embedding, story_id, "
                            "classification, duplicate_of, model_version, published_at, created_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            row,
                        )
                        inserted.append(cursor.rowcount == 1)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise StoreError(f"article store {self.path}: cannot write: {error}") from error
        return inserted

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

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM articles")[0][0])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM articles")[0][0])

    def ping(self) -> None:
        self._query("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._db.close()
