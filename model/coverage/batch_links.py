"""A batch of new articles decided by the one story rule as if each had been added alone, in order.

`NewsModel.add` one article at a time searches the index twice and scores its candidates with one
`PairScorer.compare_many` call, hashing every candidate's text again: a backfill of 10k articles
spent its time there. `BatchLinker` decides the same thing for a whole batch: the index is searched
for every article by one matrix product (`ArticleIndex.nearest_many`), the earlier articles of the
batch (which one-by-one adds would have found in the index) are candidates through the batch's own
cosines, the stored candidates the batch needs are read in one go (`ArticleIndex.known_many`), every
pair of the batch is scored in one pass with each text hashed and shingled once (and kept for the
batches after, where the same candidates come back), and then each article in order is decided by
`model.coverage.story_rule` (`choose_neighbours`, `decide_link`), seeing the stories its earlier
batch-mates were given. Candidates are over-fetched (a few more than the rule keeps) so float rounding in
a matrix product never changes which neighbours the rule keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from model.articles.article import Article
from model.coverage.article_index import _timestamp
from model.coverage.neardup import Shingled, duplicate_scores_from, shingled
from model.coverage.pair_evidence import HashedIdf, content_words
from model.coverage.pair_scorer import PairScorer
from model.coverage.search import ArticleSearch, KnownArticle
from model.coverage.story_rule import (
    DUPLICATE_CANDIDATES,
    STORY_CANDIDATES,
    StoryLink,
    choose_neighbours,
    decide_link,
    window_filters,
)
from model.results import Comparison, SearchFilters

# Over-fetch: the rule keeps the nearest by its own dot products, so a superset is always safe
# (a matrix product may round the last bit differently from the rule's one dot at a time).
_MARGIN = 5
# Hashed texts kept between batches, the least recently used dropped first: a few hundred bytes (a
# headline) to ~10 KB (a long excerpt's character 4-grams) each, so at most a few hundred MB.
# Candidates are mostly recent articles, but the duplicate search reaches any age and the same
# originals come back for many batches (at 10,000 articles with 2,000 kept, dropping the oldest
# made each later batch hash 2.6 older candidates an article again).
KEPT_TEXTS = 20_000


class BatchLinker:
    """Decides batches of articles by the story rule; keeps hashed texts between batches.

    Parameters
    ----------
    scorer : the fitted pair scorer (its IDF hashes the texts).
    window_days : the story window (`NewsModel.window_days`).
    kept_texts : how many articles' hashed rows to keep for later batches.
    """

    def __init__(self, scorer: PairScorer, window_days: float, *, kept_texts: int = KEPT_TEXTS) -> None:
        self.scorer = scorer
        self.window_days = window_days
        self.kept_texts = kept_texts
        self._idf = scorer.idf or HashedIdf()
        # article id -> (word indices, word data, char indices, char data, content words, canonical URL,
        # shingles for the duplicate rule)
        self._texts: dict[str, tuple[Any, Any, Any, Any, set[str], str | None, Shingled]] = {}

    def link(
        self,
        search: ArticleSearch,
        articles: Sequence[Article],
        vectors: npt.NDArray[np.floating],
        assign: Callable[[int, StoryLink], str],
    ) -> None:
        """Decide ``articles`` (new to ``search``, distinct, in the order they are added) in order.

        ``assign(i, link)`` adds article ``i`` wherever it goes and returns its story id (later
        articles of the batch that pick it as a neighbour see that story).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if not len(articles):
            return
        chosen = self._neighbours(search, articles, vectors)
        comparisons = self._compare(articles, vectors, chosen)
        stories: dict[str, str] = {}
        for i, (article, (others, in_window)) in enumerate(zip(articles, chosen, strict=True)):
            # Earlier batch-mates had no story when chosen: they have one now.
            others = [
                replace(c, story_id=stories[c.article.id]) if c.article.id in stories else c for c in others
            ]
            link = decide_link(self.scorer, article, others, comparisons[i], in_window)
            stories[article.id] = assign(i, link)

    # --- candidates -----------------------------------------------------------------------------

    def _neighbours(
        self, search: ArticleSearch, articles: Sequence[Article], vectors: npt.NDArray[np.float32]
    ) -> list[tuple[list[KnownArticle], set[str]]]:
        windows = [window_filters(article, self.window_days) for article in articles]
        anywhere = [SearchFilters(exclude_ids=frozenset({article.id})) for article in articles]
        recent_hits, any_hits = _nearest_many(
            search,
            vectors,
            [(STORY_CANDIDATES + _MARGIN, windows), (DUPLICATE_CANDIDATES + _MARGIN, anywhere)],
        )
        # The batch as the index would hold it (float16 rows), for the later articles' searches.
        stored = vectors.astype(np.float16).astype(np.float32)
        mates = [KnownArticle(article, stored[j], None) for j, article in enumerate(articles)]
        sims = vectors @ stored.T  # (i, j): article i against batch-mate j as stored
        times = np.array([_timestamp(a.published_at) for a in articles], dtype=np.float64)

        def pooled(
            i: int, hits: list[tuple[str, float]], rows: npt.NDArray[np.intp], k: int
        ) -> list[str | int]:
            """The ``k + _MARGIN`` nearest of the index's hits (ids) and the batch-mates ``rows``."""
            pool: list[tuple[float, str | int]] = [(score, article_id) for article_id, score in hits]
            pool += [(float(sims[i, j]), j) for j in _top(rows, sims[i], k)]
            pool.sort(key=lambda item: -item[0])
            return [which for _, which in pool[: k + _MARGIN]]

        picked = []
        for i in range(len(articles)):
            earlier = np.arange(i)
            inside = earlier[_in_window(times[:i], windows[i])]
            picked.append(
                (
                    pooled(i, recent_hits[i], inside, STORY_CANDIDATES),
                    pooled(i, any_hits[i], earlier, DUPLICATE_CANDIDATES),
                )
            )
        # Every stored candidate of the batch looked up once, together.
        known = _known_many(
            search, {w for pair in picked for side in pair for w in side if isinstance(w, str)}
        )

        def resolved(which: list[str | int]) -> list[KnownArticle]:
            out = []
            for w in which:
                candidate = mates[w] if isinstance(w, int) else known.get(w)
                if candidate is not None:  # None: removed between the search and now
                    out.append(candidate)
            return out

        return [
            choose_neighbours(article, vectors[i], resolved(recent), resolved(nearest))
            for i, (article, (recent, nearest)) in enumerate(zip(articles, picked, strict=True))
        ]

    # --- pair scores ----------------------------------------------------------------------------

    def _compare(
        self,
        articles: Sequence[Article],
        vectors: npt.NDArray[np.float32],
        chosen: list[tuple[list[KnownArticle], set[str]]],
    ) -> list[list[Comparison]]:
        """Each article against its chosen neighbours, as `PairScorer.compare_many` would score them,
        in one evidence pass for the whole batch."""
        entries: list[Article] = list(articles)  # queries first (their own vectors) ...
        entry_vectors: list[npt.NDArray[np.float32]] = list(vectors)
        position: dict[str, int] = {}  # ... then each neighbour once (the vector the index holds)
        left: list[int] = []
        right: list[int] = []
        for i, (others, _) in enumerate(chosen):
            for other in others:
                if other.article.id not in position:
                    position[other.article.id] = len(entries)
                    entries.append(other.article)
                    entry_vectors.append(np.asarray(other.vector, dtype=np.float32))
                left.append(i)
                right.append(position[other.article.id])
        if not left:
            return [[] for _ in articles]
        words, chars, content, urls, shingles = self._rows(entries)
        kept: dict[str, Any] = {"shingled": shingles}
        if "near_duplicate" not in getattr(self.scorer, "feature_names_", ()):
            # The rule reads the duplicate score only against its threshold (the verdict, and the
            # probability a copy is lifted to): pairs that cannot reach it skip the exact Jaccard.
            kept["near_duplicate"] = duplicate_scores_from(
                [(shingles[p], shingles[q]) for p, q in zip(left, right, strict=True)],
                self.scorer.duplicate_threshold,
            )
        comparisons = self.scorer.compare_pairs(
            entries,
            np.vstack(entry_vectors),
            left,
            right,
            rows=(words, chars),
            content=content,
            urls=urls,
            **kept,
        )
        out: list[list[Comparison]] = [[] for _ in articles]
        for i, comparison in zip(left, comparisons, strict=True):
            out[i].append(comparison)
        return out

    def _rows(
        self, articles: Sequence[Article]
    ) -> tuple[sp.csr_matrix, sp.csr_matrix, list[set[str]], list[str | None], list[Shingled]]:
        """`HashedIdf.transform` rows, `content_words`, canonical URLs and duplicate-rule shingles of
        ``articles``, made only for the texts not kept from earlier batches (none depends on the
        other texts: each is normalised alone)."""
        missing = list({a.id: a for a in articles if a.id not in self._texts}.values())
        if missing:
            texts = [a.text for a in missing]
            words, chars = self._idf.transform(texts)
            for k, (article, text) in enumerate(zip(missing, texts, strict=True)):
                w0, w1, c0, c1 = words.indptr[k], words.indptr[k + 1], chars.indptr[k], chars.indptr[k + 1]
                self._texts[article.id] = (
                    words.indices[w0:w1],
                    words.data[w0:w1],
                    chars.indices[c0:c1],
                    chars.data[c0:c1],
                    content_words(text),
                    article.canonical_url,
                    shingled(text, article.excerpt, cached=False),  # kept here, not in the shared cache
                )
        kept = []
        for article in articles:  # each one used moves to the back: the least recently used go first
            item = self._texts.pop(article.id)
            self._texts[article.id] = item
            kept.append(item)
        n_features = self._idf.n_features
        words = _csr([k[0] for k in kept], [k[1] for k in kept], n_features)
        chars = _csr([k[2] for k in kept], [k[3] for k in kept], n_features)
        content = [k[4] for k in kept]
        urls = [k[5] for k in kept]
        shingles = [k[6] for k in kept]
        for article_id in list(islice(self._texts, max(0, len(self._texts) - self.kept_texts))):
            del self._texts[article_id]
        return words, chars, content, urls, shingles


