"""What the service needs from a durable article store, whatever the backend.

A backend module implements `ArticleStore` (one module per backend: `sqlite`, ...); `open_store`
in the package picks one from the settings. The store keeps model-level records (the article in
seed field names, its vector, its `Classification` as `model.results` writes it), never the HTTP
response shapes, so a change of the API never changes stored data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from model.errors import NewsDeskError


class StoreError(NewsDeskError):
    """The article store cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class StoredArticle:
    """One ingested article as the store keeps it."""

    id: str
    record: dict[str, Any]
    embedding: npt.NDArray[np.float32]
    story_id: str
    classification: dict[str, Any]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    canonical_url: str | None = None
    published_at: datetime | None = None
    duplicate_of: str | None = None
    model_version: str | None = None
    seq: int = 0  # insertion order, assigned by the store; 0 until stored


@runtime_checkable
class ArticleStore(Protocol):
    """What the service needs from a store. Every method may raise `StoreError`."""

    def put_many(self, articles: Sequence[StoredArticle]) -> list[bool]:
        """Store articles in one durable transaction; True for each new id, False if it was known."""
        ...

    def get(self, article_id: str) -> StoredArticle | None: ...

    def get_many(self, article_ids: Sequence[str]) -> dict[str, StoredArticle]: ...

    def by_story(self, story_id: str, limit: int = 1000) -> list[StoredArticle]:
        """A story's stored articles, newest publication first (unknown dates last)."""
        ...

    def iter_since(self, seq: int = 0, chunk: int = 1000) -> Iterator[StoredArticle]:
        """Every article stored after ``seq``, in insertion order."""
        ...

    def last_seq(self) -> int: ...

    def count(self) -> int: ...

    def ping(self) -> None:
        """Raise `StoreError` unless the store answers a trivial query."""
        ...

    def close(self) -> None: ...
