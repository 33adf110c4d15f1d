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
from model.store.merges import RESOLVED_STORY

# An article read back: its story the surviving one where it was merged (`model.store.merges`);
# `RAW_COLUMNS` for a database read as is from before story merges.
RAW_COLUMNS = (
    "seq, id, canonical_url, record, embedding, story_id, classification, duplicate_of, "
    "model_version, published_at, created_at, related, labels"
)
COLUMNS = RAW_COLUMNS.replace("story_id", RESOLVED_STORY)


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


# --- vector generations (migration 0007) ---------------------------------------------------------

# The articles' columns but the vector: a generation's relation takes its vector from elsewhere.
_PLAIN_COLUMNS = (
    "seq, id, canonical_url, record, story_id, classification, duplicate_of, model_version, "
    "published_at, provider, created_at, related, labels, uncertainty, language, xact"
)


def articles_of(generation: int, *, with_vectors: bool) -> str:
    """The articles as ``generation`` sees them, aliased ``articles`` so a query reads as on the
    table, its ``embedding`` that generation's vector: only rows that have one (``with_vectors``:
    search, story candidates), else every row (NULL where it has none). PostgreSQL pulls such a
    subquery up into the query, so the table's indexes (and the generation's HNSW index) serve it.
    ``generation`` comes from our own table, so it is written into the SQL as a literal."""
    if generation == 0:
        return (
            "(SELECT * FROM articles WHERE embedding IS NOT NULL) AS articles" if with_vectors else "articles"
        )
    columns = ", ".join(f"a.{column.strip()}" for column in _PLAIN_COLUMNS.split(","))
    join = "JOIN" if with_vectors else "LEFT JOIN"
    return (
        f"(SELECT {columns}, v.embedding FROM articles AS a {join} generation_vectors AS v "
        f"ON v.generation = {int(generation)} AND v.article_id = a.id) AS articles"
    )


def insert_into(generation: int) -> str:
    """`INSERT` for a row whose vector belongs to ``generation``: generation 0 keeps it in the row;
    another's goes to ``generation_vectors`` in the same statement (the row's own column NULL).
    Parameters: `insert_params`. Returns the id when the row is new."""
    if generation == 0:
        return INSERT
    return (
        f"WITH stored AS ({INSERT}) INSERT INTO generation_vectors (generation, article_id, embedding) "
        f"SELECT {int(generation)}, id, %b FROM stored RETURNING article_id"
    )


def insert_params(article: StoredArticle, generation: int) -> list[Any]:
    params = write_params(article)
    if generation == 0:
        return params
    vector = params[3]
    params[3] = None  # generation 0 has no vector for it: a rollback to it embeds the row first
    return [*params, vector]
