"""Request and response shapes of the HTTP API (a layer apart from `model/`'s dataclasses).

Article fields keep the seed's names (``publishedDateTime``, ``webUrl``, ``provider{name,domain}``),
so a seed record can be posted as it is. Pydantic checks the types; `model.articles.article` then checks
the values (absolute URLs, ISO dates, a title or an excerpt) and names the field when one is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from model.articles.article import MAX_FIELD_CHARS, MAX_OTHER_TEXT_CHARS, Article
from model.articles.language import LANGUAGE_PATTERN
from model.results import Classification, Comparison, PairEvidence, ScorePrediction, SimilarHit, TopicScore

Verdict = Literal["duplicate", "same_story", "related", "unrelated"]

ARTICLE_EXAMPLE: dict[str, Any] = {
    "title": "Amazon Suspends Police Use of Its Facial Recognition",
    "excerpt": "Civil rights groups and Amazon's own employees have pushed the company to stop selling "
    "its technology, called Rekognition, to government agencies.",
    "publishedDateTime": "2021-08-28T00:01:00Z",
    "webUrl": "https://www.courthousenews.com/amazon-suspends-police-use-of-its-facial-recognition/",
    "provider": {"name": "Courthouse News Service", "domain": "courthousenews.com"},
}
ARTICLE_EXAMPLE_B: dict[str, Any] = {
    "title": "Amazon halts police use of Rekognition for a year",
    "excerpt": "Amazon said it would stop police from using its facial recognition software for one year.",
    "publishedDateTime": "2021-08-28T09:30:00Z",
    "webUrl": "https://www.example-news.com/tech/amazon-rekognition-police-moratorium",
    "provider": {"name": "Example News", "domain": "example-news.com"},
}
ARTICLES_EXAMPLES: dict[str, Any] = {
    "one": {"summary": "One article", "value": ARTICLE_EXAMPLE},
    "batch": {"summary": "A batch", "value": {"articles": [ARTICLE_EXAMPLE, ARTICLE_EXAMPLE_B]}},
}


# --- articles in ---------------------------------------------------------------------------
# The JSON schema states the article rules of `model.articles.article` as closely as JSON Schema
# can, so a client (or a fuzzer) generating from the document sends what the service accepts.
# Limits are documented here and enforced by the model (over a length limit: 413).

_HAS_TEXT = "[A-Za-z0-9]"  # at least one letter or digit: blank text is missing text
_URL = (
    r"^https?://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"(:[1-9][0-9]{0,3})?(/[!-~]*)?$"
)
_ISO_DATE = (
    r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-](0[0-9]|1[0-2]):[0-5][0-9])?)?$"
)
_EPOCH = {"minimum": -2208988800, "maximum": 4102444800}  # 1900 .. 2100
_TEXT_LIMIT = {"maxLength": MAX_OTHER_TEXT_CHARS}


def _url_field(description: str) -> Any:
    return Field(None, description=description, json_schema_extra={"pattern": _URL, **_TEXT_LIMIT})


def _date_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(
        anyOf=[
            {"type": "string", "pattern": _ISO_DATE},
            {"type": "integer", **_EPOCH},
            {"type": "number", **_EPOCH},
            {"type": "null"},
        ],
        description="ISO 8601 date-time, e.g. `2021-08-28T00:01:00Z` (no zone: UTC), or epoch seconds.",
    )


def _topics_schema(schema: dict[str, Any]) -> None:
    label = {"type": "string", "pattern": _HAS_TEXT, **_TEXT_LIMIT}
    schema.clear()
    schema.update(
        anyOf=[{"type": "array", "items": label}, label, {"type": "null"}],
        description="Known topics, a list or one label (kept with the record; not used to classify).",
    )


def _article_schema(schema: dict[str, Any]) -> None:
    # An article needs a title or an excerpt with some text in it.
    schema["anyOf"] = [
        {"required": ["title"], "properties": {"title": {"type": "string", "pattern": _HAS_TEXT}}},
        {"required": ["excerpt"], "properties": {"excerpt": {"type": "string", "pattern": _HAS_TEXT}}},
    ]
    schema["examples"] = [ARTICLE_EXAMPLE]


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    name: str | None = Field(None, description="Outlet name, e.g. `Reuters`.", json_schema_extra=_TEXT_LIMIT)
    domain: str | None = Field(
        None, description="Outlet domain, e.g. `reuters.com`.", json_schema_extra=_TEXT_LIMIT
    )


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str = Field(json_schema_extra=_TEXT_LIMIT)
    width: int | None = None
    height: int | None = None
    isCached: Annotated[bool | None, Field(strict=True)] = None


class ArticleIn(BaseModel):
    """One article in the seed's field names (`model.articles.article.SEED_FIELDS`).

    The types here are the article rules of `model.articles.article` (which then check values and
    name the field when one is wrong), so a seed file and a request are held to the same rules.
    """

    # Numbers in text fields read as their text, as in seed files (`title: 2024`).
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, json_schema_extra=_article_schema)

    title: str | None = Field(
        None,
        description="Headline. An article needs a title or an excerpt.",
        json_schema_extra={"maxLength": MAX_FIELD_CHARS["title"]},
    )
    excerpt: str | None = Field(
        None,
        description="Lead paragraph or summary.",
        json_schema_extra={"maxLength": MAX_FIELD_CHARS["excerpt"]},
    )
    publishedDateTime: str | int | float | None = Field(None, json_schema_extra=_date_schema)
    webUrl: str | None = _url_field("Article URL; its canonical form gives the article id.")
    originalUrl: str | None = _url_field("Publisher's own URL (preferred over webUrl for the id).")
    ampWebUrl: str | None = _url_field("AMP copy URL.")
    cdnAmpWebUrl: str | None = _url_field("AMP cache URL.")
    provider: ProviderIn | Annotated[str, Field(json_schema_extra=_TEXT_LIMIT)] | None = Field(
        None, description="The outlet: `{name, domain}`, or its name."
    )
    topics: list[str] | str | None = Field(None, json_schema_extra=_topics_schema)
    quality: float | None = Field(
        None, ge=0, le=100, description="Known quality score 0–100 (kept with the record)."
    )
    heat: float | None = Field(
        None, description="Known heat score (kept with the record; negative: not measured)."
    )
    published: Annotated[bool | None, Field(strict=True)] = None
    category: str | None = Field(None, json_schema_extra=_TEXT_LIMIT)
    type: str | None = Field(None, json_schema_extra=_TEXT_LIMIT)
    images: list[ImageIn | Annotated[str, Field(json_schema_extra=_TEXT_LIMIT)]] | None = None
    related: list[ArticleIn] | None = Field(
        None, description="Other outlets' coverage of the same subject, each an article record."
    )
    language: str | None = Field(
        None,
        description="The article's language (ISO 639-1, e.g. `de`; a tag like `pt-BR` keeps `pt`). "
        "Detected from the title and excerpt when absent.",
        json_schema_extra={"pattern": LANGUAGE_PATTERN},
    )
    id: str | None = Field(
        None, description="Ignored: the service derives every id from the canonical URL (else from the text)."
    )

    def to_record(self) -> dict[str, Any]:
        """The seed-shaped mapping `model.articles.article.article_from_record` reads (client ids dropped)."""
        return self.model_dump(exclude_none=True, exclude={"id"})


class ArticleBatch(BaseModel):
    """Several articles in one request."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"articles": [ARTICLE_EXAMPLE, ARTICLE_EXAMPLE_B]}]}
    )

    articles: list[ArticleIn] = Field(description="The articles, at most the service's `max_batch`.")
    all_scores: bool = Field(False, description="Classify only: also return every label's probability.")

    @field_validator("articles")
    @classmethod
    def _not_empty(cls, articles: list[ArticleIn]) -> list[ArticleIn]:
        if not articles:
            raise ValueError("empty batch; send at least one article")
        return articles


