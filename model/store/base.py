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

from model.articles.article import Article
from model.encoders.base import DEFAULT_MODEL_NAME as LEGACY_VECTORS_ID
from model.errors import NewsDeskError
from model.feedback import Correction, PairFeedback
from model.results import Classification
from model.store.merges import StoryMerge

# Meta key: which encoder made the stored vectors (`model.encoders.registry.vectors_id`). A store
# written before it was recorded holds MiniLM's (the only encoder there was).
VECTORS_KEY = "vectors_id"


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
    # Ids of the seed's `related` coverage, each ingested as an article of its own.
    related_ids: tuple[str, ...] = ()
    # The effective labels: the model's (``classification["topics"]``) until an editor's
    # correction sets them. Kept by the store (a column), so listing by topic is one query;
    # None on the way in means "the model's labels".
    labels: tuple[str, ...] | None = None

    @property
    def model_labels(self) -> list[str]:
        return [str(t["label"]) for t in self.classification.get("topics", [])]

    @property
    def effective_labels(self) -> list[str]:
        return list(self.labels) if self.labels is not None else self.model_labels

    @property
    def uncertainty(self) -> float | None:
        """min |probability - threshold| over labels at ingest (None for older records)."""
        value = self.classification.get("uncertainty")
        return float(value) if value is not None else None


def new_stored_article(
    article: Article,
    vector: npt.NDArray[np.float32],
    result: Classification,
    model_version: str,
    now: datetime,
    story_id: str,
    duplicate_of: str | None = None,
) -> StoredArticle:
    """The row a store keeps for a newly ingested ``article``: the service's ingest and a batch
    backfill write the same one."""
    return StoredArticle(
        id=article.id,
        record=article.to_record(),
        embedding=vector,
        story_id=story_id,
        classification=result.to_record(),
        created_at=now,
        canonical_url=article.canonical_url,
        published_at=article.published_at,
        duplicate_of=duplicate_of,
        model_version=model_version,
        related_ids=article.related_ids,
    )


@dataclass(frozen=True, slots=True)
class ArticleQuery:
    """Filters of `ArticleStore.list_articles`; every one is optional and they combine with AND."""

    topic: str | None = None  # an effective label, exact
    provider: str | None = None  # outlet domain or name, case-insensitive
    story_id: str | None = None
    since: datetime | None = None  # published at or after
    until: datetime | None = None  # published at or before
    q: str | None = None  # text in the title or excerpt, case-insensitive
    language: str | None = None  # ISO 639-1, lower case
    before_seq: int | None = None  # keyset cursor: only articles stored before this seq


@dataclass(frozen=True, slots=True)
class StorySummary:
    """One story in `ArticleStore.list_stories`: its stored members counted."""

    story_id: str
    count: int
    last_seq: int  # the newest member's seq (stories are listed by it, newest first)
    title: str  # headline of the earliest-published member
    first_published: datetime | None = None
    last_published: datetime | None = None


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

    # --- the editors' workspace -------------------------------------------------------------

    def list_articles(self, query: ArticleQuery, limit: int) -> list[StoredArticle]:
        """At most ``limit`` articles matching ``query``, newest stored first (``seq`` descending).

        The next page is ``replace(query, before_seq=page[-1].seq)``.
        """
        ...

    def list_stories(self, limit: int, before_seq: int | None = None) -> list[StorySummary]:
        """Stories by their newest member, newest first; next page: ``before_seq=page[-1].last_seq``."""
        ...

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        """How many stored articles each story has (stories with none are left out)."""
        ...

    def review_queue(self, limit: int) -> list[StoredArticle]:
        """Articles no editor has corrected yet, least sure first: those with no label, then by
        `StoredArticle.uncertainty` ascending (unknown last), then newest."""
        ...

    def add_correction(self, correction: Correction) -> Correction:
        """Append an editor's correction (durably) and return it with its id. When it sets topics,
        the article's effective ``labels`` become them. The model's classification is never changed."""
        ...

    def corrections(self, article_id: str | None = None) -> list[Correction]:
        """Corrections of one article (or of all, for export), oldest first."""
        ...

    def add_pair_feedback(self, feedback: PairFeedback) -> PairFeedback:
        """Append an editor's verdict on a pair and return it with its id."""
        ...

    def pair_feedback(self, article_id: str | None = None) -> list[PairFeedback]:
        """Graded pairs naming ``article_id`` as a or b (or all, for export), oldest first."""
        ...

    def set_classifications(self, updates: Sequence[tuple[str, dict[str, Any], str]]) -> int:
        """Replace the model's classification of stored articles after a promotion, one transaction:
        (article id, `Classification.to_record()`, model version) each. The effective ``labels``
        follow the new model's only where no correction set topics (an editor's answer is never
        overwritten). Returns how many articles were updated (unknown ids are skipped)."""
        ...

    def delete(self, article_id: str) -> bool:
        """Remove an article with its corrections and the pair feedback naming it (a takedown),
        in one transaction; False when it was not stored."""
        ...

    def ping(self) -> None:
        """Raise `StoreError` unless the store answers a trivial query."""
        ...

    def close(self) -> None: ...


