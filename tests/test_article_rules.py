"""One set of rules for what an article is: a seed record and an API request agree on every case."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from model.articles.article import SEED_FIELDS, article_from_record
from model.errors import InvalidArticleError
from service.schemas import ArticleIn

CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("plain", {"title": "Fed raises rates", "excerpt": "A quarter point."}, True),
    ("numeric title (YAML `title: 2024`)", {"title": 2024}, True),
    ("boolean title", {"title": True}, False),
    ("no text", {"webUrl": "https://example.com/a"}, False),
    ("one topic as a string", {"title": "x", "topics": "Business"}, True),
    ("topics list", {"title": "x", "topics": ["Business", "AI"]}, True),
    ("numeric topic", {"title": "x", "topics": [2024]}, True),
    ("topic of the wrong type", {"title": "x", "topics": [{"label": "AI"}]}, False),
    ("empty topic", {"title": "x", "topics": [" "]}, False),
    ("published as text", {"title": "x", "published": "yes"}, False),
    ("published as bool", {"title": "x", "published": True}, True),
    ("quality out of range", {"title": "x", "quality": 140}, False),
    ("quality as numeric text", {"title": "x", "quality": "55"}, True),
    ("quality as words", {"title": "x", "quality": "good"}, False),
    ("provider as a name", {"title": "x", "provider": "Reuters"}, True),
    ("provider mapping", {"title": "x", "provider": {"name": "Reuters", "domain": "reuters.com"}}, True),
    ("provider of the wrong type", {"title": "x", "provider": ["Reuters"]}, False),
    ("relative URL", {"title": "x", "webUrl": "/news/a"}, False),
    ("date as ISO text", {"title": "x", "publishedDateTime": "2024-03-09T15:00:00Z"}, True),
    ("date as epoch seconds", {"title": "x", "publishedDateTime": 1709996400}, True),
    ("date as words", {"title": "x", "publishedDateTime": "yesterday"}, False),
    ("image mapping", {"title": "x", "images": [{"url": "https://e.com/i.jpg", "width": 640}]}, True),
    (
        "image isCached as text",
        {"title": "x", "images": [{"url": "https://e.com/i.jpg", "isCached": "no"}]},
        False,
    ),
    ("related list", {"title": "x", "related": [{"title": "y"}]}, True),
    ("related of the wrong type", {"title": "x", "related": "y"}, False),
]


def _seed_accepts(record: dict[str, Any]) -> bool:
    try:
        article_from_record(record)
    except InvalidArticleError:
        return False
    return True


def _api_accepts(record: dict[str, Any]) -> bool:
    # What the service does: the schema first, then the same model rules on what it kept.
    try:
        article_from_record(ArticleIn.model_validate(record).to_record())
    except (ValidationError, InvalidArticleError):
        return False
    return True


@pytest.mark.parametrize(("record", "valid"), [(r, v) for _, r, v in CASES], ids=[n for n, _, _ in CASES])
def test_seed_reader_and_api_agree(record, valid):
    assert _seed_accepts(record) is valid
    assert _api_accepts(record) is valid


def test_api_schema_declares_exactly_the_seed_fields():
    assert set(ArticleIn.model_fields) == set(SEED_FIELDS)