def _body_kind(value: Any) -> str:
    if isinstance(value, ArticleBatch) or (isinstance(value, dict) and "articles" in value):
        return "batch-of-articles"
    return "one-article"


OneOrManyArticles = Annotated[
    Annotated[ArticleIn, Tag("one-article")] | Annotated[ArticleBatch, Tag("batch-of-articles")],
    Discriminator(_body_kind),
]


def _no_text_number(value: Any) -> Any:
    # JSON has numbers: "5" is text, refused as seeds refuse it; 5.0 is the integer 5.
    if isinstance(value, str | bool):
        raise ValueError(f"expected an integer, got {type(value).__name__} {value!r:.20}")
    return value


def _utc(value: datetime | None, name: str = "time") -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid ISO string whose UTC time is before year 1.
        raise ValueError(f"{name}: expected a time between years 1 and 9999 in UTC") from None


class SimilarRequest(BaseModel):
    """Find known articles covering the same thing: give an article body or a known article's id."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            # Exactly one of the two queries.
            "oneOf": [
                {"required": ["article"], "properties": {"article": {"type": "object"}}},
                {"required": ["id"], "properties": {"id": {"type": "string"}}},
            ],
            "examples": [
                {"article": ARTICLE_EXAMPLE, "k": 5, "exclude_same_provider": True},
                {"id": "3f9a1c2b4d5e6f70", "k": 10, "since": "2021-08-01T00:00:00Z"},
            ],
        },
    )

    article: ArticleIn | None = Field(None, description="The query article (not stored).")
    id: str | None = Field(None, description="Id of an ingested (or bundle) article to search around.")
    k: Annotated[int, BeforeValidator(_no_text_number)] = Field(
        10, ge=1, description="How many hits at most (up to the service's `max_k`)."
    )
    since: datetime | None = Field(
        None,
        description="Only hits published at or after this time.",
        json_schema_extra={"pattern": _ISO_DATE},
    )
    until: datetime | None = Field(
        None,
        description="Only hits published at or before this time.",
        json_schema_extra={"pattern": _ISO_DATE},
    )
    providers: list[str] | None = Field(None, description="Only hits from these outlets (domain or name).")
    language: str | None = Field(
        None,
        pattern=LANGUAGE_PATTERN,
        description="Only hits in this language (ISO 639-1, e.g. `de`; `pt-BR` reads as `pt`).",
    )
    exclude_same_provider: bool = Field(
        False, strict=True, description="Drop hits from the query article's own outlet."
    )

    @model_validator(mode="after")
    def _one_query(self) -> SimilarRequest:
        if (self.article is None) == (self.id is None):
            raise ValueError("give exactly one of `article` (an article body) or `id` (a known article's id)")
        # A window that ends before it starts is empty, not an error: it finds nothing.
        self.since, self.until = _utc(self.since, "since"), _utc(self.until, "until")
        return self


class CompareRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"a": ARTICLE_EXAMPLE, "b": ARTICLE_EXAMPLE_B}]}
    )

    a: ArticleIn = Field(description="First article.")
    b: ArticleIn = Field(description="Second article.")


# --- results out ---------------------------------------------------------------------------


class TopicOut(BaseModel):
    label: str
    probability: float = Field(description="Calibrated probability that the label applies.")

    @classmethod
    def of(cls, topic: TopicScore) -> TopicOut:
        return cls(label=topic.label, probability=round(float(topic.probability), 6))


class ScoreOut(BaseModel):
    value: float = Field(description="Central prediction.")
    low: float = Field(description="Lower end of the prediction interval.")
    high: float = Field(description="Upper end of the prediction interval.")
    coverage: float = Field(description="Nominal coverage of [low, high], e.g. 0.8.")

    @classmethod
    def of(cls, score: ScorePrediction) -> ScoreOut:
        return cls(value=score.value, low=score.low, high=score.high, coverage=score.coverage)


class ClassificationOut(BaseModel):
    """Topics and scores of one article."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f9a1c2b4d5e6f70",
                    "topics": [{"label": "AI", "probability": 0.91}],
                    "all_topics": None,
                    "scores": {"quality": {"value": 48.2, "low": 31.0, "high": 63.5, "coverage": 0.8}},
                    "model_version": "20261126T031800000000Z-1a2b3c4d",
                }
            ]
        }
    )

    id: str = Field(description="Article id (from the canonical URL).")
    topics: list[TopicOut] = Field(description="Labels above their threshold, most probable first.")
    all_topics: list[TopicOut] | None = Field(
        None, description="Every label's probability; only when `all_scores` was asked for."
    )
    scores: dict[str, ScoreOut] = Field(
        description="Predicted scores with intervals (`quality`, `heat`: only those the bundle has)."
    )
    model_version: str

    @classmethod
    def of(cls, result: Classification, version: str) -> ClassificationOut:
        return cls(
            id=result.article_id,
            topics=[TopicOut.of(t) for t in result.topics],
            all_topics=[TopicOut.of(t) for t in result.all_topics] if result.all_topics is not None else None,
            scores={name: ScoreOut.of(score) for name, score in result.scores.items()},
            model_version=version,
        )


