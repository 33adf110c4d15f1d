"""The ingest use case: classify, find the duplicate, assign a story, index and store, once per id.

`ingest_articles` is the whole transaction the route `POST /v1/articles` runs: articles already
in the store come back as they are; new ones are classified through the shared micro-batcher,
then, under the state's write lock, checked again (a concurrent request may have stored the same
article, a reload may have swapped the model), added to the model's index and story clusters,
and written to the store in one durable transaction before the call returns.

With a shared store (PostgreSQL) there is no in-process lock or index to trust: the store hands
`model.coverage.story_rule.link_story` the stored neighbours and records the decision atomically
with respect to every other replica (`SharedArticleStore.ingest_linked`; `model.store.postgres`
says how).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.search import KnownArticle
from model.coverage.story_rule import candidates as story_candidates
from model.coverage.story_rule import link_story
from model.encoders.registry import vectors_id
from model.news_model import NewsModel
from model.results import Classification
from model.store import ArticleStore, StoredArticle
from model.store.base import new_stored_article
from model.store.shared import SharedArticleStore
from service.inference import classify
from service.state import ServiceState


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """One requested article after ingest: the stored record and whether this call created it."""

    stored: StoredArticle
    created: bool


async def ingest_articles(
    state: ServiceState, model: NewsModel, store: ArticleStore, articles: Sequence[Article]
) -> list[IngestOutcome]:
    """Ingest ``articles`` (in request order; repeats of one id count as created once)."""
    first: dict[str, Article] = {}
    for article in articles:
        first.setdefault(article.id, article)
    known = await asyncio.to_thread(store.get_many, list(first))
    fresh = [article for article_id, article in first.items() if article_id not in known]
    created: set[str] = set()
    # Every label is scored, so the stored classification keeps the uncertainty and candidate
    # labels that the editors' review queue sorts by.
    if fresh and isinstance(store, SharedArticleStore):
        # Never store one encoder's vectors among another's: into this encoder's generation.
        generation = state.check_shared_vectors(model)
        results, vectors = await classify(state, model, fresh, all_scores=True)
        outcomes = await asyncio.to_thread(_ingest_shared, model, store, fresh, results, vectors, generation)
        for stored, new in outcomes:
            known[stored.id] = stored
            if new:
                created.add(stored.id)
    elif fresh:
        results, vectors = await classify(state, model, fresh, all_scores=True)
        async with state.write_lock:
            # Re-check under the lock: a concurrent request may have stored the same article, and
            # a reload may have swapped the model while we encoded (add to the current one).
            current = state.require_model()
            again = await asyncio.to_thread(store.get_many, [a.id for a in fresh])
            known.update(again)
            rows = [i for i, article in enumerate(fresh) if article.id not in again]
            if rows:
                todo = [fresh[i] for i in rows]
                if vectors_id(current.embedder) != vectors_id(model.embedder):
                    # A generation switch swapped in another encoder while we encoded: these
                    # vectors would land among the new encoder's, so encode again (once a switch).
                    model = current
                    vectors = await asyncio.to_thread(current.embed, fresh)
                    results = await asyncio.to_thread(
                        current.classify, fresh, all_scores=True, embeddings=vectors
                    )
                ingested = await asyncio.to_thread(current.add, todo, vectors[rows])
                now = datetime.now(UTC)
                records = [
                    new_stored_article(
                        article, vectors[i], results[i], model.version, now, done.story_id, done.duplicate_of
                    )
                    for i, article, done in zip(rows, todo, ingested, strict=True)
                ]
                inserted = await asyncio.to_thread(store.put_many, records)
                for record, new in zip(records, inserted, strict=True):
                    known[record.id] = record
                    if new:
                        created.add(record.id)
    outcomes: list[IngestOutcome] = []
    for article in articles:
        # Only the first copy of an article in this request counts as created.
        outcomes.append(IngestOutcome(known[article.id], article.id in created))
        created.discard(article.id)
    return outcomes


def _ingest_shared(
    model: NewsModel,
    store: SharedArticleStore,
    fresh: Sequence[Article],
    results: Sequence[Classification],
    vectors: npt.NDArray[np.float32],
    generation: int | None = None,
) -> list[tuple[StoredArticle, bool]]:
    """Store ``fresh`` through the shared store, which links each to a story in its transaction,
    among (and into) the vector generation ``generation`` (a store without generations: None)."""
    window = timedelta(days=model.window_days)
    # The bundle's own corpus (in memory, the same on every replica) is searched here, before the
    # store takes its locks: it never changes. The rule keeps the nearest of both together.
    bundle = {
        a.id: story_candidates(model.index, a, vectors[i], model.window_days) for i, a in enumerate(fresh)
    }
    position = {article.id: i for i, article in enumerate(fresh)}

    def link(
        stored: StoredArticle, candidates: list[KnownArticle], nearest: list[KnownArticle]
    ) -> tuple[str, str | None]:
        i = position[stored.id]
        recent, anywhere = bundle[stored.id]
        return link_story(
            model.pair_scorer, fresh[i], vectors[i], [*candidates, *recent], [*nearest, *anywhere]
        )

    now = datetime.now(UTC)
    # The story is decided by `link` under the store's lock.
    records = [
        new_stored_article(a, vectors[i], results[i], model.version, now, "") for i, a in enumerate(fresh)
    ]
    if generation is None:
        return store.ingest_linked(records, link, window)
    return store.ingest_linked(records, link, window, generation=generation)
