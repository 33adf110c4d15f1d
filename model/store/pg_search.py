"""Nearest-neighbour search over the stored articles (pgvector), with the in-memory index's filters.

pgvector 0.6 filters *after* the HNSW graph search (at most ``ef_search`` rows leave the index,
then the WHERE drops some), so a selective filter would return fewer than k rows, and a beam that
is mostly rejected rows misses neighbours. With a filter we first count the matching rows
(capped); up to the store's ``EXACT_MAX_ROWS`` we scan them exactly, above it HNSW runs with
``ef_search`` divided by the selectivity, and an exact scan backs it up if it still comes back
short.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from model.articles.article import article_from_record
from model.coverage.search import KnownArticle
from model.results import SearchFilters
from model.store.base import StoredArticle
from model.store.pg_rows import COLUMNS, article_row, articles_of, scalar

EF_MAX = 1000  # pgvector's upper bound for hnsw.ef_search


class StoredRows(Protocol):
    """What `PgSearch` reads through: the store's `nearest_rows` and `get`."""

    def nearest_rows(
        self,
        vector: npt.NDArray[np.float32],
        k: int,
        filters: SearchFilters,
        *,
        generation: int | None = None,
    ) -> list[tuple[StoredArticle, float]]: ...

    def get(self, article_id: str, *, generation: int | None = None) -> StoredArticle | None: ...


class PgSearch:
    """`ArticleSearch` over the database, for one request: `nearest` reads the rows it returns
    whole, so the `known` calls that follow (the pair scorer needs each hit's article and vector)
    cost no extra round trip. ``generation``: the vector generation searched (the one of the
    encoder that made the query vectors; the live one when None)."""

    def __init__(self, store: StoredRows, generation: int | None = None) -> None:
        self.store = store
        self.generation = generation
        self._seen: dict[str, KnownArticle | None] = {}

    def nearest(
        self, vector: npt.NDArray[np.floating], k: int, filters: SearchFilters
    ) -> list[tuple[str, float]]:
        rows = self.store.nearest_rows(
            np.asarray(vector, dtype=np.float32), k, filters, generation=self.generation
        )
        for stored, _ in rows:
            self._seen[stored.id] = _known(stored)
        return [(stored.id, cosine) for stored, cosine in rows]

    def known(self, article_id: str) -> KnownArticle | None:
        if article_id not in self._seen:
            stored = self.store.get(article_id, generation=self.generation)
            self._seen[article_id] = _known(stored) if stored is not None else None
        return self._seen[article_id]


def _known(stored: StoredArticle) -> KnownArticle:
    return KnownArticle(article_from_record(stored.record), stored.embedding, stored.story_id)


def nearest_rows(
    conn: psycopg.Connection[Any],
    vector: npt.NDArray[np.float32],
    k: int,
    filters: SearchFilters,
    *,
    ef_search: int,
    exact_max_rows: int,
    generation: int = 0,
) -> list[tuple[StoredArticle, float]]:
    """The ``k`` stored articles closest to ``vector`` (cosine) that pass ``filters``, in the
    transaction open on ``conn``: HNSW with beam ``ef_search`` unfiltered; with a filter, an exact
    scan when at most ``exact_max_rows`` pass it, else HNSW with the beam widened by its
    selectivity and the exact scan as backup when that comes back short. Only ``generation``'s
    vectors are searched (rows without one there are left out)."""
    where, params = where_clause(filters)
    rows = sql.SQL(articles_of(generation, with_vectors=True))
    if not _selective(filters):
        return _ordered(conn, vector, k, rows, where, params, ef=ef_search)
    count = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} WHERE {} LIMIT %s) t")
    matching = scalar(conn, count.format(rows, where), [*params, exact_max_rows + 1])
    if matching <= exact_max_rows:
        return _ordered(conn, vector, k, rows, where, params, ef=None)
    ef = _beam(conn, k, rows, where, params, matching, ef_search)
    hits = _ordered(conn, vector, k, rows, where, params, ef=ef)
    return hits if len(hits) >= k else _ordered(conn, vector, k, rows, where, params, ef=None)


def _beam(
    conn: psycopg.Connection[Any],
    k: int,
    rows: sql.Composable,
    where: sql.Composable,
    params: list[Any],
    matching: int,
    ef_search: int,
) -> int:
    """``ef_search`` for a filter passing ~selectivity of the rows: the unfiltered beam divided
    by it, so about as many passing rows leave the index as unfiltered. The count is capped,
    so the planner estimates."""
    total = scalar(conn, "SELECT reltuples::bigint FROM pg_class WHERE relname = 'articles'")
    explain = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {}").format(rows, where)
    estimate = int(scalar(conn, explain, params)[0]["Plan"]["Plan Rows"])
    selectivity = min(1.0, max(matching, estimate) / max(int(total or 1), matching))
    return min(EF_MAX, max(ef_search, k, math.ceil(ef_search / selectivity)))


def _ordered(
    conn: psycopg.Connection[Any],
    vector: npt.NDArray[np.float32],
    k: int,
    rows: sql.Composable,
    where: sql.Composable,
    params: list[Any],
    *,
    ef: int | None,
) -> list[tuple[StoredArticle, float]]:
    """HNSW with beam ``ef``, or (``ef=None``) an exact scan of the rows passing ``where``."""
    if ef is None:
        # Off the HNSW index (which post-filters); the btree filters still run as bitmap scans.
        conn.execute("SET LOCAL enable_indexscan = off")
    else:
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(int(ef))))
    query = sql.SQL(
        "SELECT {}, 1 - (embedding <=> %b) FROM {} WHERE {} ORDER BY embedding <=> %b LIMIT %s"
    ).format(sql.SQL(COLUMNS), rows, where)
    with conn.cursor(binary=True) as cur:
        cur.execute(query, [vector, *params, vector, k])
        return [(article_row(row[:-1]), float(row[-1])) for row in cur.fetchall()]


def where_clause(filters: SearchFilters) -> tuple[sql.Composable, list[Any]]:
    """The filters as SQL, with the in-memory index's semantics (an unknown date fails a date
    filter; an article without a provider passes ``exclude_provider``)."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    if filters.since is not None:
        parts.append(sql.SQL("published_at >= %s"))
        params.append(filters.since)
    if filters.until is not None:
        parts.append(sql.SQL("published_at <= %s"))
        params.append(filters.until)
    if filters.providers is not None:
        parts.append(sql.SQL("provider = ANY(%s)"))
        params.append(sorted(p.lower() for p in filters.providers))
    if filters.exclude_provider is not None:
        parts.append(sql.SQL("(provider IS NULL OR provider <> %s)"))
        params.append(filters.exclude_provider.lower())
    if filters.language is not None:
        parts.append(sql.SQL("language = %s"))
        params.append(filters.language)
    if filters.exclude_ids:
        parts.append(sql.SQL("id <> ALL(%s)"))
        params.append(sorted(filters.exclude_ids))
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


def _selective(filters: SearchFilters) -> bool:
    # exclude_ids alone (the query article) removes a handful of rows: not a filter worth counting.
    return any(
        (
            filters.since,
            filters.until,
            filters.providers is not None,
            filters.exclude_provider is not None,
            filters.language is not None,
        )
    )
