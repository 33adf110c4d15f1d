"""`PgArticleStore`: the shared backend, PostgreSQL + pgvector, for any number of stateless replicas.

Everything a replica would otherwise keep in memory lives in the database: articles with their
vectors (``vector(384)``, HNSW-indexed), classifications, stories, duplicate links, the editors'
tables and the live model version (`meta`). Three things make replicas agree:

* **Story decisions serialised per window, optimistically.** Two articles that could be each
  other's story candidates (published within the window of each other) share a time bucket, and
  a claim on a bucket takes its transaction-scoped advisory lock (ascending order: no deadlock).
  `ingest_linked` reads an article's exact neighbours in its window under one snapshot and lets
  the model decide (`link`) holding no lock. One statement then takes the locks and checks,
  through ``ingest_window_unchanged`` (migration 0005), that no row the snapshot missed has landed
  within the farthest candidate's distance; when none has, it records the decision as a *claim*
  and commits, which frees the locks. The article row (its HNSW insert costs milliseconds) is stored
  next, deleting its claim in the same transaction, before the caller answers. Candidates are
  read from articles and claims alike, so a decision made elsewhere is seen from its claim on.
  A changed window sends the article back to decide again with the new rows; after
  `OPTIMISTIC_TRIES` it decides under the locks from search to commit (`_ingest_locked`). Either
  way each decision is the one the locked path would make at the moment of its claim.
* **URL variants** hash to one id: the primary key makes the second insert a no-op.
* **Migrations** (`pg_migrate`: ``pg_migrations/NNNN_name.sql``) run at open under a session
  advisory lock, recorded in ``schema_migrations``; a database newer than this code is refused.

Search (`search()` gives an `ArticleSearch`, `pg_search`) counts a selective filter first: up to
`EXACT_MAX_ROWS` matching rows are scanned exactly, above it HNSW runs with a beam widened by the
filter's selectivity. Vectors travel in pgvector's binary form (`pg_vector`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from model.articles.article import Provider, article_from_record
from model.coverage.search import KnownArticle
from model.coverage.story_rule import DUPLICATE_CANDIDATES, STORY_CANDIDATES
from model.feedback import CORRECTION_COLUMNS, PAIR_FEEDBACK_COLUMNS, Correction, PairFeedback
from model.results import SearchFilters
from model.store.base import ArticleQuery, StoredArticle, StoreError, StorySummary
from model.store.filters import POSTGRES, article_filters
from model.store.pg_migrate import SCHEMA_VERSION, migrate
from model.store.pg_rows import COLUMNS, article_row, one_line
from model.store.pg_search import PgSearch, nearest_rows
from model.store.pg_vector import register_vector_numpy
from model.store.shared import LinkFn

logger = logging.getLogger(__name__)

INGEST_LOCK_NS = 0x4E44  # first int of the (int, int) ingest lock keys: "ND"
WORKSPACE_TABLES = ("corrections", "pair_feedback")  # a database never migrated lacks them
# Exact neighbours in the window, and nearest at any age (HNSW), handed to the story rule: as many
# as `model.coverage.story_rule` looks at, so the database decides as the in-memory model does.
CANDIDATES = STORY_CANDIDATES
DUPLICATE_NEIGHBOURS = DUPLICATE_CANDIDATES
# HNSW beam for those: a copy lies nearest of all, pgvector's default beam finds it. The search
# beam (400) halved one client's ingest rate on 20k rows (231 -> 112 articles/s).
DUPLICATE_EF_SEARCH = 40


# --- helpers ------------------------------------------------------------------------------------


def provider_key(record: dict[str, Any]) -> str | None:
    """The key searches filter on, as `Article.provider_key` gives it (lower case, no www.)."""
    provider = record.get("provider")
    if not isinstance(provider, dict):
        return None
    return Provider(name=provider.get("name"), domain=provider.get("domain")).key


def lock_keys(moment: datetime, window: timedelta) -> list[int]:
    """The ingest lock keys of an article whose candidate window is ``moment`` ± ``window``.

    Buckets are ``window`` long; the window touches 2-3 of them. Two articles within ``window`` of
    each other (each a candidate of the other) share at least one bucket.
    """
    width = window.total_seconds()
    t = moment.timestamp()
    first, last = math.floor((t - width) / width), math.floor((t + width) / width)
    return [bucket & 0x7FFFFFFF for bucket in range(first, last + 1)]


_WRITE_COLUMNS = (
    "id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
    "model_version, published_at, provider, created_at, related, labels, uncertainty"
)
_WRITE_TYPES = ["text", "text", "jsonb", "vector", "text", "jsonb", "text", "text", "timestamptz",
                "text", "timestamptz", "jsonb", "text[]", "float4"]  # fmt: skip
_VALUES = "%s, %s, %s, %b, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
_INSERT = f"INSERT INTO articles ({_WRITE_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT DO NOTHING RETURNING id"
# The optimistic ingest (migration 0005). Under the window's locks, one statement: the check and
# the claim (taking over one a dead replica left). After the locks: the article, and its claim gone.
_CLAIM = (
    "INSERT INTO story_claims (id, record, embedding, story_id, published_at, created_at) "
    "SELECT %s, %s, %b, %s, %s, %s WHERE ingest_window_unchanged("
    "%s::integer, %s::integer[], %s::pg_snapshot, %s, %s, %b, %s::double precision) "
    "ON CONFLICT (id) DO UPDATE SET record = excluded.record, embedding = excluded.embedding, "
    "story_id = excluded.story_id, published_at = excluded.published_at, "
    "created_at = excluded.created_at, xact = excluded.xact RETURNING id"
)
_STORE_CLAIMED = f"WITH claim AS (DELETE FROM story_claims WHERE id = %s) {_INSERT}"
# A claim older than this belongs to a replica that died between claim and store: it is no
# longer a story candidate, and a replica starting sweeps it.
CLAIM_LIFETIME = timedelta(minutes=10)


def _params(article: StoredArticle, *, copy: bool = False) -> list[Any]:
    # COPY with set_types takes plain dicts for jsonb; a parametrised INSERT needs Jsonb wrappers.
    record = article.record if copy else Jsonb(article.record)
    classification = article.classification if copy else Jsonb(article.classification)
    related = list(article.related_ids) if article.related_ids else None
    return [
        article.id,
        article.canonical_url,
        record,
        np.asarray(article.embedding, dtype=np.float32),
        article.story_id,
        classification,
        article.duplicate_of,
        article.model_version,
        article.published_at,
        provider_key(article.record),
        article.created_at,
        related if copy or related is None else Jsonb(related),
        article.effective_labels,
        article.uncertainty,
    ]


# --- the store ----------------------------------------------------------------------------------


class PgArticleStore:
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
    # Claims an article makes before it decides under the locks instead (`ingest_linked`); 0: the
    # locks from search to commit for every article (the first design, which benchmarks compare).
    OPTIMISTIC_TRIES = 3

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, read_only: bool = False) -> None:
        self.url = url
        self.read_only = read_only
        # How ingests were stored: first claim, a later claim, or under the locks; and the seconds
        # spent in statements that hold the window's locks, lock waits included (benchmarks, tests).
        self.ingest_outcomes: Counter[str] = Counter()
        self.lock_seconds = 0.0
        self._outcomes_lock = threading.Lock()
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
                    cur.execute(_INSERT, _params(article))
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
                    f"SELECT {_WRITE_COLUMNS} FROM articles WITH NO DATA"
                )
                with cur.copy(f"COPY load_articles ({_WRITE_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(_WRITE_TYPES)
                    for article in articles:
                        copy.write_row(_params(article, copy=True))
                cur.execute(  # ctid order = COPY order, so seq follows the input
                    f"INSERT INTO articles ({_WRITE_COLUMNS}) SELECT {_WRITE_COLUMNS} FROM load_articles "
                    "ORDER BY ctid ON CONFLICT DO NOTHING"
                )
                return cur.rowcount
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: bulk load failed: {one_line(error)}") from error

    def ingest_linked(
        self, articles: Sequence[StoredArticle], link: LinkFn, window: timedelta
    ) -> list[tuple[StoredArticle, bool]]:
        """Decide each new article's story and duplicate with ``link`` and store it, atomically
        with respect to every other replica; returns (the stored row, created) per article.

        ``link(article, candidates, nearest)`` gets the `CANDIDATES` exact nearest stored neighbours
        published within ``window`` of the article (undated ones by ingest time) and its
        `DUPLICATE_NEIGHBOURS` nearest stored articles at any age (a copy is a duplicate whatever
        its age), and returns (story id, duplicate_of). It must not touch the database; it may be
        called more than once for an article. Articles already stored come back as stored, with created False.

        Optimistic: the candidates are read and ``link`` runs without any lock; one statement then
        takes the window's locks, checks that no row the read could not see has landed within the
        farthest candidate's distance (else the decision could differ), inserts and commits. On a
        change the new rows join the candidates and the article tries again; after
        `OPTIMISTIC_TRIES` it decides under the locks (`_ingest_locked`). The locks are held for
        that one statement and its commit, not for the search or the model, so replicas ingesting
        the same days no longer queue behind each other's decisions.
        """
        now = datetime.now(UTC)
        try:
            if not self.OPTIMISTIC_TRIES:  # the first design, kept for comparison (benchmarks)
                self._count("locked", len(articles))
                return self._ingest_locked(articles, link, window, now)
            seen, stored, candidates, nearest = self._read_windows(articles, now, window)
            out: list[tuple[StoredArticle, bool]] = []
            batch: list[KnownArticle] = []  # stored by this call after the snapshot: copies at any age
            for article in articles:
                if article.id in stored:
                    out.append((stored[article.id], False))
                    continue
                outcome = self._ingest_optimistic(
                    article, link, window, now, seen, candidates[article.id], nearest[article.id] + batch
                )
                if outcome is None:
                    self._count("locked")
                    outcome = self._ingest_locked([article], link, window, now)[0]
                if outcome[1]:
                    stored[article.id] = outcome[0]  # a second copy in this batch is not new
                    row = outcome[0]
                    batch.append(KnownArticle(article_from_record(row.record), row.embedding, row.story_id))
                out.append(outcome)
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error
        return out

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._outcomes_lock:
            self.ingest_outcomes[outcome] += n

    def _held(self, since: float) -> None:
        with self._outcomes_lock:
            self.lock_seconds += time.perf_counter() - since

    def _ingest_optimistic(
        self,
        article: StoredArticle,
        link: LinkFn,
        window: timedelta,
        now: datetime,
        seen: str,
        candidates: list[tuple[KnownArticle, float]],
        nearest: list[KnownArticle],
    ) -> tuple[StoredArticle, bool] | None:
        """Up to `OPTIMISTIC_TRIES` claims; None when every one found its window changed."""
        moment = article.published_at or now
        keys = sorted(lock_keys(moment, window))
        vector = np.asarray(article.embedding, dtype=np.float32)
        for attempt in range(self.OPTIMISTIC_TRIES):
            story_id, duplicate_of = link(article, [known for known, _ in candidates], nearest)
            stored = _with(article, story_id, duplicate_of, now)
            # Past the K-th neighbour a new row cannot enter the candidates; short of K, any can.
            reach = candidates[-1][1] if len(candidates) >= CANDIDATES else None
            claim = [article.id, Jsonb(article.record), vector, story_id, article.published_at, now]
            window_check = [INGEST_LOCK_NS, keys, seen, moment - window, moment + window, vector, reach]
            with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
                started = time.perf_counter()
                cur.execute(_CLAIM, [*claim, *window_check])
                claimed = cur.fetchone() is not None
                self._held(started)
                if claimed:  # and committed: the locks are free again
                    cur.execute(_STORE_CLAIMED, [article.id, *_params(stored)])
                    if cur.fetchone() is not None:
                        self._count("first_try" if attempt == 0 else "retried")
                        return stored, True
                cur.execute(f"SELECT {COLUMNS} FROM articles WHERE id = %s", (article.id,))
                found = cur.fetchone()
                if found is not None:  # stored meanwhile (a URL variant from another replica)
                    return article_row(found), False
            if attempt + 1 < self.OPTIMISTIC_TRIES:
                seen, fresh = self._read_window_changes(article, now, window, seen)
                candidates = _nearest_first(candidates + fresh)
        return None

    def _read_windows(
        self, articles: Sequence[StoredArticle], now: datetime, window: timedelta
    ) -> tuple[
        str,
        dict[str, StoredArticle],
        dict[str, list[tuple[KnownArticle, float]]],
        dict[str, list[KnownArticle]],
    ]:
        """One snapshot: its text, the articles already stored, each new one's window neighbours
        and its nearest at any age."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            seen = _snapshot(cur)
            cur.execute(f"SELECT {COLUMNS} FROM articles WHERE id = ANY(%s)", ([a.id for a in articles],))
            stored = {row.id: row for row in map(article_row, cur.fetchall())}
            fresh = [a for a in articles if a.id not in stored]
            candidates = {a.id: self._window_neighbours(cur, a, now, window) for a in fresh}
            nearest = {a.id: self._nearest_anywhere(cur, a) for a in fresh}
        return seen, stored, candidates, nearest

    def _read_window_changes(
        self, article: StoredArticle, now: datetime, window: timedelta, seen: str
    ) -> tuple[str, list[tuple[KnownArticle, float]]]:
        """A new snapshot, and the nearest rows in the window it sees that ``seen`` did not."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            now_seen = _snapshot(cur)
            return now_seen, self._window_neighbours(cur, article, now, window, unseen_by=seen)

    def _ingest_locked(
        self, articles: Sequence[StoredArticle], link: LinkFn, window: timedelta, now: datetime
    ) -> list[tuple[StoredArticle, bool]]:
        """The pessimistic path: the window's locks held from the neighbour search to the commit."""
        keys = sorted({key for a in articles for key in lock_keys(a.published_at or now, window)})
        out: list[tuple[StoredArticle, bool]] = []
        with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
            started = time.perf_counter()
            try:
                with conn.transaction():
                    for key in keys:  # ascending: two transactions never wait on each other in a cycle
                        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (INGEST_LOCK_NS, key))
                    out.extend(
                        self._decide_and_store(cur, article, link, window, now) for article in articles
                    )
            finally:
                self._held(started)
        return out

    def _decide_and_store(
        self, cur: psycopg.Cursor[Any], article: StoredArticle, link: LinkFn, window: timedelta, now: datetime
    ) -> tuple[StoredArticle, bool]:
        cur.execute(f"SELECT {COLUMNS} FROM articles WHERE id = %s", (article.id,))
        found = cur.fetchone()
        if found is not None:
            return article_row(found), False
        neighbours = self._window_neighbours(cur, article, now, window)
        nearest = self._nearest_anywhere(cur, article)
        story_id, duplicate_of = link(article, [known for known, _ in neighbours], nearest)
        stored = _with(article, story_id, duplicate_of, now)
        cur.execute(_STORE_CLAIMED, [article.id, *_params(stored)])
        if cur.fetchone() is not None:
            return stored, True
        # Its canonical URL is stored under another id (cannot happen today).
        cur.execute(f"SELECT {COLUMNS} FROM articles WHERE canonical_url = %s", (article.canonical_url,))
        row = cur.fetchone()
        return (article_row(row) if row else stored), False

    @staticmethod
    def _nearest_anywhere(cur: psycopg.Cursor[Any], article: StoredArticle) -> list[KnownArticle]:
        """The `DUPLICATE_NEIGHBOURS` stored articles nearest to ``article`` at any age, through the
        HNSW index (no filter to post-filter). Not serialised with other replicas (the window's
        locks cover the window only): two copies published more than a window apart and ingested
        at the same moment on two replicas may miss each other.
        """
        cur.execute("SET LOCAL enable_indexscan = on")  # the window's exact scan turned it off
        cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(DUPLICATE_EF_SEARCH)))
        cur.execute(
            "SELECT record, embedding, story_id FROM articles WHERE id <> %(self)s "
            "ORDER BY embedding <=> %(probe)b LIMIT %(k)s",
            {
                "probe": np.asarray(article.embedding, dtype=np.float32),
                "self": article.id,
                "k": DUPLICATE_NEIGHBOURS,
            },
        )
        return [
            KnownArticle(article_from_record(record), embedding, story_id)
            for record, embedding, story_id in cur.fetchall()
        ]

    @staticmethod
    def _window_neighbours(
        cur: psycopg.Cursor[Any],
        article: StoredArticle,
        now: datetime,
        window: timedelta,
        *,
        unseen_by: str | None = None,
    ) -> list[tuple[KnownArticle, float]]:
        """The `CANDIDATES` nearest articles and claims published within ``window`` of
        ``article`` (undated ones by ingest time), with their cosine distance, nearest first; only
        rows the snapshot ``unseen_by`` did not see, when given. An exact scan: the HNSW index
        would post-filter the window and miss neighbours (measured: a story split in two)."""
        moment = article.published_at or now
        vector = np.asarray(article.embedding, dtype=np.float32)
        in_window = sql.SQL(
            "((published_at BETWEEN %(low)s AND %(high)s)"
            " OR (published_at IS NULL AND created_at BETWEEN %(low)s AND %(high)s))"
            " AND id <> %(self)s"  # its own claim, left by a replica that died before storing it
        )
        if unseen_by is not None:
            in_window += sql.SQL(
                " AND xact >= pg_snapshot_xmin(%(seen)s::pg_snapshot)"
                " AND NOT pg_visible_in_snapshot(xact, %(seen)s::pg_snapshot)"
            )
        cur.execute("SET LOCAL enable_indexscan = off")  # bitmap scans of the btrees remain
        cur.execute(
            sql.SQL(
                "SELECT id, record, embedding, story_id, embedding <=> %(probe)b AS distance "
                "FROM articles WHERE {where} UNION ALL "
                "SELECT id, record, embedding, story_id, embedding <=> %(probe)b "
                "FROM story_claims WHERE {where} AND created_at > now() - %(lifetime)s "
                "ORDER BY distance LIMIT %(k)s"
            ).format(where=in_window),
            {
                "probe": vector,
                "low": moment - window,
                "high": moment + window,
                "seen": unseen_by,
                "self": article.id,
                "lifetime": CLAIM_LIFETIME,
                "k": CANDIDATES,
            },
        )
        return _nearest_first(
            (KnownArticle(article_from_record(record), embedding, story_id), float(distance))
            for _, record, embedding, story_id, distance in cur.fetchall()
        )

    # --- the editors' workspace ------------------------------------------------------------

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


def _with(article: StoredArticle, story_id: str, duplicate_of: str | None, now: datetime) -> StoredArticle:
    return replace(article, story_id=story_id, duplicate_of=duplicate_of, created_at=now)


def _snapshot(cur: psycopg.Cursor[Any]) -> str:
    """The transaction's snapshot (``xmin:xmax:xip,...``) as text, to hand to a later statement."""
    cur.execute("SELECT pg_current_snapshot()::text")
    row = cur.fetchone()
    assert row is not None
    return str(row[0])


def _nearest_first(candidates: Iterable[tuple[KnownArticle, float]]) -> list[tuple[KnownArticle, float]]:
    """The `CANDIDATES` nearest, one per article: a snapshot never shows an article and its claim
    together, but a taken-over claim or a re-read after a changed window can repeat one."""
    unique = {known.article.id: (known, distance) for known, distance in candidates}
    return sorted(unique.values(), key=lambda item: (item[1], item[0].article.id))[:CANDIDATES]
