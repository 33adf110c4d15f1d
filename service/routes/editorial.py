"""The editors' workspace API: browse what was ingested, correct it, grade pairs, review, take down.

Every handler parses, calls one `service.workspace` use case and returns its shape; the pages in
`routes/pages.py` render the same use cases, so each page has this JSON twin.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import StreamingResponse

from model.articles.language import LANGUAGE_PATTERN, normalise_language
from model.store import ArticleQuery
from model.store.export import export_lines
from service import workspace
from service.deps import AdminDep, ArticleId, EditorDep, ReaderDep, StateDep, StoreDep
from service.schemas import ErrorOut
from service.workspace_schemas import (
    CORRECTION_EXAMPLE,
    PAIR_FEEDBACK_EXAMPLE,
    ArticlePageOut,
    CorrectionIn,
    CorrectionOut,
    DeleteOut,
    PairFeedbackIn,
    PairFeedbackOut,
    ReviewOut,
    StoryPageOut,
)

router = APIRouter(prefix="/v1", tags=["workspace"])

Limit = Annotated[
    int,
    Query(
        description=f"Rows per page, 1 to {workspace.MAX_PAGE}.",
        json_schema_extra={"minimum": 1, "maximum": workspace.MAX_PAGE},
    ),
]
Cursor = Annotated[
    str | None,
    Query(
        description="`next_cursor` of the previous page (keyset: no row skipped or repeated).",
        json_schema_extra={"pattern": workspace.CURSOR_PATTERN},
    ),
]
BAD_INPUT = {422: {"model": ErrorOut, "description": "A parameter is malformed (e.g. a bad cursor)."}}
NOT_FOUND = {404: {"model": ErrorOut, "description": "No stored article with this id."}}


@router.get("/articles", responses=BAD_INPUT, summary="Ingested articles, newest first, filtered and paged")
async def list_articles(
    _: ReaderDep,
    store: StoreDep,
    topic: Annotated[str | None, Query(description="Only articles with this effective label.")] = None,
    provider: Annotated[str | None, Query(description="Outlet domain or name (case-insensitive).")] = None,
    story_id: Annotated[str | None, Query(description="Only this story's articles.")] = None,
    since: Annotated[datetime | None, Query(description="Published at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Published at or before (ISO 8601).")] = None,
    q: Annotated[str | None, Query(description="Text in the title or excerpt.", max_length=200)] = None,
    language: Annotated[
        str | None,
        # Checked by the article rule (a 422 naming `language`), so an empty value reads as none.
        Query(
            description="Only articles in this language (ISO 639-1, e.g. `de`).",
            json_schema_extra={"pattern": LANGUAGE_PATTERN},
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ArticlePageOut:
    """Labels are the effective ones (editors' corrections applied); each row carries its story's
    size and a duplicate flag. Follow ``next_cursor`` until it is null."""
    query = ArticleQuery(
        topic=topic or None,
        provider=provider or None,
        story_id=story_id or None,
        since=workspace.utc(since),
        until=workspace.utc(until),
        q=q.strip() if q and q.strip() else None,
        language=normalise_language(language),
    )
    return await asyncio.to_thread(workspace.list_articles, store, query, limit, cursor)


@router.get("/stories", responses=BAD_INPUT, summary="Recent stories with their article counts, paged")
async def list_stories(
    _: ReaderDep, store: StoreDep, limit: Limit = 50, cursor: Cursor = None
) -> StoryPageOut:
    """Stories of stored articles, the one with the newest article first."""
    return await asyncio.to_thread(workspace.list_stories, store, limit, cursor)


@router.post(
    "/articles/{article_id}/corrections",
    status_code=201,
    responses={**NOT_FOUND, 422: {"model": ErrorOut, "description": "Unknown field or a bad value."}},
    summary="An editor corrects an article's topics or quality",
)
async def add_correction(
    article_id: ArticleId,
    principal: EditorDep,
    store: StoreDep,
    body: Annotated[CorrectionIn, Body(openapi_examples={"correct": {"value": CORRECTION_EXAMPLE}})],
) -> CorrectionOut:
    """Appended beside the model's classification, never over it: ``GET /v1/articles/{id}`` shows
    the history and the effective labels (the latest correction's ``topics`` win; a label left
    out is removed). Needs the editor role once API keys are configured."""
    return await asyncio.to_thread(workspace.add_correction, store, article_id, body, principal)


@router.post(
    "/pairs/feedback",
    status_code=201,
    responses={
        404: {"model": ErrorOut, "description": "An id names no known article."},
        422: {"model": ErrorOut, "description": "Unknown field, a bad verdict, or a == b."},
    },
    summary="An editor grades two articles: duplicate, same story, related or unrelated",
)
async def add_pair_feedback(
    principal: EditorDep,
    state: StateDep,
    store: StoreDep,
    body: Annotated[PairFeedbackIn, Body(openapi_examples={"same story": {"value": PAIR_FEEDBACK_EXAMPLE}})],
) -> PairFeedbackOut:
    """Stored for training: ``python -m training export`` writes these as ``pairs.tsv``."""
    return await asyncio.to_thread(workspace.add_pair_feedback, store, state.model, body, principal)


@router.get("/review", responses=BAD_INPUT, summary="The review queue: what the model is least sure of")
async def review(_: ReaderDep, state: StateDep, store: StoreDep, limit: Limit = 20) -> ReviewOut:
    """Uncorrected articles, those with no label first, then by how close a label's probability
    is to its threshold, so editors' minutes teach the model the most."""
    return await asyncio.to_thread(workspace.review_queue, store, state.model, limit)


@router.delete(
    "/articles/{article_id}",
    responses={
        **NOT_FOUND,
        401: {"model": ErrorOut, "description": "No or wrong bearer token."},
        403: {"model": ErrorOut, "description": "Not an admin (or admin endpoints disabled)."},
    },
    summary="Take an article down: out of the store, the index and its story",
)
async def delete_article(article_id: ArticleId, _: AdminDep, state: StateDep, store: StoreDep) -> DeleteOut:
    """Its corrections and graded pairs go with it. Admin only."""
    return await workspace.delete_article(state, store, article_id)


@router.get(
    "/corrections/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/x-ndjson": {
                    "example": '{"title": "...", "topics": ["AI"], "quality": 55, '
                    '"corrected_at": "2026-11-26T09:00:00Z", "corrected_by": ["maria"]}\n'
                }
            },
            "description": "One seed record per line (a .jsonl seed file).",
        }
    },
    summary="Every corrected article as a seed record, corrections applied (JSON lines)",
)
async def export_corrections(_: ReaderDep, store: StoreDep) -> StreamingResponse:
    """Save it as ``corrections.jsonl`` beside the seeds: ``training fit`` reads it, and a corrected
    record's topics win over the earlier seed of the same article (`corrected_at`)."""
    lines = await asyncio.to_thread(lambda: list(export_lines(store)))
    return StreamingResponse(iter(lines), media_type="application/x-ndjson")
