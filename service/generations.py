"""A bundle on another encoder: its vector generation filled in the background, then switched to.

The live bundle keeps serving everything while one worker (one across processes: the store's
re-embedding lease) embeds the stored articles with the pending bundle's encoder into a generation
of their own, a chunk at a time, catching up on rows ingested meanwhile and sleeping between
chunks so it takes at most ``reembed_duty`` of the time. Every chunk commits its vectors with how
far the generation is filled, so a killed process resumes there. When no row is missing, the
pending model restores its index from the new generation, and under the write lock (ingest waits
milliseconds) the last rows are embedded, the store's live generation flips and the model swaps:
at once. A query vector is only ever compared with its own encoder's vectors: each model's index
holds its own generation's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from model.articles.article import article_from_record
from model.coverage.story_merges import StoryMergeFinder
from model.encoders.registry import vectors_id
from model.errors import NewsDeskError
from model.news_model import NewsModel
from model.store import ArticleStore
from model.store.base import GenerationStore, RestoreRow, StoreRows, restore_rows
from model.store.shared import SharedArticleStore
from model.store.writers import dead_lease_holder, reembed_lease_owner
from service.config import Settings

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a worker renews the lease every chunk; a dead one's lapses after this
SAMPLE_ROWS = 16  # rows embedded at once when a bundle is staged, to time the encoder for the estimate
# A shared store's ingest takes no write lock: a request that read the old model before the switch
# may store into the old generation just after it. Its rows are embedded again after this long.
SETTLE_S = 1.0


@dataclass
class Pending:
    """A bundle loaded beside the live one while its vector generation fills."""

    model: NewsModel
    folder: Path
    generation: int
    vectors_id: str
    total: int  # stored articles
    done: int  # of them with a vector in the generation
    phase: str = "re-embedding"
    started: float = field(default_factory=time.perf_counter)
    embedded: int = 0  # rows this process embedded
    embed_seconds: float = 0.0  # time spent encoding them
    error: str | None = None
    duty: float = 1.0
    to_embed: int = 0  # rows missing when it was staged (a rollback to a kept generation: few)
    after_seq: int = 0  # every stored row up to this seq has its vector in the generation
    merges: int = 0  # stories the new encoder joins, found before the switch records them

    @property
    def rate(self) -> float | None:
        """Articles per second the pending encoder embeds (measured here)."""
        return self.embedded / self.embed_seconds if self.embed_seconds > 0 else None

    @property
    def estimate_s(self) -> float | None:
        """Seconds until the generation is filled: rows left / measured rate, at the duty cycle."""
        rate = self.rate
        if rate is None:
            return None
        return max(0, self.total - self.done) / rate / self.duty

    def as_dict(self) -> dict[str, Any]:
        rate, estimate = self.rate, self.estimate_s
        return {
            "model_version": self.model.version,
            "vectors_id": self.vectors_id,
            "generation": self.generation,
            "phase": self.phase,
            "done": self.done,
            "total": self.total,
            "to_embed": self.to_embed,
            "story_merges": self.merges,
            "seconds": round(time.perf_counter() - self.started, 1),
            "articles_per_s": round(rate, 2) if rate is not None else None,
            "estimate_s": round(estimate, 1) if estimate is not None else None,
            "error": self.error,
        }


class ServiceState(Protocol):
    """What this module needs of `service.state.ServiceState` (which imports this module)."""

    settings: Settings
    store: ArticleStore | None
    write_lock: asyncio.Lock
    model: NewsModel | None
    model_error: str | None
    pending: Pending | None
    progress: Any

    @property
    def snapshot_dir(self) -> Path: ...

    async def after_switch(self, model: NewsModel) -> None: ...


def generation_store(state: ServiceState) -> GenerationStore | None:
    store = state.store
    return store if isinstance(store, GenerationStore) else None


def needs_generation(state: ServiceState, vectors: str) -> bool:
    """Whether a bundle making ``vectors`` must wait for its generation (the store's live vectors
    are another encoder's)."""
    store = generation_store(state)
    if store is None:
        return False
    live = store.live_generation()
    return live is not None and live.vectors_id != vectors


def live_bundle_folder(state: ServiceState) -> Path | None:
    """The bundle last served on the store's live generation, when the bundle path still has it."""
    from model.bundle import BundleRegistry, read_manifest
    from model.encoders.registry import manifest_encoder

    store = generation_store(state)
    live = store.live_generation() if store is not None else None
    if live is None or not live.bundle_version:
        return None
    folder = BundleRegistry.of(state.settings.bundle).find(live.bundle_version)
    if folder is None:
        return None
    try:
        return folder if manifest_encoder(read_manifest(folder))[1] == live.vectors_id else None
    except NewsDeskError:
        return None


def _texts(rows: list[RestoreRow]) -> list[Any]:
    return [article_from_record(row.record, require_text=False) for row in rows]


def _embed_chunk(store: GenerationStore, pending: Pending, rows: list[RestoreRow]) -> None:
    """Embed ``rows`` with the pending encoder and commit them (with how far the fill got)."""
    started = time.perf_counter()
    vectors = pending.model.embed(_texts(rows))
    pending.embed_seconds += time.perf_counter() - started
    pending.embedded += len(rows)
    pairs = [(row.id, vector) for row, vector in zip(rows, vectors, strict=True)]
    store.put_generation_vectors(pending.generation, pairs, rows[-1].seq)
    pending.done += len(rows)
    pending.after_seq = rows[-1].seq


def stage(state: ServiceState, folder: Path, model: NewsModel) -> Pending:
    """Open ``model``'s generation and time its encoder on a first few missing rows (so the reply
    says how long the rest will take); the worker (`fill_and_switch`) does the rest."""
    store = generation_store(state)
    assert store is not None
    mine = vectors_id(model.embedder)
    generation = store.open_generation(mine)
    total = store.count()
    done = total - store.missing_count(generation.id)
    pending = Pending(
        model,
        folder,
        generation.id,
        mine,
        total,
        done,
        duty=state.settings.reembed_duty,
        to_embed=total - done,
    )
    sample = store.rows_missing(generation.id, 0, min(SAMPLE_ROWS, state.settings.reembed_chunk))
    if sample:
        _embed_chunk(store, pending, sample)
    logger.info(
        "bundle %s pending: vector generation %d (%s), %d of %d stored articles embedded%s",
        model.version,
        generation.id,
        mine,
        pending.done,
        pending.total,
        f", about {pending.estimate_s:.0f}s to go" if pending.estimate_s is not None else "",
    )
    return pending


def catch_up(store: GenerationStore, model: NewsModel, generation: int, chunk: int = 256) -> int:
    """Embed the rows ``generation`` lacks with ``model`` (its encoder's) and return how many. On a
    shared store: rows a replica that had not followed the switch yet stored into its own
    generation, and rows requests in flight at the switch stored into the old one."""
    done, after = 0, 0
    while rows := store.rows_missing(generation, after, chunk):
        vectors = model.embed(_texts(rows))
        store.put_generation_vectors(generation, [(row.id, v) for row, v in zip(rows, vectors, strict=True)])
        done, after = done + len(rows), rows[-1].seq
    if done:
        logger.info("vector generation %d: caught up %d stored articles", generation, done)
    return done


async def fill_and_switch(state: ServiceState, pending: Pending) -> None:
    """Fill ``pending``'s generation in the background (holding the store's lease), then switch the
    generation and the model together. Failures are logged and kept in ``pending.error`` (the live
    bundle serves on); a cancellation (another reload, shutdown) leaves the fill to resume."""
    store = generation_store(state)
    assert store is not None
    owner = reembed_lease_owner("service")
    try:
        while not await asyncio.to_thread(
            store.take_reembed_lease, owner, LEASE_SECONDS, take_from=dead_lease_holder(store)
        ):
            pending.phase = "waiting for another worker's re-embedding lease"
            await asyncio.sleep(LEASE_SECONDS / 8)
        pending.phase = "re-embedding"
        await _fill(state, store, pending, owner)
        await _switch(state, store, pending)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the live bundle keeps serving; /readyz says why the switch failed
        pending.phase = "failed"
        pending.error = f"{type(error).__name__}: {error}"
        logger.exception("re-embedding for bundle %s failed", pending.model.version)
    finally:
        try:
            await asyncio.to_thread(store.release_reembed_lease, owner)
        except NewsDeskError as error:
            logger.warning("could not release the re-embedding lease: %s", error)


async def _fill(state: ServiceState, store: GenerationStore, pending: Pending, owner: str) -> None:
    chunk, duty = state.settings.reembed_chunk, state.settings.reembed_duty
    while True:
        rows = await asyncio.to_thread(store.rows_missing, pending.generation, pending.after_seq, chunk)
        if not rows:
            # Replicas on a shared store commit seqs out of order: a late one may sit behind.
            rows = await asyncio.to_thread(store.rows_missing, pending.generation, 0, chunk)
        if not rows:
            await asyncio.to_thread(store.mark_generation_filled, pending.generation)
            return
        before = pending.embed_seconds
        await asyncio.to_thread(_embed_chunk, store, pending, rows)
        pending.total = await asyncio.to_thread(store.count)
        await asyncio.to_thread(store.take_reembed_lease, owner, LEASE_SECONDS)
        # At most `duty` of the wall time encoding: ingest and search share the cores.
        await asyncio.sleep((pending.embed_seconds - before) * (1 - duty) / duty)


def _stored_stories(store: GenerationStore, generation: int) -> list[tuple[str, str]]:
    """(article id, story as read: merges resolved) of every row ``generation`` holds, in seq order."""
    return [(row.id, row.story_id) for row in restore_rows(store, 0, 5000, generation)]  # type: ignore[arg-type]


async def _find_merges(
    state: ServiceState, store: GenerationStore, pending: Pending
) -> list[tuple[str, str]]:
    """The stories the pending encoder joins (`StoryMergeFinder` over its filled generation), a
    chunk at a time at the re-embedding's duty cycle: the switch records them."""
    model, shared = pending.model, isinstance(store, SharedArticleStore)
    pending.phase = "finding the stories the new encoder joins"
    rows = await asyncio.to_thread(_stored_stories, store, pending.generation)
    finder = StoryMergeFinder(model.pair_scorer, model.window_days, rows)
    chunk, duty = state.settings.reembed_chunk, pending.duty
    began, busy = time.perf_counter(), 0.0
    for start in range(0, len(rows), chunk):
        # On a shared store the generation is searched in the database (a fresh search per chunk:
        # it keeps what it read); else the pending model's index holds it.
        search = store.search(pending.generation) if shared else model.index  # type: ignore[attr-defined]
        started = time.perf_counter()
        ids = [id_ for id_, _ in rows[start : start + chunk]]
        pending.merges = await asyncio.to_thread(finder.scan, search, ids)
        spent = time.perf_counter() - started
        busy += spent
        await asyncio.sleep(spent * (1 - duty) / duty)
    logger.info(
        "vector generation %d: %d stored articles decided again in %.1fs (%.1fs of it working), "
        "%d stories merge into others at the switch",
        pending.generation,
        finder.scanned,
        time.perf_counter() - began,
        busy,
        pending.merges,
    )
    return finder.merges()


async def _switch(state: ServiceState, store: GenerationStore, pending: Pending) -> None:
    model = pending.model
    # A shared store searches in the database: no index to restore, and the switch names the
    # bundle every replica follows (`service.replicas`) in the same transaction.
    shared = isinstance(store, SharedArticleStore)
    if not shared:
        pending.phase = "restoring the index from the new generation"
        await asyncio.to_thread(model.restore_from, StoreRows(store, pending.generation), state.snapshot_dir)
    # Articles ingested from here to the switch were decided by the live bundle: their stories
    # stay as decided (a later swap may merge them).
    merges = await _find_merges(state, store, pending)
    async with state.write_lock:
        pending.phase = "switching"
        # Rows ingested since the fill finished: few, embedded while ingest waits.
        while rows := await asyncio.to_thread(store.rows_missing, pending.generation, pending.after_seq, 256):
            await asyncio.to_thread(_embed_chunk, store, pending, rows)
        if shared:  # a replica's late commit behind the fill (seqs commit out of order)
            await asyncio.to_thread(catch_up, store, model, pending.generation)
        previous = state.model
        if shared:
            await asyncio.to_thread(
                store.switch_generation,  # type: ignore[call-arg]
                pending.generation,
                model.version,
                live_folder=pending.folder.name,
                merges=merges,
            )
        else:
            await asyncio.to_thread(model.restore_new)
            await asyncio.to_thread(store.switch_generation, pending.generation, model.version, merges=merges)
            # The index read the stories before the merges were recorded: show the surviving ids.
            model.index.relabel_stories(StoreRows(store).story_merges())
        state.model = model
        state.model_error = None
        state.pending = None
    state.progress.phase = "ready"
    logger.info(
        "switched to bundle %s and vector generation %d (%s): %d stored articles re-embedded here in "
        "%.1fs, %d stories merged into others; was %s",
        model.version,
        pending.generation,
        pending.vectors_id,
        pending.embedded,
        time.perf_counter() - pending.started,
        len(merges),
        previous.version if previous is not None else None,
    )
    if shared:
        await asyncio.sleep(SETTLE_S)
        await asyncio.to_thread(catch_up, store, model, pending.generation)
    await state.after_switch(model)
