"""Corpus deduplication: groups of duplicate articles and story clusters, in near-linear time.

Duplicates are found by blocking, never by comparing all pairs:

1. equal canonical URL (AMP, AMP-cache and tracking variants reduce to one form);
2. equal normalised text (title + excerpt), or equal long excerpt (wire copy re-posted under a
   new headline keeps its body);
3. near-identical text: MinHash LSH proposes candidate pairs, and the same duplicate rule the
   pair scorer applies to one pair (`model.coverage.neardup.near_duplicate_score` ≥ ``threshold``)
   confirms them.

Confirmed pairs are joined into groups as the connected components of their graph. Story
clusters come from `StoryClusterer.fit`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from model.articles.article import Article
from model.coverage.neardup import (
    MIN_DUPLICATE_EXCERPT_CHARS,
    MIN_DUPLICATE_TEXT_CHARS,
    NEAR_DUPLICATE_JACCARD,
    MinHasher,
    lsh_candidate_pairs,
    near_duplicate_score,
    text_fingerprint,
)
from model.coverage.pair_scorer import PairScorer
from model.coverage.stories import StoryClusterer
from model.coverage.story_links import cluster_stories
from model.coverage.story_rule import STORY_WINDOW_DAYS

logger = logging.getLogger(__name__)

DuplicateKind = Literal["url", "text", "excerpt", "near_text"]
# Which evidence names a group when several apply: the strongest first.
_KIND_RANK: dict[str, int] = {"url": 0, "text": 1, "excerpt": 2, "near_text": 3}


@dataclass(frozen=True, slots=True)
class DuplicateLink:
    """One confirmed duplicate pair and why."""

    a: str
    b: str
    kind: DuplicateKind
    similarity: float


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Articles that are copies of one another; ``representative`` is the earliest-published one."""

    representative: str
    article_ids: tuple[str, ...]
    kinds: tuple[DuplicateKind, ...]
    min_similarity: float
    links: tuple[DuplicateLink, ...] = ()

    @property
    def size(self) -> int:
        return len(self.article_ids)

    @property
    def kind(self) -> DuplicateKind:
        """The strongest evidence in the group."""
        return min(self.kinds, key=_KIND_RANK.__getitem__)


@dataclass(frozen=True, slots=True)
class StoryCluster:
    story_id: str
    article_ids: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.article_ids)


@dataclass
class DedupReport:
    """Duplicate groups and story clusters of a corpus, with counts and timings."""

    groups: list[DuplicateGroup]
    stories: list[StoryCluster]
    n_articles: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def duplicate_of(self) -> dict[str, str]:
        """Each duplicate (not representative) article id -> its group's representative."""
        return {i: g.representative for g in self.groups for i in g.article_ids if i != g.representative}

    @property
    def n_duplicate_articles(self) -> int:
        return sum(g.size for g in self.groups)

    def story_of(self) -> dict[str, str]:
        return {i: s.story_id for s in self.stories for i in s.article_ids}

    def summary(self) -> dict[str, Any]:
        sizes = [s.size for s in self.stories]
        return {
            "articles": self.n_articles,
            "duplicate_groups": len(self.groups),
            "duplicate_articles": self.n_duplicate_articles,
            "groups_by_kind": {kind: sum(1 for g in self.groups if g.kind == kind) for kind in _KIND_RANK},
            "stories": len(self.stories),
            "multi_article_stories": sum(1 for s in sizes if s > 1),
            "largest_story": max(sizes, default=0),
            "seconds": {name: round(value, 3) for name, value in self.seconds.items()},
        }

    def records(self) -> Iterator[dict[str, Any]]:
        """JSON-ready records: a summary, then one per duplicate group, then one per multi-article story."""
        yield {"type": "summary", **self.summary()}
        for group in self.groups:
            record = asdict(group)
            record["links"] = [asdict(link) for link in group.links]
            yield {"type": "duplicate_group", "kind": group.kind, **record}
        for story in self.stories:
            if story.size > 1:
                yield {"type": "story", "story_id": story.story_id, "article_ids": list(story.article_ids)}

    def to_jsonl(self, path: str | Path) -> None:
        with Path(path).open("w", encoding="utf-8") as handle:
            for record in self.records():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _exact_key_links(
    keys: Sequence[str | None], kind: DuplicateKind
) -> list[tuple[int, int, DuplicateKind, float]]:
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key:
            buckets[key].append(i)
    # Chain each bucket to its first member: connected as a graph, linear in bucket size.
    return [(m[0], other, kind, 1.0) for m in buckets.values() if len(m) > 1 for other in m[1:]]


