"""``python -m training reembed``: fill a bundle's vector generation in the store, in batches.

When the encoder changes, the store keeps the new encoder's vectors as a generation of their own
beside the live one (`model.store.base.GenerationStore`: *building* until every stored article has
its vector, then switched to at once); a service fills it in the background, a few rows at a time
so requests keep their latency. This command fills the same generation offline through the same
store calls and the same lease, with the training engine's embed batches (`--engine ray`: the
actor pool; the embedding cache consulted and filled in bulk), for an archive too big to wait for
that. Each chunk commits its vectors with how far the generation is filled, so a run killed
mid-way resumes there, and rows ingested meanwhile are picked up before the generation is marked
complete. Nothing else in the store changes: a service switches to the generation when it loads
the bundle (it then has nothing left to embed).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from model.articles.article import article_from_record
from model.encoders.base import Encoder
from model.encoders.registry import vectors_id
from model.errors import NewsDeskError
from model.store import open_store
from model.store.base import GenerationStore, StoreError
from model.store.writers import dead_lease_holder, reembed_lease_owner

logger = logging.getLogger(__name__)

CHUNK = 4096  # rows embedded and committed at once (one actor-pool job with --engine ray)
LEASE_SECONDS = 900.0  # renewed every chunk; a killed run's lease lapses after this


@dataclass(frozen=True, slots=True)
class ReembedResult:
    generation: int | None  # None: nothing to fill (an empty store)
    vectors_id: str
    embedded: int
    state: str  # the generation's state at the end: complete, or live when it already was


def reembed_store(
    store: GenerationStore,
    embedder: Encoder,
    *,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> ReembedResult:
    """Fill the generation of ``embedder``'s vectors in ``store`` and mark it complete."""
    mine = vectors_id(embedder)
    live = store.live_generation()
    if live is None:
        if store.count():  # cannot happen: a store with rows records their encoder on opening
            raise NewsDeskError("the store records no encoder for its vectors; start the service on it once")
        return ReembedResult(None, mine, 0, "empty")
    if live.vectors_id == mine:
        return ReembedResult(live.id, mine, 0, live.state)
    owner = reembed_lease_owner("reembed")
    if not store.take_reembed_lease(owner, LEASE_SECONDS, take_from=dead_lease_holder(store)):
        raise NewsDeskError(
            f"{store.reembed_lease_holder()} is re-embedding this store (a service's worker or another "
            "reembed); run again when it is done"
        )
    try:
        generation = store.open_generation(mine)
        total, embedded, after = store.missing_count(generation.id), 0, generation.filled_seq
        logger.info("generation %d (%s): %d stored articles to embed", generation.id, mine, total)
        while True:
            rows = store.rows_missing(generation.id, after, chunk)
            if rows:
                texts = [article_from_record(row.record, require_text=False).text for row in rows]
                vectors = embedder.encode(texts, show_progress_bar=False)
                pairs = [(row.id, vector) for row, vector in zip(rows, vectors, strict=True)]
                store.put_generation_vectors(generation.id, pairs, rows[-1].seq)
                embedded, after = embedded + len(rows), rows[-1].seq
                store.take_reembed_lease(owner, LEASE_SECONDS)  # renewed: still ours
                if progress is not None:
                    progress(embedded, max(total, embedded))
            elif after == 0 or store.missing_count(generation.id) == 0:
                break
            else:
                after = 0  # a row missing behind the fill's mark: look again from the start
        if generation.state == "building":
            # A row ingested between the last look and this is caught by the next run (or the
            # service's worker): the generation then stays building, which is safe.
            with contextlib.suppress(StoreError):
                generation = store.mark_generation_filled(generation.id)
        return ReembedResult(generation.id, mine, embedded, generation.state)
    finally:
        store.release_reembed_lease(owner)


def run_reembed(
    embedder: Encoder,
    data_dir: Path | None,
    database_url: str | None,
    *,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ReembedResult, float]:
    """Open the store at ``data_dir`` (SQLite) or ``database_url`` and `reembed_store`; returns the
    result and the seconds it took."""
    started = time.perf_counter()
    backend = "postgres" if database_url else "sqlite"
    store = open_store(backend, data_dir or Path("."), database_url)
    try:
        if not isinstance(store, GenerationStore):
            raise NewsDeskError(f"the {backend} store keeps no vector generations yet")
        result = reembed_store(store, embedder, chunk=chunk, progress=progress)
    finally:
        store.close()
    return result, time.perf_counter() - started
