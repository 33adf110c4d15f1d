"""The one interface related-coverage search goes through, so the vectors can live anywhere.

`NewsModel.similar` and duplicate detection ask an `ArticleSearch` for candidates and re-rank
them with the pair scorer. `model.coverage.article_index.ArticleIndex` (in memory, faiss above a
size) implements it; a store backend that searches in its database (pgvector) implements the
same two methods. `MergedSearch` answers one search from several (the bundle's own corpus in
memory beside a database's articles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.results import SearchFilters


@dataclass(frozen=True, slots=True)
class KnownArticle:
    """An article the search knows: the record, its unit vector and its story."""

    article: Article
    vector: npt.NDArray[np.float32]
    story_id: str | None


@runtime_checkable
class ArticleSearch(Protocol):
    def nearest(
        self, vector: npt.NDArray[np.floating], k: int, filters: SearchFilters
    ) -> list[tuple[str, float]]:
        """Up to ``k`` (article id, cosine) pairs, best first, that pass ``filters``."""
        ...

    def known(self, article_id: str) -> KnownArticle | None:
        """The article with this id, or None."""
        ...


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
