"""Which stories a new encoder joins: the one story rule run over a filled vector generation.

Before a generation goes live (`service.generations`), every stored article is decided again by
`model.coverage.story_rule` against its nearest neighbours in the new generation (inside its
story window, and at any age for copies: never all pairs), among the articles stored before it, as
its ingest saw them. Where the rule puts an article into another stored story than its own, the
two stories merge; the older one (its first article stored first) survives, so merges never
renumber an article and chains end at a stable id. Articles are decided in stored order with the
merges found so far applied to their neighbours' stories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from model.coverage.pair_scorer import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.coverage.story_rule import (
    DUPLICATE_CANDIDATES,
    STORY_CANDIDATES,
    Neighbour,
    choose_neighbours,
    decide,
    window_filters,
)
from model.results import SearchFilters

# Neighbours asked of the search per kept one: those stored after the article are dropped, as its
# ingest never saw them, and the nearest of the rest must still fill the rule's counts.
OVERFETCH = 3


@dataclass
class StoryMergeFinder:
    """Union-find over stored stories, fed a chunk of articles at a time (`scan`).

    ``stored``: (article id, story) of every stored article in stored order. Each article is decided
    among the articles stored before it (and the bundle's own corpus), as at its ingest, so with an
    unchanged encoder the scan decides what ingest did and merges nothing; the older story (its
    first article stored first) survives a merge. Stories of no stored article (the bundle's corpus,
    searched beside the store in memory) are never merged.
    """

    scorer: PairScorer
    window_days: float
    stored: Sequence[tuple[str, str]]
    earlier_only: bool = True  # False: every neighbour, later ones too (only to measure the difference)
    scanned: int = 0
    _parent: dict[str, str] = field(default_factory=dict)
    _order: dict[str, int] = field(default_factory=dict)
    _first: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for position, (article_id, story) in enumerate(self.stored):
            self._order[article_id] = position
            self._first.setdefault(story, position)

    def find(self, story: str) -> str:
        root = story
        while (up := self._parent.get(root)) is not None:
            root = up
        while story != root:  # path compression
            up = self._parent[story]
            self._parent[story] = root
            story = up
        return root

    def _union(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        older, newer = sorted((a, b), key=lambda s: (self._first[s], s))
        self._parent[newer] = older

    def _earlier(
        self,
        search: ArticleSearch,
        vector: npt.NDArray[np.floating],
        k: int,
        filters: SearchFilters,
        before: int,
    ) -> list[KnownArticle]:
        """The ``k`` nearest that ``filters`` pass among those stored before position ``before``
        (and the corpus), their stories read through the merges found so far."""
        kept: list[KnownArticle] = []
        for other_id, _ in search.nearest(vector, k * OVERFETCH, filters):
            if self.earlier_only and self._order.get(other_id, -1) >= before:
                continue
            known = search.known(other_id)
            if known is not None:
                story = self.find(known.story_id) if known.story_id is not None else None
                kept.append(KnownArticle(known.article, known.vector, story))
                if len(kept) == k:
                    break
        return kept

    def scan(self, search: ArticleSearch, article_ids: Iterable[str]) -> int:
        """Decide each article again among its earlier neighbours in ``search`` (the new
        generation) and join stories where the rule moves it; returns how many stories merged so far."""
        for article_id in article_ids:
            known = search.known(article_id)
            position = self._order.get(article_id)
            if known is None or position is None or known.story_id not in self._first:
                continue  # taken down meanwhile, or not a stored article
            self.scanned += 1
            article, vector = known.article, known.vector
            recent = self._earlier(
                search, vector, STORY_CANDIDATES, window_filters(article, self.window_days), position
            )
            anywhere = SearchFilters(exclude_ids=frozenset({article.id}))
            nearest = self._earlier(search, vector, DUPLICATE_CANDIDATES, anywhere, position)
            others, in_window = choose_neighbours(article, vector, recent, nearest)
            if not others:
                continue
            comparisons = self.scorer.compare_many(
                article, [c.article for c in others], vector, np.array([c.vector for c in others])
            )
            story, _ = decide(
                self.scorer,
                (
                    Neighbour(c.article.id, c.story_id, comparison, c.article.id in in_window)
                    for c, comparison in zip(others, comparisons, strict=True)
                ),
            )
            own = self.find(known.story_id)
            if story is not None and story != own and story in self._first:
                self._union(own, story)
        return len(self._parent)

    def merges(self) -> list[tuple[str, str]]:
        """(merged story, surviving story) for every story merged away, oldest survivor first."""
        merged = [(story, self.find(story)) for story in self._parent]
        return sorted(merged, key=lambda pair: (self._first[pair[1]], pair[0]))
