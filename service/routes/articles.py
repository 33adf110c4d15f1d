"""Ingest (POST /v1/articles), and read back articles and stories."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Body, Path, Response

from model.articles.article import article_from_record
from model.errors import ArticleNotFoundError
from model.results import Classification
from model.store import StoredArticle
from service.deps import ArticleId, IngestDep, ModelDep, ReaderDep, SettingsDep, StateDep, StoreDep
from service.errors import StoryNotFoundError
from service.ingest import ingest_articles
from service.parsing import parse_for_ingest, unpack_batch
from service.schemas import (
    ARTICLES_EXAMPLES,
    ClassificationOut,
    ErrorOut,
    IngestBatchOut,
    IngestResultOut,
    OneOrManyArticles,
    StoredArticleOut,
    StoryArticleOut,
    StoryOut,
)
from service.workspace import stored_detail, story_identity
from service.workspace_schemas import ArticleDetailOut

router = APIRouter(prefix="/v1", tags=["articles"])


def _classification(stored: StoredArticle) -> ClassificationOut:
    classification = Classification.from_record(stored.classification, stored.id)
    return ClassificationOut.of(classification, stored.model_version or "unknown")


def _result(stored: StoredArticle, created: bool) -> IngestResultOut:
    return IngestResultOut(
        id=stored.id,
        created=created,
        story_id=stored.story_id,
        duplicate_of=stored.duplicate_of,
        classification=_classification(stored),
    )


@router.post(
    "/articles",
    response_model=IngestResultOut | IngestBatchOut,
    status_code=201,
    responses={
        201: {"model": IngestResultOut, "description": "A new article, stored before this answer."},
        200: {
            "model": IngestResultOut | IngestBatchOut,
            "description": "One article already stored (nothing changed for it), or a batch's results.",
        },
        413: {"model": ErrorOut, "description": "Batch or body too large."},
        422: {"model": ErrorOut, "description": "A field is missing or of the wrong type."},
        503: {"model": ErrorOut, "description": "No model bundle loaded, or the store is unavailable."},
    },
    summary="Classify, find duplicates, assign a story, store and index",
)
async def ingest(
    _: IngestDep,
    body: Annotated[OneOrManyArticles, Body(openapi_examples=ARTICLES_EXAMPLES)],
    state: StateDep,
    model: ModelDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
) -> IngestResultOut | IngestBatchOut:
    """Idempotent on the canonical URL: posting an article again (under any URL variant)
    returns the stored one with ``created: false``. The article is on disk before the answer.
    A single new article answers 201, a known one 200; a batch always answers 200."""
    items, batch = unpack_batch(body, settings)
    articles, related = parse_for_ingest(items, batch=batch)
    outcomes = await ingest_articles(state, model, store, [*articles, *related])
    out = [_result(outcome.stored, outcome.created) for outcome in outcomes[: len(articles)]]
    if batch:
        response.status_code = 200
        return IngestBatchOut(model_version=model.version, results=out)
    response.status_code = 201 if out[0].created else 200
    return out[0]


@router.get(
    "/articles/{article_id}",
    responses={404: {"model": ErrorOut, "description": "No article with this id."}},
    summary="A stored article with its classification and story",
)
async def get_article(
    article_id: ArticleId, state: StateDep, _: ReaderDep
) -> ArticleDetailOut | StoredArticleOut:
    """Ingested articles come from the store; articles of the bundle's own corpus are answered
    from the model's index (``stored: false``, classified now)."""
    store = state.store
    stored = await asyncio.to_thread(store.get, article_id) if store is not None else None
    if store is not None and stored is not None:
        # With the editors' corrections (history) and the effective labels.
        return await asyncio.to_thread(stored_detail, store, stored)
    model = state.require_model()
    known = model.known(article_id)
    if known is None:
        raise ArticleNotFoundError(article_id)
    article = known.article
    classification = (await asyncio.to_thread(model.classify, [article], embeddings=known.vector[None, :]))[0]
    return StoredArticleOut(
        id=article.id,
        article=article.to_record(),
        story_id=known.story_id,
        classification=ClassificationOut.of(classification, model.version),
        stored=False,
    )


@router.get(
    "/stories/{story_id}",
    responses={404: {"model": ErrorOut, "description": "No known article belongs to this story."}},
    summary="A story's articles, newest first",
)
async def get_story(
    _: ReaderDep,
    story_id: Annotated[str, Path(description="Story id, as returned by ingest or search.", max_length=200)],
    state: StateDep,
    store: StoreDep,
) -> StoryOut:
    """Stored articles of the story, plus those of the bundle's own corpus in it. The id of a story
    merged into another (a new encoder joined them) answers with that story: its ``id``, and the
    merged ids in ``merged_from``."""
    story_id, merged_from = await asyncio.to_thread(story_identity, store, story_id)
    members = await asyncio.to_thread(store.by_story, story_id)
    rows = [(article_from_record(stored.record), stored.created_at) for stored in members]
    model = state.model
    if model is not None:
        seen = {stored.id for stored in members}
        rows += [
            (model.get(article_id), None)
            for article_id in model.story_members(story_id)
            if article_id not in seen
        ]
    if not rows:
        raise StoryNotFoundError(f"no known article belongs to story {story_id!r}")
    # Newest publication first; unknown dates last.
    rows.sort(
        key=lambda row: row[0].published_at.timestamp() if row[0].published_at else float("-inf"),
        reverse=True,
    )
    articles = [
        StoryArticleOut(**StoryArticleOut.of(article).model_dump(exclude={"created_at"}), created_at=created)
        for article, created in rows
    ]
    return StoryOut(id=story_id, count=len(articles), articles=articles, merged_from=merged_from)
