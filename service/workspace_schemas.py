"""HTTP shapes of the editors' workspace API: listings, corrections, graded pairs, the review queue.

Apart from `service.schemas` so the workspace's contract reads in one place; the pages
(`routes/pages.py`) render these same objects, so a page and its JSON twin cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.feedback import VERDICT_OVERALL, Correction, PairFeedback
from service.schemas import ProviderOut, StoredArticleOut, TopicOut, Verdict

MAX_LABEL_CHARS = 200
MAX_LABELS = 50

CORRECTION_EXAMPLE: dict[str, Any] = {
    "topics": ["AI", "Computer Vision"],
    "quality": 55,
    "note": "About police use of face recognition, not AWS products.",
    "editor": "maria",
}
PAIR_FEEDBACK_EXAMPLE: dict[str, Any] = {
    "a": "3f9a1c2b4d5e6f70",
    "b": "0c1d2e3f4a5b6c7d",
    "verdict": "same_story",
    "note": "Both report the one-year moratorium.",
    "editor": "maria",
}


# A label with some text in it, within the label length (documented; checked in `_clean_topics`).
LabelText = Annotated[str, Field(json_schema_extra={"pattern": "[A-Za-z0-9]", "maxLength": MAX_LABEL_CHARS})]


class CorrectionIn(BaseModel):
    """An editor's answer about one article; at least one of `topics`, `quality`, `note`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [CORRECTION_EXAMPLE],
            # At least one of them says something.
            "anyOf": [
                {"required": ["topics"], "properties": {"topics": {"type": "array"}}},
                {"required": ["quality"], "properties": {"quality": {"type": "number"}}},
                {"required": ["note"], "properties": {"note": {"type": "string", "minLength": 1}}},
            ],
        },
    )

    topics: (
        list[
            Annotated[str, Field(json_schema_extra={"pattern": "[A-Za-z0-9]", "maxLength": MAX_LABEL_CHARS})]
        ]
        | None
    ) = Field(
        None,
        description="The article's complete label list after the correction: labels left out are "
        "removed, new ones added (any label, not only the bundle's). `[]` removes every label.",
        max_length=MAX_LABELS,
    )
    quality: float | None = Field(None, ge=0, le=100, description="The editor's quality score, 0-100.")
    note: str | None = Field(None, max_length=2000, description="Why, for the next editor and for training.")
    editor: str | None = Field(
        None, max_length=200, description="Who answers (default: the API key's name, else `anonymous`)."
    )

    @field_validator("topics")
    @classmethod
    def _clean_topics(cls, topics: list[str] | None) -> list[str] | None:
        if topics is None:
            return None
        cleaned = []
        for position, label in enumerate(topics):
            label = label.strip()
            if not label or len(label) > MAX_LABEL_CHARS:
                raise ValueError(
                    f"topics[{position}]: expected a label of 1 to {MAX_LABEL_CHARS} characters, "
                    f"got {label!r:.60}"
                )
            cleaned.append(label)
        return list(dict.fromkeys(cleaned))

    @model_validator(mode="after")
    def _something(self) -> CorrectionIn:
        if self.topics is None and self.quality is None and not self.note:
            raise ValueError("expected at least one of topics, quality or note, got none")
        return self


class CorrectionOut(BaseModel):
    id: int
    article_id: str
    topics: list[str] | None = Field(description="The label list this correction set (null: not touched).")
    quality: float | None
    note: str | None
    editor: str | None
    created_at: datetime

    @classmethod
    def of(cls, correction: Correction) -> CorrectionOut:
        return cls(
            id=correction.id,
            article_id=correction.article_id,
            topics=list(correction.topics) if correction.topics is not None else None,
            quality=correction.quality,
            note=correction.note,
            editor=correction.editor,
            created_at=correction.created_at,
        )


class EffectiveOut(BaseModel):
    """What applies now: the model's answer with the editors' corrections on top."""

    labels: list[str] = Field(description="The model's labels, replaced by the latest correction's.")
    quality: float | None = Field(description="The latest editor's quality, else the model's prediction.")
    corrected: bool = Field(description="Whether any editor answered about this article.")


class PairFeedbackBrief(BaseModel):
    """An editor's verdict on this article and another, as shown beside the article."""

    other: str
    verdict: Verdict
    editor: str | None
    created_at: datetime


