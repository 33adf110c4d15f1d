"""Story merges: where a new encoder joined two stories, recorded and resolved on read.

An article keeps the ``story_id`` it was stored with (no row is renumbered, so editors' links stay
valid). When a vector generation is switched to, the stories its encoder joins are recorded in
``story_merges`` (merged story -> the story it joined, with the generation and the time), and
every read that shows a story id shows the surviving one: ``surviving`` is the end of the chain
(a -> b and later b -> c: a's ``surviving`` is c), kept flat on every write so a read is one
index lookup. Both backends share this SQL (`RESOLVED_STORY`, `story_group`) and `flatten`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

# The story a row shows: the surviving one when its own was merged. ``story_id`` is left unqualified:
# story_merges has no such column, so it names the outer row's, whatever the query calls its table.
RESOLVED_STORY = (
    "COALESCE((SELECT sm.surviving FROM story_merges AS sm WHERE sm.merged_story = story_id), story_id)"
)


def story_group(mark: str, column: str = "story_id", *, pg: bool = False) -> tuple[str, int]:
    """A WHERE condition for the rows (their story in ``column``) of a story given by any of its ids
    (the surviving one or one merged into it), and how many times the caller passes that id for
    ``mark`` (a placeholder, or an expression of the outer query passed no parameter). The ids are
    a list the story index is probed with: ``IN (...)`` on SQLite, ``= ANY(ARRAY(...))`` on
    PostgreSQL (which probes its btree with an array, where an OR or IN of a subquery would scan)."""
    surviving = (
        f"COALESCE((SELECT s1.surviving FROM story_merges AS s1 WHERE s1.merged_story = {mark}), {mark})"
    )
    ids = (
        f"SELECT {surviving} UNION ALL "
        f"SELECT s2.merged_story FROM story_merges AS s2 WHERE s2.surviving = {surviving}"
    )
    return (f"{column} = ANY(ARRAY({ids}))" if pg else f"{column} IN ({ids})"), 4


@dataclass(frozen=True, slots=True)
class StoryMerge:
    """One recorded merge: ``merged`` joined ``into`` (which may itself have been merged later:
    ``surviving`` is where the chain ends) when vector generation ``generation`` went live."""

    merged: str
    into: str
    surviving: str
    generation: int
    merged_at: datetime | None = None


def resolve(edges: Mapping[str, str], story_id: str) -> str:
    """The end of ``story_id``'s merge chain (itself when it was never merged; a cycle, which the
    recording never makes, stops where it closes)."""
    seen = {story_id}
    while (into := edges.get(story_id)) is not None and into not in seen:
        seen.add(into)
        story_id = into
    return story_id


def flatten(edges: Mapping[str, str]) -> dict[str, str]:
    """Each merged story's surviving story, chains followed."""
    return {merged: resolve(edges, merged) for merged in edges}


def new_edges(existing: Mapping[str, str], merges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The merges of ``merges`` worth recording on top of ``existing``: each from a story's
    surviving id (an id merged before is resolved first), never a story into itself, never one
    already merged away."""
    edges = dict(existing)
    added: dict[str, str] = {}
    for merged, into in merges:
        merged, into = resolve(edges, merged), resolve(edges, into)
        if merged != into:
            edges[merged] = added[merged] = into
    return added
