"""What a store shared by many replicas (PostgreSQL) offers beyond `base.ArticleStore`.

With such a store a replica keeps no index or story state of its own: the store searches, records
each story decision atomically with respect to every other replica (so replicas agree), and holds
the live model version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from model.coverage.search import ArticleSearch, KnownArticle
from model.store.base import StoredArticle

LIVE_VERSION_KEY = "live_model_version"  # meta key: the bundle folder every replica should serve

# (the new article, its stored neighbours inside the story window, its nearest stored articles at
# any age) -> (story id, duplicate_of): `model.coverage.story_rule.link_story` behind a closure.
LinkFn = Callable[[StoredArticle, list[KnownArticle], list[KnownArticle]], tuple[str, str | None]]


@runtime_checkable
class SharedArticleStore(Protocol):
    """The shared-store calls; a backend implements these besides `ArticleStore`'s."""

    def search(self, generation: int | None = None) -> ArticleSearch:
        """An `ArticleSearch` over the stored articles, for one request: over one vector
        generation's vectors (the live one's when None; `base.GenerationStore`)."""
        ...

    def ingest_linked(
        self,
        articles: Sequence[StoredArticle],
        link: LinkFn,
        window: timedelta,
        *,
        generation: int | None = None,
    ) -> list[tuple[StoredArticle, bool]]:
        """Store new articles with the (story id, duplicate_of) ``link`` picks from their stored
        neighbours within ``window`` and nearest at any age, atomically across replicas: (stored
        row, created) for each. Neighbours are read, and vectors written, in ``generation``."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...