# --- vector generations: one encoder's vectors for the stored articles -------------------------

GENERATION_STATES = ("building", "complete", "live", "retired")


@dataclass(frozen=True, slots=True)
class VectorGeneration:
    """One encoder's vectors for the stored articles (``vectors_id``: `model.encoders.registry`).

    ``state``: *building* (being filled beside the live one), *complete* (every row up to
    ``filled_seq`` has its vector; a generation switched away from stays so, for a rollback),
    *live* (the one ingest writes and search reads; always complete), *retired* (vectors dropped).
    ``filled_seq``: the store seq up to which every row has a vector here (the live one: all).
    ``bundle_version``: the bundle last served on it (a start serves it while another fills).
    """

    id: int
    vectors_id: str
    state: str
    filled_seq: int
    bundle_version: str | None = None
    created_at: datetime | None = None
    switched_at: datetime | None = None


@runtime_checkable
class GenerationStore(Protocol):
    """A store that keeps vector generations side by side (SQLite today). A generation is filled by
    whoever holds the re-embedding lease (the service's background worker, or an offline filler
    through the same calls: `generations`, `open_generation`, `rows_missing`,
    `put_generation_vectors`, `mark_generation_filled`), then switched to at once."""

    def generations(self) -> list[VectorGeneration]:
        """Every generation, live first, then newest first."""
        ...

    def live_generation(self) -> VectorGeneration | None:
        """The generation ingest writes and search reads; None in a store nothing was recorded in."""
        ...

    def open_generation(self, vectors_id: str) -> VectorGeneration:
        """The generation for ``vectors_id``: the existing one (a retired one reopens empty), else a
        new *building* one; the first of an empty store is live at once."""
        ...

    def rows_missing(self, generation: int, after_seq: int, limit: int) -> list[RestoreRow]:
        """Up to ``limit`` stored rows after ``after_seq`` (in seq order) that have no vector in
        ``generation`` yet; their ``embedding`` is empty."""
        ...

    def missing_count(self, generation: int) -> int:
        """How many stored rows have no vector in ``generation``."""
        ...

    def put_generation_vectors(
        self,
        generation: int,
        rows: Sequence[tuple[str, npt.NDArray[np.float32]]],
        filled_seq: int | None = None,
    ) -> None:
        """Write (article id, vector) rows into ``generation`` and, when given, advance its
        ``filled_seq`` in the same transaction (so a killed filler resumes where it stopped)."""
        ...

    def mark_generation_filled(self, generation: int) -> VectorGeneration:
        """A *building* generation with no row missing becomes *complete*; raises `StoreError`
        while rows are missing."""
        ...

    def switch_generation(
        self, generation: int, bundle_version: str | None, *, merges: Sequence[tuple[str, str]] = ()
    ) -> VectorGeneration:
        """Make ``generation`` live at once (one transaction; it must have no row missing): the one
        live before stays *complete*, ingest writes the new one from now on. ``merges``: (merged
        story, story it joined) pairs its encoder makes, recorded in the same transaction."""
        ...

    def set_generation_bundle(self, generation: int, bundle_version: str) -> None: ...

    def story_merges(self) -> list[StoryMerge]:
        """Every recorded story merge (`model.store.merges`), oldest first."""
        ...

    def resolve_story(self, story_id: str) -> str:
        """The story ``story_id`` shows as: the surviving one when it was merged, else itself."""
        ...

    def retire_generation(self, generation: int) -> int:
        """Drop a non-live generation's vectors; returns the vector bytes it held."""
        ...

    def generation_bytes(self, generation: int) -> tuple[int, int]:
        """(rows, vector bytes) ``generation`` holds."""
        ...

    def take_reembed_lease(self, owner: str, seconds: float, *, take_from: str | None = None) -> bool:
        """Take (or renew) the one re-embedding lease for ``seconds``; False while another holds it
        (unless it is ``take_from``: a holder known to be dead)."""
        ...

    def reembed_lease_holder(self) -> str | None:
        """Who holds the re-embedding lease now (None: nobody, or it lapsed)."""
        ...

    def release_reembed_lease(self, owner: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RestoreRow:
    """What a restart needs of a stored article: no classification, no history."""

    seq: int
    id: str
    record: dict[str, Any]
    embedding: npt.NDArray[np.float32]
    story_id: str
    published_at: datetime | None


def restore_rows(
    store: ArticleStore, since: int = 0, chunk: int = 5000, generation: int | None = None
) -> Iterator[RestoreRow]:
    """Stored articles after ``since`` for a restart: the backend's light reader when it has one
    (``restore_rows``: fewer columns, less JSON to parse), else `ArticleStore.iter_since`. With a
    ``generation``, its vectors (rows it lacks are left out), else the live generation's."""
    light = getattr(store, "restore_rows", None)
    if light is not None:
        yield from light(since, chunk, generation) if generation is not None else light(since, chunk)
        return
    for stored in store.iter_since(since, chunk):
        yield RestoreRow(
            stored.seq, stored.id, stored.record, stored.embedding, stored.story_id, stored.published_at
        )


def stored_vectors_id(store: Any) -> str | None:
    """Which encoder made ``store``'s live vectors: its live generation, else its record, MiniLM
    for rows stored before the record was kept, None for an empty store (any encoder may start it)."""
    if isinstance(store, GenerationStore):
        live = store.live_generation()
        if live is not None:
            return live.vectors_id
    recorded = store.get_meta(VECTORS_KEY) if hasattr(store, "get_meta") else None
    if recorded:
        return str(recorded)
    return LEGACY_VECTORS_ID if store.count() > 0 else None


def record_vectors_id(store: Any, vectors_id: str) -> None:
    """Record that ``store``'s vectors are ``vectors_id``'s (a store that starts empty)."""
    if isinstance(store, GenerationStore):
        store.open_generation(vectors_id)
    elif hasattr(store, "set_meta"):
        store.set_meta(VECTORS_KEY, vectors_id)


class StoreRows:
    """A store as the rows a model restores from (`model.coverage.restore.RowSource`): the light
    reader in ``seq`` order with one generation's vectors (the live one unless named), and one
    article's record, read when a restored row is first used."""

    def __init__(self, store: ArticleStore, generation: int | None = None) -> None:
        self.store = store
        self.generation = generation

    def count(self) -> int:
        return self.store.count()

    def last_seq(self) -> int:
        return self.store.last_seq()

    def rows_since(self, since: int, chunk: int) -> Iterator[RestoreRow]:
        return restore_rows(self.store, since, chunk, self.generation)

    def record(self, article_id: str) -> dict[str, Any] | None:
        stored = self.store.get(article_id)
        return stored.record if stored is not None else None

    def records(self, article_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records of those of ``article_ids`` still stored, in one read."""
        return {article_id: stored.record for article_id, stored in self.store.get_many(article_ids).items()}

    def vectors_id(self) -> str | None:
        if self.generation is not None and isinstance(self.store, GenerationStore):
            for generation in self.store.generations():
                if generation.id == self.generation:
                    return generation.vectors_id
            raise StoreError(f"no vector generation {self.generation} in the store")
        return stored_vectors_id(self.store)

    def set_vectors_id(self, vectors_id: str) -> None:
        record_vectors_id(self.store, vectors_id)

    def story_merges(self) -> dict[str, str]:
        """Each merged story's surviving story (`model.store.merges`; none in a store without them)."""
        merges = getattr(self.store, "story_merges", None)
        return {m.merged: m.surviving for m in merges()} if merges is not None else {}
