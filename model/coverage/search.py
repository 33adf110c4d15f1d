"""The one interface related-coverage search goes through, so the vectors can live anywhere.

`NewsModel.similar` and duplicate detection ask an `ArticleSearch` for candidates and re-rank
them with the pair scorer. `model.coverage.article_index.ArticleIndex` (in memory, faiss above a
size) implements it; a store backend that searches in its database (pgvector) implements the
same two methods.
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
