"""Online story clustering: each article joins the closest active story or starts a new one.

A story is a running centroid of its members' unit embeddings. An article joins the story whose
centroid is most cosine-similar, if that similarity reaches ``threshold``; otherwise it founds a
new story whose id derives from the founding article's id. Ids therefore never change: later
articles only join stories or found new ones, they never merge or split existing ones.

Only stories *active* near the article's time are compared (``window_days`` either side of the
story's first and last member), which bounds the work per article as the corpus grows and stops
a new event from joining last year's similar one. Undated articles are compared with the stories
touched by the last ``max_active`` assignments.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.article import Article
from model.coverage.story_rule import new_story_id

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 256


def _order_key(article: Article) -> tuple[bool, float, str]:
    # Published order, undated last, ties by id: the same set of articles always arrives in the
    # same order, so batch clustering does not depend on input order.
    published = article.published_at
    return (published is None, published.timestamp() if published else 0.0, article.id)


class StoryClusterer:
    """Assign articles to stories with stable ids, online.

        Parameters
        ----------
        threshold : float, default=0.65
            Minimum cosine between an article and a story centroid to join the story. On SemEval
            a pair cosine of ~0.58 is where the scorer starts calling ``same_story``; a centroid
            averages away each member's peculiarities, so members sit a little closer to it.
        window_days : float, default=3.0
            A story is active for an article published within this many days of the story's
            first..last member.
        max_active : int, default=5000
            Undated articles are compared with stories touched by the last ``max_active`` assignments.
        max_span_days : float, default=7.0
            A story accepts no article more than this many days after (or before) its first member:
            templated wire items (earnings tables) would otherwise chain into one endless "story".

        Examples
        --------
        >>> from model.articles.article import Article
    from model.coverage.story_rule import new_story_id
        >>> clusterer = StoryClusterer()
        >>> v = np.ones(4, dtype=np.float32) / 2
        >>> first = clusterer.assign(Article(id="a", title="x"), v)
        >>> clusterer.assign(Article(id="b", title="y"), v) == first
        True
    """

    def __init__(
        self,
        threshold: float = 0.65,
        window_days: float = 3.0,
        max_active: int = 5000,
        max_span_days: float = 7.0,
    ) -> None:
        self.threshold = threshold
        self.window_days = window_days
        self.max_active = max_active
        self.max_span_days = max_span_days
        self._lock = threading.RLock()
        self._story_ids: list[str] = []
        self._story_pos: dict[str, int] = {}
        self._members: list[list[str]] = []
        self._of: dict[str, str] = {}
        self._dim: int | None = None
        self._sums = np.zeros((0, 0), dtype=np.float32)
        self._first = np.zeros(0, dtype=np.float64)  # epoch seconds; +inf = no dated member yet
        self._last = np.zeros(0, dtype=np.float64)  # epoch seconds; -inf = no dated member yet
        self._touched = np.zeros(0, dtype=np.int64)  # assignment counter when last joined
        self._counter = 0

    # --- pickling: locks cannot be pickled -------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        n = len(self._story_ids)
        for name in ("_sums", "_first", "_last", "_touched"):
            state[name] = state[name][:n].copy()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- queries -------------------------------------------------------------------------

    def story_of(self, article_id: str) -> str | None:
        return self._of.get(article_id)

    def members(self, story_id: str) -> list[str]:
        """Article ids in the story, in the order they joined (empty for an unknown story)."""
        position = self._story_pos.get(story_id)
        return list(self._members[position]) if position is not None else []

    def stories(self) -> list[str]:
        return list(self._story_ids)

    def __len__(self) -> int:
        return len(self._story_ids)

    # --- assignment ----------------------------------------------------------------------

    def _ensure_capacity(self, dim: int) -> None:
        if self._dim is None:
            self._dim = dim
            self._sums = np.zeros((_INITIAL_CAPACITY, dim), dtype=np.float32)
            self._first = np.full(_INITIAL_CAPACITY, np.inf)
            self._last = np.full(_INITIAL_CAPACITY, -np.inf)
            self._touched = np.zeros(_INITIAL_CAPACITY, dtype=np.int64)
        elif dim != self._dim:
            raise ValueError(
                f"vector has {dim} dimensions, the clusterer holds {self._dim}-dimensional stories"
            )
        n = len(self._story_ids)
        if n >= len(self._sums):
            grow = max(len(self._sums), _INITIAL_CAPACITY)
            self._sums = np.concatenate([self._sums, np.zeros((grow, dim), dtype=np.float32)])
            self._first = np.concatenate([self._first, np.full(grow, np.inf)])
            self._last = np.concatenate([self._last, np.full(grow, -np.inf)])
            self._touched = np.concatenate([self._touched, np.zeros(grow, dtype=np.int64)])

    def _active(self, published: datetime | None) -> npt.NDArray[np.intp]:
        n = len(self._story_ids)
        if published is None:
            return np.flatnonzero(self._touched[:n] > self._counter - self.max_active)
        moment = published.timestamp()
        window = self.window_days * 86400.0
        span = self.max_span_days * 86400.0
        first, last = self._first[:n], self._last[:n]
        dated = (first - window <= moment) & (moment <= last + window)
        dated &= (moment - first <= span) & (last - moment <= span)
        # Stories of undated members only are matched like undated articles (recency).
        undated = np.isinf(self._first[:n]) & (self._touched[:n] > self._counter - self.max_active)
        return np.flatnonzero(dated | undated)

    def _join(self, position: int, article: Article, vector: npt.NDArray[np.float32]) -> None:
        self._counter += 1
        self._sums[position] += vector
        self._members[position].append(article.id)
        self._touched[position] = self._counter
        if article.published_at is not None:
            moment = article.published_at.timestamp()
            self._first[position] = min(self._first[position], moment)
            self._last[position] = max(self._last[position], moment)
        self._of[article.id] = self._story_ids[position]

    def _new_story(self, story_id: str) -> int:
        position = len(self._story_ids)
        self._story_ids.append(story_id)
        self._story_pos[story_id] = position
        self._members.append([])
        return position

    def assign(self, article: Article, vector: npt.NDArray[np.floating]) -> str:
        """The story of ``article``: the closest active one above ``threshold``, else a new one.

        An article already assigned keeps its story.
        """
        vector = np.asarray(vector, dtype=np.float32).ravel()
        with self._lock:
            known = self._of.get(article.id)
            if known is not None:
                return known
            self._ensure_capacity(vector.shape[0])
            candidates = self._active(article.published_at)
            if candidates.size:
                sums = self._sums[candidates]
                norms = np.linalg.norm(sums, axis=1)
                sims = (sums @ vector) / np.maximum(norms, 1e-12)
                best = int(np.argmax(sims))
                if sims[best] >= self.threshold:
                    self._join(int(candidates[best]), article, vector)
                    return self._of[article.id]
            story_id = new_story_id(article)
            if story_id in self._story_pos:  # founder id reused after a restore: keep it unique
                story_id = f"{story_id}_{len(self._story_ids)}"
            self._join(self._new_story(story_id), article, vector)
            return story_id

    def restore(self, article: Article, vector: npt.NDArray[np.floating], story_id: str) -> str:
        """Re-add a known assignment (e.g. on restart); creates the story if it is unknown."""
        vector = np.asarray(vector, dtype=np.float32).ravel()
        with self._lock:
            known = self._of.get(article.id)
            if known is not None:
                return known
            self._ensure_capacity(vector.shape[0])
            position = self._story_pos.get(story_id)
            if position is None:
                position = self._new_story(story_id)
            self._join(position, article, vector)
            return story_id

    def remove(self, article_id: str, vector: npt.NDArray[np.floating]) -> bool:
        """Take an article out of its story (a takedown); False if it was never assigned.

        The story's centroid loses the article's vector; its time span is left as it was (a
        story keeps the window it had, so later assignments stay where they would have gone).
        """
        vector = np.asarray(vector, dtype=np.float32).ravel()
        with self._lock:
            story_id = self._of.pop(article_id, None)
            if story_id is None:
                return False
            position = self._story_pos[story_id]
            self._members[position].remove(article_id)
            self._sums[position] -= vector
            return True

    def fit(self, articles: Sequence[Article], vectors: npt.NDArray[np.floating]) -> list[str]:
        """Assign a batch in published order (undated last, ties by id); story ids in input order."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(articles) != len(vectors):
            raise ValueError(f"{len(articles)} articles but {len(vectors)} vectors")
        order = sorted(range(len(articles)), key=lambda i: _order_key(articles[i]))
        result = [""] * len(articles)
        for i in order:
            result[i] = self.assign(articles[i], vectors[i])
        logger.info("clustered %d articles into %d stories", len(articles), len(self._story_ids))
        return result
