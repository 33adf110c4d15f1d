"""Article records: the typed form of one seed entry or one API request body.

`article_from_record` is the single place where a raw mapping (YAML front matter, a JSON line, a
request body) becomes an `Article`. It checks every known field and raises `InvalidArticleError`
naming the field, what was expected and what it got; unknown fields are kept in ``extra``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from typing import Any

from model.articles.language import detect_language, normalise_language
from model.articles.urls import article_id, canonical_url
from model.errors import FieldTooLongError, InvalidArticleError

URL_FIELDS = ("webUrl", "originalUrl", "ampWebUrl", "cdnAmpWebUrl")
# Which URL names the article: the publisher's own page first, AMP copies last.
_URL_PREFERENCE = ("originalUrl", "webUrl", "ampWebUrl", "cdnAmpWebUrl")


@dataclass(frozen=True, slots=True)
class Provider:
    """The outlet that published an article."""

    name: str | None = None
    domain: str | None = None

    @property
    def key(self) -> str | None:
        """A normalised identity for grouping: the domain when known, else the name."""
        value = self.domain or self.name
        if not value:
            return None
        value = value.strip().lower()
        return value[4:] if value.startswith("www.") else value


@dataclass(frozen=True, slots=True)
class Image:
    url: str
    width: int | None = None
    height: int | None = None
    is_cached: bool | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """One news article. Every field but ``id`` may be missing in real data."""

    id: str
    title: str = ""
    excerpt: str = ""
    published_at: datetime | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    provider: Provider | None = None
    topics: tuple[str, ...] = ()
    quality: float | None = None
    heat: float | None = None
    published: bool | None = None
    category: str | None = None
    type: str | None = None
    images: tuple[Image, ...] = ()
    related_ids: tuple[str, ...] = ()
    source: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # ISO 639-1, lower case: the seed's own field, else detected from the text; None when the text
    # has no letters to tell it by.
    language: str | None = None

    @property
    def text(self) -> str:
        """What the encoder reads: title and excerpt as one passage."""
        title, excerpt = self.title.strip(), self.excerpt.strip()
        if not excerpt:
            return title
        if not title:
            return excerpt
        sep = " " if title[-1] in ".!?:;" else ". "
        return f"{title}{sep}{excerpt}"

    @property
    def url(self) -> str | None:
        """The best URL for a person to open (the publisher's page before AMP copies)."""
        for name in _URL_PREFERENCE:
            if self.urls.get(name):
                return self.urls[name]
        return None

    @property
    def canonical_url(self) -> str | None:
        for name in _URL_PREFERENCE:
            if self.urls.get(name):
                canonical = canonical_url(self.urls[name])
                if canonical:
                    return canonical
        return None

    @property
    def provider_key(self) -> str | None:
        return self.provider.key if self.provider else None

    def merge(self, other: Article) -> Article:
        """Combine two records of the same article: known values win over missing ones."""
        if other.id != self.id:
            raise ValueError(f"cannot merge article {other.id} into {self.id}")

        def pick(a: Any, b: Any) -> Any:
            return a if a not in (None, "", (), {}) else b

        return replace(
            self,
            title=pick(self.title, other.title),
            excerpt=self.excerpt if len(self.excerpt) >= len(other.excerpt) else other.excerpt,
            published_at=pick(self.published_at, other.published_at),
            urls={**other.urls, **self.urls},
            provider=pick(self.provider, other.provider),
            topics=tuple(dict.fromkeys((*self.topics, *other.topics))),
            quality=pick(self.quality, other.quality),
            heat=pick(self.heat, other.heat),
            published=pick(self.published, other.published),
            category=pick(self.category, other.category),
            type=pick(self.type, other.type),
            images=pick(self.images, other.images),
            related_ids=tuple(dict.fromkeys((*self.related_ids, *other.related_ids))),
            source=pick(self.source, other.source),
            language=pick(self.language, other.language),
            extra={**other.extra, **self.extra},
        )

    def to_record(self) -> dict[str, Any]:
        """The article in the seed's field names (JSON-serialisable), the inverse of parsing."""
        record: dict[str, Any] = {"id": self.id, "title": self.title}
        if self.excerpt:
            record["excerpt"] = self.excerpt
        if self.published_at:
            record["publishedDateTime"] = self.published_at.isoformat().replace("+00:00", "Z")
        record.update({name: self.urls[name] for name in URL_FIELDS if self.urls.get(name)})
        if self.provider:
            record["provider"] = {"name": self.provider.name, "domain": self.provider.domain}
        if self.topics:
            record["topics"] = list(self.topics)
        for name in ("quality", "heat", "published", "category", "type", "language"):
            value = getattr(self, name)
            if value is not None:
                record[name] = value
        if self.images:
            record["images"] = [
                {"url": i.url, "width": i.width, "height": i.height, "isCached": i.is_cached}
                for i in self.images
            ]
        # Unknown fields travel with the record (a seed's or a client's own data is never dropped).
        record.update({key: value for key, value in self.extra.items() if key not in record})
        return record


# --- parsing -------------------------------------------------------------------------------

# The seed's field names: the one list the parser below, `Article.to_record` and the HTTP schema
# (`service.schemas.ArticleIn`, held to it by a test) follow. Anything else is kept in `extra`.
SEED_FIELDS: tuple[str, ...] = (
    "id",
    "title",
    "excerpt",
    "publishedDateTime",
    *URL_FIELDS,
    "provider",
    "topics",
    "quality",
    "heat",
    "published",
    "category",
    "type",
    "images",
    "related",
    "language",
)
_KNOWN_FIELDS = frozenset(SEED_FIELDS)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# Longest text kept per field. An excerpt is a lead, not a body: the encoder reads 256 tokens
# (about 1,000 characters) of title + excerpt, so more only costs memory and time (a 52 MB
# excerpt once took 7.6 GB to tokenise). Longer input is refused, never silently cut.
MAX_FIELD_CHARS: dict[str, int] = {"title": 1_000, "excerpt": 20_000}
MAX_OTHER_TEXT_CHARS = 4_000  # URLs, outlet names, categories, one topic label


def _check_text(name: str, value: str) -> str:
    limit = MAX_FIELD_CHARS.get(name, MAX_OTHER_TEXT_CHARS)
    if len(value) > limit:
        raise FieldTooLongError(name, f"expected at most {limit:,} characters, got {len(value):,}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        # A lone surrogate (JSON "\ud800") is not text any encoder or database can take.
        raise InvalidArticleError(
            name, f"expected valid Unicode text, got an unpaired surrogate at character {error.start}"
        ) from None
    return value


MAX_EXTRA_CHARS = 20_000  # all unknown fields of one article, as JSON


def _extra_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Fields the seed format does not know, kept as they came (JSON-able, bounded, valid text)."""
    extra = {str(key): value for key, value in record.items() if key not in _KNOWN_FIELDS}
    if not extra:
        return extra
    try:
        encoded = json.dumps(extra, ensure_ascii=False, default=str)
        encoded.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArticleError(
            next(iter(extra)), "expected valid Unicode text in unknown fields, got an unpaired surrogate"
        ) from None
    except (TypeError, ValueError) as error:
        raise InvalidArticleError(next(iter(extra)), f"expected JSON-like values ({error})") from None
    if len(encoded) > MAX_EXTRA_CHARS:
        raise InvalidArticleError(
            ", ".join(sorted(extra))[:80],
            f"expected unknown fields of at most {MAX_EXTRA_CHARS:,} characters in all, got {len(encoded):,}",
        )
    return extra


def _optional_str(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    # A number in a text field is read as its text (YAML reads `title: 2024` as a number).
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidArticleError(name, f"expected a string, got {_type_name(value)} {value!r:.60}")
    return _check_text(name, str(value))


def _optional_number(
    record: Mapping[str, Any], name: str, low: float | None = None, high: float | None = None
) -> float | None:
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidArticleError(name, f"expected a number, got a boolean ({value})")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidArticleError(name, f"expected a number, got the text {value!r:.60}") from None
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise InvalidArticleError(name, f"expected a finite number, got {_type_name(value)} {value!r:.60}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArticleError(name, f"expected a number from {low:g} to {high:g}, got {value:g}")
    return float(value)


def parse_datetime(value: Any, name: str = "publishedDateTime") -> datetime | None:
    """A datetime in UTC from a YAML timestamp, a date, an ISO string or epoch seconds.

    Values without a zone are taken as UTC (the seeds' convention).
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidArticleError(
                name, f"expected epoch seconds between years 1 and 9999, got {value!r:.40}"
            ) from None
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidArticleError(
                name, f"expected an ISO 8601 date-time like 2021-08-28T00:01:00Z, got {value!r:.60}"
            ) from None
    else:
        raise InvalidArticleError(name, f"expected a date-time, got {_type_name(value)}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is a valid ISO string whose UTC time is before year 1.
        raise InvalidArticleError(
            name, f"expected a date-time between years 1 and 9999 in UTC, got {value!s:.60}"
        ) from None


def _parse_provider(value: Any) -> Provider | None:
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return Provider(name=str(value).strip() or None)
    if not isinstance(value, Mapping):
        raise InvalidArticleError(
            "provider", f"expected a mapping with name and domain, got {_type_name(value)}"
        )
    name = _optional_str(value, "name")
    domain = _optional_str(value, "domain")
    if name is None and domain is None:
        return None
    return Provider(name=name, domain=domain.lower() if domain else None)


def _parse_topics(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise InvalidArticleError("topics", f"expected a list of strings, got {_type_name(value)}")
    topics = []
    for position, topic in enumerate(value):
        if isinstance(topic, (int, float)) and not isinstance(topic, bool):
            topic = str(topic)  # a number in a text position reads as its text, as everywhere
        if not isinstance(topic, str) or not topic.strip():
            raise InvalidArticleError(
                f"topics[{position}]", f"expected a non-empty string, got {_type_name(topic)} {topic!r:.40}"
            )
        topics.append(_check_text(f"topics[{position}]", topic.strip()))
    return tuple(dict.fromkeys(topics))


def _parse_images(value: Any) -> tuple[Image, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidArticleError("images", f"expected a list of mappings, got {_type_name(value)}")
    images = []
    for position, item in enumerate(value):
        where = f"images[{position}]"
        if isinstance(item, str):
            images.append(Image(url=_check_text(where, item)))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            raise InvalidArticleError(where, "expected a mapping with a url string")
        try:
            width = _optional_number(item, "width")
            height = _optional_number(item, "height")
        except InvalidArticleError as error:
            raise InvalidArticleError(f"{where}.{error.field}", error.reason) from None
        cached = item.get("isCached")
        if cached is not None and not isinstance(cached, bool):
            raise InvalidArticleError(f"{where}.isCached", f"expected true or false, got {cached!r:.40}")
        images.append(
            Image(
                url=_check_text(f"{where}.url", item["url"]),
                width=int(width) if width is not None else None,
                height=int(height) if height is not None else None,
                is_cached=bool(cached) if cached is not None else None,
            )
        )
    return tuple(images)


def record_provider_key(record: Mapping[str, Any]) -> str | None:
    """`Article.provider_key` of a stored record without parsing the whole article (restores and
    the PostgreSQL rows index it; stored records hold a provider mapping, the article rules see to it)."""
    provider = record.get("provider")
    if not isinstance(provider, Mapping):
        return None
    return Provider(name=provider.get("name"), domain=provider.get("domain")).key


def article_from_record(
    record: Mapping[str, Any], *, source: str | None = None, require_text: bool = True
) -> Article:
    """Build an `Article` from a mapping in the seed's field names.

    ``related`` is not followed here (see `model.articles.seeds`), only checked to be a list.
    ``heat`` below zero is the feeds' "not measured" marker and reads as missing.
    ``language`` is the record's own when given, else detected from title + excerpt.
    """
    if not isinstance(record, Mapping):
        raise InvalidArticleError("article", f"expected a mapping of fields, got {_type_name(record)}")
    title = (_optional_str(record, "title") or "").strip()
    excerpt = (_optional_str(record, "excerpt") or "").strip()
    if require_text and not title and not excerpt:
        raise InvalidArticleError("title", "missing: an article needs a title or an excerpt")
    urls = {name: url.strip() for name in URL_FIELDS if (url := _optional_str(record, name))}
    for name, url in urls.items():
        if canonical_url(url) is None:
            raise InvalidArticleError(name, f"expected an absolute http(s) URL, got {url!r:.80}")
    published_at = parse_datetime(record.get("publishedDateTime"))
    provider = _parse_provider(record.get("provider"))
    heat = _optional_number(record, "heat")
    published = record.get("published")
    if published is not None and not isinstance(published, bool):
        raise InvalidArticleError(
            "published", f"expected true or false, got {_type_name(published)} {published!r:.40}"
        )
    related = record.get("related")
    if related is not None and not isinstance(related, list):
        raise InvalidArticleError(
            "related", f"expected a list of article mappings, got {_type_name(related)}"
        )
    language = normalise_language(record.get("language"))
    if language is None:
        language = detect_language(f"{title}\n{excerpt}")
    explicit_id = _optional_str(record, "id")
    preferred_url = next((urls[name] for name in _URL_PREFERENCE if urls.get(name)), None)
    return Article(
        id=explicit_id
        or article_id(
            preferred_url,
            provider=provider.key if provider else None,
            title=title,
            published_at=published_at,
            excerpt=excerpt,
        ),
        title=title,
        excerpt=excerpt,
        published_at=published_at,
        urls=urls,
        provider=provider,
        topics=_parse_topics(record.get("topics")),
        quality=_optional_number(record, "quality", 0, 100),
        heat=heat if heat is None or heat >= 0 else None,
        published=published,
        category=_optional_str(record, "category"),
        type=_optional_str(record, "type"),
        images=_parse_images(record.get("images")),
        source=source,
        extra=_extra_fields(record),
        language=language,
    )
