"""`PgArticleStore`: the shared backend, PostgreSQL + pgvector, for any number of stateless replicas.

Everything a replica would otherwise keep in memory lives in the database: articles with their
vectors (``vector(384)``, HNSW-indexed), classifications, stories, duplicate links, the editors'
tables and the live model version (`meta`). Three things make replicas agree:

* **Story decisions serialised per window, optimistically** (`pg_ingest`): an article's
  neighbours are read and the story rule decides holding no lock; one short statement then takes
  the window's advisory locks, checks that nothing the read missed landed nearer, and records the
  decision as a claim that every other replica sees as a candidate.
* **URL variants** hash to one id: the primary key makes the second insert a no-op.
* **Migrations** (`pg_migrate`: ``pg_migrations/NNNN_name.sql``) run at open under a session
  advisory lock, recorded in ``schema_migrations``; a database newer than this code is refused.

Search (`search()` gives an `ArticleSearch`, `pg_search`) counts a selective filter first: up to
`EXACT_MAX_ROWS` matching rows are scanned exactly, above it HNSW runs with a beam widened by the
filter's selectivity. Vectors travel in pgvector's binary form (`pg_vector`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from model.articles.language import record_language
from model.feedback import CORRECTION_COLUMNS, PAIR_FEEDBACK_COLUMNS, Correction, PairFeedback
from model.results import SearchFilters
from model.store.base import ArticleQuery, StoredArticle, StoreError, StorySummary
from model.store.filters import POSTGRES, article_filters
from model.store.pg_ingest import CLAIM_LIFETIME, LinkedIngest
from model.store.pg_migrate import SCHEMA_VERSION, migrate
from model.store.pg_rows import (
    COLUMNS,
    INSERT,
    WRITE_COLUMNS,
    WRITE_TYPES,
    article_row,
    one_line,
    write_params,
)
from model.store.pg_search import PgSearch, nearest_rows
from model.store.pg_vector import register_vector_numpy

logger = logging.getLogger(__name__)

WORKSPACE_TABLES = ("corrections", "pair_feedback")  # a database never migrated lacks them


# --- the store ----------------------------------------------------------------------------------


class PgArticleStore(LinkedIngest):
    """`ArticleStore` on PostgreSQL + pgvector (psycopg 3, a connection pool), shared by replicas.

    Parameters
    ----------
    url : a libpq URL or DSN (``postgresql://user:pass@host:5432/db``).
    min_size, max_size : connections the pool keeps / may open.
    read_only : for a reader such as training: no migration or claim sweep, every session
        read-only; a database from before the editors' workspace reads as nothing corrected.
    """

    # Filtered sets up to this size are scanned exactly: at 1M rows, filters passing 4% (41k rows)
    # came back with recall@10 0.91 through HNSW at a beam of ~500, 1.0 scanned (benchmarks/backends.py).
    EXACT_MAX_ROWS = 100_000
    # HNSW beam unfiltered. With m=16, ef_construction=64 at 1M: recall@10 0.917 at 100, 0.943 at
    # 200 (benchmarks/backends.py, which also measures this value).
    EF_SEARCH = 400

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        super().__init__()  # the linked ingest's counters
        if not read_only:
            migrate(url)  # before the pool: its configure hook needs the vector type to exist
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                info = TypeInfo.fetch(conn, "vector")
        except psycopg.Error as error:
            raise StoreError(f"cannot open the article store: {one_line(error)}") from error
        if info is None and not read_only:  # a reader may meet a database nothing was stored in
            raise StoreError("cannot open the article store: the vector extension is not installed")

        def configure(conn: psycopg.Connection[Any]) -> None:
            if info is not None:
                info.register(conn)  # lets COPY's set_types resolve "vector"
                register_vector_numpy(conn, info.oid)
            conn.autocommit = True  # a plain read is one statement; writes open transactions
            if read_only:
                conn.execute("SET default_transaction_read_only = on")

        self.pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            configure=configure,
            # A connection broken by a server restart or failover is replaced at checkout.
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": 10},
            timeout=30,
            name="articles",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=30)
        except PoolTimeout as error:
            self.pool.close()
            raise StoreError(f"cannot open the article store: {error}") from error
        if read_only:
            return
        swept = self._query(
            "WITH gone AS (DELETE FROM story_claims WHERE created_at < now() - %s RETURNING 1) "
            "SELECT count(*) FROM gone",
            (CLAIM_LIFETIME,),
        )[0][0]
        if swept:
            logger.warning("article store: swept %d story claims a stopped replica left", swept)
        self.fill_languages()
        logger.info("article store: PostgreSQL, schema %d, %d articles", SCHEMA_VERSION, self.count())

    # --- reads ------------------------------------------------------------------------------

    def _query(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
                cur.execute(query, params)
                return cur.fetchall()
        except psycopg.errors.UndefinedTable as error:
            if self.read_only and any(f'"{table}"' in str(error) for table in WORKSPACE_TABLES):
                return []  # a database from before the editors' workspace, read as is: nothing corrected
            raise StoreError(f"article store: {one_line(error)}") from error
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: {one_line(error)}") from error

    def get(self, article_id: str) -> StoredArticle | None:
        rows = self._query(f"SELECT {COLUMNS} FROM articles WHERE id = %s", (article_id,))
        return article_row(rows[0]) if rows else None

    def get_many(self, article_ids: Sequence[str]) -> dict[str, StoredArticle]:
        ids = list(dict.fromkeys(article_ids))
        if not ids:
            return {}
        rows = self._query(f"SELECT {COLUMNS} FROM articles WHERE id = ANY(%s)", (ids,))
        return {stored.id: stored for stored in map(article_row, rows)}

    def by_story(self, story_id: str, limit: int = 1000) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {COLUMNS} FROM articles WHERE story_id = %s "
            "ORDER BY published_at DESC NULLS LAST, seq DESC LIMIT %s",
            (story_id, limit),
        )
        return [article_row(row) for row in rows]

    def iter_since(self, seq: int = 0, chunk: int = 1000) -> Iterator[StoredArticle]:
        # Keyset pages on seq. A bigserial is drawn at INSERT and visible at COMMIT, so under
        # concurrent writers a reader tailing seq could skip a late committer; nothing here tails.
        while True:
            rows = self._query(
                f"SELECT {COLUMNS} FROM articles WHERE seq > %s ORDER BY seq LIMIT %s", (seq, chunk)
            )
            if not rows:
                return
            for row in rows:
                yield article_row(row)
            seq = rows[-1][0]

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM articles")[0][0])

    def count(self) -> int:
        return int(self._query("SELECT count(*) FROM articles")[0][0])

    def ping(self) -> None:
        self._query("SELECT 1")

    def close(self) -> None:
        self.pool.close()

    # --- meta (the live model version) ---------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._query(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING key",
            (key, value),
        )

    # --- writes -----------------------------------------------------------------------------

    def put_many(self, articles: Sequence[StoredArticle]) -> list[bool]:
        """Store as given (story and duplicate already decided), one transaction; True if new."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                inserted = []
                for article in articles:
                    cur.execute(INSERT, write_params(article))
                    inserted.append(cur.fetchone() is not None)
                return inserted
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error

    def bulk_load(self, articles: Sequence[StoredArticle]) -> int:
        """COPY BINARY into a temporary table, then insert what is new (COPY cannot skip a
        conflict). For seeding and backfills: ~20k rows/s at 384-d without the HNSW index, a few
        ms per row with it (drop it, load, rebuild for large backfills). Returns rows inserted."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                # CTAS .. WITH NO DATA copies the column types but not seq's default (LIKE would,
                # and burn sequence values).
                cur.execute(
                    f"CREATE TEMP TABLE load_articles ON COMMIT DROP AS "
                    f"SELECT {WRITE_COLUMNS} FROM articles WITH NO DATA"
                )
                with cur.copy(f"COPY load_articles ({WRITE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(WRITE_TYPES)
                    for article in articles:
                        copy.write_row(write_params(article, copy=True))
                cur.execute(  # ctid order = COPY order, so seq follows the input
                    f"INSERT INTO articles ({WRITE_COLUMNS}) SELECT {WRITE_COLUMNS} FROM load_articles "
                    "ORDER BY ctid ON CONFLICT DO NOTHING"
                )
                return cur.rowcount
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: bulk load failed: {one_line(error)}") from error

    # --- the editors' workspace ------------------------------------------------------------

    def fill_languages(self, batch: int = 1000) -> int:
        """Give each row stored without a language its own (migration 0006), from its stored
        record, a batch per transaction (resumable; replicas opening together skip each other's
        locked rows). An undetectable one is marked ``"language": null`` in its record, so it is
        not read again. Returns the rows filled."""
        filled = 0
        try:
            while True:
                with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                    cur.execute(
                        "SELECT id, record FROM articles WHERE language IS NULL AND NOT record ? 'language' "
                        "LIMIT %s FOR UPDATE SKIP LOCKED",
                        (batch,),
                    )
                    rows = cur.fetchall()
                    if not rows:
                        break
                    languages = [(record_language(record), id_) for id_, record in rows]
                    cur.executemany(
                        "UPDATE articles SET language = %s, "
                        "record = record || jsonb_build_object('language', %s::text) WHERE id = %s",
                        [(language, language, id_) for language, id_ in languages],
                    )
                    filled += len(rows)
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot fill in languages: {one_line(error)}") from error
        if filled:
            logger.info("article store: filled in the language of %d articles stored before", filled)
        return filled

    def list_articles(self, query: ArticleQuery, limit: int) -> list[StoredArticle]:
        clause, params = article_filters(query, POSTGRES)
        rows = self._query(
            f"SELECT {COLUMNS} FROM articles {clause}ORDER BY seq DESC LIMIT %s", [*params, limit]
        )
        return [article_row(row) for row in rows]

    def list_stories(self, limit: int, before_seq: int | None = None) -> list[StorySummary]:
        having = "HAVING max(seq) < %s " if before_seq is not None else ""
        params: list[Any] = [before_seq] if before_seq is not None else []
        rows = self._query(
            "SELECT story_id, count(*), max(seq), min(published_at), max(published_at), "
            "(SELECT m.record->>'title' FROM articles AS m WHERE m.story_id = a.story_id "
            " ORDER BY m.published_at NULLS LAST, m.seq LIMIT 1) "
            f"FROM articles AS a GROUP BY story_id {having}ORDER BY max(seq) DESC LIMIT %s",
            [*params, limit],
        )
        return [
            StorySummary(story, int(count), int(last), str(title or ""), first, latest)
            for story, count, last, first, latest, title in rows
        ]

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(story_ids))
        if not ids:
            return {}
        rows = self._query(
            "SELECT story_id, count(*) FROM articles WHERE story_id = ANY(%s) GROUP BY story_id", (ids,)
        )
        return {story: int(count) for story, count in rows}

    def review_queue(self, limit: int) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {COLUMNS} FROM articles AS a "
            "WHERE NOT EXISTS (SELECT 1 FROM corrections AS c WHERE c.article_id = a.id) "
            "ORDER BY cardinality(labels) > 0, uncertainty IS NULL, uncertainty, seq DESC LIMIT %s",
            (limit,),
        )
        return [article_row(row) for row in rows]

    def add_correction(self, correction: Correction) -> Correction:
        topics = list(correction.topics) if correction.topics is not None else None
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO corrections (article_id, topics, quality, note, editor, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    (correction.article_id, topics, correction.quality, correction.note,
                     correction.editor, correction.created_at),
                )  # fmt: skip
                row = cur.fetchone()
                if topics is not None:
                    cur.execute(
                        "UPDATE articles SET labels = %s WHERE id = %s", (topics, correction.article_id)
                    )
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error
        return replace(correction, id=int(row[0]) if row else 0)

    def corrections(self, article_id: str | None = None) -> list[Correction]:
        if article_id is None:
            rows = self._query(f"SELECT {CORRECTION_COLUMNS} FROM corrections ORDER BY id")
        else:
            rows = self._query(
                f"SELECT {CORRECTION_COLUMNS} FROM corrections WHERE article_id = %s ORDER BY id",
                (article_id,),
            )
        return [Correction.from_row(row) for row in rows]

    def add_pair_feedback(self, feedback: PairFeedback) -> PairFeedback:
        rows = self._query(
            "INSERT INTO pair_feedback (a, b, verdict, note, editor, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (feedback.a, feedback.b, feedback.verdict, feedback.note, feedback.editor, feedback.created_at),
        )
        return replace(feedback, id=int(rows[0][0]))

    def pair_feedback(self, article_id: str | None = None) -> list[PairFeedback]:
        if article_id is None:
            rows = self._query(f"SELECT {PAIR_FEEDBACK_COLUMNS} FROM pair_feedback ORDER BY id")
        else:
            rows = self._query(
                f"SELECT {PAIR_FEEDBACK_COLUMNS} FROM pair_feedback WHERE a = %s OR b = %s ORDER BY id",
                (article_id, article_id),
            )
        return [PairFeedback.from_row(row) for row in rows]

    def set_classifications(self, updates: Sequence[tuple[str, dict[str, Any], str]]) -> int:
        updated = 0
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for article_id, classification, version in updates:
                    cur.execute(
                        "UPDATE articles SET classification = %s, model_version = %s, uncertainty = %s, "
                        "labels = CASE WHEN EXISTS (SELECT 1 FROM corrections AS c "
                        "WHERE c.article_id = articles.id AND c.topics IS NOT NULL) THEN labels ELSE %s END "
                        "WHERE id = %s",
                        (Jsonb(classification), version, classification.get("uncertainty"),
                         [str(t["label"]) for t in classification.get("topics", [])], article_id),
                    )  # fmt: skip
                    updated += max(cur.rowcount, 0)
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error
        return updated

    def delete(self, article_id: str) -> bool:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute("DELETE FROM articles WHERE id = %s", (article_id,))
                deleted = cur.rowcount > 0
                cur.execute("DELETE FROM corrections WHERE article_id = %s", (article_id,))
                cur.execute("DELETE FROM pair_feedback WHERE a = %s OR b = %s", (article_id, article_id))
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot delete: {one_line(error)}") from error
        return deleted

    # --- search -----------------------------------------------------------------------------

    def search(self) -> PgSearch:
        """An `ArticleSearch` for one request."""
        return PgSearch(self)

    def nearest_rows(
        self, vector: npt.NDArray[np.float32], k: int, filters: SearchFilters
    ) -> list[tuple[StoredArticle, float]]:
        """The ``k`` stored articles closest to ``vector`` (cosine) that pass ``filters``."""
        try:
            with self.pool.connection() as conn, conn.transaction():
                return nearest_rows(
                    conn, vector, k, filters, ef_search=self.EF_SEARCH, exact_max_rows=self.EXACT_MAX_ROWS
                )
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: search failed: {one_line(error)}") from error
