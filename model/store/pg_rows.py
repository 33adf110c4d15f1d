"""What the PostgreSQL modules share: the article columns written and read back, a `StoredArticle`
as the row's parameters and back, a one-value query, and a driver error as one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from model.articles.article import record_provider_key
from model.store.base import StoredArticle

COLUMNS = (
    "seq, id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
    "model_version, published_at, created_at, related, labels"
)


def article_row(row: Sequence[Any]) -> StoredArticle:
    seq, id_, url, record, vector, story, classification, dup, version, published, created = row[:11]
    related, labels = row[11:13]
    return StoredArticle(
        id=id_,
        record=record,
        embedding=vector,
        story_id=story,
        classification=classification,
        created_at=created,
        canonical_url=url,
        published_at=published,
        duplicate_of=dup,
        model_version=version,
        seq=seq,
        related_ids=tuple(related or ()),
        labels=tuple(labels) if labels is not None else None,
    )


def scalar(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


WRITE_COLUMNS = (
    "id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
    "model_version, published_at, provider, created_at, related, labels, uncertainty, language"
)
WRITE_TYPES = ["text", "text", "jsonb", "vector", "text", "jsonb", "text", "text", "timestamptz",
                "text", "timestamptz", "jsonb", "text[]", "float4", "text"]  # fmt: skip
VALUES = "%s, %s, %s, %b, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
INSERT = f"INSERT INTO articles ({WRITE_COLUMNS}) VALUES ({VALUES}) ON CONFLICT DO NOTHING RETURNING id"


def write_params(article: StoredArticle, *, copy: bool = False) -> list[Any]:
    # COPY with set_types takes plain dicts for jsonb; a parametrised INSERT needs Jsonb wrappers.
    record = article.record if copy else Jsonb(article.record)
    classification = article.classification if copy else Jsonb(article.classification)
    related = list(article.related_ids) if article.related_ids else None
    return [
        article.id,
        article.canonical_url,
        record,
        np.asarray(article.embedding, dtype=np.float32),
        article.story_id,
        classification,
        article.duplicate_of,
        article.model_version,
        article.published_at,
        record_provider_key(article.record),
        article.created_at,
        related if copy or related is None else Jsonb(related),
        article.effective_labels,
        article.uncertainty,
        article.record.get("language"),
    ]
