"""`ArticleIndex`: known articles, their embeddings and story ids, searchable by cosine.

Vectors are stored as float16 (half the memory; cosine error ~1e-3, far below any verdict
threshold) in one growing matrix. Search is an exact matrix product up to ``ann_threshold``
articles; above it, an HNSW graph (`model.coverage.faiss_ann.AnnIndex`) finds candidates with the
filters applied inside its search. Once the graph holds every row, its float16 codes *are* the
vectors: the matrix is dropped, so 1M articles keep one copy (768 MB), not two.

Thread safety: one writer and many readers. Writers take a lock; readers take a snapshot of the
row count (and of the matrix while there is one), so a concurrent `add` never shows them a
half-written row; the graph has its own readers-writer lock.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.articles.article import Article, article_from_record
from model.coverage.search import KnownArticle
from model.errors import ArticleNotFoundError, DataFileError
from model.files import atomic_folder
from model.results import SearchFilters

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
# 2: rows carry their language (``languages.npy``); a format-1 snapshot is not loaded, the index is
# restored from the store instead (once), since its rows' languages are unknown.
SNAPSHOT_FORMAT = 2
_VECTORS_FILE = "vectors.npy"
_ARTICLES_FILE = "articles.jsonl"
_META_FILE = "index.json"


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A stored article not parsed yet: what the index needs at once, the record for later.

    A restart restores every stored article; parsing each into an `Article` (URL rules, text
    checks) would cost most of the start-up time, and most are never looked at. `get` parses on
    first use.
    """

    id: str
    provider_key: str | None
    published_at: datetime | None
    record: Mapping[str, Any] | None  # None: fetched through the index's `record_loader` when needed
    language: str | None = None  # the stored record's, for language filters before it is parsed

    def parse(self, loader: Callable[[str], Mapping[str, Any] | None] | None = None) -> Article:
        record = self.record if self.record is not None else (loader(self.id) if loader else None)
        if record is None:
            raise ArticleNotFoundError(self.id)
        return article_from_record(record, require_text=False)


def _timestamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else np.nan


