"""The ingest use case: classify, find the duplicate, assign a story, index and store, once per id.

`ingest_articles` is the whole transaction the route `POST /v1/articles` runs: articles already
in the store come back as they are; new ones are classified through the shared micro-batcher,
then, under the state's write lock, checked again (a concurrent request may have stored the same
article, a reload may have swapped the model), added to the model's index and story clusters,
and written to the store in one durable transaction before the call returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from model.articles.article import Article
from model.news_model import NewsModel
from service.inference import classify
from service.state import ServiceState
from service.store import ArticleStore, StoredArticle


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
    if fresh:
        results, vectors = await classify(state, model, fresh)
        async with state.write_lock:
            # Re-check under the lock: a concurrent request may have stored the same article, and
            # a reload may have swapped the model while we encoded (add to the current one).
            current = state.require_model()
            again = await asyncio.to_thread(store.get_many, [a.id for a in fresh])
            known.update(again)
            rows = [i for i, article in enumerate(fresh) if article.id not in again]
            if rows:
                todo = [fresh[i] for i in rows]
                ingested = await asyncio.to_thread(current.add, todo, vectors[rows])
                now = datetime.now(UTC)
                records = [
                    StoredArticle(
                        id=article.id,
                        record=article.to_record(),
                        embedding=vectors[i],
                        story_id=done.story_id,
                        classification=results[i].to_record(),
                        created_at=now,
                        canonical_url=article.canonical_url,
                        published_at=article.published_at,
                        duplicate_of=done.duplicate_of,
                        model_version=model.version,
                    )
                    for i, article, done in zip(rows, todo, ingested, strict=True)
                ]
                inserted = await asyncio.to_thread(store.put_many, records)
                for record, new in zip(records, inserted, strict=True):
                    known[record.id] = record
                    if new:
                        created.add(record.id)
    outcomes = []
    for article in articles:
        # Only the first copy of an article in this request counts as created.
        outcomes.append(IngestOutcome(known[article.id], article.id in created))
        created.discard(article.id)
    return outcomes
