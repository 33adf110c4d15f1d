"""The one duplicate-and-story decision, whatever keeps the articles.

Every path that links a new article decides here: `NewsModel.add` (in memory), the PostgreSQL
ingest (the store fetches the candidates inside its transaction and calls back) and batch
clustering (`model.coverage.story_links.cluster_stories`: training and ``dedup``). The rule:

1. **A copy is a duplicate at any age.** Among the article's ``DUPLICATE_CANDIDATES`` nearest
   known articles by cosine, with no time limit, and its story candidates (below), the best-scoring
   one the pair scorer calls ``duplicate`` (the same write-up: `model.coverage.neardup`) is
   ``duplicate_of``, and the article joins that copy's story: a re-post belongs where its original is.
2. **Joining a story needs the time window.** Otherwise the article's ``STORY_CANDIDATES`` nearest
   known articles published within ``window_days`` of it are grouped by story, and the story whose
   members score the highest *mean* same-story score, at or above the scorer's cut, is joined
   (mean-link: one close member is not enough when the rest of the story disagrees, which stops
   single-link chaining). The window is around the *article*, so a storyline that runs for weeks
   keeps collecting follow-ups published near its latest members.
3. Else the article founds a new story, named by `new_story_id`.

Chosen on the shared story sets (`benchmarks.stories`, ``docs/stories.md``): with duplicates taken
from the window only, a copy re-posted after the window was neither linked nor put in its
original's story; taking them from the nearest neighbours at any age fixes both and changes
nothing else on those sets.

Callers hand over *supersets* of the candidates (e.g. the database's and the bundle's corpus
together); `link_story` keeps the nearest of each kind itself, so the backends decide the same from
the same articles. Nothing here keeps state: every replica that sees the same candidates decides
the same.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.pair_scorer import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.results import Comparison, SearchFilters

# How far (either side of an article) its story neighbours may be published. Real storylines run
# for weeks: on storychains a 14-day window split a chain whose first two articles are 27 days
# apart (B-cubed F1 0.922 -> 0.930 at 30 days; benchmarks/stories.py), at no cost in speed.
STORY_WINDOW_DAYS = 30.0
# Nearest neighbours inside the window that the story choice sees.
STORY_CANDIDATES = 20
# Nearest neighbours at any age checked for a copy (copies are the nearest of all by cosine).
DUPLICATE_CANDIDATES = 5


class StoryLink(NamedTuple):
    """What the rule decided for one article."""

    story_id: str
    duplicate_of: str | None


@dataclass(frozen=True, slots=True)
class Neighbour:
    """One scored candidate: its id, its story, the pair scorer's comparison with the article, and
    whether it lies inside the story window (only those can be joined through same-story scores)."""

    article_id: str
    story_id: str | None
    comparison: Comparison
    in_window: bool


def new_story_id(article: Article) -> str:
    """The id of the story ``article`` founds: derived from its id, so it never changes."""
    return "s_" + hashlib.sha256(article.id.encode("utf-8")).hexdigest()[:16]


def decide(scorer: PairScorer, neighbours: Iterable[Neighbour]) -> tuple[str | None, str | None]:
    """(story to join, or None to found one; duplicate_of) from already scored neighbours."""
    neighbours = list(neighbours)
    copies = [n for n in neighbours if n.comparison.verdict == "duplicate"]
    duplicate = max(copies, key=lambda n: (n.comparison.same_story_probability, n.article_id), default=None)
    if duplicate is not None and duplicate.story_id is not None:
        # A copy belongs where its original is, whatever other stories score on average.
        return duplicate.story_id, duplicate.article_id
    scores: dict[str, list[float]] = defaultdict(list)
    for n in neighbours:
        if n.in_window and n.story_id is not None:
            scores[n.story_id].append(n.comparison.same_story_probability)  # a probability cut, not the grade
    best_story, best_mean = None, -1.0
    for story_id, values in scores.items():
        mean = float(np.mean(values))
        if mean >= scorer.same_story_threshold_ and mean > best_mean:
            best_story, best_mean = story_id, mean
    return best_story, duplicate.article_id if duplicate is not None else None


def nearest_first(
    vector: npt.NDArray[np.floating], candidates: Iterable[KnownArticle], k: int, exclude: str
) -> list[KnownArticle]:
    """The ``k`` candidates most cosine-similar to ``vector``, one per id, without ``exclude``."""
    unique = {c.article.id: c for c in candidates if c.article.id != exclude}
    probe = np.asarray(vector, dtype=np.float32)
    ranked = sorted(unique.values(), key=lambda c: (-float(np.dot(c.vector, probe)), c.article.id))
    return ranked[:k]


def choose_neighbours(
    article: Article,
    vector: npt.NDArray[np.floating],
    recent: Sequence[KnownArticle],
    nearest: Sequence[KnownArticle] = (),
) -> tuple[list[KnownArticle], set[str]]:
    """The candidates the rule scores for ``article``: its `STORY_CANDIDATES` nearest of ``recent``,
    then those of its `DUPLICATE_CANDIDATES` nearest of ``nearest`` not among them; and the ids of
    the first kind (inside the story window)."""
    window = nearest_first(vector, recent, STORY_CANDIDATES, article.id)
    in_window = {c.article.id for c in window}
    anywhere = [c for c in nearest_first(vector, nearest, DUPLICATE_CANDIDATES, article.id)]
    return window + [c for c in anywhere if c.article.id not in in_window], in_window


def decide_link(
    scorer: PairScorer,
    article: Article,
    others: Sequence[KnownArticle],
    comparisons: Sequence[Comparison],
    in_window: set[str],
) -> StoryLink:
    """`decide` for ``article`` given its chosen neighbours and their comparisons with it."""
    story_id, duplicate_of = decide(
        scorer,
        (
            Neighbour(c.article.id, c.story_id, comparison, c.article.id in in_window)
            for c, comparison in zip(others, comparisons, strict=True)
        ),
    )
    return StoryLink(story_id or new_story_id(article), duplicate_of)


def link_story(
    scorer: PairScorer,
    article: Article,
    vector: npt.NDArray[np.floating],
    recent: Sequence[KnownArticle],
    nearest: Sequence[KnownArticle] = (),
) -> StoryLink:
    """(story id, duplicate_of) for ``article`` by the rule above.

    Parameters
    ----------
    scorer : the fitted pair scorer whose verdicts decide.
    article, vector : the new article and its unit embedding.
    recent : known articles published within the story window of it (any order, any number: the
        `STORY_CANDIDATES` nearest are kept; the article itself is ignored).
    nearest : its nearest known articles at any age (the `DUPLICATE_CANDIDATES` nearest are kept).
    """
    others, in_window = choose_neighbours(article, vector, recent, nearest)
    if not others:
        return StoryLink(new_story_id(article), None)
    comparisons = scorer.compare_many(
        article, [c.article for c in others], vector, np.array([c.vector for c in others])
    )
    return decide_link(scorer, article, others, comparisons, in_window)


def window_filters(article: Article, window_days: float) -> SearchFilters:
    """Search filters for the articles published within ``window_days`` of ``article`` (no time
    limit when it is undated), the article itself excluded."""
    moment, window = article.published_at, timedelta(days=window_days)
    return SearchFilters(
        since=moment - window if moment is not None else None,
        until=moment + window if moment is not None else None,
        exclude_ids=frozenset({article.id}),
    )


def candidates(
    search: ArticleSearch, article: Article, vector: npt.NDArray[np.floating], window_days: float
) -> tuple[list[KnownArticle], list[KnownArticle]]:
    """The candidates `link_story` needs from ``search``: (inside the window, at any age)."""

    def found(k: int, filters: SearchFilters) -> list[KnownArticle]:
        hits = (search.known(other_id) for other_id, _ in search.nearest(vector, k, filters))
        return [hit for hit in hits if hit is not None]  # None: removed between the two calls

    anywhere = SearchFilters(exclude_ids=frozenset({article.id}))
    return found(STORY_CANDIDATES, window_filters(article, window_days)), found(
        DUPLICATE_CANDIDATES, anywhere
    )
