"""Typed results returned by `NewsModel` (the service turns them into its pydantic responses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Verdict = Literal["duplicate", "same_story", "related", "unrelated"]
VERDICTS: tuple[Verdict, ...] = ("duplicate", "same_story", "related", "unrelated")
# Labels kept per stored classification for editors to choose from (most probable first).
CANDIDATES = 8


@dataclass(frozen=True, slots=True)
class TopicScore:
    label: str
    probability: float


@dataclass(frozen=True, slots=True)
class ScorePrediction:
    """A predicted score with a central prediction interval (``coverage`` e.g. 0.8 = 80%)."""

    value: float
    low: float
    high: float
    coverage: float


@dataclass(frozen=True, slots=True)
class Classification:
    article_id: str
    topics: list[TopicScore]
    scores: dict[str, ScorePrediction]
    all_topics: list[TopicScore] | None = None
    # How close the nearest label is to its threshold (min |probability - threshold|): small means
    # the model could go either way. Known when every label was scored (``all_scores``).
    uncertainty: float | None = None
    # The most probable labels, chosen or not (kept in the store for editors to pick from).
    candidates: list[TopicScore] | None = None

    @property
    def labels(self) -> list[str]:
        return [topic.label for topic in self.topics]

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict for storage: the model's own format, independent of any HTTP shape.

        With every label scored it also keeps ``uncertainty`` and the top ``candidates``
        (at most `CANDIDATES`), so a review queue is a store query, not a re-classification.
        """
        record: dict[str, Any] = {
            "article_id": self.article_id,
            "topics": [{"label": t.label, "probability": float(t.probability)} for t in self.topics],
            "scores": {
                name: {"value": s.value, "low": s.low, "high": s.high, "coverage": s.coverage}
                for name, s in self.scores.items()
            },
        }
        if self.uncertainty is not None:
            record["uncertainty"] = float(self.uncertainty)
        top = self.candidates if self.candidates is not None else self.all_topics
        if top is not None:
            record["candidates"] = [
                {"label": t.label, "probability": float(t.probability)} for t in top[:CANDIDATES]
            ]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any], article_id: str | None = None) -> Classification:
        """Read `to_record`'s dict back (unknown keys, e.g. of older stores, are ignored)."""
        return cls(
            article_id=str(record.get("article_id") or record.get("id") or article_id or ""),
            topics=[TopicScore(str(t["label"]), float(t["probability"])) for t in record.get("topics", [])],
            scores={
                str(name): ScorePrediction(
                    float(s["value"]), float(s["low"]), float(s["high"]), float(s["coverage"])
                )
                for name, s in (record.get("scores") or {}).items()
            },
            uncertainty=float(record["uncertainty"]) if record.get("uncertainty") is not None else None,
            candidates=[TopicScore(str(t["label"]), float(t["probability"])) for t in record["candidates"]]
            if record.get("candidates") is not None
            else None,
        )


@dataclass(frozen=True, slots=True)
class PairEvidence:
    """Why two articles got their verdict: each signal the pair scorer looked at."""

    cosine: float
    lexical: float
    near_duplicate: float
    time_gap_hours: float | None
    same_provider: bool | None
    url_match: bool
    tfidf: float | None = None  # word TF-IDF cosine with the scorer's corpus IDF (hashed)
    char_tfidf: float | None = None  # character 4-gram TF-IDF cosine, same IDF
    same_script: bool | None = None  # both texts mostly in one writing system (Latin, Cyrillic, Han, ...)
    language_profile: float | None = None  # cosine of character-trigram frequency profiles (same language)
    same_language: bool | None = None  # the articles' languages agree (known), else script and profile say so
    # The encoder cosine with each text's language mean taken away (`model.coverage.pair_centring`);
    # None where either language has no mean (the graded output then reads the raw cosine).
    centred_cosine: float | None = None
    # The centred cosine after the scorer's learnt pair map (`model.coverage.pair_map`); None
    # where the scorer has none or a side has no language mean (the graded output reads the raw one).
    learnt_cosine: float | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """A pair scorer's answer. ``score`` is the graded similarity (0-1, what ``/v1/compare`` shows
    and what correlates with a human grade); ``probability`` the same-story probability the verdict
    and the story rule cut (None: ``score`` is that probability, as a scorer without a graded
    output gives it)."""

    score: float
    verdict: Verdict
    evidence: PairEvidence
    probability: float | None = None

    @property
    def same_story_probability(self) -> float:
        return self.score if self.probability is None else self.probability


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Restrict a similarity search; ``exclude_provider`` drops hits from that outlet."""

    since: datetime | None = None
    until: datetime | None = None
    providers: frozenset[str] | None = None
    exclude_provider: str | None = None
    exclude_ids: frozenset[str] = field(default_factory=frozenset)
    language: str | None = None  # ISO 639-1, lower case: only articles in this language


@dataclass(frozen=True, slots=True)
class SimilarHit:
    article_id: str
    score: float
    verdict: Verdict
    cosine: float
    story_id: str | None
    evidence: PairEvidence | None = None
    # Set when a same_story/duplicate hit is not in the query's story: why not.
    story_note: str | None = None
