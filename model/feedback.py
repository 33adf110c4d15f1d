"""Editors' answers as data: topic/quality corrections and graded pairs, kept beside the model's output.

An editor never overwrites what the model said. A `Correction` is a response to one article
(who, when, what), stored next to the model's classification; the *effective* labels are the
model's labels with the latest correction applied, so a correction can add a label the model
missed or remove one it gave. A `PairFeedback` grades two articles with the pair scorer's own
verdicts. Both flow back into training: corrected articles as seed records (`corrected_record`),
graded pairs as the ``pairs.tsv`` that ``training fit --pairs`` reads
(`model.coverage.pair_files.write_pairs_tsv`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from model.articles.seeds import CORRECTED_FIELD
from model.coverage.pair_files import RELATED_MAX_OVERALL, SAME_STORY_MAX_OVERALL
from model.results import Classification, TopicScore, Verdict

# SemEval-2022 Task 8's `overall` scale (1 = same story ... 4 = unrelated) for each verdict, inside
# the cuts `PairScorer` learns from: at most SAME_STORY_MAX_OVERALL is same story, at most
# RELATED_MAX_OVERALL related.
VERDICT_OVERALL: dict[str, float] = {
    "duplicate": 1.0,
    "same_story": 1.0,
    "related": (SAME_STORY_MAX_OVERALL + RELATED_MAX_OVERALL) / 2,
    "unrelated": 4.0,
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The column order every store keeps them in; `Correction.from_row` / `PairFeedback.from_row` read it.
CORRECTION_COLUMNS = "id, article_id, topics, quality, note, editor, created_at"
PAIR_FEEDBACK_COLUMNS = "id, a, b, verdict, note, editor, created_at"


def _moment(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Correction:
    """One editor's answer about one article.

    ``topics`` is the article's complete label list after the correction (None: labels not
    touched); ``quality`` an editor's 0-100 score (None: not touched).
    """

    article_id: str
    topics: tuple[str, ...] | None = None
    quality: float | None = None
    note: str | None = None
    editor: str | None = None
    created_at: datetime = field(default_factory=_utc_now)
    id: int = 0  # assigned by the store

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Correction:
        """A row in `CORRECTION_COLUMNS` order (topics as JSON text or a decoded list)."""
        id_, article_id, topics, quality, note, editor, created = row
        if isinstance(topics, str):
            topics = json.loads(topics)
        return cls(
            article_id=article_id,
            topics=tuple(topics) if topics is not None else None,
            quality=quality,
            note=note,
            editor=editor,
            created_at=_moment(created),
            id=int(id_),
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "article_id": self.article_id,
            "topics": list(self.topics) if self.topics is not None else None,
            "quality": self.quality,
            "note": self.note,
            "editor": self.editor,
            "created_at": self.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class PairFeedback:
    """An editor's verdict on two articles (``a`` and ``b`` are article ids)."""

    a: str
    b: str
    verdict: Verdict
    note: str | None = None
    editor: str | None = None
    created_at: datetime = field(default_factory=_utc_now)
    id: int = 0  # assigned by the store

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> PairFeedback:
        """A row in `PAIR_FEEDBACK_COLUMNS` order."""
        id_, a, b, verdict, note, editor, created = row
        return cls(
            a=a, b=b, verdict=verdict, note=note, editor=editor, created_at=_moment(created), id=int(id_)
        )

    @property
    def overall(self) -> float:
        """The verdict on SemEval's 1-4 `overall` scale (see `VERDICT_OVERALL`)."""
        return VERDICT_OVERALL[self.verdict]


def effective_labels(model_labels: Sequence[str], corrections: Iterable[Correction]) -> list[str]:
    """The labels that apply: the latest correction that set topics, else the model's labels."""
    labels = list(model_labels)
    for correction in sorted(corrections, key=lambda c: (c.created_at, c.id)):
        if correction.topics is not None:
            labels = list(correction.topics)
    return labels


def effective_quality(model_quality: float | None, corrections: Iterable[Correction]) -> float | None:
    """The editor's latest quality score, else the model's prediction."""
    quality = model_quality
    for correction in sorted(corrections, key=lambda c: (c.created_at, c.id)):
        if correction.quality is not None:
            quality = correction.quality
    return quality


def topic_uncertainty(all_topics: Sequence[TopicScore], thresholds: Mapping[str, float]) -> float | None:
    """How near the model is to changing its mind: min over labels of |probability - threshold|.

    0 means some label sits exactly on its threshold; labels without a threshold use 0.5.
    No labels at all (a bundle without a topic head): None.
    """
    gaps = [abs(t.probability - float(thresholds.get(t.label, 0.5))) for t in all_topics]
    return min(gaps) if gaps else None


def corrected_record(
    record: Mapping[str, Any],
    classification: Classification,
    corrections: Sequence[Correction],
) -> dict[str, Any]:
    """The article as a seed record with the editors' answers applied.

    ``topics`` are the effective labels (possibly empty: an editor removed them all), ``quality``
    the editor's score when one was given, and `CORRECTED_FIELD` the latest correction's time, so
    reading seeds lets this record's topics win over an earlier seed of the same article.
    """
    out = {key: value for key, value in record.items() if key not in ("related", CORRECTED_FIELD)}
    out["topics"] = effective_labels(classification.labels, corrections)
    quality = effective_quality(None, corrections)
    if quality is not None:
        out["quality"] = quality
    latest = max(corrections, key=lambda c: (c.created_at, c.id)) if corrections else None
    if latest is not None:
        out[CORRECTED_FIELD] = latest.to_record()["created_at"]
        editors = sorted({c.editor for c in corrections if c.editor})
        if editors:
            out["corrected_by"] = editors
    return out
