"""The editors' list filters (`ArticleQuery`) as one SQL WHERE clause, for either backend.

Both stores keep the same columns; only the spelling differs (placeholders, JSON paths, the
substring function, how a label list is searched), so each backend passes its `Dialect`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from model.store.base import ArticleQuery
from model.store.merges import story_group


@dataclass(frozen=True, slots=True)
class Dialect:
    """How a backend spells what the filters need."""

    mark: str  # a parameter placeholder
    has_label: str  # true when the row's effective labels hold the one parameter
    json_text: Callable[[tuple[str, ...]], str]  # the record's text at a JSON path
    find: str  # substring search: find(haystack, needle) > 0 when found
    moment: Callable[[datetime], Any]  # a datetime as the driver takes it
    pg: bool = False  # PostgreSQL (`merges.story_group` probes its index with an array)


def _sqlite_json(path: tuple[str, ...]) -> str:
    return f"json_extract(record, '$.{'.'.join(path)}')"


def _pg_json(path: tuple[str, ...]) -> str:
    return "record" + "".join(f"->'{key}'" for key in path[:-1]) + f"->>'{path[-1]}'"


SQLITE = Dialect(
    mark="?",
    has_label="EXISTS (SELECT 1 FROM json_each(articles.labels) AS l WHERE l.value = ?)",
    json_text=_sqlite_json,
    find="instr",
    moment=lambda value: value.astimezone(UTC).isoformat(),  # stored as ISO text in UTC
)
POSTGRES = Dialect(
    mark="%s",
    has_label="labels @> ARRAY[%s]::text[]",
    json_text=_pg_json,
    find="strpos",
    moment=lambda value: value,
    pg=True,
)


def article_filters(query: ArticleQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """``WHERE ...`` (with a trailing space; empty when nothing filters) and its parameters."""
    mark, text = dialect.mark, dialect.json_text
    where: list[str] = []
    params: list[Any] = []
    if query.topic is not None:
        where.append(dialect.has_label)
        params.append(query.topic)
    if query.provider is not None:
        domain, name = text(("provider", "domain")), text(("provider", "name"))
        where.append(f"(lower({domain}) = lower({mark}) OR lower({name}) = lower({mark}))")
        params += [query.provider, query.provider]
    if query.story_id is not None:
        group, times = story_group(mark, pg=dialect.pg)  # a merged story's id lists the story it joined
        where.append(group)
        params += [query.story_id] * times
    if query.since is not None:
        where.append(f"published_at >= {mark}")
        params.append(dialect.moment(query.since))
    if query.until is not None:
        where.append(f"published_at <= {mark}")
        params.append(dialect.moment(query.until))
    if query.language is not None:
        where.append(f"language = {mark}")
        params.append(query.language)
    if query.q:
        found = [
            f"{dialect.find}(lower(coalesce({text((field,))}, '')), lower({mark})) > 0"
            for field in ("title", "excerpt")
        ]
        where.append(f"({' OR '.join(found)})")
        params += [query.q, query.q]
    if query.before_seq is not None:
        where.append(f"seq < {mark}")
        params.append(query.before_seq)
    return (f"WHERE {' AND '.join(where)} " if where else ""), params
