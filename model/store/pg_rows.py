"""What the PostgreSQL modules share: the article columns read back and their `StoredArticle`,
a one-value query, and a driver error as one line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

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
