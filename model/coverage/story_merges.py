"""Which stories a new encoder joins: the one story rule run over a filled vector generation.

Before a generation goes live (`service.generations`), every stored article is decided again by
`model.coverage.story_rule` against its nearest neighbours in the new generation (inside its
story window, and at any age for copies: never all pairs). Where the rule puts an article into
another stored story than its own, the two stories merge; the older one (its first article stored
first) survives, so merges never renumber an article and chains end at a stable id. Articles are
decided in stored order with the merges found so far applied to their neighbours' stories, as
ingest would have seen them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from model.coverage.pair_scorer import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.coverage.story_rule import Neighbour, candidates, choose_neighbours, decide


@dataclass
class StoryMergeFinder:
    """Union-find over stored stories, fed a chunk of articles at a time (`scan`).

    ``first_seq``: each stored story's first stored seq (the older survives a merge). Stories not
    in it (a bundle's own corpus, searched beside the store in memory) are never merged.
    """

    scorer: PairScorer
    window_days: float
    first_seq: Mapping[str, int]
    scanned: int = 0
    _parent: dict[str, str] = field(default_factory=dict)

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
        older, newer = sorted((a, b), key=lambda s: (self.first_seq[s], s))
        self._parent[newer] = older

    def _resolved(self, found: Iterable[KnownArticle]) -> list[KnownArticle]:
        return [
            KnownArticle(k.article, k.vector, self.find(k.story_id) if k.story_id is not None else None)
            for k in found
        ]

    def scan(self, search: ArticleSearch, article_ids: Iterable[str]) -> int:
        """Decide each article again among its neighbours in ``search`` (the new generation) and
        join stories where the rule moves it; returns how many stories merged so far."""
        for article_id in article_ids:
            known = search.known(article_id)
            if known is None or known.story_id not in self.first_seq:
                continue  # taken down meanwhile, or not a stored article
            self.scanned += 1
            article, vector = known.article, known.vector
            recent, nearest = candidates(search, article, vector, self.window_days)
            others, in_window = choose_neighbours(
                article, vector, self._resolved(recent), self._resolved(nearest)
            )
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
            if story is not None and story != own and story in self.first_seq:
                self._union(own, story)
        return len(self._parent)

    def merges(self) -> list[tuple[str, str]]:
        """(merged story, surviving story) for every story merged away, oldest survivor first."""
        merged = [(story, self.find(story)) for story in self._parent]
        return sorted(merged, key=lambda pair: (self.first_seq[pair[1]], pair[0]))