def _nearest_many(
    search: ArticleSearch,
    vectors: npt.NDArray[np.float32],
    searches: list[tuple[int, list[SearchFilters]]],
) -> list[list[list[tuple[str, float]]]]:
    many = getattr(search, "nearest_many", None)  # `ArticleIndex`: one matrix product per chunk
    if many is not None:
        return many(vectors, searches)
    return [
        [search.nearest(vector, k, f) for vector, f in zip(vectors, filters, strict=True)]
        for k, filters in searches
    ]


def _known_many(search: ArticleSearch, article_ids: set[str]) -> dict[str, KnownArticle]:
    many = getattr(search, "known_many", None)  # `ArticleIndex`: the vectors read in one go
    if many is not None:
        return many(article_ids)
    found = {article_id: search.known(article_id) for article_id in article_ids}
    return {article_id: hit for article_id, hit in found.items() if hit is not None}


def _in_window(times: npt.NDArray[np.float64], filters: SearchFilters) -> npt.NDArray[np.bool_]:
    """Which of ``times`` pass ``filters``' date bounds, as `ArticleIndex` tests them (undated
    articles fail a bound; no bound passes them all)."""
    mask = np.ones(len(times), dtype=bool)
    if filters.since is not None:
        mask &= times >= filters.since.timestamp()
    if filters.until is not None:
        mask &= times <= filters.until.timestamp()
    return mask


def _top(rows: npt.NDArray[np.intp], sims: npt.NDArray[np.float32], k: int) -> list[int]:
    """Up to ``k + _MARGIN`` of ``rows`` with the highest ``sims``."""
    take = k + _MARGIN
    if rows.size > take:
        rows = rows[np.argpartition(-sims[rows], take - 1)[:take]]
    return rows.tolist()


def _csr(indices: list[Any], data: list[Any], n_features: int) -> sp.csr_matrix:
    lengths = np.array([len(row) for row in indices], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            indptr,
        ),
        shape=(len(indices), n_features),
    )
