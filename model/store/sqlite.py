"""`SqliteArticleStore`: the embedded default backend, one SQLite file beside the service.

WAL mode (readers never block the writer) and ``synchronous=FULL`` (a committed ingest survives
a power cut).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.language import record_language
from model.encoders.base import DEFAULT_MODEL_NAME as LEGACY_VECTORS_ID
from model.feedback import CORRECTION_COLUMNS, PAIR_FEEDBACK_COLUMNS, Correction, PairFeedback
from model.store.base import (
    VECTORS_KEY,
    ArticleQuery,
    RestoreRow,
    StoredArticle,
    StoreError,
    StorySummary,
    VectorGeneration,
)
from model.store.filters import SQLITE, article_filters
from model.store.merges import RESOLVED_STORY, StoryMerge, flatten, new_edges, story_group

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5

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
    # 3 -> 4: vector generations. The articles' own vector column stays generation 0 (no copy of
    # the archive); a later encoder's vectors live beside it, keyed (generation, article id), and
    # become live together with the bundle that makes them (`switch_generation`). A row whose
    # generation-0 vector was never made (ingested while another generation was live) holds an
    # empty blob there. Generation 0 is recorded in the same transaction (`_record_generation_0`).
    3: """
    CREATE TABLE IF NOT EXISTS vector_generations (
        id INTEGER PRIMARY KEY,
        vectors_id TEXT NOT NULL,
        state TEXT NOT NULL,
        filled_seq INTEGER NOT NULL DEFAULT 0,
        bundle_version TEXT,
        created_at TEXT NOT NULL,
        switched_at TEXT
    );
    CREATE UNIQUE INDEX IF NOT EXISTS vector_generations_open ON vector_generations (vectors_id)
        WHERE state <> 'retired';
    CREATE TABLE IF NOT EXISTS generation_vectors (
        generation INTEGER NOT NULL,
        article_id TEXT NOT NULL,
        embedding BLOB NOT NULL,
        PRIMARY KEY (generation, article_id)
    ) WITHOUT ROWID;
    """,
    # 4 -> 5: story merges (`model.store.merges`): where a switched-to encoder joined two stories.
    # Rows keep their story id; reads show the surviving one.
    4: """
    CREATE TABLE IF NOT EXISTS story_merges (
        merged_story TEXT PRIMARY KEY,
        into_story TEXT NOT NULL,
        surviving TEXT NOT NULL,
        generation INTEGER NOT NULL,
        merged_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS story_merges_surviving ON story_merges (surviving);
    """,
}

LEASE_KEY = "reembed_lease"  # meta: "owner expiry" of the one re-embedding worker
_GENERATION_COLUMNS = "id, vectors_id, state, filled_seq, bundle_version, created_at, switched_at"


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
            if version == 3:
                self._record_generation_0()
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

    def _record_generation_0(self) -> None:
        """The vectors already stored are generation 0, live (inside the migration's transaction):
        the recorded encoder's, MiniLM's in a store from before it was recorded. An empty store
        records none: its first bundle's encoder starts it (`open_generation`)."""
        recorded = self._db.execute("SELECT value FROM meta WHERE key = ?", (VECTORS_KEY,)).fetchone()
        stored = self._db.execute("SELECT EXISTS (SELECT 1 FROM articles)").fetchone()[0]
        if recorded or stored:
            self._db.execute(
                "INSERT INTO vector_generations (id, vectors_id, state, created_at) VALUES (0, ?, 'live', ?)",
                (recorded[0] if recorded else LEGACY_VECTORS_ID, _iso(datetime.now(UTC))),
            )

    # The vector column every article read returns: the live generation's (`_embedding_sql`); the
    # story, the surviving one where it was merged (`_story_sql`).
    _OTHER_COLUMNS = (
        "canonical_url, record, {embedding}, {story}, classification, duplicate_of, "
        "model_version, published_at, created_at, related, labels"
    )

    @property
    def _columns(self) -> str:
        return "seq, id, " + self._OTHER_COLUMNS.format(
            embedding=self._embedding_sql(self._live_id()), story=self._story_sql
        )

    @property
    def _story_sql(self) -> str:
        """A row's story as reads show it: merges resolved (a store read as is from before them has none)."""
        has = getattr(self, "_has_merges", None)
        if has is None:
            has = self._has_merges = bool(
                self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'story_merges'")
            )
        return RESOLVED_STORY if has else "story_id"

    @staticmethod
    def _embedding_sql(generation: int) -> str:
        """The vector of ``generation`` for a row of ``articles`` (an empty blob where it has none);
        ``generation`` is an int from our own table, so it is written into the SQL as a literal."""
        if generation == 0:
            return "articles.embedding"
        return (
            "COALESCE((SELECT v.embedding FROM generation_vectors AS v "
            f"WHERE v.generation = {int(generation)} AND v.article_id = articles.id), x'')"
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
        live = self._live_id()
        if live == 0:
            cursors = self._write([(insert, row) for row in rows])
            return [cursor.rowcount == 1 for cursor in cursors]
        # Another generation is live: the vector goes there, generation 0 gets none (an empty
        # blob: a rollback to it embeds these rows first). The caller's write lock keeps the
        # generation from switching between its encode and this write.
        new: list[bool] = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for row in rows:
                        inserted = self._db.execute(insert, (*row[:3], b"", *row[4:])).rowcount == 1
                        if inserted:
                            self._db.execute(
                                "INSERT OR REPLACE INTO generation_vectors "
                                "(generation, article_id, embedding) VALUES (?, ?, ?)",
                                (live, row[0], row[3]),
                            )
                        new.append(inserted)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise StoreError(f"article store {self.path}: cannot write: {error}") from error
        return new

    def get(self, article_id: str) -> StoredArticle | None:
        rows = self._query(f"SELECT {self._columns} FROM articles WHERE id = ?", (article_id,))
        return self._row(rows[0]) if rows else None

    def get_many(self, article_ids: Sequence[str]) -> dict[str, StoredArticle]:
        found: dict[str, StoredArticle] = {}
        ids = list(dict.fromkeys(article_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {self._columns} FROM articles WHERE id IN ({marks})", chunk):
                article = self._row(row)
                found[article.id] = article
        return found

    def by_story(self, story_id: str, limit: int = 1000) -> list[StoredArticle]:
        group, times = story_group("?")
        rows = self._query(
            f"SELECT {self._columns} FROM articles WHERE {group} "
            "ORDER BY published_at IS NULL, published_at DESC, seq DESC LIMIT ?",
            (*[story_id] * times, limit),
        )
        return [self._row(row) for row in rows]

    def iter_since(self, seq: int = 0, chunk: int = 1000) -> Iterator[StoredArticle]:
        # Keyset pages, not one long cursor: the lock is held per page, so ingests interleave.
        while True:
            rows = self._query(
                f"SELECT {self._columns} FROM articles WHERE seq > ? ORDER BY seq LIMIT ?", (seq, chunk)
            )
            if not rows:
                return
            for row in rows:
                yield self._row(row)
            seq = rows[-1][0]

    def restore_rows(
        self, seq: int = 0, chunk: int = 5000, generation: int | None = None
    ) -> Iterator[RestoreRow]:
        """`iter_since` for a restart: only the columns a restore needs (see `base.restore_rows`),
        with ``generation``'s vectors (the live one's by default); rows it lacks are left out."""
        generation = self._live_id() if generation is None else generation
        if generation == 0:
            vector, join = "articles.embedding", "WHERE length(articles.embedding) > 0 AND"
        else:
            vector = "v.embedding"
            join = (
                f"JOIN generation_vectors AS v ON v.generation = {int(generation)} "
                "AND v.article_id = articles.id WHERE"
            )
        while True:
            rows = self._query(
                f"SELECT seq, id, record, {vector}, {self._story_sql}, published_at FROM articles {join} "
                "seq > ? ORDER BY seq LIMIT ?",
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

    # --- vector generations (`model.store.base.GenerationStore`) -------------------------------

    def _live_id(self) -> int:
        """The live generation's id (0 in a store without one yet, or read-only from before them)."""
        live = getattr(self, "_live", None)
        if live is None:
            try:
                with self._lock:
                    row = self._db.execute(
                        "SELECT id FROM vector_generations WHERE state = 'live'"
                    ).fetchone()
            except sqlite3.Error:
                row = None  # read-only, a store from before generations: its vectors are the column
            live = self._live = int(row[0]) if row else 0
        return live

    @staticmethod
    def _generation(row: Sequence[Any]) -> VectorGeneration:
        id_, vectors, state, filled, bundle, created, switched = row
        return VectorGeneration(
            int(id_), vectors, state, int(filled), bundle, _time(created), _time(switched)
        )

    def generations(self) -> list[VectorGeneration]:
        rows = self._query(
            f"SELECT {_GENERATION_COLUMNS} FROM vector_generations ORDER BY state <> 'live', id DESC"
        )
        return [self._generation(row) for row in rows]

    def live_generation(self) -> VectorGeneration | None:
        live = [g for g in self.generations() if g.state == "live"]
        return live[0] if live else None

    def _get_generation(self, generation: int) -> VectorGeneration:
        rows = self._query(
            f"SELECT {_GENERATION_COLUMNS} FROM vector_generations WHERE id = ?", (generation,)
        )
        if not rows:
            raise StoreError(f"article store {self.path}: no vector generation {generation}")
        return self._generation(rows[0])

    def open_generation(self, vectors_id: str) -> VectorGeneration:
        now = _iso(datetime.now(UTC))
        with self._transaction() as db:
            found = db.execute(
                f"SELECT {_GENERATION_COLUMNS} FROM vector_generations WHERE vectors_id = ? "
                "ORDER BY state = 'retired', id LIMIT 1",
                (vectors_id,),
            ).fetchone()
            if found is not None and found[2] != "retired":
                return self._generation(found)
            if found is not None:  # retired: its vectors are gone, fill it again from the start
                db.execute(
                    "UPDATE vector_generations SET state = 'building', filled_seq = 0 WHERE id = ?",
                    (found[0],),
                )
                generation = int(found[0])
            elif db.execute("SELECT COUNT(*) FROM vector_generations").fetchone()[0] == 0:
                # The store's first: live at once (an empty store, or one whose rows a backfill
                # just wrote with this encoder before anything was recorded).
                db.execute(
                    "INSERT INTO vector_generations (id, vectors_id, state, created_at, switched_at) "
                    "VALUES (0, ?, 'live', ?, ?)",
                    (vectors_id, now, now),
                )
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (VECTORS_KEY, vectors_id)
                )
                self._live = 0
                generation = 0
            else:
                generation = int(db.execute("SELECT MAX(id) + 1 FROM vector_generations").fetchone()[0])
                db.execute(
                    "INSERT INTO vector_generations (id, vectors_id, state, created_at) "
                    "VALUES (?, ?, 'building', ?)",
                    (generation, vectors_id, now),
                )
        return self._get_generation(generation)

    def _missing_sql(self, generation: int) -> str:
        if generation == 0:
            return "length(articles.embedding) = 0"
        return (
            "NOT EXISTS (SELECT 1 FROM generation_vectors AS v "
            f"WHERE v.generation = {int(generation)} AND v.article_id = articles.id)"
        )

    def rows_missing(self, generation: int, after_seq: int, limit: int) -> list[RestoreRow]:
        rows = self._query(
            f"SELECT seq, id, record, {self._story_sql}, published_at FROM articles "
            f"WHERE seq > ? AND {self._missing_sql(generation)} ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        empty = np.zeros(0, dtype=np.float32)
        return [
            RestoreRow(seq, id_, json.loads(record), empty, story, _time(published))
            for seq, id_, record, story, published in rows
        ]

    def missing_count(self, generation: int) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM articles WHERE {self._missing_sql(generation)}")[0][0])

    def put_generation_vectors(
        self,
        generation: int,
        rows: Sequence[tuple[str, npt.NDArray[np.float32]]],
        filled_seq: int | None = None,
    ) -> None:
        blobs = [
            (np.ascontiguousarray(vector, dtype=np.float32).tobytes(), article_id)
            for article_id, vector in rows
        ]
        statements: list[tuple[str, Sequence[Any]]]
        if generation == 0:
            statements = [("UPDATE articles SET embedding = ? WHERE id = ?", blob) for blob in blobs]
        else:
            statements = [
                (
                    "INSERT OR REPLACE INTO generation_vectors (generation, article_id, embedding) "
                    "SELECT ?, id, ? FROM articles WHERE id = ?",  # a row taken down meanwhile: none
                    (generation, *blob),
                )
                for blob in blobs
            ]
        if filled_seq is not None:
            statements.append(
                (
                    "UPDATE vector_generations SET filled_seq = MAX(filled_seq, ?) WHERE id = ?",
                    (filled_seq, generation),
                )
            )
        self._write(statements)

    def mark_generation_filled(self, generation: int) -> VectorGeneration:
        with self._transaction() as db:
            self._require_filled(db, generation)
            db.execute(
                "UPDATE vector_generations SET state = 'complete', "
                "filled_seq = (SELECT COALESCE(MAX(seq), 0) FROM articles) "
                "WHERE id = ? AND state = 'building'",
                (generation,),
            )
        return self._get_generation(generation)

    def _require_filled(self, db: sqlite3.Connection, generation: int, *, after_filled: bool = False) -> None:
        """Raise unless every row has a vector in ``generation`` (``after_filled``: every row past its
        ``filled_seq``, which promises the rest: a quick check the switch makes under the write lock)."""
        since = "(SELECT filled_seq FROM vector_generations WHERE id = ?)" if after_filled else "0"
        params = (generation,) if after_filled else ()
        missing = db.execute(
            f"SELECT COUNT(*) FROM articles WHERE seq > {since} AND {self._missing_sql(generation)}", params
        ).fetchone()[0]
        if missing:
            raise StoreError(f"vector generation {generation} still lacks {missing} stored articles' vectors")

    def switch_generation(
        self, generation: int, bundle_version: str | None, *, merges: Sequence[tuple[str, str]] = ()
    ) -> VectorGeneration:
        now = _iso(datetime.now(UTC))
        with self._transaction() as db:
            found = db.execute("SELECT vectors_id, state FROM vector_generations WHERE id = ?", (generation,))
            row = found.fetchone()
            if row is None or row[1] == "retired":
                raise StoreError(f"no vector generation {generation} to switch to")
            self._require_filled(db, generation, after_filled=True)
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM articles").fetchone()[0]
            # The one switched away from keeps every vector up to now: a rollback catches up the rest.
            db.execute(
                "UPDATE vector_generations SET state = 'complete', filled_seq = ? WHERE state = 'live'",
                (last,),
            )
            db.execute(
                "UPDATE vector_generations SET state = 'live', filled_seq = ?, switched_at = ?, "
                "bundle_version = COALESCE(?, bundle_version) WHERE id = ?",
                (last, now, bundle_version, generation),
            )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (VECTORS_KEY, row[0]))
            # The stories the new encoder joins, recorded with the switch that makes it live.
            self._record_merges(db, generation, merges, now)
            self._live = generation
        return self._get_generation(generation)

    def set_generation_bundle(self, generation: int, bundle_version: str) -> None:
        self._write(
            [("UPDATE vector_generations SET bundle_version = ? WHERE id = ?", (bundle_version, generation))]
        )

    def retire_generation(self, generation: int, chunk: int = 5000) -> int:
        current = self._get_generation(generation)
        if current.state == "live":
            raise StoreError(f"vector generation {generation} is live: switch to another before retiring it")
        _, size = self.generation_bytes(generation)
        # Marked retired first (nothing reads it from then on), then emptied a chunk per
        # transaction so ingest never waits long behind it.
        self._write(
            [("UPDATE vector_generations SET state = 'retired', filled_seq = 0 WHERE id = ?", (generation,))]
        )
        if generation == 0:
            sql = (
                "UPDATE articles SET embedding = x'' WHERE seq IN (SELECT seq FROM articles "
                "WHERE length(embedding) > 0 LIMIT ?)"
            )
            params: tuple[Any, ...] = (chunk,)
        else:
            sql = (
                "DELETE FROM generation_vectors WHERE generation = ? AND article_id IN "
                "(SELECT article_id FROM generation_vectors WHERE generation = ? LIMIT ?)"
            )
            params = (generation, generation, chunk)
        while self._write([(sql, params)])[0].rowcount > 0:
            pass
        return size

    def generation_bytes(self, generation: int) -> tuple[int, int]:
        total = "SELECT COUNT(*), COALESCE(SUM(length(embedding)), 0)"
        if generation == 0:
            query = f"{total} FROM articles WHERE length(embedding) > 0"
            params: tuple[Any, ...] = ()
        else:
            query = f"{total} FROM generation_vectors WHERE generation = ?"
            params = (generation,)
        rows, size = self._query(query, params)[0]
        return int(rows), int(size)

    def reembed_lease_holder(self) -> str | None:
        row = self._query("SELECT value FROM meta WHERE key = ?", (LEASE_KEY,))
        if not row:
            return None
        holder, _, expiry = str(row[0][0]).rpartition(" ")
        return holder if float(expiry) > time.time() else None

    def take_reembed_lease(self, owner: str, seconds: float, *, take_from: str | None = None) -> bool:
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (LEASE_KEY,)).fetchone()
            if row is not None:
                holder, _, expiry = str(row[0]).rpartition(" ")
                if holder not in (owner, take_from) and float(expiry) > now:
                    return False
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (LEASE_KEY, f"{owner} {now + seconds}"),
            )
        return True

    def release_reembed_lease(self, owner: str) -> None:
        self._write([("DELETE FROM meta WHERE key = ? AND value LIKE ?", (LEASE_KEY, f"{owner} %"))])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction under the connection lock, for reads that decide writes."""
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise StoreError(f"article store {self.path}: {error}") from error

    def list_articles(self, query: ArticleQuery, limit: int) -> list[StoredArticle]:
        clause, params = article_filters(query, SQLITE)
        rows = self._query(
            f"SELECT {self._columns} FROM articles {clause}ORDER BY seq DESC LIMIT ?", [*params, limit]
        )
        return [self._row(row) for row in rows]

    def list_stories(self, limit: int, before_seq: int | None = None) -> list[StorySummary]:
        # Grouped by the surviving story: a merged story's members count in the one it joined.
        having = "HAVING MAX(a.seq) < ? " if before_seq is not None else ""
        params: list[Any] = [before_seq] if before_seq is not None else []
        group, _ = story_group("g.story", "m.story_id")
        rows = self._query(
            "SELECT g.story, g.n, g.last, g.first, g.latest, "
            "(SELECT json_extract(m.record, '$.title') FROM articles AS m "
            f" WHERE {group} "
            " ORDER BY m.published_at IS NULL, m.published_at, m.seq LIMIT 1) "
            "FROM (SELECT COALESCE(sm.surviving, a.story_id) AS story, COUNT(*) AS n, MAX(a.seq) AS last, "
            "MIN(a.published_at) AS first, MAX(a.published_at) AS latest "
            "FROM articles AS a LEFT JOIN story_merges AS sm ON sm.merged_story = a.story_id "
            f"GROUP BY COALESCE(sm.surviving, a.story_id) {having}) AS g "
            "ORDER BY g.last DESC LIMIT ?",
            [*params, limit],
        )
        return [
            StorySummary(story, int(count), int(last), str(title or ""), _time(first), _time(latest))
            for story, count, last, first, latest, title in rows
        ]

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        """Keyed by the ids asked for; a merged id counts its surviving story's members."""
        ids = list(dict.fromkeys(story_ids))
        sizes: dict[str, int] = {}
        for start in range(0, len(ids), 300):
            chunk = ids[start : start + 300]
            surviving = self._surviving(chunk)
            wanted = list(set(surviving.values()))
            merged = self._query(
                f"SELECT merged_story FROM story_merges WHERE surviving IN ({','.join('?' * len(wanted))})",
                wanted,
            )
            raw = wanted + [story for (story,) in merged]
            counts = dict(
                self._query(
                    "SELECT COALESCE(sm.surviving, a.story_id), COUNT(*) FROM articles AS a "
                    "LEFT JOIN story_merges AS sm ON sm.merged_story = a.story_id "
                    f"WHERE a.story_id IN ({','.join('?' * len(raw))}) "
                    "GROUP BY COALESCE(sm.surviving, a.story_id)",
                    raw,
                )
            )
            sizes.update({story: int(counts[s]) for story, s in surviving.items() if counts.get(s)})
        return sizes

    # --- story merges (`model.store.merges`) ---------------------------------------------------

    def _surviving(self, story_ids: Sequence[str]) -> dict[str, str]:
        """Each id (at most a few hundred) with the story it resolves to."""
        marks = ",".join("?" * len(story_ids))
        found = dict(
            self._query(
                f"SELECT merged_story, surviving FROM story_merges WHERE merged_story IN ({marks})",
                list(story_ids),
            )
        )
        return {story: found.get(story, story) for story in story_ids}

    def resolve_story(self, story_id: str) -> str:
        return self._surviving([story_id])[story_id]

    def story_merges(self) -> list[StoryMerge]:
        rows = self._query(
            "SELECT merged_story, into_story, surviving, generation, merged_at FROM story_merges "
            "ORDER BY merged_at, merged_story"
        )
        return [StoryMerge(m, i, s, int(g), _time(t)) for m, i, s, g, t in rows]

    def _record_merges(
        self, db: sqlite3.Connection, generation: int, merges: Sequence[tuple[str, str]], now: str | None
    ) -> int:
        """Record ``merges`` (merged story, story it joined) inside the caller's transaction and
        keep every row's ``surviving`` flat; returns how many were new."""
        edges = dict(db.execute("SELECT merged_story, into_story FROM story_merges").fetchall())
        added = new_edges(edges, merges)
        if not added:
            return 0
        db.executemany(
            "INSERT INTO story_merges (merged_story, into_story, surviving, generation, merged_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(merged, into, into, generation, now) for merged, into in added.items()],
        )
        edges.update(added)
        db.executemany(
            "UPDATE story_merges SET surviving = ? WHERE merged_story = ? AND surviving <> ?",
            [(surviving, merged, surviving) for merged, surviving in flatten(edges).items()],
        )
        return len(added)

    def review_queue(self, limit: int) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {self._columns} FROM articles "
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
                ("DELETE FROM generation_vectors WHERE article_id = ?", (article_id,)),
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
