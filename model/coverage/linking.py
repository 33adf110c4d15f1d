"""`MergedSearch`: one `ArticleSearch` answered from several, side by side.

A service on a shared database searches the bundle's own corpus (in memory) and the database's
articles together. (The story and duplicate decision lives in `model.coverage.story_rule`.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from model.coverage.search import ArticleSearch, KnownArticle
from model.results import SearchFilters


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
