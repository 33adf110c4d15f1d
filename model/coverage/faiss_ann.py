"""Approximate nearest-neighbour index for article embeddings at the million scale.

`AnnIndex` is an HNSW graph over compactly stored vectors (float16 or int8 scalar quantisation),
built on faiss (``faiss-cpu``). Chosen by measurement (``benchmarks/ann.py``): among hnswlib,
usearch and faiss it is the one that both stores vectors in 16 or 8 bits (hnswlib keeps float32:
1M x 384 would be 1.5 GB before the graph) and applies a filter *inside* the graph search (usearch's
Python API has no filtered search, only over-fetch), so date-range and provider filters keep their
recall without guessing an over-fetch factor.

Keys are the caller's int64 ids. Filters come as an ``allowed`` mask: a boolean array aligned with
``index.keys`` (cheapest: build it with numpy from metadata kept in the same order) or an int64
array of allowed keys. How a filter is answered depends on the share of vectors it allows
(measured at 1M news-like vectors, `benchmarks/backends.py`): a handful are decoded and scored
exactly; under ``flat_below`` (10%) every allowed vector is scored by a flat scan of the codes
(~13 ms for 40k of 1M, where the filtered graph walk gave recall@10 0.87);
above it the graph is searched with the beam widened by the inverse of the share.

Example
-------
>>> index = AnnIndex(384, dtype="f16")
>>> index.add(keys, vectors)                        # keys: int64 (n,), vectors: float (n, 384)
>>> found, scores = index.search(query, 10)          # cosine scores, best first
>>> found, scores = index.search(query, 10, allowed=published_at >= cutoff)
>>> index.save("bundle/ann"); index = AnnIndex.load("bundle/ann")
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from model.files import atomic_file
from model.locks import ReadWriteLock

logger = logging.getLogger(__name__)

Metric = Literal["cos", "ip", "l2"]
DType = Literal["f16", "i8"]
_FORMAT = 1
_INDEX_FILE = "index.faiss"
_KEYS_FILE = "keys.npy"
_META_FILE = "ann.json"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("AnnIndex needs faiss: pip install faiss-cpu") from None
    return faiss


class AnnIndex:
    """HNSW index over float16/int8 vectors with int64 keys and filtered search.

    Parameters
    ----------
    dim : vector dimension (384 for all-MiniLM-L6-v2).
    metric : "cos" (vectors and queries are L2-normalised, scores are cosines), "ip" (raw inner
        product) or "l2" (scores are squared distances, smallest first).
    dtype : "f16" (2 bytes per value; recall as float32) or "i8" (1 byte per value, per-dimension
        ranges trained on the first ``add``; half the memory, ~1-2 points of recall).
    M : graph links per node (memory ~ 8*M bytes per vector on the base layer).
    ef_construction : build-time beam width (higher: slower build, better graph).
    ef_search : query-time beam width (higher: slower query, better recall); settable later.
    exact_below : a filter allowing at most this many vectors is answered by decoding and
        scoring just those.
    flat_below : a filter allowing under this share of the vectors is answered by an exact flat
        scan (faiss skips the others by a bitmap) instead of the graph.
    """

    def __init__(
        self,
        dim: int,
        *,
        metric: Metric = "cos",
        dtype: DType = "f16",
        M: int = 32,
        ef_construction: int = 100,
        ef_search: int = 64,
        exact_below: int = 2_000,
        flat_below: float = 0.1,
    ) -> None:
        if metric not in ("cos", "ip", "l2"):
            raise ValueError(f"unknown metric {metric!r}, expected one of 'cos', 'ip', 'l2'")
        if dtype not in ("f16", "i8"):
            raise ValueError(f"unknown dtype {dtype!r}, expected 'f16' or 'i8'")
        faiss = _faiss()
        self.dim = int(dim)
        self.metric: Metric = metric
        self.dtype: DType = dtype
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self.exact_below = int(exact_below)
        self.flat_below = float(flat_below)
        quantizer = faiss.ScalarQuantizer.QT_fp16 if dtype == "f16" else faiss.ScalarQuantizer.QT_8bit
        faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
        self._index = faiss.IndexHNSWSQ(self.dim, quantizer, self.M, faiss_metric)
        self._index.hnsw.efConstruction = self.ef_construction
        # None while key i is at position i (how `ArticleIndex` uses it): no key array to grow
        # and search on every add.
        self._keys: npt.NDArray[np.int64] | None = None
        self._sorted: npt.NDArray[np.int64] | None = None  # argsort of keys, for key -> position
        # Searches share it, writes take it alone: faiss may reallocate the graph during an add.
        self._lock = ReadWriteLock()

    # --- building ---------------------------------------------------------------------------

    def _prepare(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim))
        if self.metric == "cos":
            norms = np.linalg.norm(array, axis=1, keepdims=True)
            array = np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)
        return array

    def add(self, keys: npt.ArrayLike, vectors: npt.ArrayLike, *, batch: int = 50_000) -> None:
        """Add ``vectors`` (n, dim) under int64 ``keys`` (n,); keys must be new and unique.

        Vectors are converted to float32 one batch at a time, so a float16 input of 1M rows never
        exists in float32 all at once.
        """
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        source = np.asarray(vectors)
        if source.ndim != 2 or source.shape[1] != self.dim or source.shape[0] != keys.shape[0]:
            raise ValueError(
                f"expected {keys.shape[0]} vectors of dimension {self.dim}, "
                f"got an array of shape {source.shape}"
            )
        with self._lock.write():
            n = len(self)
            continues = keys.shape[0] == 0 or (keys[0] == n and bool((np.diff(keys) == 1).all()))
            checked = self._keys is None and continues  # the next positions: new and unique
            if not checked and (np.unique(keys).shape[0] != keys.shape[0] or np.isin(keys, self.keys).any()):
                raise ValueError("keys must be unique and new to the index (rebuild to replace vectors)")
            if not self._index.is_trained:
                # int8 needs per-dimension ranges; a sample of the first batch is enough for embeddings.
                pick = np.random.default_rng(0).permutation(source.shape[0])[:100_000]
                self._index.train(self._prepare(source[np.sort(pick)]))
            for start in range(0, source.shape[0], batch):
                self._index.add(self._prepare(source[start : start + batch]))
            if self._keys is not None or not continues:
                self._keys = np.concatenate([self.keys[:n], keys])
            self._sorted = None

    def set_vectors(self, keys: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Overwrite the stored vectors of known ``keys`` (their graph links stay as built: a
        search finds them by their old place and scores them with the new vector)."""
        positions = self.positions(keys)
        if len(positions) != len(np.asarray(keys).reshape(-1)):
            raise KeyError("set_vectors: unknown keys")
        codes = self._encode(self._prepare(vectors))
        with self._lock.write():
            self._codes()[positions] = codes

    def vectors(self, keys: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """The stored vectors of ``keys`` (float32, as quantised), in the order given."""
        positions = self.positions(keys)
        with self._lock.read():
            return self._decode(self._codes()[positions])

    def _encode(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
        storage = _faiss().downcast_index(self._index.storage)
        return storage.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))

    def _decode(self, codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        storage = _faiss().downcast_index(self._index.storage)
        if len(codes) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return storage.sa_decode(np.ascontiguousarray(codes))

    # --- querying ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def keys(self) -> npt.NDArray[np.int64]:
        """Keys in internal order: a boolean ``allowed`` mask must be aligned with this array."""
        return np.arange(len(self), dtype=np.int64) if self._keys is None else self._keys

    def positions(self, keys: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Internal positions of ``keys`` (unknown keys are dropped)."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if self._keys is None:
            return keys[(keys >= 0) & (keys < len(self))]
        if self._sorted is None:
            self._sorted = np.argsort(self._keys, kind="stable").astype(np.int64)
        sorted_keys = self._keys[self._sorted]
        where = np.searchsorted(sorted_keys, keys).clip(0, max(len(sorted_keys) - 1, 0))
        hit = sorted_keys[where] == keys if len(sorted_keys) else np.zeros(keys.shape, dtype=bool)
        return self._sorted[where[hit]]

    def _mask(self, allowed: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        array = np.asarray(allowed)
        if array.dtype == np.bool_:
            # Shorter is allowed: vectors added after the caller built its mask are not allowed.
            if array.ndim != 1 or len(array) > len(self):
                raise ValueError(f"a boolean allowed mask must have shape ({len(self)},), got {array.shape}")
            return array
        mask = np.zeros(len(self), dtype=bool)
        mask[self.positions(array)] = True
        return mask

    def search(
        self,
        vector: npt.ArrayLike,
        k: int = 10,
        *,
        allowed: npt.ArrayLike | None = None,
        filter_fn: Callable[[int], bool] | None = None,
        ef_search: int | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` nearest keys to one query vector, best first, and their scores.

        Parameters
        ----------
        vector : one query of shape (dim,).
        k : how many neighbours; fewer come back when fewer vectors pass the filter.
        allowed : restrict to these vectors: a boolean mask aligned with `keys`, or int64 keys.
            Applied inside the graph search (exact scan when it allows few vectors).
        filter_fn : a per-key predicate, for filters not worth a mask; applied after an
            over-fetch that doubles until ``k`` pass, so it is slow for selective predicates.
        ef_search : override the beam width for this query.
        """
        if len(self) == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = self._prepare(vector)[:1]
        ef = max(ef_search or self.ef_search, k)
        mask = None if allowed is None else self._mask(allowed)
        with self._lock.read():
            if mask is not None:
                return self._search_allowed(query, k, mask, ef)
            if filter_fn is None:
                params = _faiss().SearchParametersHNSW(efSearch=ef)
                scores, labels = self._index.search(query, k, params=params)
                return self._result(labels[0], scores[0])
            return self._search_predicate(query, k, filter_fn, ef)

    def _search_allowed(
        self, query: npt.NDArray[np.float32], k: int, mask: npt.NDArray[np.bool_], ef: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        faiss = _faiss()
        count = int(mask.sum())
        if count == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if count <= self.exact_below:
            # A handful: decoding just those beats even a flat scan, which visits all n.
            return self._exact_subset(query[0], np.flatnonzero(mask), k)
        fraction = count / len(self)
        bits = np.packbits(mask, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n: bytes, not bits
        if fraction < self.flat_below:
            # Exact over the allowed codes: below ~10% the filtered graph walk misses neighbours
            # (recall@10 0.87 at 4% of 1M vectors, benchmarks/backends.py; a wider beam did not help).
            scores, labels = self._index.storage.search(query, k, params=faiss.SearchParameters(sel=selector))
        else:
            # The beam must grow as the filter tightens, or it fills with rejected nodes.
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(ef / fraction, 2048)))
            scores, labels = self._index.search(query, k, params=params)
        return self._result(labels[0], scores[0])

    def _search_predicate(
        self, query: npt.NDArray[np.float32], k: int, filter_fn: Callable[[int], bool], ef: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        n = len(self)
        fetch = 4 * k
        while True:
            fetch = min(fetch, n)
            params = _faiss().SearchParametersHNSW(efSearch=max(ef, fetch))
            scores, labels = self._index.search(query, fetch, params=params)
            found, values = self._result(labels[0], scores[0])
            keep = np.fromiter((bool(filter_fn(int(key))) for key in found), dtype=bool, count=len(found))
            if keep.sum() >= k or fetch >= n:
                return found[keep][:k], values[keep][:k]
            fetch *= 2

    def _codes(self) -> npt.NDArray[np.uint8]:
        """Zero-copy (n, code_size) view of the stored codes (float16 or int8 rows)."""
        faiss = _faiss()
        storage = faiss.downcast_index(self._index.storage)
        size = int(storage.code_size)
        flat = faiss.rev_swig_ptr(storage.codes.data(), len(self) * size)
        return np.asarray(flat).reshape(len(self), size)

    def _exact_subset(
        self, query: npt.NDArray[np.float32], positions: npt.NDArray[np.int64], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        vectors = self._decode(self._codes()[positions])
        if self.metric == "l2":
            scores = ((vectors - query) ** 2).sum(axis=1)
            order = np.argsort(scores)[:k]
        else:
            scores = vectors @ query
            top = np.argpartition(-scores, min(k, len(scores)) - 1)[:k]
            order = top[np.argsort(-scores[top])]
        return self._key_of(positions[order]), scores[order].astype(np.float32)

    def search_many(
        self, vectors: npt.ArrayLike, k: int = 10, *, ef_search: int | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Unfiltered top-``k`` for many queries at once (faiss spreads them over threads):
        (m, k) keys, -1 where fewer than k exist, and (m, k) scores."""
        queries = self._prepare(vectors)
        if len(self) == 0:
            return np.full((len(queries), k), -1, dtype=np.int64), np.zeros((len(queries), k), np.float32)
        params = _faiss().SearchParametersHNSW(efSearch=max(ef_search or self.ef_search, k))
        with self._lock.read():
            scores, labels = self._index.search(queries, k, params=params)
        keys = np.where(labels >= 0, self._key_of(labels.clip(0)), -1)
        return keys.astype(np.int64), scores.astype(np.float32)

    def _result(
        self, labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        valid = labels >= 0  # faiss pads with -1 when fewer than k were found
        return self._key_of(labels[valid]), scores[valid].astype(np.float32)

    def _key_of(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return positions.astype(np.int64) if self._keys is None else self._keys[positions]

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index into folder ``path`` (graph + codes, keys, settings); return it."""
        faiss = _faiss()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        # Each file goes to a temp name then is renamed, so a crash never leaves a torn file.
        with atomic_file(folder / _INDEX_FILE) as tmp, self._lock.read():
            faiss.write_index(self._index, str(tmp))
        np.save(folder / _KEYS_FILE, self.keys)
        meta = {
            "format": _FORMAT,
            "dim": self.dim,
            "metric": self.metric,
            "dtype": self.dtype,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "exact_below": self.exact_below,
            "flat_below": self.flat_below,
            "count": len(self),
        }
        (folder / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> AnnIndex:
        """Read an index written by `save`. ``mmap=True`` maps the codes instead of reading them
        (less RSS, first queries slower)."""
        faiss = _faiss()
        folder = Path(path)
        meta_path = folder / _META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no {_META_FILE} in {folder}: not a folder written by AnnIndex.save")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {_FORMAT}")
        index = cls(
            meta["dim"],
            metric=meta["metric"],
            dtype=meta["dtype"],
            M=meta["M"],
            ef_construction=meta["ef_construction"],
            ef_search=meta["ef_search"],
            exact_below=meta["exact_below"],
            flat_below=meta.get("flat_below", 0.1),
        )
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        index._index = faiss.read_index(str(folder / _INDEX_FILE), flags)
        keys = np.load(folder / _KEYS_FILE)
        if len(keys) != index._index.ntotal:
            raise ValueError(f"{folder}: {len(keys)} keys for {index._index.ntotal} vectors")
        if not np.array_equal(keys, np.arange(len(keys))):
            index._keys = keys
        return index