def dedup_corpus(
    articles: Sequence[Article],
    vectors: npt.NDArray[np.floating] | None = None,
    *,
    threshold: float = NEAR_DUPLICATE_JACCARD,
    min_chars: int = MIN_DUPLICATE_TEXT_CHARS,
    min_excerpt_chars: int = MIN_DUPLICATE_EXCERPT_CHARS,
    num_perm: int = 64,
    bands: int = 16,
    stories: bool = True,
    clusterer: StoryClusterer | None = None,
    keep_links: bool = True,
    scorer: PairScorer | None = None,
    story_window_days: float = STORY_WINDOW_DAYS,
) -> DedupReport:
    """Find duplicate groups (URL, identical and near-identical text) and story clusters.

    Parameters
    ----------
    articles : the corpus.
    vectors : unit embeddings in ``articles`` order; needed only for story clusters.
    threshold : exact character-shingle Jaccard that confirms an LSH candidate as a near duplicate.
    min_chars : texts shorter than this (normalised) never count as text duplicates: a bare
        headline like "Markets" says nothing about two articles being copies.
    min_excerpt_chars : an equal excerpt counts as a duplicate only from this length (50: the
        shortest identical Reuters bodies, 57 chars, are dividend notices re-sent under new headlines).
    num_perm, bands : MinHash signature length and LSH bands (see `lsh_candidate_pairs`).
    stories : cluster stories too (needs ``vectors``).
    clusterer : the clusterer to fill (default: a new `StoryClusterer`).
    scorer : when given, stories follow its verdicts (`model.coverage.story_links.cluster_stories`,
        neighbours within ``story_window_days``); else the clusterer's centroid rule.
    keep_links : keep the confirmed pairs inside each group (for evidence; costs memory).
    """
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    n = len(articles)
    texts = [a.text for a in articles]
    long_enough = [len(t) >= min_chars for t in texts]
    links: list[tuple[int, int, DuplicateKind, float]] = []
    links += _exact_key_links([a.canonical_url for a in articles], "url")
    links += _exact_key_links(
        [text_fingerprint(t) if ok else None for t, ok in zip(texts, long_enough, strict=True)], "text"
    )
    links += _exact_key_links(
        [text_fingerprint(a.excerpt) if len(a.excerpt) >= min_excerpt_chars else None for a in articles],
        "excerpt",
    )
    seconds["exact"] = time.perf_counter() - started

    step = time.perf_counter()
    hasher = MinHasher(num_perm=num_perm)
    candidates_idx = [i for i in range(n) if long_enough[i]]
    signatures = hasher.signatures([texts[i] for i in candidates_idx])
    seconds["minhash"] = time.perf_counter() - step
    step = time.perf_counter()
    candidate_pairs = lsh_candidate_pairs(signatures, bands=bands)
    seconds["lsh"] = time.perf_counter() - step
    step = time.perf_counter()
    already = {(min(a, b), max(a, b)) for a, b, _, _ in links}
    verified = 0
    for x, y in candidate_pairs:
        a, b = candidates_idx[x], candidates_idx[y]
        key = (min(a, b), max(a, b))
        if key in already:
            continue
        verified += 1
        similarity = near_duplicate_score(texts[a], texts[b], articles[a].excerpt, articles[b].excerpt)
        if similarity >= threshold:
            links.append((key[0], key[1], "near_text", similarity))
    seconds["verify"] = time.perf_counter() - step
    logger.info(
        "dedup: %d articles, %d LSH candidate pairs (%d verified), %d duplicate links",
        n,
        len(candidate_pairs),
        verified,
        len(links),
    )

    groups = _build_groups(articles, links, keep_links)
    story_clusters: list[StoryCluster] = []
    if stories:
        if vectors is None:
            raise ValueError("story clusters need vectors; pass vectors=... or stories=False")
        step = time.perf_counter()
        clusterer = clusterer or StoryClusterer()
        matrix = np.asarray(vectors, dtype=np.float32)
        if scorer is not None:
            assigned = cluster_stories(articles, matrix, scorer, window_days=story_window_days)
            for article, vector, story in zip(articles, matrix, assigned, strict=True):
                clusterer.restore(article, vector, story)
        else:
            assigned = clusterer.fit(articles, matrix)
        members: dict[str, list[str]] = defaultdict(list)
        for article, story in zip(articles, assigned, strict=True):
            members[story].append(article.id)
        story_clusters = [StoryCluster(story, tuple(ids)) for story, ids in members.items()]
        seconds["stories"] = time.perf_counter() - step
    seconds["total"] = time.perf_counter() - started
    return DedupReport(groups=groups, stories=story_clusters, n_articles=n, seconds=seconds)


def _build_groups(
    articles: Sequence[Article], links: list[tuple[int, int, DuplicateKind, float]], keep_links: bool
) -> list[DuplicateGroup]:
    n = len(articles)
    if not links:
        return []
    rows = np.array([a for a, _, _, _ in links])
    cols = np.array([b for _, b, _, _ in links])
    graph = coo_matrix((np.ones(len(links), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    by_root: dict[int, list[tuple[int, int, DuplicateKind, float]]] = defaultdict(list)
    for link in links:
        by_root[int(component[link[0]])].append(link)
    groups = []
    for group_links in by_root.values():
        members = sorted({i for a, b, _, _ in group_links for i in (a, b)})

        def order(i: int) -> tuple[bool, float, str]:
            published = articles[i].published_at
            return (published is None, published.timestamp() if published else 0.0, articles[i].id)

        members.sort(key=order)
        kinds = tuple(sorted({kind for _, _, kind, _ in group_links}, key=_KIND_RANK.__getitem__))
        groups.append(
            DuplicateGroup(
                representative=articles[members[0]].id,
                article_ids=tuple(articles[i].id for i in members),
                kinds=kinds,
                min_similarity=min(sim for _, _, _, sim in group_links),
                links=tuple(
                    DuplicateLink(articles[a].id, articles[b].id, kind, round(sim, 4))
                    for a, b, kind, sim in group_links
                )
                if keep_links
                else (),
            )
        )
    groups.sort(key=lambda g: (-g.size, g.representative))
    return groups
