"""Stories that agree with the pair scorer, for a whole batch at once, and why a hit is not in a story.

`cluster_stories` (training and ``dedup``) takes the articles in published order and decides each
by the one rule, `model.coverage.story_rule.decide` (a copy at any age joins its original's story;
otherwise mean-link over the neighbours inside the story window), scoring the pairs as whole
arrays instead of one `PairScorer.compare_many` call per article. `story_note` tells a reader of
related coverage why a ``same_story`` hit is not in the query's story.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

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


def cluster_stories(
    articles: Sequence[Article],
    vectors: npt.ArrayLike,
    scorer: PairScorer,
    *,
    window_days: float = STORY_WINDOW_DAYS,
    neighbours: int = STORY_CANDIDATES,
    block: int = 512,
) -> list[str]:
    """Story ids (input order) for a batch, articles taken in published order (undated last).

    Each article is decided as if ingested after the ones before it: its ``neighbours`` most
    cosine-similar earlier articles within ``window_days`` and its `DUPLICATE_CANDIDATES` most
    similar earlier ones at any age go to `decide`. Each text is hashed once and pairs are scored
    as whole arrays, so a 30k-article corpus takes seconds, not an hour of per-pair calls.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(articles)
    if n != len(vectors):
        raise ValueError(f"{n} articles but {len(vectors)} vectors")
    order = sorted(
        range(n),
        key=lambda i: (
            articles[i].published_at is None,
            articles[i].published_at.timestamp() if articles[i].published_at else 0.0,
            articles[i].id,
        ),
    )
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    hours = np.array(
        [a.published_at.timestamp() / 3600.0 if a.published_at else np.nan for a in articles],
        dtype=np.float64,
    )
    idf = scorer.idf
    words, chars = (idf or HashedIdf()).transform([a.text for a in articles])
    urls = [a.canonical_url for a in articles]
    story: list[str | None] = [None] * n
    window = window_days * 24.0
    col = {name: k for k, name in enumerate(FEATURE_NAMES)}
    for start in range(0, n, block):
        rows = order[start : start + block]
        sims = vectors[rows] @ vectors.T  # (block, n)
        for r, i in enumerate(rows):
            sim = sims[r]
            earlier = rank < rank[i]
            recent = earlier.copy()
            if np.isfinite(hours[i]):
                gap = np.abs(hours - hours[i])
                recent &= ~(gap > window)  # undated others stay candidates
            inside = _nearest(np.flatnonzero(recent), sim, neighbours)
            candidates = inside
            if np.isfinite(hours[i]):  # undated: the window holds every earlier article already
                anywhere = _nearest(np.flatnonzero(earlier), sim, DUPLICATE_CANDIDATES)
                candidates = np.concatenate([inside, np.setdiff1d(anywhere, inside)])
            if not candidates.size:
                story[i] = new_story_id(articles[i])
                continue
            X = np.zeros((candidates.size, len(FEATURE_NAMES)))
            X[:, col["cosine"]] = sim[candidates]
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
    result = [s or new_story_id(a) for s, a in zip(story, articles, strict=True)]
    logger.info("clustered %d articles into %d stories", n, len(set(result)))
    return result


def _nearest(rows: npt.NDArray[np.intp], sim: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.intp]:
    """The ``k`` of ``rows`` most similar by ``sim`` (all of them when there are no more)."""
    return rows if rows.size <= k else rows[np.argpartition(-sim[rows], k)[:k]]
