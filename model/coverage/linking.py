"""Story and duplicate links decided from already-fetched candidates, and searches side by side.

`link_story` is the story rule for a backend that keeps articles outside the model (a shared
database): the caller fetches the article's neighbours (in its own transaction, under its own
locks) and hands them over; the pair scorer decides. The article joins the story of the best
candidate it calls ``same_story`` or ``duplicate``, else founds a new story. Nothing here keeps
state, so every replica that sees the same candidates decides the same.

`MergedSearch` answers one `ArticleSearch` from several (the bundle's own corpus in memory plus
the database's articles).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.pairs import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.results import SearchFilters

_JOINS = ("duplicate", "same_story")


def new_story_id(article: Article) -> str:
    """The id of a story ``article`` founds (the same rule as `StoryClusterer`'s new stories)."""
    return "s_" + hashlib.sha256(article.id.encode("utf-8")).hexdigest()[:16]


def link_story(
    scorer: PairScorer,
    article: Article,
    vector: npt.NDArray[np.floating],
    candidates: Sequence[KnownArticle],
) -> tuple[str, str | None]:
    """(story id, duplicate_of) for ``article`` given its candidate neighbours.

    Parameters
    ----------
    scorer : the fitted pair scorer whose verdicts decide.
    article, vector : the new article and its unit embedding.
    candidates : known articles near it (any order; the article itself is ignored).

    Returns
    -------
    The story of the highest-scoring candidate with a ``duplicate`` or ``same_story`` verdict
    (a new story id when none is), and the id of the highest-scoring ``duplicate``, if any.
    Ties go to the candidate listed first.
    """
    best: tuple[float, KnownArticle] | None = None
    best_duplicate: tuple[float, str] | None = None
    for candidate in candidates:
        if candidate.article.id == article.id:
            continue
        comparison = scorer.compare(article, candidate.article, vector, candidate.vector)
        if comparison.verdict not in _JOINS:
            continue
        if best is None or comparison.score > best[0]:
            best = (comparison.score, candidate)
        if comparison.verdict == "duplicate" and (
            best_duplicate is None or comparison.score > best_duplicate[0]
        ):
            best_duplicate = (comparison.score, candidate.article.id)
    if best is None:
        return new_story_id(article), None
    duplicate_of = best_duplicate[1] if best_duplicate is not None else None
    return best[1].story_id or new_story_id(best[1].article), duplicate_of


class MergedSearch:
    """One `ArticleSearch` over several, e.g. the bundle's corpus (in memory) and a database.

    `nearest` asks each for ``k`` and keeps the ``k`` best by cosine; `known` asks them in order.
    The parts must not share ids (the first that knows an id answers for it).
    """

    def __init__(self, *parts: ArticleSearch) -> None:
        self.parts = parts

    def nearest(
        self, vector: npt.NDArray[np.floating], k: int, filters: SearchFilters
    ) -> list[tuple[str, float]]:
        merged: dict[str, float] = {}
        for part in self.parts:
            for article_id, cosine in part.nearest(vector, k, filters):
                merged.setdefault(article_id, cosine)
        ranked = sorted(merged.items(), key=lambda item: (-item[1], item[0]))
        return ranked[:k]

    def known(self, article_id: str) -> KnownArticle | None:
        for part in self.parts:
            found = part.known(article_id)
            if found is not None:
                return found
        return None
