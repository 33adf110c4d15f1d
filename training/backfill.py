"""``python -m training backfill``: ingest an archive in batches, as the service would one by one.

Every article of the seeds goes into the service's store exactly as ``POST /v1/articles`` would have
put it there (the same row: `model.store.base.new_stored_article`), classified by the live bundle,
its duplicate and story decided by `NewsModel.add` (the one story rule) in published order against
everything stored before it. The model first restores what the store already holds, so stored
articles are candidates and ids already stored are skipped: a second run stores nothing, and a run
killed mid-way loses at most the batch it had not committed (each batch is one transaction:
SQLite ``put_many``, PostgreSQL's ``COPY`` bulk load). At the end the embedded store gets its index
snapshot, so a service starting on it is ready in seconds (PostgreSQL searches in the database and
has none). A service writing the same store holds its writer lock shared; the backfill takes it
exclusive and refuses, with one line, while one runs (`model.store.writers`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from model.articles.article import Article
from model.coverage.batch_links import BatchLinker
from model.news_model import NewsModel
from model.store import ArticleStore, open_store
from model.store.base import StoreRows, new_stored_article
from model.store.writers import hold_writer, no_reembedding
from training.engine import Engine, LocalEngine

logger = logging.getLogger(__name__)

SNAPSHOT_DIR = "index-snapshot"  # beside the SQLite store, where the service looks for it
BATCH = 256


@dataclass(frozen=True, slots=True)
class BackfillTarget:
    """The store to fill: a service's data folder (SQLite) or a PostgreSQL URL."""

    data_dir: Path | None = None
    database_url: str | None = None

    @property
    def backend(self) -> str:
        return "postgres" if self.database_url else "sqlite"

    @property
    def snapshot_dir(self) -> Path | None:
        """Where the service's index snapshot lives (none for PostgreSQL: it searches in the database)."""
        return self.data_dir / SNAPSHOT_DIR if self.data_dir is not None and not self.database_url else None


@dataclass(frozen=True, slots=True)
class BackfillResult:
    read: int  # unique articles in the seeds (related items count as articles of their own)
    stored: int
    already_stored: int
    snapshot_rows: int  # rows in the index snapshot written (0: none written)


def published_order(articles: Sequence[Article]) -> list[Article]:
    """Articles as a service receiving them live would have: by publication time (undated last),
    ties by id, so the order and the stories never depend on how the seeds were laid out."""
    return sorted(articles, key=lambda a: (a.published_at is None, a.published_at or datetime.min, a.id))


def backfill_store(
    model: NewsModel,
    store: ArticleStore,
    articles: Sequence[Article],
    *,
    snapshot_dir: Path | None = None,
    batch_size: int = BATCH,
    embed_chunk: int | None = None,
    engine: Engine | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Store ``articles`` (in published order) that ``store`` lacks, through ``model``; ``store``
    must be written by nobody else meanwhile (`run_backfill` holds the lock).

    Articles are embedded and classified ``embed_chunk`` at a time (default: the engine's chunk,
    bigger on Ray, where each call starts an actor pool) in ``engine``'s batches (default: here),
    and stored ``batch_size`` at a time (one transaction each). ``progress(done, total)`` is told
    after each committed batch.
    """
    engine = engine or LocalEngine()
    embed_chunk = embed_chunk or engine.chunk
    heads = model.heads
    started = time.perf_counter()
    restored = model.restore_from(StoreRows(store), snapshot_dir)
    # The graph the service would have built after its start, so the search the rule sees (exact
    # up to the index's threshold, approximate above it) is the one posting would have met.
    model.build_graph()
    logger.info(
        "%d stored articles restored in %.1fs%s",
        restored.articles,
        time.perf_counter() - started,
        " (from the index snapshot)" if restored.from_snapshot else "",
    )
    ordered = published_order(articles)
    # Each batch decided at once by the one rule, as posting its articles one by one would have.
    linker = BatchLinker(model.pair_scorer, model.window_days)
    bulk_load = getattr(store, "bulk_load", None)  # PostgreSQL: COPY, one transaction
    stored = already = 0
    for chunk_start in range(0, len(ordered), embed_chunk):
        chunk = ordered[chunk_start : chunk_start + embed_chunk]
        known = store.get_many([a.id for a in chunk])
        fresh = [a for a in chunk if a.id not in known]
        already += len(chunk) - len(fresh)
        # One embedding call per chunk: the engine's batches (`--engine ray`: one actor-pool job),
        # the cache consulted and filled in bulk; then the chunk is stored batch by batch.
        chunk_vectors = model.embedder.encode([a.text for a in fresh], show_progress_bar=False)
        # Every label scored, as the service stores it (the review queue sorts by uncertainty).
        chunk_results = (
            engine.classify(heads, fresh, chunk_vectors, all_scores=True, bundle=model.path) if fresh else []
        )
        for start in range(0, len(fresh), batch_size):
            batch, vectors = fresh[start : start + batch_size], chunk_vectors[start : start + batch_size]
            results = chunk_results[start : start + batch_size]
            ingested = model.add(batch, vectors, linker=linker)
            now = datetime.now(UTC)
            rows = [
                new_stored_article(
                    a, vectors[i], results[i], model.version, now, done.story_id, done.duplicate_of
                )
                for i, (a, done) in enumerate(zip(batch, ingested, strict=True))
            ]
            if bulk_load is not None:
                stored += int(bulk_load(rows))
            else:
                stored += sum(store.put_many(rows))
            if progress is not None:
                progress(chunk_start + len(chunk) - len(fresh) + start + len(batch), len(ordered))
        if progress is not None and not fresh:
            progress(chunk_start + len(chunk), len(ordered))
    snapshot_rows = 0
    if snapshot_dir is not None and (stored or model.snapshot_outdated):
        model.build_graph()  # the snapshot then holds the graph: the service builds nothing
        snapshot_rows = model.write_snapshot(snapshot_dir)
    return BackfillResult(len(ordered), stored, already, snapshot_rows)


def run_backfill(
    model: NewsModel,
    target: BackfillTarget,
    articles: Sequence[Article],
    *,
    batch_size: int = BATCH,
    engine: Engine | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillResult:
    """Open ``target`` holding its writer lock alone (`StoreBusyError` while a service writes it),
    then `backfill_store`."""
    store_dir = target.data_dir or Path(".")
    with hold_writer(target.backend, store_dir, target.database_url, exclusive=True):
        store = open_store(target.backend, store_dir, target.database_url)
        try:
            # Rows go into the live vector generation, whichever it is: none may fill or switch meanwhile.
            with no_reembedding(store, "backfill"):
                return backfill_store(
                    model,
                    store,
                    articles,
                    snapshot_dir=target.snapshot_dir,
                    batch_size=batch_size,
                    engine=engine,
                    progress=progress,
                )
        finally:
            store.close()