class ArticleIndex:
    """Articles with unit embeddings and story ids; exact or approximate cosine search.

    Parameters
    ----------
    dim : embedding width (384 for MiniLM).
    ann_threshold : above this many articles search goes through `model.coverage.faiss_ann.AnnIndex` when
        available (exact search is ~O(n·dim) per query: ~5 ms at 50k × 384 on one core).
    """

    def __init__(self, dim: int = 384, *, ann_threshold: int = 50_000) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self._lock = threading.Lock()
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        # None: a restored row whose record is read from the store on first use.
        self._articles: list[Article | StoredRecord | None] = []
        self._story_ids: list[str] = []
        # Row buffers with spare capacity; rows [0, _count) are live. `_buffer` is None while the
        # ANN graph holds the vectors (see `_adopt_graph`).
        self._count = 0
        self._buffer: npt.NDArray[np.float16] | None = np.zeros((0, dim), dtype=np.float16)
        # Published time (epoch seconds, NaN = unknown) as an array, so date filters are vectorised.
        self._time_buffer = np.zeros(0, dtype=np.float64)
        self._providers: list[str | None] = []
        # Provider keys as small ints, so provider filters are one vectorised comparison.
        self._code_buffer = np.zeros(0, dtype=np.int32)
        self._provider_vocab: dict[str | None, int] = {None: 0}
        # Languages the same way (0: unknown), for the `SearchFilters.language` filter.
        self._language_buffer = np.zeros(0, dtype=np.int16)
        self._language_vocab: dict[str | None, int] = {None: 0}
        self._ann: Any = None  # model.coverage.faiss_ann.AnnIndex once the index grows past ann_threshold
        # Rows of removed articles: never found again, skipped when saving (rows never move, so
        # readers' snapshots and the ANN's row keys stay valid).
        self._removed: set[int] = set()
        self._ann_deferred = False  # a bulk restore left the graph to `build_ann`
        self._updated_rows: set[int] = set()  # rows rewritten in place while a graph was being built
        # Where records of rows restored from a snapshot come from (the store), read on first use:
        # one at a time, or many in one read (`known_many`) where the store offers it.
        self.record_loader: Callable[[str], Mapping[str, Any] | None] | None = None
        self.records_loader: Callable[[Sequence[str]], Mapping[str, Mapping[str, Any]]] | None = None

    # --- writing -------------------------------------------------------------------------

    def add(
        self,
        articles: Sequence[Article | StoredRecord],
        vectors: npt.NDArray[np.floating],
        story_ids: Sequence[str],
        *,
        sync_ann: bool = True,
    ) -> None:
        """Add articles (ids already present are updated in place: record, vector and story).

        ``sync_ann=False`` leaves the approximate-search graph behind (search answers exactly
        until `build_ann` catches it up): a bulk restore must not wait for a graph build.
        """
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
            base = self._count
            pending: dict[int, int] = {}  # new row position -> index in this batch (last one wins)
            for i, (article, story) in enumerate(zip(articles, story_ids, strict=True)):
                # A restored row whose record stays in the store: the id (kept below) is all
                # `_article_at` needs to fetch it, so keep no object (~120 MB at 1M rows).
                kept = None if isinstance(article, StoredRecord) and article.record is None else article
                position = self._pos.get(article.id)
                if position is None:
                    position = len(self._ids)
                    self._pos[article.id] = position
                    self._ids.append(article.id)
                    self._articles.append(kept)
                    self._story_ids.append(story)
                    self._providers.append(article.provider_key)
                else:
                    self._articles[position] = kept
                    self._story_ids[position] = story
                    self._providers[position] = article.provider_key
                if position >= base:
                    pending[position] = i
                else:
                    self._rewrite_row(position, vectors[i])
                    self._time_buffer[position] = _timestamp(article.published_at)
                    self._code_buffer[position] = self._provider_code(article.provider_key)
                    self._language_buffer[position] = self._language_code(article.language)
            if pending:
                fresh = [pending[position] for position in sorted(pending)]
                self._reserve(base + len(fresh))
                end = base + len(fresh)
                # Rows past the published count are invisible to readers until _count moves.
                self._time_buffer[base:end] = [_timestamp(articles[i].published_at) for i in fresh]
                self._code_buffer[base:end] = [self._provider_code(articles[i].provider_key) for i in fresh]
                self._language_buffer[base:end] = [self._language_code(articles[i].language) for i in fresh]
                if self._buffer is None:  # the graph holds the vectors: new rows go straight in
                    self._ann.add(np.arange(base, end, dtype=np.int64), vectors[fresh])
                else:
                    self._buffer[base:end] = vectors[fresh].astype(np.float16)
                self._count = end
            if self._buffer is not None:  # (otherwise the graph already has every row)
                if sync_ann:
                    self._sync_ann()
                else:
                    self._ann_deferred = True

    def _rewrite_row(self, position: int, vector: npt.NDArray[np.float32]) -> None:
        """A known article's new vector, wherever vectors live (its graph links stay as built)."""
        if self._ann is not None and position < len(self._ann):
            self._ann.set_vectors([position], vector[None, :])
        if self._buffer is not None:
            self._buffer[position] = vector.astype(np.float16)
            self._updated_rows.add(position)  # a graph being built elsewhere has the old vector

    def remove(self, article_id: str) -> bool:
        """Forget an article (a takedown); False if it is not indexed. Adding it again is allowed."""
        with self._lock:
            position = self._pos.pop(article_id, None)
            if position is None:
                return False
            self._removed.add(position)
            return True

    def _provider_code(self, key: str | None) -> int:
        return self._provider_vocab.setdefault(key, len(self._provider_vocab))

    def _language_code(self, language: str | None) -> int:
        return self._language_vocab.setdefault(language, len(self._language_vocab))

    def _reserve(self, rows: int) -> None:
        """Grow the row buffers geometrically, so adding one article is amortised O(1), not a copy.

        A grown buffer is a new array: readers holding the old one keep a valid snapshot.
        """
        capacity = len(self._time_buffer)
        if rows <= capacity:
            return
        capacity = max(rows, 2 * capacity, 1024)
        for name, dtype in (
            ("_buffer", np.float16),
            ("_time_buffer", np.float64),
            ("_code_buffer", np.int32),
            ("_language_buffer", np.int16),
        ):
            old = getattr(self, name)
            if old is None:
                continue
            grown = np.zeros((capacity, *old.shape[1:]), dtype=dtype)
            grown[: self._count] = old[: self._count]
            setattr(self, name, grown)

    def _rows(self, positions: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The vectors of rows ``positions`` as float32, from the matrix or from the graph."""
        buffer = self._buffer  # one read: the graph may take the vectors over meanwhile
        if buffer is None:
            return self._ann.vectors(positions)
        return buffer[np.asarray(positions, dtype=np.int64)].astype(np.float32)

    @property
    def _times(self) -> npt.NDArray[np.float64]:
        return self._time_buffer[: self._count]

    @property
    def _provider_codes(self) -> npt.NDArray[np.int32]:
        return self._code_buffer[: self._count]

    def _sync_ann(self) -> None:
        """Past ``ann_threshold`` articles, mirror the vectors into a faiss HNSW graph.

        ANN keys are row positions, so a filter mask over rows is also the ANN's allow-mask.
        A vector updated in place keeps its old graph entry (faiss HNSW has no delete); search
        rescoring below uses the current vectors, so scores stay exact.
        """
        if len(self._ids) <= self.ann_threshold:
            return
        if self._ann is None and self._ann_deferred:
            return  # `build_ann` will make the graph, off the request path
        if self._ann is None:
            self._ann = self._new_graph()
        start, count = len(self._ann), self._count
        if start < count:
            self._ann.add(np.arange(start, count, dtype=np.int64), self._buffer[start:count])
        self._adopt_graph()

    def _adopt_graph(self) -> None:
        """Once the graph holds every row, let its float16 codes be the only copy of the vectors.

        Readers holding the old matrix keep a valid array; new readers go through the graph.
        """
        ann = self._ann
        if self._buffer is None or ann is None or ann.dtype != "f16" or len(ann) != self._count:
            return
        self._updated_rows.clear()
        self._buffer = None

    def _new_graph(self) -> Any:
        from model.coverage.faiss_ann import AnnIndex

        # M=16 / ef_search=128: at 1M vectors recall@10 0.979, p50 0.2 ms, 913 MB
        # (benchmarks/results/ann_1000000_faiss.json); M=32 would pass 1 GB.
        return AnnIndex(dim=self.dim, dtype="f16", M=16, ef_search=128)

    def build_ann(self, stop: threading.Event | None = None, *, chunk: int = 50_000) -> bool:
        """Build (or catch up) the approximate-search graph, off to the side, then swap it in.

        Searches keep answering exactly while it builds; nothing waits for it but this call.
        ``stop`` abandons the build between chunks (a shutdown must not wait minutes for a graph).
        Returns whether the index now has an up-to-date graph (or needs none).
        """
        if len(self._ids) <= self.ann_threshold:
            return True
        if self._ann is None:
            buffer, count = self._buffer, self._count
            if buffer is None:
                return True
            graph = self._new_graph()
            with self._lock:
                self._updated_rows.clear()
            for start in range(0, count, chunk):
                if stop is not None and stop.is_set():
                    return False
                end = min(start + chunk, count)
                graph.add(np.arange(start, end, dtype=np.int64), buffer[start:end])
            with self._lock:
                # Rows rewritten in place while the graph was built: it has their old vectors.
                rewritten = sorted(row for row in self._updated_rows if row < count)
                if rewritten and self._buffer is not None:
                    graph.set_vectors(rewritten, self._buffer[rewritten].astype(np.float32))
                self._ann = graph
        with self._lock:
            self._ann_deferred = False
            self._sync_ann()  # rows added while the graph was built; then the graph holds them all
        return True

    # --- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def has_graph(self) -> bool:
        """Whether an approximate-search graph exists (built, or loaded with a snapshot)."""
        return self._ann is not None

    def live_count(self) -> int:
        """Rows that can still be found (removed ones excluded)."""
        return len(self._pos)

    def truncate(self, rows: int) -> None:
        """Drop every row from ``rows`` on (a snapshot that turned out stale), graph included."""
        with self._lock:
            if self._buffer is None:  # the graph holds the vectors: take the kept rows back out
                # As long as the other row buffers (`_reserve` sizes them together); untouched
                # zero pages cost no memory.
                buffer = np.zeros((len(self._time_buffer), self.dim), dtype=np.float16)
                for start in range(0, rows, 50_000):
                    end = min(start + 50_000, rows)
                    buffer[start:end] = self._ann.vectors(np.arange(start, end)).astype(np.float16)
                self._buffer = buffer
            for article_id in self._ids[rows:]:
                self._pos.pop(article_id, None)
            del self._ids[rows:], self._articles[rows:], self._story_ids[rows:], self._providers[rows:]
            self._removed = {row for row in self._removed if row < rows}
            self._count = min(self._count, rows)
            self._ann = None
            self._ann_deferred = True

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._pos

    def ids(self) -> list[str]:
        if not self._removed:
            return list(self._ids)
        return [article_id for position, article_id in enumerate(self._ids) if position not in self._removed]

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def get(self, article_id: str) -> Article:
        position = self._pos.get(article_id)
        if position is None:
            raise ArticleNotFoundError(article_id)
        return self._article_at(position)

    def _article_at(self, position: int) -> Article:
        item = self._articles[position]
        if item is None:  # a snapshot row: only the id is known here
            item = StoredRecord(self._ids[position], None, None, None)
        if isinstance(item, StoredRecord):
            item = item.parse(self.record_loader)
            self._articles[position] = item  # parsed once; a racing reader parses the same again
        return item

    def vector(self, article_id: str) -> npt.NDArray[np.float32]:
        position = self._pos.get(article_id)
        if position is None:
            raise ArticleNotFoundError(article_id)
        return self._rows([position])[0]

    def relabel_stories(self, surviving: Mapping[str, str]) -> int:
        """Show each merged story's rows under the story it joined (`model.store.merges`: the store
        resolves merges on read; this index holds what it read before they were recorded). Returns
        how many rows changed."""
        if not surviving:
            return 0
        with self._lock:
            relabelled = [surviving.get(story, story) for story in self._story_ids]
            changed = sum(a != b for a, b in zip(relabelled, self._story_ids, strict=True))
            self._story_ids = relabelled
        return changed

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
            codes = self._provider_codes[:n]
            if wanted is not None:
                mask &= np.isin(codes, [self._provider_vocab[p] for p in wanted if p in self._provider_vocab])
            if excluded is not None and excluded in self._provider_vocab:
                mask &= codes != self._provider_vocab[excluded]
        if filters.language is not None:
            code = self._language_vocab.get(filters.language)
            mask &= self._language_buffer[:n] == code if code is not None else False
        for article_id in filters.exclude_ids:
            position = self._pos.get(article_id)
            if position is not None and position < n:
                mask[position] = False
        for position in list(self._removed):
            if position < n:
                mask[position] = False
        return mask

    # --- the `ArticleSearch` interface ---------------------------------------------------------

    def nearest(
        self, vector: npt.NDArray[np.floating], k: int, filters: SearchFilters
    ) -> list[tuple[str, float]]:
        return self.search(vector, k, filters)

    def nearest_many(
        self,
        vectors: npt.NDArray[np.floating],
        searches: Sequence[tuple[int, Sequence[SearchFilters]]],
        *,
        chunk: int = 64,
    ) -> list[list[list[tuple[str, float]]]]:
        """For each ``(k, filters)`` of ``searches``: `nearest` (``k``, ``filters[i]``) of each row
        ``i`` of ``vectors`` (a backfill's batch, searched for its story window and at any age).

        Where search is exact the rows are converted once and scored by one matrix product per
        ``chunk`` queries for all the searches, instead of once per query and search; where the
        graph answers, `search` per query.
        """
        queries = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        buffer, times = self._buffer, self._times
        n = len(times)
        found: list[list[list[tuple[str, float]]]] = [[] for _ in searches]
        if n == 0:
            return [[[] for _ in queries] for _ in searches]
        if buffer is None or (self._ann is not None and n > self.ann_threshold):
            return [
                [self.search(query, k, f) for query, f in zip(queries, filters, strict=True)]
                for k, filters in searches
            ]
        rows = buffer[:n].astype(np.float32)
        for start in range(0, len(queries), chunk):
            # (chunk, n): each query's scores contiguous (a strided column slowed every pass over it)
            block = np.ascontiguousarray((rows @ queries[start : start + chunk].T).T)
            for out, (k, filters) in zip(found, searches, strict=True):
                for row, f in enumerate(filters[start : start + chunk]):
                    out.append(self._top(block[row], n, times, k, f))
        return found

    def _top(
        self, sims: npt.NDArray[np.float32], n: int, times: npt.NDArray[np.float64], k: int, f: SearchFilters
    ) -> list[tuple[str, float]]:
        """The ``k`` best of rows ``[0, n)`` by ``sims`` that pass ``f``, best first."""
        if k <= 0:
            return []
        if self._passes_all(f, n):  # e.g. a search at any age: every row, no mask to build
            candidates = np.arange(n)
        else:
            candidates = np.flatnonzero(self._mask(n, times, f))
            if candidates.size == 0:
                return []
            sims = sims[candidates]
        take = min(k, candidates.size)
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[np.argsort(-sims[top], kind="stable")]
        ids = self._ids
        return [
            (ids[row], score) for row, score in zip(candidates[top].tolist(), sims[top].tolist(), strict=True)
        ]

    def _passes_all(self, f: SearchFilters, n: int) -> bool:
        """Whether every row of ``[0, n)`` passes ``f`` (`_mask` would be all true)."""
        return (
            n > 0
            and f.since is None
            and f.until is None
            and f.providers is None
            and f.exclude_provider is None
            and f.language is None
            and not self._removed
            and all(self._pos.get(article_id, n) >= n for article_id in f.exclude_ids)
        )

    def known(self, article_id: str) -> KnownArticle | None:
        if article_id not in self:
            return None
        try:
            article = self.get(article_id)
        except ArticleNotFoundError:  # a lazily restored row whose record left the store meanwhile
            return None
        return KnownArticle(article, self.vector(article_id), self.story_of(article_id))

    def known_many(self, article_ids: Iterable[str]) -> dict[str, KnownArticle]:
        """`known` of each of ``article_ids`` that is known, their vectors read in one go and the
        records of restored rows in one store read (a backfill's batch looks up thousands)."""
        positions = {article_id: self._pos.get(article_id) for article_id in article_ids}
        self._read_records([p for p in positions.values() if p is not None])
        found: list[tuple[str, int, Article]] = []
        for article_id, position in positions.items():
            if position is None:
                continue
            try:
                found.append((article_id, position, self._article_at(position)))
            except ArticleNotFoundError:  # a lazily restored row whose record left the store meanwhile
                continue
        if not found:
            return {}
        vectors = self._rows([position for _, position, _ in found])
        stories = self._story_ids
        return {
            article_id: KnownArticle(article, vectors[k], stories[position])
            for k, (article_id, position, article) in enumerate(found)
        }

    def _read_records(self, positions: Sequence[int]) -> None:
        """Parse the restored rows among ``positions`` whose records are still in the store, reading
        them in one go through `records_loader` (a row whose record is gone stays as it is)."""
        loader = self.records_loader
        if loader is None:
            return
        unread = [
            p
            for p in positions
            if (item := self._articles[p]) is None or (isinstance(item, StoredRecord) and item.record is None)
        ]
        if not unread:
            return
        records = loader([self._ids[p] for p in unread])
        for position in unread:
            record = records.get(self._ids[position])
            if record is not None:  # parsed once, as `_article_at` would have
                self._articles[position] = article_from_record(record, require_text=False)

    def search(
        self, vector: npt.NDArray[np.floating], k: int = 10, filters: SearchFilters | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` articles most cosine-similar to ``vector`` that pass ``filters``, best first."""
        filters = filters or SearchFilters()
        # Snapshot: add() swaps buffers and moves the count only after a row is whole.
        buffer, times = self._buffer, self._times
        n = len(times)
        if n == 0 or k <= 0:
            return []
        query = np.asarray(vector, dtype=np.float32).ravel()
        ann = self._ann
        if ann is not None and (n > self.ann_threshold or buffer is None):
            hits = self._search_ann(ann, query, k, filters, n, times)
            if hits is not None:
                return hits
        if buffer is None:  # cannot happen: a graph that holds the vectors covers every row
            raise RuntimeError("article index: the graph holds the vectors but does not cover the rows")
        mask = self._mask(n, times, filters)
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        sims = buffer[candidates].astype(np.float32) @ query
        take = min(k, candidates.size)
        top = np.argpartition(-sims, take - 1)[:take]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self._ids[candidates[i]], float(sims[i])) for i in top]

    def _search_ann(
        self,
        ann: Any,
        query: npt.NDArray[np.float32],
        k: int,
        filters: SearchFilters,
        n: int,
        times: npt.NDArray[np.float64],
    ) -> list[tuple[str, float]] | None:
        covered = len(ann)
        if covered < n:  # rows added since the last sync: answer exactly rather than miss them
            return None
        mask = self._mask(n, times, filters)  # rows past n (added meanwhile) are not allowed
        keys, _ = ann.search(query, k, allowed=mask)
        if len(keys) == 0:
            return []
        # Rescore with the stored float16 rows: exact cosines, and any in-place update honoured.
        rows = keys.astype(np.int64)
        sims = self._rows(rows) @ query
        order = np.argsort(-sims, kind="stable")
        return [(self._ids[rows[i]], float(sims[i])) for i in order]

    # --- snapshots of the rows past the bundle's own (a service's restored articles) -----------

    def write_snapshot(self, directory: str | Path, *, from_row: int, meta: Mapping[str, Any]) -> int:
        """Write rows ``[from_row, count)`` (vectors, times, providers, ids, stories) and the ANN graph,
        never the records (the store has them). Returns the rows written.

        A restart loads it with `load_snapshot` in about the time it takes to read the files, instead
        of reading and parsing every stored article and rebuilding the graph.
        """
        with self._lock:
            count = self._count
            ids = self._ids[from_row:count]
            stories = self._story_ids[from_row:count]
            providers = self._providers[from_row:count]
            removed = sorted(r - from_row for r in self._removed if r >= from_row)
            times = self._time_buffer[from_row:count].copy()
            language_codes = self._language_buffer[from_row:count].copy()
            language_vocab = {code: key for key, code in self._language_vocab.items()}
            ann = self._ann if self._ann is not None and len(self._ann) == count else None
        with atomic_folder(directory, replace=True) as folder:
            with self._lock:  # chunk by chunk, never a second in-memory copy of every vector
                vectors = np.lib.format.open_memmap(
                    folder / "vectors.npy", mode="w+", dtype=np.float16, shape=(count - from_row, self.dim)
                )
                for start in range(from_row, count, 50_000):
                    end = min(start + 50_000, count)
                    vectors[start - from_row : end - from_row] = self._rows(np.arange(start, end))
                vectors.flush()
                del vectors
            np.save(folder / "times.npy", times)
            languages = sorted(key for key in language_vocab.values() if key is not None)
            language_codes_out = {key: i + 1 for i, key in enumerate(languages)}
            np.save(
                folder / "languages.npy",
                np.array(
                    [language_codes_out.get(language_vocab[c], 0) for c in language_codes.tolist()],
                    dtype=np.int16,
                ),
            )
            vocab = sorted({key for key in providers if key is not None})
            codes = {key: i + 1 for i, key in enumerate(vocab)}
            np.save(
                folder / "providers.npy", np.array([codes.get(key, 0) for key in providers], dtype=np.int32)
            )
            (folder / "rows.json").write_text(
                json.dumps(
                    {
                        "ids": ids,
                        "stories": stories,
                        "providers": vocab,
                        "languages": languages,
                        "removed": removed,
                    }
                ),
                encoding="utf-8",
            )
            if ann is not None:
                with self._lock:  # ingests add to the graph under this lock: none during the write
                    if len(ann) == count:
                        ann.save(folder / "ann")
                    else:
                        ann = None
            (folder / "snapshot.json").write_text(
                json.dumps(
                    {
                        **meta,
                        "format": SNAPSHOT_FORMAT,
                        "from_row": from_row,
                        "rows": len(ids),
                        "dim": self.dim,
                        "ann_rows": count if ann is not None else 0,
                    }
                ),
                encoding="utf-8",
            )
        return len(ids)

    @staticmethod
    def read_snapshot_meta(directory: str | Path) -> dict[str, Any] | None:
        """The snapshot's meta, or None when there is no readable snapshot."""
        try:
            meta = json.loads((Path(directory) / "snapshot.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return meta if meta.get("format") == SNAPSHOT_FORMAT else None

    def load_snapshot(self, directory: str | Path) -> int:
        """Append a snapshot's rows after this index's own (which must be the rows it was taken
        after); records are read through `record_loader` on first use. Returns the rows added."""
        folder = Path(directory)
        meta = self.read_snapshot_meta(folder)
        if meta is None or meta["from_row"] != self._count or meta["dim"] != self.dim:
            raise DataFileError(f"{folder}: snapshot does not continue this index; restore from the store")
        try:
            # Mapped, then copied once into the row buffer (or not read at all when the graph
            # comes with the snapshot): never two in-memory copies of 1M rows.
            vectors = np.load(folder / "vectors.npy", mmap_mode="r")
            times = np.load(folder / "times.npy")
            codes = np.load(folder / "providers.npy")
            language_codes = np.load(folder / "languages.npy")
            rows = json.loads((folder / "rows.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataFileError(f"{folder}: unreadable snapshot ({error})") from None
        ids, stories, vocab = rows["ids"], rows["stories"], rows["providers"]
        keys: list[str | None] = [None, *vocab]
        graph = None
        if meta.get("ann_rows") == self._count + len(ids) and (folder / "ann").is_dir():
            from model.coverage.faiss_ann import AnnIndex

            try:
                graph = AnnIndex.load(folder / "ann")
            except (OSError, ValueError, RuntimeError) as error:  # faiss raises RuntimeError
                logger.warning("%s: unreadable ANN graph (%s); it will be rebuilt", folder / "ann", error)
        with self._lock:
            base = self._count
            self._reserve(base + len(ids))
            end = base + len(ids)
            if self._buffer is not None and (graph is None or graph.dtype != "f16"):
                self._buffer[base:end] = vectors
            self._time_buffer[base:end] = times
            mapped = np.array([self._provider_code(key) for key in keys], dtype=np.int32)
            self._code_buffer[base:end] = mapped[codes]
            language_keys: list[str | None] = [None, *rows["languages"]]
            language_map = np.array([self._language_code(key) for key in language_keys], dtype=np.int16)
            self._language_buffer[base:end] = language_map[language_codes]
            providers = [keys[c] for c in codes.tolist()]
            self._ids.extend(ids)
            self._pos.update(zip(ids, range(base, end), strict=True))
            self._story_ids.extend(stories)
            self._providers.extend(providers)
            # No record objects at all: a row's record is read from the store on first use.
            self._articles.extend([None] * len(ids))
            for row in rows["removed"]:
                self._pos.pop(ids[row], None)
                self._removed.add(base + row)
            self._count = end
            if graph is not None:
                self._ann = graph
                self._ann_deferred = False
                self._adopt_graph()
            else:
                self._ann_deferred = True
        return len(ids)

    # --- persistence ---------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``vectors.npy``, ``articles.jsonl`` (record + story id per line) and ``index.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            live = [p for p in range(self._count) if p not in self._removed]
            np.save(directory / _VECTORS_FILE, self._rows(live).astype(np.float16))
            with (directory / _ARTICLES_FILE).open("w", encoding="utf-8") as handle:
                for position, story in enumerate(self._story_ids):
                    if position in self._removed:
                        continue
                    article = self._article_at(position)
                    record = article.to_record()
                    record["id"] = article.id
                    handle.write(
                        json.dumps({"article": record, "story_id": story}, ensure_ascii=False) + "\n"
                    )
            meta = {
                "format": INDEX_FORMAT,
                "dim": self.dim,
                "count": len(self._ids) - len(self._removed),
                "ann_threshold": self.ann_threshold,
            }
            (directory / _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> ArticleIndex:
        """Read an index written by `save`; a missing or damaged file is a `DataFileError`."""
        directory = Path(directory)
        try:
            return cls._load(directory)
        except DataFileError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
            # np.load, json and the article parser each fail their own way on a damaged file.
            raise DataFileError(
                f"{directory}: unreadable article index ({type(error).__name__}: {error}); "
                "rebuild it (retrain the bundle)"
            ) from None

    @classmethod
    def _load(cls, directory: Path) -> ArticleIndex:
        meta = json.loads((directory / _META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            raise DataFileError(
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
            raise DataFileError(f"{directory}: {len(articles)} articles but {len(vectors)} vectors")
        index.add(articles, vectors.astype(np.float32), stories)
        return index
