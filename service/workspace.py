"""The editors' workspace use cases, shared by the JSON API (`routes/editorial.py`) and the pages.

Each function takes the store (and the model where it needs one), does one thing, and returns
the response shape, so the HTML view and its JSON twin are the same object rendered twice.
An editor's answer is data beside the model's: corrections and graded pairs are appended, the
classification stored at ingest is never changed.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import yaml

from model.articles.article import article_from_record
from model.articles.seeds import split_front_matter
from model.errors import ArticleNotFoundError, InvalidArticleError, SeedFormatError
from model.feedback import Correction, PairFeedback, effective_quality
from model.news_model import NewsModel
from model.results import Classification
from model.store import ArticleQuery, ArticleStore, StoredArticle
from model.store.base import GenerationStore
from service.auth import OPEN, Principal
from service.errors import BadRequestError, SameArticleError
from service.schemas import ClassificationOut, ProviderOut, TopicOut
from service.state import ServiceState
from service.workspace_schemas import (
    ArticleDetailOut,
    ArticlePageOut,
    ArticleRowOut,
    CorrectionIn,
    CorrectionOut,
    DeleteOut,
    EffectiveOut,
    PairFeedbackBrief,
    PairFeedbackIn,
    PairFeedbackOut,
    ReviewItemOut,
    ReviewOut,
    StoryPageOut,
    StorySummaryOut,
)

MAX_PAGE = 200


# --- cursors ---------------------------------------------------------------------------------


CURSOR_PATTERN = r"^[0-9]{1,18}$"


def encode_cursor(seq: int) -> str:
    """A keyset cursor: the last row's position, so pages never skip or repeat rows.

    Plain digits, so the OpenAPI pattern describes every valid cursor exactly (any position is
    a valid place to continue from).
    """
    return str(seq)


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        shown = cursor if len(cursor) <= 40 else cursor[:37] + "..."
        raise BadRequestError(f"cursor: expected the next_cursor of a previous page, got {shown!r}")
    return int(cursor)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequestError(f"limit: expected a number from 1 to {MAX_PAGE}, got {limit}")
    return limit


def utc(value: datetime | None) -> datetime | None:
    """A time in UTC; one without a zone is taken as UTC (the seeds' convention)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def editor_name(given: str | None, principal: Principal) -> str:
    """Who answers: the name the editor typed, else the API key's name, else `anonymous`."""
    if given and given.strip():
        return given.strip()
    return "anonymous" if principal is OPEN else principal.name


# --- listing -------------------------------------------------------------------------------


def _provider(record: dict) -> ProviderOut | None:
    provider = record.get("provider")
    if isinstance(provider, dict) and (provider.get("name") or provider.get("domain")):
        return ProviderOut(name=provider.get("name"), domain=provider.get("domain"))
    return None


def _row(stored: StoredArticle, sizes: dict[str, int]) -> ArticleRowOut:
    record = stored.record
    url = next(
        (record[k] for k in ("originalUrl", "webUrl", "ampWebUrl", "cdnAmpWebUrl") if record.get(k)), None
    )
    return ArticleRowOut(
        id=stored.id,
        title=str(record.get("title") or record.get("excerpt", "")[:120] or stored.id),
        url=url,
        provider=_provider(record),
        publishedDateTime=record.get("publishedDateTime"),
        language=record.get("language"),
        story_id=stored.story_id,
        story_size=sizes.get(stored.story_id, 1),
        duplicate_of=stored.duplicate_of,
        labels=stored.effective_labels,
        model_labels=stored.model_labels,
        corrected=stored.labels is not None and list(stored.labels) != stored.model_labels,
        uncertainty=stored.uncertainty,
        created_at=stored.created_at,
    )


def list_articles(store: ArticleStore, query: ArticleQuery, limit: int, cursor: str | None) -> ArticlePageOut:
    check_limit(limit)
    if query.since and query.until and query.since > query.until:
        raise BadRequestError(
            f"since: expected a time before until ({query.until.isoformat()}), got {query.since.isoformat()}"
        )
    query = replace(query, before_seq=decode_cursor(cursor))
    page = store.list_articles(query, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    sizes = store.story_sizes([a.story_id for a in page])
    return ArticlePageOut(
        items=[_row(a, sizes) for a in page],
        next_cursor=encode_cursor(page[-1].seq) if more and page else None,
        limit=limit,
    )


def list_stories(store: ArticleStore, limit: int, cursor: str | None) -> StoryPageOut:
    check_limit(limit)
    page = store.list_stories(limit + 1, decode_cursor(cursor))
    more = len(page) > limit
    page = page[:limit]
    return StoryPageOut(
        items=[
            StorySummaryOut(
                id=s.story_id,
                count=s.count,
                title=s.title,
                first_published=s.first_published,
                last_published=s.last_published,
            )
            for s in page
        ],
        next_cursor=encode_cursor(page[-1].last_seq) if more and page else None,
        limit=limit,
    )


def review_queue(store: ArticleStore, model: NewsModel | None, limit: int) -> ReviewOut:
    check_limit(limit)
    page = store.review_queue(limit)
    sizes = store.story_sizes([a.story_id for a in page])
    thresholds = model.thresholds if model is not None else {}
    items = []
    for stored in page:
        candidates = Classification.from_record(stored.classification, stored.id).candidates or []
        items.append(
            ReviewItemOut(
                **_row(stored, sizes).model_dump(),
                candidates=[TopicOut.of(t) for t in candidates],
                thresholds={
                    t.label: round(thresholds[t.label], 6) for t in candidates if t.label in thresholds
                },
            )
        )
    return ReviewOut(items=items)


# --- one article -----------------------------------------------------------------------------


def story_identity(store: ArticleStore | None, story_id: str) -> tuple[str, list[str]]:
    """(the story ``story_id`` answers as: the surviving one when it was merged, the stories
    merged into that one): a merged story's id stays a valid link (`model.store.merges`)."""
    if not isinstance(store, GenerationStore):
        return story_id, []
    surviving = store.resolve_story(story_id)
    return surviving, sorted(m.merged for m in store.story_merges() if m.surviving == surviving)


def stored_detail(store: ArticleStore, stored: StoredArticle) -> ArticleDetailOut:
    corrections = store.corrections(stored.id)
    classification = Classification.from_record(stored.classification, stored.id)
    model_quality = classification.scores["quality"].value if "quality" in classification.scores else None
    feedback = [
        PairFeedbackBrief(
            other=f.b if f.a == stored.id else f.a,
            verdict=f.verdict,
            editor=f.editor,
            created_at=f.created_at,
        )
        for f in store.pair_feedback(stored.id)
    ]
    return ArticleDetailOut(
        id=stored.id,
        article=stored.record,
        story_id=stored.story_id,
        duplicate_of=stored.duplicate_of,
        classification=ClassificationOut.of(classification, stored.model_version or "unknown"),
        stored=True,
        created_at=stored.created_at,
        effective=EffectiveOut(
            labels=stored.effective_labels,
            quality=effective_quality(model_quality, corrections),
            corrected=bool(corrections),
        ),
        corrections=[CorrectionOut.of(c) for c in corrections],
        related_ids=list(stored.related_ids),
        pair_feedback=feedback,
        candidates=[TopicOut.of(t) for t in classification.candidates or []],
    )


def require_stored(store: ArticleStore, article_id: str) -> StoredArticle:
    stored = store.get(article_id)
    if stored is None:
        raise ArticleNotFoundError(article_id)
    return stored


def add_correction(
    store: ArticleStore, article_id: str, body: CorrectionIn, principal: Principal
) -> CorrectionOut:
    """Append a correction to a stored article (404 when it was never ingested)."""
    require_stored(store, article_id)
    correction = store.add_correction(
        Correction(
            article_id=article_id,
            topics=tuple(body.topics) if body.topics is not None else None,
            quality=body.quality,
            note=body.note.strip() if body.note and body.note.strip() else None,
            editor=editor_name(body.editor, principal),
        )
    )
    return CorrectionOut.of(correction)


def add_pair_feedback(
    store: ArticleStore, model: NewsModel | None, body: PairFeedbackIn, principal: Principal
) -> PairFeedbackOut:
    """Store an editor's verdict on two known articles (stored, or in the bundle's corpus)."""
    for article_id in (body.a, body.b):
        if store.get(article_id) is None and (model is None or model.known(article_id) is None):
            raise ArticleNotFoundError(article_id)
    if body.a == body.b:
        # Both ids are valid, but a pair needs two articles: a conflict with what is known.
        raise SameArticleError(f"b: expected another article than a, got the same id {body.b!r}")
    feedback = store.add_pair_feedback(
        PairFeedback(
            a=body.a,
            b=body.b,
            verdict=body.verdict,
            note=body.note.strip() if body.note and body.note.strip() else None,
            editor=editor_name(body.editor, principal),
        )
    )
    return PairFeedbackOut.of(feedback)


async def delete_article(state: ServiceState, store: ArticleStore, article_id: str) -> DeleteOut:
    """A takedown: out of the store (with its corrections and graded pairs), the index and its story.

    Under the write lock, so an ingest never sees it half gone. An article of the bundle's own
    corpus leaves the live index too, but comes back with the bundle at the next start.
    """
    async with state.write_lock:
        in_store = await asyncio.to_thread(store.delete, article_id)
        model = state.model
        in_index = await asyncio.to_thread(model.remove, article_id) if model is not None else False
    if not in_store and not in_index:
        raise ArticleNotFoundError(article_id)
    return DeleteOut(id=article_id, store=in_store, index=in_index)


def parse_record_text(text: str) -> dict:
    """A pasted seed file (YAML front matter) or JSON object, as a record; errors name what was expected."""
    text = text.strip()
    if not text:
        raise InvalidArticleError("seed", "expected a seed file (--- YAML ---) or a JSON object, got nothing")
    try:
        if text.startswith("{"):
            record = json.loads(text)
        else:
            body = split_front_matter(text, "pasted seed") if text.startswith("---") else text
            record = yaml.safe_load(body)
    except (json.JSONDecodeError, yaml.YAMLError, SeedFormatError) as error:
        reason = str(error).splitlines()[0][:200]
        raise InvalidArticleError(
            "seed", f"expected a seed file (--- YAML ---) or a JSON object ({reason})"
        ) from None
    if not isinstance(record, dict):
        raise InvalidArticleError(
            "seed", f"expected a mapping of article fields, got {type(record).__name__}"
        )
    article_from_record(record)  # the article rules, with the field named on error
    return record
