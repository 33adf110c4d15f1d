"""`ArticleIndex`: known articles, their embeddings and story ids, searchable by cosine.

Vectors are stored as float16 (half the memory; cosine error ~1e-3, far below any verdict
threshold) in one growing matrix. Search is an exact matrix product up to ``ann_threshold``
articles; above it, an approximate index (`model.ann.AnnIndex`, when that module exists) finds
candidates and filters are applied on them.

Thread safety: one writer and many readers. Writers take a lock; readers take a snapshot of the
(matrix, count) pair, so a concurrent `add` never shows them a half-written row.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.article import Article, article_from_record
from model.errors import ArticleNotFoundError
from model.results import SearchFilters

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
_VECTORS_FILE = "vectors.npy"
_ARTICLES_FILE = "articles.jsonl"
_META_FILE = "index.json"


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else np.nan


class ArticleIndex:
    """Articles with unit embeddings and story ids; exact or approximate cosine search.

    Parameters
    ----------
    dim : embedding width (384 for MiniLM).
    ann_threshold : above this many articles search goes through `model.ann.AnnIndex` when
        available (exact search is ~O(n·dim) per query: ~5 ms at 50k × 384 on one core).
    """

    def __init__(self, dim: int = 384, *, ann_threshold: int = 50_000) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._articles: list[Article] = []
        self._story_ids: list[str] = []
        self._vectors = np.zeros((0, dim), dtype=np.float16)
        # Published time (epoch seconds, NaN = unknown) as an array, so date filters are vectorised.
        self._times = np.zeros(0, dtype=np.float64)
        self._providers: list[str | None] = []
        self._ann: Any = None  # model.ann.AnnIndex once the index grows past ann_threshold

    # --- writing -------------------------------------------------------------------------

    def add(
        self, articles: Sequence[Article], vectors: npt.NDArray[np.floating], story_ids: Sequence[str]
    ) -> None:
        """Add articles (ids already present are updated in place: record, vector and story)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if not (len(articles) == len(vectors) == len(story_ids)):
            raise ValueError(
                f"articles ({len(articles)}), vectors ({len(vectors)}) and story_ids ({len(story_ids)}) "
                "must have the same length"
            )
        if len(articles) and vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have {self.dim} columns, got {vectors.shape[1]}")
        with self._lock:
            base = len(self._vectors)
            pending: dict[int, int] = {}  # new row position -> index in this batch (last one wins)
            for i, (article, story) in enumerate(zip(articles, story_ids, strict=True)):
                position = self._pos.get(article.id)
                if position is None:
                    position = len(self._ids)
                    self._pos[article.id] = position
                    self._ids.append(article.id)
                    self._articles.append(article)
                    self._story_ids.append(story)
                    self._providers.append(article.provider_key)
                else:
                    self._articles[position] = article
                    self._story_ids[position] = story
                    self._providers[position] = article.provider_key
                if position >= base:
                    pending[position] = i
                else:
                    self._vectors[position] = vectors[i].astype(np.float16)
                    self._times[position] = _timestamp(article.published_at)
            if pending:
                fresh = [pending[position] for position in sorted(pending)]
                # A new matrix (not a resize in place): readers holding the old one keep a valid view.
                self._vectors = np.concatenate([self._vectors, vectors[fresh].astype(np.float16)])
                self._times = np.concatenate(
                    [self._times, np.array([_timestamp(articles[i].published_at) for i in fresh])]
                )
            self._sync_ann()

    def _sync_ann(self) -> None:
        if len(self._ids) <= self.ann_threshold:
            return
        try:
            from model.ann import AnnIndex  # built by another team member; optional
        except ImportError:
            return  # hook: exact search stays correct, only slower, until model/ann.py exists
        if self._ann is None:
            self._ann = AnnIndex(dim=self.dim)
            self._ann_count = 0
        start = self._ann_count
        if start < len(self._ids):
            self._ann.add(self._ids[start:], self._vectors[start:].astype(np.float32))
            self._ann_count = len(self._ids)

    # --- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._pos

    def ids(self) -> list[str]:
        return list(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def get(self, article_id: str) -> Article:
        position = self._pos.get(article_id)
        if position is None:
            raise ArticleNotFoundError(article_id)
        return self._articles[position]

    def vector(self, article_id: str) -> npt.NDArray[np.float32]:
        position = self._pos.get(article_id)
        if position is None:
            raise ArticleNotFoundError(article_id)
        return self._vectors[position].astype(np.float32)

    def story_of(self, article_id: str) -> str | None:
        position = self._pos.get(article_id)
        return None if position is None else self._story_ids[position]

    def _mask(self, n: int, times: npt.NDArray[np.float64], filters: SearchFilters) -> npt.NDArray[np.bool_]:
        mask = np.ones(n, dtype=bool)
        # An unknown date fails a date filter: we cannot claim it lies in the window.
        if filters.since is not None:
            mask &= times >= filters.since.timestamp()
        if filters.until is not None:
            mask &= times <= filters.until.timestamp()
        if filters.providers is not None or filters.exclude_provider is not None:
            wanted = {p.lower() for p in filters.providers} if filters.providers is not None else None
            excluded = filters.exclude_provider.lower() if filters.exclude_provider else None
            providers = self._providers[:n]
            mask &= np.fromiter(
                ((wanted is None or p in wanted) and (excluded is None or p != excluded) for p in providers),
                dtype=bool,
                count=n,
            )
        for article_id in filters.exclude_ids:
            position = self._pos.get(article_id)
            if position is not None and position < n:
                mask[position] = False
        return mask

    def search(
        self, vector: npt.NDArray[np.floating], k: int = 10, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` articles most cosine-similar to ``vector`` that pass ``filters``, best first."""
        filters = filters or SearchFilters()
        matrix, times = self._vectors, self._times  # snapshot: add() swaps, never mutates, new rows
        n = min(len(matrix), len(times))
        if n == 0 or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).ravel()
        if self._ann is not None and n > self.ann_threshold:
            hits = self._search_ann(query, k, filters, n, times)
            if hits is not None:
                return hits
        mask = self._mask(n, times, filters)
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        sims = matrix[candidates].astype(np.float32) @ query
        take = min(k, candidates.size)
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self._ids[candidates[i]], float(sims[i])) for i in top]

    def _search_ann(
        self,
        query: npt.NDArray[np.float32],
        k: int,
        filters: SearchFilters,
        n: int,
        times: npt.NDArray[np.float64],
    ) -> list[tuple[str, float]] | None:
        mask = self._mask(n, times, filters)
        passing = int(mask.sum())
        if passing == 0:
            return []
        # Over-fetch in proportion to how selective the filter is; a very selective filter is
        # cheaper exactly (returns None so the caller falls back).
        fetch = int(k * n / passing * 2) + 10
        if fetch > n // 4:
            return None
        hits = self._ann.search(query, fetch)
        out = []
        for article_id, score in hits:
            position = self._pos.get(article_id)
            if position is not None and position < n and mask[position]:
                out.append((article_id, float(score)))
                if len(out) == k:
                    break
        return out if len(out) == k else None

    # --- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``vectors.npy``, ``articles.jsonl`` (record + story id per line) and ``index.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            np.save(directory / _VECTORS_FILE, self._vectors)
            with (directory / _ARTICLES_FILE).open("w", encoding="utf-8") as handle:
                for article, story in zip(self._articles, self._story_ids, strict=True):
                    record = article.to_record()
                    record["id"] = article.id
                    handle.write(
                        json.dumps({"article": record, "story_id": story}, ensure_ascii=False) + "\n"
                    )
            meta = {
                "format": INDEX_FORMAT,
                "dim": self.dim,
                "count": len(self._ids),
                "ann_threshold": self.ann_threshold,
            }
            (directory / _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> ArticleIndex:
        """Read an index written by `save`."""
        directory = Path(directory)
        meta = json.loads((directory / _META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            raise ValueError(
                f"{directory / _META_FILE}: index format {meta.get('format')}, expected {INDEX_FORMAT}"
            )
        index = cls(dim=int(meta["dim"]), ann_threshold=int(meta.get("ann_threshold", 50_000)))
        vectors = np.load(directory / _VECTORS_FILE)
        articles, stories = [], []
        with (directory / _ARTICLES_FILE).open(encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                articles.append(article_from_record(item["article"], require_text=False))
                stories.append(item["story_id"])
        if len(articles) != len(vectors):
            raise ValueError(f"{directory}: {len(articles)} articles but {len(vectors)} vectors")
        index.add(articles, vectors.astype(np.float32), stories)
        return index
