"""The stored part of a model's index: restored from a store at start-up, snapshotted to a folder.

A service with an embedded store keeps every ingested article's vector and story there; a start
re-adds them to the bundle's index (`NewsModel.restore`: nothing re-embedded or re-scored). The
snapshot beside the store holds those rows (and the approximate-search graph) as the index lays
them out, so the next start loads it in the time it takes to read the files and replays only the
rows stored after it. A snapshot of another bundle, or one the store has lost rows since (a
takedown), is not used: then every stored row is restored.

Vectors are only ever mixed with vectors of the same encoder (its ``vectors_id``; two encoders
may both be 384 wide). A store keeps each encoder's vectors as a generation of their own
(`model.store.base.GenerationStore`) and the source hands out one generation's rows; a source of
another encoder's vectors is refused (`VectorsMismatch`), never re-embedded here: filling a new
generation in the background and switching to it is the service's job (`service.generations`).

`NewsModel.restore_from`, `.restore_new`, `.write_snapshot` are the calls; this module is what they
do. The store is reached through `RowSource`, so nothing here knows a backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from model.articles.article import Article, article_from_record, record_provider_key
from model.coverage.article_index import ArticleIndex, StoredRecord
from model.encoders.base import DEFAULT_MODEL_NAME, Encoder
from model.encoders.registry import vectors_id
from model.errors import NewsDeskError

logger = logging.getLogger(__name__)

CHUNK = 5000
LEGACY_SNAPSHOT_VECTORS = DEFAULT_MODEL_NAME  # a snapshot written before vectors ids were recorded


class StoredRow(Protocol):
    """What a restart needs of one stored article (the store's light reader returns these)."""

    @property
    def seq(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def record(self) -> dict[str, Any]: ...
    @property
    def embedding(self) -> npt.NDArray[np.float32]: ...
    @property
    def story_id(self) -> str: ...
    @property
    def published_at(self) -> datetime | None: ...


class RowSource(Protocol):
    """The store a model restores from: its rows in ``seq`` order, and one article's record."""

    def count(self) -> int: ...

    def last_seq(self) -> int: ...

    def rows_since(self, since: int, chunk: int) -> Iterable[StoredRow]:
        """Stored articles with ``seq`` above ``since``, in ``seq`` order, read ``chunk`` at a time."""
        ...

    def record(self, article_id: str) -> Mapping[str, Any] | None:
        """A stored article's record, or None when it is gone (read on first use of a restored row)."""
        ...

    def vectors_id(self) -> str | None:
        """Which encoder made the stored vectors; None when nothing is stored."""
        ...

    def set_vectors_id(self, vectors_id: str) -> None:
        """Record the encoder of a store nothing was recorded in yet."""
        ...


class VectorsMismatch(NewsDeskError):
    """The source's vectors are another encoder's than the model's: they are never compared."""


class Restorable(Protocol):
    """The model a restore fills (`NewsModel`)."""

    index: ArticleIndex
    embedder: Encoder

    def embed(self, articles: Sequence[Article]) -> npt.NDArray[np.float32]: ...

    def restore(
        self,
        articles: Sequence[Article | StoredRecord],
        vectors: npt.NDArray[np.float32],
        story_ids: Sequence[str],
    ) -> int: ...


@dataclass(frozen=True, slots=True)
class Restored:
    """What `StoredRows.restore` did."""

    articles: int  # stored articles now in the index (from the snapshot and after it)
    last_seq: int  # the last store seq restored
    from_snapshot: bool


def add_stored_rows(
    model: Restorable,
    source: RowSource,
    *,
    since: int = 0,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
    restored: int = 0,
) -> tuple[int, int]:
    """Re-add the stored articles after ``since`` with their stored vectors and story ids (the
    source's vectors are the model's encoder's: `StoredRows.restore` checks).

    ``progress`` is told the running total (``restored`` plus the rows read so far).
    Returns (articles added, last seq).
    """
    added, last = 0, since
    batch: list[StoredRow] = []
    dim = model.embedder.dim

    def flush() -> None:
        nonlocal added, restored
        if not batch:
            return
        # Parsed lazily by the index (`StoredRecord`): a restart must not pay for every article.
        # The record itself is not kept: the index reads it from the store on first use, so a
        # million restored rows do not hold a million parsed records in memory.
        articles = [
            StoredRecord(
                row.id, record_provider_key(row.record), row.published_at, None, row.record.get("language")
            )
            for row in batch
        ]
        story_ids = [row.story_id for row in batch]
        dims = {row.embedding.shape[0] for row in batch}
        if dims == {dim}:
            vectors = np.stack([row.embedding for row in batch])
        else:  # a damaged row: its text still tells where it belongs
            logger.warning("stored vectors have dim %s, the encoder %d: embedding those afresh", dims, dim)
            vectors = model.embed([article_from_record(row.record, require_text=False) for row in batch])
        added += model.restore(articles, vectors, story_ids)
        restored += len(batch)
        if progress is not None:
            progress(restored)
        batch.clear()

    for row in source.rows_since(since, chunk):
        batch.append(row)
        last = row.seq
        if len(batch) >= chunk:
            flush()
    flush()
    return added, last


class StoredRows:
    """The rows a store added to one model's index: where they came from and how far they go.

    Made by `NewsModel.restore_from`; its index's rows from ``bundle_rows`` on are the stored ones
    (restored, then ingested), which is what a snapshot holds.
    """

    def __init__(self, model: Restorable, source: RowSource, version: str) -> None:
        self.model = model
        self.source = source
        self.version = version
        self.bundle_rows = len(model.index)  # the bundle's own corpus comes first
        self.last_seq = 0
        self.from_snapshot = False
        self._graph_at_restore = False
        # A restored row's record stays in the store until something reads it.
        model.index.record_loader = source.record
        model.index.records_loader = getattr(source, "records", None)  # many at once, where offered

    def restore(
        self, snapshot_dir: Path | None = None, progress: Callable[[int], None] | None = None
    ) -> Restored:
        """Every stored row: from the snapshot in ``snapshot_dir`` and the rows after it when it
        serves, else from the store alone. Raises `VectorsMismatch` when the source's vectors are
        another encoder's."""
        mine, stored = vectors_id(self.model.embedder), self.source.vectors_id()
        if stored is not None and stored != mine:
            raise VectorsMismatch(
                f"the stored vectors were made by {stored}, bundle {self.version} encodes with {mine}: "
                "they are never compared; its own vector generation must be filled first"
            )
        loaded = self._from_snapshot(snapshot_dir, progress) if snapshot_dir is not None else None
        self.from_snapshot = loaded is not None
        if loaded is None:
            if progress is not None:
                progress(0)
            loaded, self.last_seq = add_stored_rows(self.model, self.source, progress=progress)
        if stored is None:
            self.source.set_vectors_id(mine)
        merges = getattr(self.source, "story_merges", None)
        if self.from_snapshot and merges is not None:
            # The snapshot may predate story merges the store recorded since: show the surviving ids.
            self.model.index.relabel_stories(merges())
        self._graph_at_restore = self.model.index.has_graph
        return Restored(loaded, self.last_seq, self.from_snapshot)

    def restore_new(self) -> int:
        """Re-add the rows stored since the last restore (a reload catching up); returns how many."""
        added, self.last_seq = add_stored_rows(self.model, self.source, since=self.last_seq)
        return added

    def _from_snapshot(self, folder: Path, progress: Callable[[int], None] | None) -> int | None:
        """Load the snapshot and replay the store rows after it; None when it cannot serve
        (another bundle, or the store lost rows since it was taken: then a full restore)."""
        index, bundle_rows = self.model.index, self.bundle_rows
        meta = index.read_snapshot_meta(folder)
        if meta is None or meta.get("bundle_version") != self.version or meta.get("from_row") != bundle_rows:
            return None
        if meta.get("vectors_id", LEGACY_SNAPSHOT_VECTORS) != vectors_id(self.model.embedder):
            return None  # another encoder's vectors (a snapshot from before they were recorded: MiniLM's)
        if self.source.last_seq() < int(meta.get("last_seq", 0)):
            return None
        started = time.perf_counter()
        try:
            loaded = index.load_snapshot(folder)
        except NewsDeskError as error:
            logger.warning("index snapshot unusable (%s): restoring from the store", error)
            return None
        if progress is not None:
            progress(loaded)
        read = [loaded]  # the running count of rows seen: the snapshot's, then the store's after it

        def replayed(count: int) -> None:
            read[0] = count
            if progress is not None:
                progress(count)

        more, last = add_stored_rows(
            self.model, self.source, since=int(meta["last_seq"]), progress=replayed, restored=loaded
        )
        # Stored articles that are also the bundle's own (a backfill of the archive it was trained on)
        # add no row to the index: those the snapshot counted, and those replayed after it.
        in_bundle = int(meta.get("stored_in_bundle", 0)) + (read[0] - loaded - more)
        live, stored = index.live_count() - bundle_rows, self.source.count()
        if live + in_bundle != stored:
            # Takedowns since the snapshot: it holds rows the store no longer has. Start clean.
            logger.warning("index snapshot has %d rows, the store %d: restoring from the store", live, stored)
            index.truncate(bundle_rows)
            return None
        self.last_seq = last
        logger.info(
            "restored %d stored articles from the index snapshot and %d after it in %.1fs",
            loaded,
            more,
            time.perf_counter() - started,
        )
        return loaded + more

    @property
    def snapshot_outdated(self) -> bool:
        """Whether the snapshot on disk lacks what this index now has: it was not restored from
        one, or the graph was built since (a snapshot that holds the graph is not rewritten)."""
        return not self.from_snapshot or (not self._graph_at_restore and self.model.index.has_graph)

    def write_snapshot(self, folder: Path) -> int:
        """Snapshot the stored rows (the caller keeps ingests out meanwhile); returns the rows."""
        last, stored = self.source.last_seq(), self.source.count()
        index = self.model.index
        started = time.perf_counter()
        meta = {
            "bundle_version": self.version,
            "last_seq": last,
            "vectors_id": vectors_id(self.model.embedder),
            # Stored rows the index holds as the bundle's own rows (no row of their own past them).
            "stored_in_bundle": stored - (index.live_count() - self.bundle_rows),
        }
        rows = index.write_snapshot(folder, from_row=self.bundle_rows, meta=meta)
        logger.info("wrote the index snapshot: %d rows in %.1fs", rows, time.perf_counter() - started)
        return rows
