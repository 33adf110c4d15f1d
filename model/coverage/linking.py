"""Story and duplicate links decided from already-fetched candidates, and searches side by side.

`link_story` is the story rule for a backend that keeps articles outside the model (a shared
database): the caller fetches the article's neighbours (in its own transaction, under its own
locks) and hands them over; the pair scorer's verdicts decide, by the same mean-link rule as the
in-memory path (`model.coverage.story_links`). Nothing here keeps state, so every replica that
sees the same candidates decides the same.

`MergedSearch` answers one `ArticleSearch` from several (the bundle's own corpus in memory plus
the database's articles).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.pairs import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.coverage.story_links import choose_story, founder_story_id
from model.results import SearchFilters


def new_story_id(article: Article) -> str:
    """The id of a story ``article`` founds (the same rule as every other new story)."""
    return founder_story_id(article)


def link_story(
    scorer: PairScorer,
    article: Article,
    vector: npt.NDArray[np.floating],
    candidates: Sequence[KnownArticle],
) -> tuple[str, str | None]:
    """(story id, duplicate_of) for ``article`` given its candidate neighbours.

    The same decision as the in-memory path (`NewsModel.choose_story`): the pair scorer grades
    each candidate and `model.coverage.story_links.choose_story` joins the story whose members
    near the article reach the same-story cut on average (or hold its duplicate), else the
    article founds a new story. So both backends tell the same stories from the same neighbours.

    Parameters
    ----------
    scorer : the fitted pair scorer whose verdicts decide.
    article, vector : the new article and its unit embedding.
    candidates : known articles near it (any order; the article itself is ignored).
    """
    others = [candidate for candidate in candidates if candidate.article.id != article.id]
    if not others:
        return new_story_id(article), None
    comparisons = scorer.compare_many(
        article, [other.article for other in others], vector, np.array([other.vector for other in others])
    )
    choice = choose_story(
        scorer,
        [(other.article.id, other.story_id, c) for other, c in zip(others, comparisons, strict=True)],
    )
    return choice.story_id or new_story_id(article), choice.duplicate_of


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