class ClassifyBatchOut(BaseModel):
    model_version: str
    results: list[ClassificationOut] = Field(description="One result per article, in request order.")


class EvidenceOut(BaseModel):
    """The signals behind a verdict."""

    cosine: float = Field(description="Cosine similarity of the embeddings.")
    lexical: float = Field(description="Word overlap of title and excerpt.")
    near_duplicate: float = Field(description="Near-duplicate text signal.")
    time_gap_hours: float | None = Field(description="Hours between publication times (null if unknown).")
    same_provider: bool | None = Field(description="Both from the same outlet (null if unknown).")
    url_match: bool = Field(description="Same canonical URL.")

    @classmethod
    def of(cls, evidence: PairEvidence) -> EvidenceOut:
        return cls(
            cosine=evidence.cosine,
            lexical=evidence.lexical,
            near_duplicate=evidence.near_duplicate,
            time_gap_hours=evidence.time_gap_hours,
            same_provider=evidence.same_provider,
            url_match=evidence.url_match,
        )


class CompareOut(BaseModel):
    score: float = Field(description="How closely the two cover the same thing, 0–1.")
    verdict: Verdict
    evidence: EvidenceOut
    model_version: str

    @classmethod
    def of(cls, comparison: Comparison, version: str) -> CompareOut:
        return cls(
            score=comparison.score,
            verdict=comparison.verdict,
            evidence=EvidenceOut.of(comparison.evidence),
            model_version=version,
        )


