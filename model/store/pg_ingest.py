"""Linked ingest on PostgreSQL: each new article's story and duplicate decided by the story rule
from the neighbours the database holds, atomically with respect to every other replica.

Two articles that could be each other's story candidates (published within the window of each
other) share a time bucket, and a claim on a bucket takes its transaction-scoped advisory lock
(ascending order: no deadlock). An article's exact neighbours in its window and its nearest at any
age are read under one snapshot and the model decides (``link``) holding no lock. One statement
then takes the locks and checks, through ``ingest_window_unchanged`` (migration 0005), that no row
the snapshot missed has landed within the farthest candidate's distance; when none has, it records
the decision as a *claim* and commits, which frees the locks. The article row (its HNSW insert
costs milliseconds) is stored next, deleting its claim in the same transaction, before the caller
answers. Candidates are read from articles and claims alike, so a decision made elsewhere is seen
from its claim on. A changed window sends the article back to decide again with the new rows;
after `OPTIMISTIC_TRIES` it decides under the locks from search to commit (`_ingest_locked`).
Either way each decision is the one the locked path would make at the moment of its claim.
`LinkedIngest` is the part of `PgArticleStore` that does this.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from model.articles.article import article_from_record
from model.coverage.search import KnownArticle
from model.coverage.story_rule import DUPLICATE_CANDIDATES, STORY_CANDIDATES
from model.store.base import StoredArticle, StoreError
from model.store.merges import RESOLVED_STORY
from model.store.pg_rows import COLUMNS, article_row, articles_of, insert_into, insert_params, one_line
from model.store.shared import LinkFn

INGEST_LOCK_NS = 0x4E44  # first int of the (int, int) ingest lock keys: "ND"
# Exact neighbours in the window, and nearest at any age (HNSW), handed to the story rule: as many
# as `model.coverage.story_rule` looks at, so the database decides as the in-memory model does.
CANDIDATES = STORY_CANDIDATES
DUPLICATE_NEIGHBOURS = DUPLICATE_CANDIDATES
# HNSW beam for those: a copy lies nearest of all, pgvector's default beam finds it. The search
# beam (400) halved one client's ingest rate on 20k rows (231 -> 112 articles/s).
DUPLICATE_EF_SEARCH = 40


def lock_keys(moment: datetime, window: timedelta) -> list[int]:
    """The ingest lock keys of an article whose candidate window is ``moment`` ± ``window``.

    Buckets are ``window`` long; the window touches 2-3 of them. Two articles within ``window`` of
    each other (each a candidate of the other) share at least one bucket.
    """
    width = window.total_seconds()
    t = moment.timestamp()
    first, last = math.floor((t - width) / width), math.floor((t + width) / width)
    return [bucket & 0x7FFFFFFF for bucket in range(first, last + 1)]


# The optimistic ingest (migration 0005). Under the window's locks, one statement: the check and
# the claim (taking over one a dead replica left). After the locks: the article, and its claim gone.
# A claim carries its replica's vector generation (0007): it is a candidate in that generation only.
CLAIM = (
    "INSERT INTO story_claims (id, record, embedding, story_id, published_at, created_at, generation) "
    "SELECT %s, %s, %b, %s, %s, %s, %s WHERE ingest_window_unchanged("
    "%s::integer, %s::integer[], %s::pg_snapshot, %s, %s, %b, %s::double precision, %s::integer) "
    "ON CONFLICT (id) DO UPDATE SET record = excluded.record, embedding = excluded.embedding, "
    "story_id = excluded.story_id, published_at = excluded.published_at, "
    "created_at = excluded.created_at, xact = excluded.xact, generation = excluded.generation RETURNING id"
)


def store_claimed(generation: int) -> str:
    """The article's row (its vector in ``generation``), its claim deleted in the same statement.
    Parameters: the claim's id, then `insert_params`."""
    insert = insert_into(generation)
    if insert.startswith("WITH "):
        return f"WITH claim AS (DELETE FROM story_claims WHERE id = %s), {insert[len('WITH ') :]}"
    return f"WITH claim AS (DELETE FROM story_claims WHERE id = %s) {insert}"


