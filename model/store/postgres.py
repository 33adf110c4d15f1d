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
* **Vector generations** (0007, `base.GenerationStore`): each encoder's vectors apart (generation 0
  in the row, later ones in ``generation_vectors`` with a partial HNSW index each); every search
  and linked ingest names the generation of the replica's encoder (`pg_rows.articles_of`), and the
  switch of the live one is one transaction.

Search (`search()` gives an `ArticleSearch`, `pg_search`) counts a selective filter first: up to
`EXACT_MAX_ROWS` matching rows are scanned exactly, above it HNSW runs with a beam widened by the
filter's selectivity. Vectors travel in pgvector's binary form (`pg_vector`).
"""

from __future__ import annotations

import contextlib
import logging
import time
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
from model.store.base import (
    VECTORS_KEY,
    ArticleQuery,
    RestoreRow,
    StoredArticle,
    StoreError,
    StorySummary,
    VectorGeneration,
)
from model.store.filters import POSTGRES, article_filters
from model.store.merges import RESOLVED_STORY, StoryMerge, flatten, new_edges, story_group
from model.store.pg_ingest import CLAIM_LIFETIME, LinkedIngest
from model.store.pg_migrate import SCHEMA_VERSION, migrate
from model.store.pg_rows import (
    COLUMNS,
    RAW_COLUMNS,
    WRITE_COLUMNS,
    WRITE_TYPES,
    article_row,
    articles_of,
    insert_into,
    insert_params,
    one_line,
    write_params,
)
from model.store.pg_search import PgSearch, nearest_rows
from model.store.pg_vector import register_vector_numpy

logger = logging.getLogger(__name__)

WORKSPACE_TABLES = ("corrections", "pair_feedback")  # a database never migrated lacks them
# A reader of a database from before vector generations: its vectors are the articles' column.
GENERATION_TABLES = ("vector_generations", "generation_vectors")
_GENERATION_COLUMNS = "id, vectors_id, state, filled_seq, bundle_version, created_at, switched_at"
LIVE_CACHE_S = 2.0  # how long a replica trusts its reading of the live generation (reads only)


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
        self._live: tuple[float, int] | None = None  # (when read, the live generation's id)
        self._columns = COLUMNS
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
            if self._query("SELECT to_regclass('story_merges')")[0][0] is None:
                self._columns = RAW_COLUMNS  # a database from before story merges, read as is
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
            if self.read_only and any(
                f'"{table}"' in str(error) for table in (*WORKSPACE_TABLES, *GENERATION_TABLES)
            ):
                # A database from before the editors' workspace (nothing corrected) or before
                # vector generations (none recorded), read as is.
                return []
            raise StoreError(f"article store: {one_line(error)}") from error
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: {one_line(error)}") from error

    def _rows(self, generation: int | None = None) -> str:
        """The articles with ``generation``'s vectors (the live one's by default; NULL where none)."""
        return articles_of(
            self.live_generation_id() if generation is None else generation, with_vectors=False
        )

    def get(self, article_id: str, *, generation: int | None = None) -> StoredArticle | None:
        rows = self._query(
            f"SELECT {self._columns} FROM {self._rows(generation)} WHERE id = %s", (article_id,)
        )
        return article_row(rows[0]) if rows else None

    def get_many(self, article_ids: Sequence[str]) -> dict[str, StoredArticle]:
        ids = list(dict.fromkeys(article_ids))
        if not ids:
            return {}
        rows = self._query(f"SELECT {self._columns} FROM {self._rows()} WHERE id = ANY(%s)", (ids,))
        return {stored.id: stored for stored in map(article_row, rows)}

    def by_story(self, story_id: str, limit: int = 1000) -> list[StoredArticle]:
        group, times = story_group("%s", pg=True)
        rows = self._query(
            f"SELECT {self._columns} FROM {self._rows()} WHERE {group} "
            "ORDER BY published_at DESC NULLS LAST, seq DESC LIMIT %s",
            (*[story_id] * times, limit),
        )
        return [article_row(row) for row in rows]

    def iter_since(self, seq: int = 0, chunk: int = 1000) -> Iterator[StoredArticle]:
        # Keyset pages on seq. A bigserial is drawn at INSERT and visible at COMMIT, so under
        # concurrent writers a reader tailing seq could skip a late committer; nothing here tails.
        relation = self._rows()
        while True:
            rows = self._query(
                f"SELECT {self._columns} FROM {relation} WHERE seq > %s ORDER BY seq LIMIT %s", (seq, chunk)
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
        """Store as given (story and duplicate already decided), one transaction, the vectors into
        the live generation; True if new."""
        generation = self.live_generation_id(fresh=True)
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                inserted = []
                for article in articles:
                    cur.execute(insert_into(generation), insert_params(article, generation))
                    inserted.append(cur.fetchone() is not None)
                return inserted
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error

    def bulk_load(self, articles: Sequence[StoredArticle]) -> int:
        """COPY BINARY into a temporary table, then insert what is new (COPY cannot skip a
        conflict). For seeding and backfills: ~20k rows/s at 384-d without the HNSW index, a few
        ms per row with it (drop it, load, rebuild for large backfills). Returns rows inserted.
        The vectors go to the live generation: the row's own column for generation 0, else
        ``generation_vectors`` in the same statement (the row's column NULL, as ingest leaves it)."""
        live = self.live_generation_id(fresh=True)
        new_rows = (
            f"INSERT INTO articles ({WRITE_COLUMNS}) SELECT {{columns}} FROM load_articles "
            "ORDER BY ctid ON CONFLICT DO NOTHING"  # ctid order = COPY order, so seq follows the input
        )
        if live == 0:
            insert = new_rows.format(columns=WRITE_COLUMNS)
        else:
            without_vector = WRITE_COLUMNS.replace("embedding", "NULL::vector")
            insert = (
                f"WITH stored AS ({new_rows.format(columns=without_vector)} RETURNING id) "
                "INSERT INTO generation_vectors (generation, article_id, embedding) "
                f"SELECT DISTINCT ON (l.id) {int(live)}, l.id, l.embedding FROM load_articles AS l "
                "JOIN stored USING (id) ORDER BY l.id"
            )
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
                cur.execute(insert)
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
            f"SELECT {self._columns} FROM articles {clause}ORDER BY seq DESC LIMIT %s", [*params, limit]
        )
        return [article_row(row) for row in rows]

    def list_stories(self, limit: int, before_seq: int | None = None) -> list[StorySummary]:
        # Grouped by the surviving story: a merged story's members count in the one it joined.
        having = "HAVING max(a.seq) < %s " if before_seq is not None else ""
        params: list[Any] = [before_seq] if before_seq is not None else []
        group, _ = story_group("g.story", "m.story_id", pg=True)
        rows = self._query(
            "SELECT g.story, g.n, g.last, g.first, g.latest, "
            f"(SELECT m.record->>'title' FROM articles AS m WHERE {group} "
            " ORDER BY m.published_at NULLS LAST, m.seq LIMIT 1) "
            "FROM (SELECT COALESCE(sm.surviving, a.story_id) AS story, count(*) AS n, max(a.seq) AS last, "
            "min(a.published_at) AS first, max(a.published_at) AS latest "
            "FROM articles AS a LEFT JOIN story_merges AS sm ON sm.merged_story = a.story_id "
            f"GROUP BY COALESCE(sm.surviving, a.story_id) {having}) AS g "
            "ORDER BY g.last DESC LIMIT %s",
            [*params, limit],
        )
        return [
            StorySummary(story, int(count), int(last), str(title or ""), first, latest)
            for story, count, last, first, latest, title in rows
        ]

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        """Keyed by the ids asked for; a merged id counts its surviving story's members."""
        ids = list(dict.fromkeys(story_ids))
        if not ids:
            return {}
        surviving = self._surviving(ids)
        wanted = list(set(surviving.values()))
        merged = self._query("SELECT merged_story FROM story_merges WHERE surviving = ANY(%s)", (wanted,))
        counts = dict(
            self._query(
                "SELECT COALESCE(sm.surviving, a.story_id), count(*) FROM articles AS a "
                "LEFT JOIN story_merges AS sm ON sm.merged_story = a.story_id "
                "WHERE a.story_id = ANY(%s) GROUP BY COALESCE(sm.surviving, a.story_id)",
                (wanted + [story for (story,) in merged],),
            )
        )
        return {story: int(counts[s]) for story, s in surviving.items() if counts.get(s)}

    # --- story merges (`model.store.merges`) ---------------------------------------------------

    def _surviving(self, story_ids: Sequence[str]) -> dict[str, str]:
        found = dict(
            self._query(
                "SELECT merged_story, surviving FROM story_merges WHERE merged_story = ANY(%s)",
                (list(story_ids),),
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
        return [StoryMerge(m, i, s, int(g), t) for m, i, s, g, t in rows]

    @staticmethod
    def _record_merges(cur: psycopg.Cursor[Any], generation: int, merges: Sequence[tuple[str, str]]) -> int:
        """Record ``merges`` (merged story, story it joined) inside the caller's transaction and keep
        every row's ``surviving`` flat; returns how many were new."""
        if not merges:
            return 0
        cur.execute("LOCK TABLE story_merges IN SHARE ROW EXCLUSIVE MODE")
        cur.execute("SELECT merged_story, into_story FROM story_merges")
        edges = dict(cur.fetchall())
        added = new_edges(edges, merges)
        if not added:
            return 0
        cur.executemany(
            "INSERT INTO story_merges (merged_story, into_story, surviving, generation) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (merged_story) DO NOTHING",
            [(merged, into, into, generation) for merged, into in added.items()],
        )
        edges.update(added)
        cur.executemany(
            "UPDATE story_merges SET surviving = %s WHERE merged_story = %s AND surviving <> %s",
            [(surviving, merged, surviving) for merged, surviving in flatten(edges).items()],
        )
        return len(added)

    def review_queue(self, limit: int) -> list[StoredArticle]:
        rows = self._query(
            f"SELECT {self._columns} FROM articles AS a "
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
                cur.execute("DELETE FROM generation_vectors WHERE article_id = %s", (article_id,))
                cur.execute("DELETE FROM corrections WHERE article_id = %s", (article_id,))
                cur.execute("DELETE FROM pair_feedback WHERE a = %s OR b = %s", (article_id, article_id))
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot delete: {one_line(error)}") from error
        return deleted

    # --- search -----------------------------------------------------------------------------

    def search(self, generation: int | None = None) -> PgSearch:
        """An `ArticleSearch` for one request, over ``generation``'s vectors (the live one's when None)."""
        return PgSearch(self, generation)

    def nearest_rows(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        filters: SearchFilters,
        *,
        generation: int | None = None,
    ) -> list[tuple[StoredArticle, float]]:
        """The ``k`` stored articles closest to ``vector`` (cosine) that pass ``filters``, among
        ``generation``'s vectors (the live one's when None)."""
        gen = self.live_generation_id() if generation is None else generation
        try:
            with self.pool.connection() as conn, conn.transaction():
                return nearest_rows(
                    conn,
                    vector,
                    k,
                    filters,
                    ef_search=self.EF_SEARCH,
                    exact_max_rows=self.EXACT_MAX_ROWS,
                    generation=gen,
                )
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: search failed: {one_line(error)}") from error

    # --- vector generations (`model.store.base.GenerationStore`, migration 0007) ----------------
    # Shared by every replica: the switch is one transaction, and each replica reads and writes the
    # generation of the bundle it serves (`generation_for`), so a replica that has not followed a
    # switch yet keeps comparing its queries with its own encoder's vectors.

    def live_generation_id(self, *, fresh: bool = False) -> int:
        """The live generation's id, read at most every `LIVE_CACHE_S` (``fresh``: now); 0 in a
        store without one yet."""
        now = time.monotonic()
        if not fresh and self._live is not None and now - self._live[0] < LIVE_CACHE_S:
            return self._live[1]
        rows = self._query("SELECT id FROM vector_generations WHERE state = 'live'")
        live = int(rows[0][0]) if rows else 0
        self._live = (now, live)
        return live

    def generation_for(self, vectors_id: str) -> int | None:
        """The generation a bundle encoding ``vectors_id`` serves on: its live or complete one (None
        while it has none: building, retired, or never opened)."""
        rows = self._query(
            "SELECT id FROM vector_generations WHERE vectors_id = %s AND state IN ('live', 'complete')",
            (vectors_id,),
        )
        return int(rows[0][0]) if rows else None

    @staticmethod
    def _generation(row: Sequence[Any]) -> VectorGeneration:
        id_, vectors, state, filled, bundle, created, switched = row
        return VectorGeneration(int(id_), vectors, state, int(filled), bundle, created, switched)

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
            f"SELECT {_GENERATION_COLUMNS} FROM vector_generations WHERE id = %s", (generation,)
        )
        if not rows:
            raise StoreError(f"article store: no vector generation {generation}")
        return self._generation(rows[0])

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Run ``statements`` in one transaction; their row counts."""
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
                counts = []
                for query, params in statements:
                    cur.execute(query, params)
                    counts.append(cur.rowcount)
                return counts
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error

    def open_generation(self, vectors_id: str) -> VectorGeneration:
        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                # Replicas opening at once: one decides, the other reads what it decided.
                cur.execute("LOCK TABLE vector_generations IN SHARE ROW EXCLUSIVE MODE")
                cur.execute(
                    f"SELECT {_GENERATION_COLUMNS} FROM vector_generations WHERE vectors_id = %s",
                    (vectors_id,),
                )
                found = cur.fetchone()
                if found is not None and found[2] != "retired":
                    return self._generation(found)
                if found is not None:  # retired: its vectors are gone, fill it again from the start
                    cur.execute(
                        "UPDATE vector_generations SET state = 'building', filled_seq = 0 WHERE id = %s",
                        (found[0],),
                    )
                    generation = int(found[0])
                else:
                    cur.execute("SELECT count(*), COALESCE(max(id) + 1, 0) FROM vector_generations")
                    row = cur.fetchone()
                    assert row is not None
                    if row[0] == 0:
                        # The store's first: live at once (an empty store, or rows a backfill wrote
                        # with this encoder before anything was recorded).
                        cur.execute(
                            "INSERT INTO vector_generations (id, vectors_id, state, switched_at) "
                            "VALUES (0, %s, 'live', now())",
                            (vectors_id,),
                        )
                        cur.execute(
                            "INSERT INTO meta (key, value) VALUES (%s, %s) "
                            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (VECTORS_KEY, vectors_id),
                        )
                        generation = 0
                    else:
                        generation = int(row[1])
                        cur.execute(
                            "INSERT INTO vector_generations (id, vectors_id, state) "
                            "VALUES (%s, %s, 'building')",
                            (generation, vectors_id),
                        )
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot open a vector generation: {one_line(error)}") from error
        self._live = None
        return self._get_generation(generation)

    @staticmethod
    def _missing_sql(generation: int) -> str:
        if generation == 0:
            return "articles.embedding IS NULL"
        return (
            "NOT EXISTS (SELECT 1 FROM generation_vectors AS v "
            f"WHERE v.generation = {int(generation)} AND v.article_id = articles.id)"
        )

    def rows_missing(self, generation: int, after_seq: int, limit: int) -> list[RestoreRow]:
        rows = self._query(
            f"SELECT seq, id, record, {RESOLVED_STORY}, published_at FROM articles "
            f"WHERE seq > %s AND {self._missing_sql(generation)} ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        empty = np.zeros(0, dtype=np.float32)
        return [
            RestoreRow(seq, id_, record, empty, story, published)
            for seq, id_, record, story, published in rows
        ]

    def missing_count(self, generation: int) -> int:
        return int(self._query(f"SELECT count(*) FROM articles WHERE {self._missing_sql(generation)}")[0][0])

    def put_generation_vectors(
        self,
        generation: int,
        rows: Sequence[tuple[str, npt.NDArray[np.float32]]],
        filled_seq: int | None = None,
    ) -> None:
        statements: list[tuple[str, Sequence[Any]]] = []
        for article_id, vector in rows:
            vector32 = np.asarray(vector, dtype=np.float32)
            if generation == 0:
                statements.append(
                    ("UPDATE articles SET embedding = %b WHERE id = %s", (vector32, article_id))
                )
            else:
                statements.append(
                    (
                        "INSERT INTO generation_vectors (generation, article_id, embedding) "
                        "SELECT %s, id, %b FROM articles WHERE id = %s "  # one taken down meanwhile: none
                        "ON CONFLICT (generation, article_id) DO UPDATE SET embedding = excluded.embedding",
                        (generation, vector32, article_id),
                    )
                )
        if filled_seq is not None:
            statements.append(
                (
                    "UPDATE vector_generations SET filled_seq = GREATEST(filled_seq, %s) WHERE id = %s",
                    (filled_seq, generation),
                )
            )
        self._write(statements)

    def mark_generation_filled(self, generation: int) -> VectorGeneration:
        missing = self.missing_count(generation)
        if missing:
            raise StoreError(f"vector generation {generation} still lacks {missing} stored articles' vectors")
        self._build_index(generation)
        self._write(
            [
                (
                    "UPDATE vector_generations SET state = 'complete', "
                    "filled_seq = (SELECT COALESCE(max(seq), 0) FROM articles) "
                    "WHERE id = %s AND state = 'building'",
                    (generation,),
                )
            ]
        )
        return self._get_generation(generation)

    def _build_index(self, generation: int) -> None:
        """The generation's own HNSW index, built once it is filled (one graph build, not one
        insert per row), concurrently so ingest goes on meanwhile. Generation 0's is the table's."""
        if generation == 0:
            return
        name = f"generation_vectors_hnsw_{int(generation)}"
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                # A build a killed filler left half done is invalid: drop it and build again.
                invalid = conn.execute(
                    "SELECT 1 FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
                    "WHERE c.relname = %s AND NOT i.indisvalid",
                    (name,),
                ).fetchone()
                if invalid:
                    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON generation_vectors "
                        "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
                        "WHERE generation = {}"
                    ).format(sql.Identifier(name), sql.Literal(int(generation)))
                )
        except psycopg.Error as error:
            raise StoreError(
                f"article store: cannot index vector generation {generation}: {one_line(error)}"
            ) from error

    def switch_generation(
        self,
        generation: int,
        bundle_version: str | None,
        *,
        live_folder: str | None = None,
        merges: Sequence[tuple[str, str]] = (),
    ) -> VectorGeneration:
        """Make ``generation`` live in one transaction every replica sees (``live_folder``: the
        bundle folder replicas follow, `LIVE_VERSION_KEY`, and ``merges``, the stories its encoder
        joins, recorded in the same transaction)."""
        from model.store.shared import LIVE_VERSION_KEY

        try:
            with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.execute("LOCK TABLE vector_generations IN SHARE ROW EXCLUSIVE MODE")
                cur.execute(
                    "SELECT vectors_id, state, filled_seq FROM vector_generations WHERE id = %s",
                    (generation,),
                )
                row = cur.fetchone()
                if row is None or row[1] == "retired":
                    raise StoreError(f"no vector generation {generation} to switch to")
                # Every row, not only past filled_seq: replicas commit seqs out of order.
                cur.execute(f"SELECT count(*) FROM articles WHERE {self._missing_sql(generation)}")
                missing = cur.fetchone()
                if missing is not None and missing[0]:
                    raise StoreError(
                        f"vector generation {generation} still lacks {missing[0]} stored articles' vectors"
                    )
                cur.execute("SELECT COALESCE(max(seq), 0) FROM articles")
                last = cur.fetchone()[0]  # type: ignore[index]
                # The one switched away from keeps every vector up to now: a rollback catches up the rest.
                cur.execute(
                    "UPDATE vector_generations SET state = 'complete', filled_seq = %s "
                    "WHERE state = 'live' AND id <> %s",
                    (last, generation),
                )
                cur.execute(
                    "UPDATE vector_generations SET state = 'live', filled_seq = %s, switched_at = now(), "
                    "bundle_version = COALESCE(%s, bundle_version) WHERE id = %s",
                    (last, bundle_version, generation),
                )
                upsert = (
                    "INSERT INTO meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                )
                cur.execute(upsert, (VECTORS_KEY, row[0]))
                if live_folder is not None:
                    cur.execute(upsert, (LIVE_VERSION_KEY, live_folder))
                self._record_merges(cur, generation, merges)
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot switch vector generations: {one_line(error)}") from error
        self._live = None
        return self._get_generation(generation)

    def set_generation_bundle(self, generation: int, bundle_version: str) -> None:
        self._write(
            [
                (
                    "UPDATE vector_generations SET bundle_version = %s WHERE id = %s",
                    (bundle_version, generation),
                )
            ]
        )

    def retire_generation(self, generation: int, chunk: int = 5000) -> int:
        current = self._get_generation(generation)
        if current.state == "live":
            raise StoreError(f"vector generation {generation} is live: switch to another before retiring it")
        _, size = self.generation_bytes(generation)
        # Marked retired first (nothing reads it from then on), then emptied a chunk per
        # transaction so ingest never waits long behind it.
        self._write(
            [("UPDATE vector_generations SET state = 'retired', filled_seq = 0 WHERE id = %s", (generation,))]
        )
        if generation == 0:
            query = (
                "UPDATE articles SET embedding = NULL WHERE seq IN (SELECT seq FROM articles "
                "WHERE embedding IS NOT NULL LIMIT %s)"
            )
            params: tuple[Any, ...] = (chunk,)
        else:
            query = (
                "DELETE FROM generation_vectors WHERE generation = %s AND article_id IN "
                "(SELECT article_id FROM generation_vectors WHERE generation = %s LIMIT %s)"
            )
            params = (generation, generation, chunk)
            with contextlib.suppress(psycopg.Error), psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                        sql.Identifier(f"generation_vectors_hnsw_{int(generation)}")
                    )
                )
        while self._write([(query, params)])[0] > 0:
            pass
        return size

    def generation_bytes(self, generation: int) -> tuple[int, int]:
        total = "SELECT count(*), COALESCE(sum(pg_column_size(embedding)), 0)"
        if generation == 0:
            rows = self._query(f"{total} FROM articles WHERE embedding IS NOT NULL")
        else:
            rows = self._query(f"{total} FROM generation_vectors WHERE generation = %s", (generation,))
        count, size = rows[0]
        return int(count), int(size)

    def reembed_lease_holder(self) -> str | None:
        rows = self._query("SELECT owner FROM reembed_lease WHERE expires_at > now()")
        return str(rows[0][0]) if rows else None

    def take_reembed_lease(self, owner: str, seconds: float, *, take_from: str | None = None) -> bool:
        rows = self._query(
            "INSERT INTO reembed_lease (id, owner, expires_at) "
            "VALUES (1, %(owner)s, now() + %(seconds)s * interval '1 second') "
            "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
            "WHERE reembed_lease.owner IN (%(owner)s, %(take_from)s) OR reembed_lease.expires_at <= now() "
            "RETURNING id",
            {"owner": owner, "seconds": float(seconds), "take_from": take_from or owner},
        )
        return bool(rows)

    def release_reembed_lease(self, owner: str) -> None:
        self._write([("DELETE FROM reembed_lease WHERE owner = %s", (owner,))])