class ProviderOut(BaseModel):
    name: str | None = None
    domain: str | None = None


class ArticleSummary(BaseModel):
    """The fields a person needs to recognise an article in a list."""

    id: str
    title: str
    url: str | None = None
    provider: ProviderOut | None = None
    publishedDateTime: str | None = None
    language: str | None = Field(None, description="ISO 639-1 code: the seed's own, else detected.")

    @classmethod
    def of(cls, article: Article) -> ArticleSummary:
        return cls(
            id=article.id,
            title=article.title,
            url=article.url,
            provider=ProviderOut(name=article.provider.name, domain=article.provider.domain)
            if article.provider
            else None,
            publishedDateTime=article.to_record().get("publishedDateTime"),
            language=article.language,
        )


class SimilarHitOut(ArticleSummary):
    score: float = Field(
        description="Graded pair score, 0–1; hits are ranked by the same-story probability behind it."
    )
    verdict: Verdict = Field(description="duplicate, same_story or related.")
    cosine: float
    story_id: str | None = Field(description="The story the hit belongs to.")
    story_note: str | None = Field(
        None, description="For a same_story or duplicate hit outside the query's story: why it is not in it."
    )
    evidence: EvidenceOut | None = None

    @classmethod
    def from_hit(cls, hit: SimilarHit, article: Article) -> SimilarHitOut:
        return cls(
            **ArticleSummary.of(article).model_dump(),
            score=hit.score,
            verdict=hit.verdict,
            cosine=hit.cosine,
            story_id=hit.story_id,
            story_note=hit.story_note,
            evidence=EvidenceOut.of(hit.evidence) if hit.evidence else None,
        )


class SimilarOut(BaseModel):
    query_id: str = Field(description="Id of the query article.")
    model_version: str
    hits: list[SimilarHitOut]


class IngestResultOut(BaseModel):
    id: str = Field(description="Article id (the same for every URL variant of the article).")
    created: bool = Field(description="False when the article was already stored (nothing changed).")
    story_id: str
    duplicate_of: str | None = Field(description="A known article this one duplicates, if any.")
    classification: ClassificationOut


