"""Stories that agree with the pair scorer, for a whole batch at once, and why a hit is not in a story.

`cluster_stories` (training and ``dedup``) takes the articles in published order and decides each
by the one rule, `model.coverage.story_rule.decide` (a copy at any age joins its original's story;
otherwise mean-link over the neighbours inside the story window), scoring the pairs as whole
arrays instead of one `PairScorer.compare_many` call per article. `story_note` tells a reader of
related coverage why a ``same_story`` hit is not in the query's story.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.neardup import near_duplicate_score
from model.coverage.pair_evidence import FEATURE_NAMES, HashedIdf, row_cosines
from model.coverage.pair_scorer import PairScorer
from model.coverage.story_rule import (
    DUPLICATE_CANDIDATES,
    STORY_CANDIDATES,
    STORY_WINDOW_DAYS,
    Neighbour,
    decide,
    new_story_id,
)
from model.results import Comparison

logger = logging.getLogger(__name__)

# Past this many articles a batch finds its candidates in HNSW graphs, not by scoring every pair.
ANN_THRESHOLD = 20_000

_JOINS = frozenset({"duplicate", "same_story"})


def story_note(verdict: str, query_story: str | None, hit_story: str | None, query_known: bool) -> str | None:
    """Why a ``same_story``/``duplicate`` hit is not in the query's story (None when it is, or
    when the verdict does not call for it)."""
    if verdict not in _JOINS:
        return None
    if not query_known:
        return "the query is not an ingested article, so it has no story yet"
    if query_story is not None and query_story == hit_story:
        return None
    return (
        "not in the query's story: a story is joined by the mean same-story score over its members "
        "near the article (mean-link), and this hit's story as a whole scored below the cut, or the "
        "two were assigned before one of them was known"
    )


def published_order_key(published_at: datetime | None, article_id: str) -> tuple[bool, float, str]:
    """Where an article falls in the order stories are decided in: by publication time, undated
    last, ties by id (a warm start's unchanged prefix is counted in this same order)."""
    return published_at is None, published_at.timestamp() if published_at else 0.0, article_id


def cluster_stories(
    articles: Sequence[Article],
    vectors: npt.ArrayLike,
    scorer: PairScorer,
    *,
    window_days: float = STORY_WINDOW_DAYS,
    neighbours: int = STORY_CANDIDATES,
    block: int = 512,
    ann_threshold: int = ANN_THRESHOLD,
    known: Mapping[str, str] | None = None,
) -> list[str]:
    """Story ids (input order) for a batch, articles taken in published order (undated last).

    ``known`` (article id -> story id) are decisions already made for the first articles of the
    published order (a warm retrain's unchanged prefix, `training.warm_start`): they are kept as
    they are and only the articles after them are decided, with the prefix as candidates exactly
    as in a run that decided everything. Each decision depends only on earlier articles, so with
    the same vectors and scorer the result is the one a run deciding everything gives.

    Each article is decided as if ingested after the ones before it: its ``neighbours`` most
    cosine-similar earlier articles within ``window_days`` and its `DUPLICATE_CANDIDATES` most
    similar earlier ones at any age go to `decide`. Each text is hashed once and pairs are scored
    as whole arrays, so a 30k-article corpus takes seconds, not an hour of per-pair calls.

    Up to ``ann_threshold`` articles every earlier article is scored exactly (the window's
    candidates are a slice of the published order). Past it the cost grows linearly with the
    batch, never with all pairs: the candidates come from HNSW graphs
    (`model.coverage.faiss_ann.AnnIndex`, the service's settings) over the articles of earlier
    blocks (one over all of them for the any-age ones, one per window-wide slice of time for the
    window's), plus the earlier articles of the article's own block; their scores are then exact
    cosines.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(articles)
    if n != len(vectors):
        raise ValueError(f"{n} articles but {len(vectors)} vectors")
    order = np.array(
        sorted(range(n), key=lambda i: published_order_key(articles[i].published_at, articles[i].id)),
        dtype=np.int64,
    )
    hours = np.array(
        [a.published_at.timestamp() / 3600.0 if a.published_at else np.nan for a in articles],
        dtype=np.float64,
    )
    dated_hours = hours[order[np.isfinite(hours[order])]]  # ascending: dated articles come first
    idf = scorer.idf
    words, chars = (idf or HashedIdf()).transform([a.text for a in articles])
    urls = [a.canonical_url for a in articles]
    story: list[str | None] = [None] * n
    window = window_days * 24.0
    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    prefix = _use_known(story, articles, order, known or {})
    # The first block with an article to decide (a block of the prefix holds none); the blocks
    # before it go into the graphs as they would have been decided, for later blocks to search.
    first = _first_block(prefix, n, block)
    graphs = _Graphs(vectors, hours, window, order[:first], block) if n > ann_threshold else None
    for start in range(first, n, block):
        rows = order[start : start + block]
        skip = max(prefix - start, 0)  # the prefix's end inside this block
        todo = rows[skip:]
        if graphs is None:
            sims = vectors[todo] @ vectors.T  # (block, n): every earlier article, exactly
        else:
            found = graphs.nearest(vectors[todo], max(neighbours, DUPLICATE_CANDIDATES))
        for r, i in enumerate(todo.tolist()):
            position = start + skip + r
            if graphs is None:
                sim: Any = sims[r]
                inside, anywhere = _exact_candidates(
                    i, order[:position], sim, hours, dated_hours, window, neighbours
                )
            else:
                sim = _SparseSims(vectors, vectors[i])
                local = order[start:position]  # this block's earlier articles: not in a graph yet
                earlier = np.union1d(found[r][found[r] >= 0], local)
                recent = earlier
                if np.isfinite(hours[i]):
                    recent = np.union1d(graphs.in_window(i, neighbours), local)
                    recent = recent[~(np.abs(hours[recent] - hours[i]) > window)]
                inside = _nearest_scored(recent, sim, neighbours)
                anywhere = _nearest_scored(earlier, sim, DUPLICATE_CANDIDATES)
            candidates = inside
            if np.isfinite(hours[i]):  # undated: the window holds every earlier article already
                candidates = np.concatenate([inside, np.setdiff1d(anywhere, inside)])
            if not candidates.size:
                story[i] = new_story_id(articles[i])
                continue
            X = np.zeros((candidates.size, len(FEATURE_NAMES)))
            X[:, col["cosine"]] = sim[candidates]
            X[:, col["centred_cosine"]] = sim[candidates]  # the story rule's probability does not use it
            X[:, col["learnt_cosine"]] = sim[candidates]
            X[:, col["tfidf"]] = row_cosines(words[candidates], words[[i] * candidates.size])
            X[:, col["char_tfidf"]] = row_cosines(chars[candidates], chars[[i] * candidates.size])
            gaps = np.abs(hours[candidates] - hours[i])
            dated = np.isfinite(gaps)
            X[dated, col["has_time_gap"]] = 1.0
            X[dated, col["log_time_gap"]] = np.log1p(gaps[dated])
            for k, j in enumerate(candidates.tolist()):
                if urls[i] and urls[i] == urls[j]:
                    X[k, col["url_match"]] = 1.0
                elif X[k, col["char_tfidf"]] >= 0.5:  # only plausible copies pay for shingles
                    X[k, col["near_duplicate"]] = near_duplicate_score(
                        articles[i].text, articles[j].text, articles[i].excerpt, articles[j].excerpt
                    )
            scores = scorer.predict(X)
            dup = (X[:, col["url_match"]] > 0) | (X[:, col["near_duplicate"]] >= scorer.duplicate_threshold)
            in_window = set(inside.tolist())
            neighbours_of = [
                Neighbour(
                    articles[j].id,
                    story[j],
                    Comparison(
                        float(scores[k]),
                        "duplicate"
                        if dup[k]
                        else "same_story"
                        if scores[k] >= scorer.same_story_threshold_
                        else "related",
                        None,  # type: ignore[arg-type]  # evidence is not needed to choose
                    ),
                    j in in_window,
                )
                for k, j in enumerate(candidates.tolist())
            ]
            chosen, _ = decide(scorer, neighbours_of)
            story[i] = chosen or new_story_id(articles[i])
        if graphs is not None:
            graphs.add(rows)
    result = [s or new_story_id(a) for s, a in zip(story, articles, strict=True)]
    logger.info("clustered %d articles into %d stories", n, len(set(result)))
    return result


def _use_known(
    story: list[str | None],
    articles: Sequence[Article],
    order: npt.NDArray[np.int64],
    known: Mapping[str, str],
) -> int:
    """Put ``known``'s stories in ``story``; how many: they must be the first of the published order."""
    count = sum(1 for a in articles if a.id in known)
    if any(articles[i].id not in known for i in order[:count].tolist()):
        raise ValueError("known stories must be a prefix of the published order")
    for i in order[:count].tolist():
        story[i] = known[articles[i].id]
    return count


def _first_block(prefix: int, n: int, block: int) -> int:
    """Where the first block with an article after the ``prefix`` starts (``n``: none has one)."""
    return n if prefix >= n else prefix - prefix % block


def _exact_candidates(
    i: int,
    earlier: npt.NDArray[np.int64],
    sim: npt.NDArray[np.float32],
    hours: npt.NDArray[np.float64],
    dated_hours: npt.NDArray[np.float64],
    window: float,
    neighbours: int,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Article ``i``'s nearest ``earlier`` articles (published order) inside its window and at any
    age, every one of them scored."""
    if not np.isfinite(hours[i]):  # undated: the window holds every earlier article
        inside = _nearest(np.sort(earlier), sim, neighbours)
        return inside, inside
    # Earlier and inside the window: a slice of the published order (undated others sort after
    # every dated article, so none is earlier than a dated one).
    lo = int(np.searchsorted(dated_hours, hours[i] - window - 1e-6, side="left"))
    recent = earlier[lo:]
    recent = np.sort(recent[~(np.abs(hours[recent] - hours[i]) > window)])
    return _nearest(recent, sim, neighbours), _nearest(np.sort(earlier), sim, DUPLICATE_CANDIDATES)


def _graph(dim: int) -> Any:
    from model.coverage.faiss_ann import AnnIndex

    # The service index's settings (`ArticleIndex`): recall@10 0.979 at 1M.
    return AnnIndex(dim=dim, dtype="f16", M=16, ef_search=128)


class _Graphs:
    """HNSW graphs over the articles of the blocks decided so far: one over all of them (the
    any-age candidates) and one per ``window``-wide slice of time, so an article's window
    candidates come from the two slices its window overlaps, never from a scan of the whole
    window.

    Each graph is keyed by insertion position (0, 1, 2, ...: `AnnIndex` then keeps no key array)
    and maps positions to row numbers itself: with row numbers as keys every block's add checked
    and copied the keys of every article before it, a cost that grew with the batch at each block.
    """

    def __init__(
        self,
        vectors: npt.NDArray[np.float32],
        hours: npt.NDArray[np.float64],
        window: float,
        decided: npt.NDArray[np.int64] | None = None,
        block: int = 512,
    ) -> None:
        self.vectors, self.hours, self.window = vectors, hours, window
        self.every = _graph(vectors.shape[1])
        self.every_rows = np.zeros(len(vectors), dtype=np.int64)  # position -> row
        # slice -> (graph, its rows in published order, their hours)
        self.slices: dict[int, tuple[Any, npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        decided = np.zeros(0, dtype=np.int64) if decided is None else decided
        for start in range(0, len(decided), block):  # block by block, as `cluster_stories` adds them
            self.add(decided[start : start + block])

    def _slice(self, hour: float) -> int:
        return int(np.floor(hour / self.window)) if self.window > 0 else 0

    def add(self, rows: npt.NDArray[np.int64]) -> None:
        """Add a decided block (rows in published order)."""
        size = len(self.every)
        self.every.add(np.arange(size, size + len(rows)), self.vectors[rows])
        self.every_rows[size : size + len(rows)] = rows
        dated = rows[np.isfinite(self.hours[rows])]
        slices = np.array([self._slice(h) for h in self.hours[dated]], dtype=np.int64)
        for key in np.unique(slices).tolist():
            members = dated[slices == key]
            graph, known, hours = self.slices.get(key) or (
                _graph(self.vectors.shape[1]),
                np.zeros(0, dtype=np.int64),
                np.zeros(0),
            )
            graph.add(np.arange(len(known), len(known) + len(members)), self.vectors[members])
            self.slices[key] = (
                graph,
                np.concatenate([known, members]),
                np.concatenate([hours, self.hours[members]]),
            )

    def nearest(self, queries: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
        """(m, k) rows of the nearest decided articles at any age, -1 where fewer exist."""
        found, _ = self.every.search_many(queries, k)
        return np.where(found >= 0, self.every_rows[found.clip(0)], -1)

    def in_window(self, row: int, k: int) -> npt.NDArray[np.int64]:
        """Up to ``k`` nearest decided articles per slice the window of dated ``row`` overlaps."""
        hour = self.hours[row]
        found = []
        for key in {self._slice(hour - self.window), self._slice(hour)}:
            if key not in self.slices:
                continue
            graph, rows, hours = self.slices[key]
            lo = int(np.searchsorted(hours, hour - self.window - 1e-6, side="left"))  # published order
            if lo >= len(hours):
                continue
            allowed = None
            if lo > 0:
                allowed = np.zeros(len(hours), dtype=bool)
                allowed[lo:] = True
            positions, _ = graph.search(self.vectors[row], k, allowed=allowed)
            found.append(rows[positions])
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


class _SparseSims:
    """Cosines of one vector to the rows asked for, computed on demand (``sims[rows]``)."""

    def __init__(self, vectors: npt.NDArray[np.float32], vector: npt.NDArray[np.float32]) -> None:
        self.vectors, self.vector = vectors, vector

    def __getitem__(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        return self.vectors[rows] @ self.vector


def _nearest_scored(rows: npt.NDArray[np.intp], sim: _SparseSims, k: int) -> npt.NDArray[np.intp]:
    """`_nearest` with the cosines of ``rows`` computed for them alone."""
    if rows.size <= k:
        return rows
    scores = sim[rows]
    return rows[np.argpartition(-scores, k)[:k]]


def _nearest(rows: npt.NDArray[np.intp], sim: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """The ``k`` of ``rows`` most similar by ``sim`` (all of them when there are no more)."""
    return rows if rows.size <= k else rows[np.argpartition(-sim[rows], k)[:k]]