class ArticleDetailOut(StoredArticleOut):
    """A stored article, what the model said (`classification`) and what applies (`effective`)."""

    effective: EffectiveOut
    corrections: list[CorrectionOut] = Field(description="Every correction, oldest first.")
    related_ids: list[str] = Field(description="Ids of the seed's related coverage, ingested with it.")
    pair_feedback: list[PairFeedbackBrief] = Field(
        description="Editors' verdicts on pairs with this article."
    )
    candidates: list[TopicOut] = Field(description="The most probable labels at ingest, chosen or not.")


class ArticleRowOut(BaseModel):
    """One line of the inbox: enough to recognise, filter and triage an article."""

    id: str
    title: str
    url: str | None = None
    provider: ProviderOut | None = None
    publishedDateTime: str | None = None
    language: str | None = Field(None, description="ISO 639-1 code: the seed's own, else detected.")
    story_id: str
    story_size: int = Field(description="Stored articles in the story.")
    duplicate_of: str | None = None
    labels: list[str] = Field(description="Effective labels (corrections applied).")
    model_labels: list[str] = Field(description="The model's labels at ingest.")
    corrected: bool = Field(
        description="Whether the effective labels differ from the model's by a correction."
    )
    uncertainty: float | None = Field(description="min |probability - threshold| at ingest; small = unsure.")
    created_at: datetime = Field(description="When it was ingested.")


ARTICLE_PAGE_EXAMPLE: dict[str, Any] = {
    "items": [
        {
            "id": "3f9a1c2b4d5e6f70",
            "title": "Amazon Suspends Police Use of Its Facial Recognition",
            "url": "https://www.courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition/",
            "provider": {"name": "Courthouse News Service", "domain": "courthousenews.com"},
            "publishedDateTime": "2021-08-28T00:01:00Z",
            "story_id": "s_9c1d2e3f4a5b6c7d",
            "story_size": 3,
            "duplicate_of": None,
            "labels": ["AI"],
            "model_labels": ["AI", "AWS AI"],
            "corrected": True,
            "uncertainty": 0.04,
            "created_at": "2026-11-26T09:00:00Z",
        }
    ],
    "next_cursor": "c2VxOjQx",
    "limit": 50,
}


class ArticlePageOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [ARTICLE_PAGE_EXAMPLE]})

    items: list[ArticleRowOut] = Field(description="Newest ingested first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    limit: int


class StorySummaryOut(BaseModel):
    id: str
    count: int = Field(description="Stored articles in the story.")
    title: str = Field(description="Headline of its earliest-published article.")
    first_published: datetime | None
    last_published: datetime | None


class StoryPageOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": "s_9c1d2e3f4a5b6c7d",
                            "count": 4,
                            "title": "Amazon Suspends Police Use of Its Facial Recognition",
                            "first_published": "2021-08-28T00:01:00Z",
                            "last_published": "2021-08-30T15:46:00Z",
                        }
                    ],
                    "next_cursor": None,
                    "limit": 50,
                }
            ]
        }
    )

    items: list[StorySummaryOut] = Field(description="Stories by their newest article, newest first.")
    next_cursor: str | None
    limit: int


class PairFeedbackIn(BaseModel):
    """An editor's verdict on two stored (or bundle) articles."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [PAIR_FEEDBACK_EXAMPLE]})

    a: str = Field(max_length=200, description="One article's id.")
    b: str = Field(max_length=200, description="The other article's id.")
    verdict: Verdict = Field(description="duplicate, same_story, related or unrelated.")
    note: str | None = Field(None, max_length=2000)
    editor: str | None = Field(None, max_length=200)


class PairFeedbackOut(BaseModel):
    id: int
    a: str
    b: str
    verdict: Verdict
    overall: float = Field(description="The verdict on SemEval's 1-4 scale, as exported to pairs.tsv.")
    note: str | None
    editor: str | None
    created_at: datetime

    @classmethod
    def of(cls, feedback: PairFeedback) -> PairFeedbackOut:
        return cls(
            id=feedback.id,
            a=feedback.a,
            b=feedback.b,
            verdict=feedback.verdict,
            overall=VERDICT_OVERALL[feedback.verdict],
            note=feedback.note,
            editor=feedback.editor,
            created_at=feedback.created_at,
        )


class ReviewItemOut(ArticleRowOut):
    candidates: list[TopicOut] = Field(description="The most probable labels, with probabilities.")
    thresholds: dict[str, float] = Field(description="The candidates' decision thresholds.")


class ReviewOut(BaseModel):
    items: list[ReviewItemOut] = Field(
        description="Uncorrected articles, least sure first: no label at all, then by uncertainty."
    )


class DeleteOut(BaseModel):
    id: str
    store: bool = Field(description="Removed from the store (with its corrections and pair feedback).")
    index: bool = Field(description="Removed from the search index and its story.")