class IngestBatchOut(BaseModel):
    model_version: str
    results: list[IngestResultOut] = Field(description="One result per article, in request order.")


class StoredArticleOut(BaseModel):
    id: str
    article: dict[str, Any] = Field(description="The article record in the seed's field names.")
    story_id: str | None
    duplicate_of: str | None = None
    classification: ClassificationOut | None = Field(description="As computed when the article was ingested.")
    stored: bool = Field(description="True for ingested articles; false for articles of the bundle's corpus.")
    created_at: datetime | None = None


class StoryArticleOut(ArticleSummary):
    created_at: datetime | None = None


class StoryOut(BaseModel):
    id: str = Field(description="The story's id; asked for by the id of a story merged into it, this one's.")
    count: int
    articles: list[StoryArticleOut] = Field(description="Newest publication first.")
    merged_from: list[str] = Field(
        default_factory=list,
        description="Stories merged into this one when a new encoder joined them (their ids still "
        "answer, with this story; their articles keep their stored story id and show this one).",
    )


class ModelOut(BaseModel):
    version: str
    path: str | None
    created: str | None = None
    labels: list[str]
    scores: list[str] = Field(description="Score heads the bundle has (e.g. quality, heat).")
    embedding: dict[str, Any] = Field(
        description="The bundle's encoder: `name` (minilm, e5-multilingual), `model`, `dim`, and "
        "`vectors_id`, which vectors it makes (only vectors of one id are ever compared)."
    )
    metrics: dict[str, Any] = Field(description="Evaluation metrics recorded in the bundle's manifest.")
    indexed_articles: int
    stored_articles: int | None
    warnings: list[str] = Field(
        default_factory=list, description="What the bundle says about itself, e.g. too little training data."
    )
    examples_per_label: dict[str, int] = Field(
        default_factory=dict, description="Labelled training articles per topic label."
    )


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    model_version: str | None
    store: str = Field(description="`ok` or why the store cannot be reached.")
    reasons: list[str] = Field(description="What keeps the service from being ready.")
    progress: dict[str, Any] | None = Field(
        None,
        description="While starting: `phase`, `restored_articles` of `stored_articles`, `seconds` so far.",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Ready, but worth knowing: e.g. the bundle was trained on too little data.",
    )
    reembedding: dict[str, Any] | None = Field(
        None,
        description="A bundle on another encoder waiting for its vectors while the live one serves: "
        "`model_version`, `vectors_id`, `generation`, `phase`, `done` of `total` stored articles, "
        "`to_embed` (missing when it was staged), `seconds`, `articles_per_s`, `estimate_s` (seconds "
        "left), `error`.",
    )
    generations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The store's vector generations: `id`, `vectors_id`, `state` (building, complete, "
        "live, retired), `filled_seq`, `bundle_version`, `rows`, `vector_bytes` (their disk cost).",
    )


class ReloadOut(BaseModel):
    changed: bool = Field(description="False when the newest bundle was already being served, or is pending.")
    previous_version: str | None
    model_version: str = Field(description="The version serving now.")
    restored_articles: int = Field(description="Stored articles re-added to the new model's index.")
    seconds: float
    pending: dict[str, Any] | None = Field(
        None,
        description="Set when the bundle is on another encoder than the stored vectors: it waits while "
        "they are re-embedded in the background (as `reembedding` in /readyz, with `estimate_s`); "
        "the live bundle serves meanwhile and both switch at once when done.",
    )


class GenerationsOut(BaseModel):
    live: int | None = Field(description="The live generation's id.")
    generations: list[dict[str, Any]] = Field(description="As `generations` in /readyz.")
    reembedding: dict[str, Any] | None = Field(None, description="As in /readyz.")


class ProblemOut(BaseModel):
    """One validation problem, for programs (people read `detail`)."""

    loc: list[str | int] = Field(
        description="Where: `body`, `query` or `path`, then field names and indexes."
    )
    msg: str
    type: str


class ErrorOut(BaseModel):
    """The one error shape of every 4xx (and 503) answer."""

    detail: str = Field(description="What was wrong, e.g. `excerpt: expected a string, got 42`.")
    errors: list[ProblemOut] | None = Field(None, description="Validation errors only: each problem.")
