"""Stories that agree with the pair scorer: an article joins a story only through its verdicts.

The rule (`choose_story`), shared by batch clustering (`cluster_stories`, used by training and
``dedup``) and by one-at-a-time ingest (`NewsModel.add`): take the article's nearest known articles
published within ``window_days`` of it (undated: no time limit), score each pair with the
`PairScorer`, and group those neighbours by story. A story qualifies when one of its members is
a ``duplicate`` of the article, or when the *mean* same-story score over its members among the
neighbours reaches the scorer's cut (mean-link: one close member is not enough when the rest of
the story disagrees, which stops single-link chaining). The article joins the qualifying story
with the highest mean score, else founds its own. The window is around the *article*, not the
story's first member, so a storyline that runs for weeks keeps collecting follow-ups published
near its latest members.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.neardup import near_duplicate_score
from model.coverage.pairs import FEATURE_NAMES, PairScorer, _row_cosines
from model.results import Comparison

logger = logging.getLogger(__name__)

_JOINS = frozenset({"duplicate", "same_story"})
# How far (either side of an article) its story neighbours may be published. Real storylines run
# for weeks: on storychains a 14-day window split a chain whose first two articles are 27 days
# apart (B-cubed F1 0.922 -> 0.930 at 30 days; benchmarks/stories.py), at no cost in speed.
STORY_WINDOW_DAYS = 30.0


def founder_story_id(article: Article) -> str:
    """The id of the story ``article`` founds (as `StoryClusterer` names new stories)."""
    return "s_" + hashlib.sha256(article.id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class StoryChoice:
    """Which story an article joins and why."""

    story_id: str | None  # None: found a new story
    mean_score: float  # mean same-story score over the chosen story's neighbours (0 when new)
    duplicate_of: str | None


def choose_story(scorer: PairScorer, neighbours: Sequence[tuple[str, str | None, Comparison]]) -> StoryChoice:
    """Pick the story from ``(article id, story id, comparison)`` of the article's neighbours."""
    scores: dict[str, list[float]] = defaultdict(list)
    duplicates: dict[str, tuple[float, str]] = {}
    for other_id, story_id, comparison in neighbours:
        if story_id is None:
            continue
        scores[story_id].append(comparison.score)
        if comparison.verdict == "duplicate":
            best = duplicates.get(story_id)
            if best is None or comparison.score > best[0]:
                duplicates[story_id] = (comparison.score, other_id)
    if duplicates:
        # A copy belongs where its original is, whatever other stories score on average.
        story_id = max(duplicates, key=lambda story: duplicates[story])
        return StoryChoice(story_id, float(np.mean(scores[story_id])), duplicates[story_id][1])
    best_story, best_mean = None, -1.0
    for story_id, values in scores.items():
        mean = float(np.mean(values))
        if mean >= scorer.same_story_threshold_ and mean > best_mean:
            best_story, best_mean = story_id, mean
    return StoryChoice(best_story, max(best_mean, 0.0), None)


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
    neighbours: int = 20,
    block: int = 512,
) -> list[str]:
    """Story ids (input order) for a batch, articles taken in published order (undated last).

    Neighbours are the ``neighbours`` most cosine-similar earlier articles within ``window_days``;
    each text is hashed once and pairs are scored as whole arrays, so a 30k-article corpus takes
    seconds, not an hour of per-pair calls.
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
    from model.coverage.pairs import HashedIdf

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
            if np.isfinite(hours[i]):
                gap = np.abs(hours - hours[i])
                earlier &= ~(gap > window)  # undated others stay candidates
            candidates = np.flatnonzero(earlier)
            if candidates.size > neighbours:
                candidates = candidates[np.argpartition(-sim[candidates], neighbours)[:neighbours]]
            if not candidates.size:
                story[i] = founder_story_id(articles[i])
                continue
            X = np.zeros((candidates.size, len(FEATURE_NAMES)))
            X[:, col["cosine"]] = sim[candidates]
            X[:, col["tfidf"]] = _row_cosines(words[candidates], words[[i] * candidates.size])
            X[:, col["char_tfidf"]] = _row_cosines(chars[candidates], chars[[i] * candidates.size])
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
            neighbours_of = [
                (
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
                )
                for k, j in enumerate(candidates.tolist())
            ]
            chosen = choose_story(scorer, neighbours_of).story_id
            story[i] = chosen or founder_story_id(articles[i])
    result = [s or founder_story_id(a) for s, a in zip(story, articles, strict=True)]
    logger.info("clustered %d articles into %d stories", n, len(set(result)))
    return result