# A claim older than this belongs to a replica that died between claim and store: it is no
# longer a story candidate, and a replica starting sweeps it.
CLAIM_LIFETIME = timedelta(minutes=10)


class LinkedIngest:
    """`ingest_linked` and its two paths; `PgArticleStore` supplies the pool."""

    pool: ConnectionPool
    # Claims an article makes before it decides under the locks instead (`ingest_linked`); 0: the
    # locks from search to commit for every article (the first design, which benchmarks compare).
    OPTIMISTIC_TRIES = 3

    def __init__(self) -> None:
        # How ingests were stored: first claim, a later claim, or under the locks; and the seconds
        # spent in statements that hold the window's locks, lock waits included (benchmarks, tests).
        self.ingest_outcomes: Counter[str] = Counter()
        self.lock_seconds = 0.0
        self._outcomes_lock = threading.Lock()

    def ingest_linked(
        self,
        articles: Sequence[StoredArticle],
        link: LinkFn,
        window: timedelta,
        *,
        generation: int | None = None,
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

        ``generation``: the vector generation the articles' vectors belong to (the live one when
        None); neighbours are read, and the vectors written, in it alone.
        """
        now = datetime.now(UTC)
        gen = self.live_generation_id() if generation is None else generation
        try:
            if not self.OPTIMISTIC_TRIES:  # the first design, kept for comparison (benchmarks)
                self._count("locked", len(articles))
                return self._ingest_locked(articles, link, window, now, gen)
            seen, stored, candidates, nearest = self._read_windows(articles, now, window, gen)
            out: list[tuple[StoredArticle, bool]] = []
            batch: list[KnownArticle] = []  # stored by this call after the snapshot: copies at any age
            for article in articles:
                if article.id in stored:
                    out.append((stored[article.id], False))
                    continue
                outcome = self._ingest_optimistic(
                    article, link, window, now, seen, candidates[article.id], nearest[article.id] + batch, gen
                )
                if outcome is None:
                    self._count("locked")
                    outcome = self._ingest_locked([article], link, window, now, gen)[0]
                if outcome[1]:
                    stored[article.id] = outcome[0]  # a second copy in this batch is not new
                    row = outcome[0]
                    batch.append(KnownArticle(article_from_record(row.record), row.embedding, row.story_id))
                out.append(outcome)
        except (psycopg.Error, PoolTimeout) as error:
            raise StoreError(f"article store: cannot write: {one_line(error)}") from error
        return out

    def live_generation_id(self) -> int:
        """The live vector generation's id (`PgArticleStore` reads it)."""
        raise NotImplementedError

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
        generation: int,
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
            claim = [
                article.id,
                Jsonb(article.record),
                vector,
                story_id,
                article.published_at,
                now,
                generation,
            ]
            window_check = [
                *(INGEST_LOCK_NS, keys, seen, moment - window, moment + window, vector, reach, generation)
            ]
            with self.pool.connection() as conn, conn.cursor(binary=True) as cur:
                started = time.perf_counter()
                cur.execute(CLAIM, [*claim, *window_check])
                claimed = cur.fetchone() is not None
                self._held(started)
                if claimed:  # and committed: the locks are free again
                    cur.execute(store_claimed(generation), [article.id, *insert_params(stored, generation)])
                    if cur.fetchone() is not None:
                        self._count("first_try" if attempt == 0 else "retried")
                        return stored, True
                cur.execute(
                    f"SELECT {COLUMNS} FROM {articles_of(generation, with_vectors=False)} WHERE id = %s",
                    (article.id,),
                )
                found = cur.fetchone()
                if found is not None:  # stored meanwhile (a URL variant from another replica)
                    return article_row(found), False
            if attempt + 1 < self.OPTIMISTIC_TRIES:
                seen, fresh = self._read_window_changes(article, now, window, seen, generation)
                candidates = _nearest_first(candidates + fresh)
        return None

    def _read_windows(
        self, articles: Sequence[StoredArticle], now: datetime, window: timedelta, generation: int
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
            cur.execute(
                f"SELECT {COLUMNS} FROM {articles_of(generation, with_vectors=False)} WHERE id = ANY(%s)",
                ([a.id for a in articles],),
            )
            stored = {row.id: row for row in map(article_row, cur.fetchall())}
            fresh = [a for a in articles if a.id not in stored]
            candidates = {a.id: self._window_neighbours(cur, a, now, window, generation) for a in fresh}
            nearest = {a.id: self._nearest_anywhere(cur, a, generation) for a in fresh}
        return seen, stored, candidates, nearest

    def _read_window_changes(
        self, article: StoredArticle, now: datetime, window: timedelta, seen: str, generation: int
    ) -> tuple[str, list[tuple[KnownArticle, float]]]:
        """A new snapshot, and the nearest rows in the window it sees that ``seen`` did not."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor(binary=True) as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            now_seen = _snapshot(cur)
            return now_seen, self._window_neighbours(cur, article, now, window, generation, unseen_by=seen)

    def _ingest_locked(
        self,
        articles: Sequence[StoredArticle],
        link: LinkFn,
        window: timedelta,
        now: datetime,
        generation: int = 0,
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
                        self._decide_and_store(cur, article, link, window, now, generation)
                        for article in articles
                    )
            finally:
                self._held(started)
        return out

    def _decide_and_store(
        self,
        cur: psycopg.Cursor[Any],
        article: StoredArticle,
        link: LinkFn,
        window: timedelta,
        now: datetime,
        generation: int,
    ) -> tuple[StoredArticle, bool]:
        rows = articles_of(generation, with_vectors=False)
        cur.execute(f"SELECT {COLUMNS} FROM {rows} WHERE id = %s", (article.id,))
        found = cur.fetchone()
        if found is not None:
            return article_row(found), False
        neighbours = self._window_neighbours(cur, article, now, window, generation)
        nearest = self._nearest_anywhere(cur, article, generation)
        story_id, duplicate_of = link(article, [known for known, _ in neighbours], nearest)
        stored = _with(article, story_id, duplicate_of, now)
        cur.execute(store_claimed(generation), [article.id, *insert_params(stored, generation)])
        if cur.fetchone() is not None:
            return stored, True
        # Its canonical URL is stored under another id (cannot happen today).
        cur.execute(f"SELECT {COLUMNS} FROM {rows} WHERE canonical_url = %s", (article.canonical_url,))
        row = cur.fetchone()
        return (article_row(row) if row else stored), False

    @staticmethod
    def _nearest_anywhere(
        cur: psycopg.Cursor[Any], article: StoredArticle, generation: int
    ) -> list[KnownArticle]:
        """The `DUPLICATE_NEIGHBOURS` stored articles nearest to ``article`` at any age, through the
        HNSW index (no filter to post-filter). Not serialised with other replicas (the window's
        locks cover the window only): two copies published more than a window apart and ingested
        at the same moment on two replicas may miss each other.
        """
        cur.execute("SET LOCAL enable_indexscan = on")  # the window's exact scan turned it off
        cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(DUPLICATE_EF_SEARCH)))
        cur.execute(
            f"SELECT record, embedding, {RESOLVED_STORY} FROM {articles_of(generation, with_vectors=True)} "
            "WHERE id <> %(self)s "
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
        generation: int,
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
                "SELECT id, record, embedding, {story}, embedding <=> %(probe)b AS distance "
                "FROM {articles} WHERE {where} UNION ALL "
                "SELECT id, record, embedding, {story}, embedding <=> %(probe)b "
                "FROM story_claims WHERE {where} AND created_at > now() - %(lifetime)s "
                "AND generation = %(generation)s ORDER BY distance LIMIT %(k)s"
            ).format(
                where=in_window,
                articles=sql.SQL(articles_of(generation, with_vectors=True)),
                story=sql.SQL(RESOLVED_STORY),  # a merged story's members count in the one it joined
            ),
            {
                "probe": vector,
                "low": moment - window,
                "high": moment + window,
                "seen": unseen_by,
                "self": article.id,
                "lifetime": CLAIM_LIFETIME,
                "generation": generation,
                "k": CANDIDATES,
            },
        )
        return _nearest_first(
            (KnownArticle(article_from_record(record), embedding, story_id), float(distance))
            for _, record, embedding, story_id, distance in cur.fetchall()
        )


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
