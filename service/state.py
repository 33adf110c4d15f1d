"""The service's live state: the loaded model, the store, the encode batcher, and bundle reloads.

A request takes the current `NewsModel` reference once and uses it to the end, so a reload
(which builds the new model fully before swapping the reference) never changes a model under
a request in flight. Index and store writes go through ``write_lock``; a reload takes it only for
its last step (re-adding what was ingested meanwhile, then swapping), so ingests wait for
milliseconds, never fail. A bundle on another encoder than the store's live vectors is *pending*:
the live one serves on while its vector generation fills in the background (`service.generations`),
then both switch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model.articles.language import detect_language
from model.bundle import read_manifest, resolve_bundle
from model.coverage.search import ArticleSearch, MergedSearch
from model.encoders.base import Encoder
from model.encoders.registry import manifest_encoder, vectors_id
from model.errors import NewsDeskError
from model.news_model import NewsModel
from model.store import ArticleStore, open_store
from model.store.base import GenerationStore, StoreRows, record_vectors_id, stored_vectors_id
from model.store.shared import LIVE_VERSION_KEY, SharedArticleStore
from model.store.writers import WriterLock, hold_writer
from service.auth import RateLimiter, build_keyring
from service.batching import MicroBatcher
from service.config import Settings
from service.errors import (
    GenerationNotFoundError,
    ModelUnavailableError,
    StoreUnavailableError,
    VectorsMismatchError,
)
from service.generations import (
    SETTLE_S,
    Pending,
    catch_up,
    fill_and_switch,
    generation_store,
    live_bundle_folder,
    needs_generation,
    stage,
)
from service.observability import Metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    previous_version: str | None
    model_version: str
    restored_articles: int
    seconds: float
    # A bundle on another encoder: still serving ``model_version``; this one fills its vectors.
    pending: dict[str, object] | None = None


@dataclass
class Progress:
    """What start-up is doing, for /readyz while the service is not ready yet."""

    phase: str = "starting"
    restored: int = 0
    stored: int = 0
    started: float = field(default_factory=time.perf_counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase,
            "restored_articles": self.restored,
            "stored_articles": self.stored,
            "seconds": round(time.perf_counter() - self.started, 1),
        }


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc; a no-op elsewhere).

    A restore parses a million rows of JSON and drops most of it; glibc keeps those pages, so
    without this the service's steady RSS carries the restore's high-water mark.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _bundle_vectors(folder: Path) -> str:
    """Which vectors the bundle in ``folder`` makes (its manifest's encoder)."""
    return manifest_encoder(read_manifest(folder))[1]


def _fitting(embedder: Encoder | None, folder: Path) -> Encoder | None:
    """``embedder`` when the bundle in ``folder`` encodes with it, else None (the bundle builds its own)."""
    if embedder is not None and vectors_id(embedder) != _bundle_vectors(folder):
        return None
    return embedder


class ServiceState:
    """Everything the routes share; built by the lifespan, reached through `service.deps`."""

    def __init__(
        self, settings: Settings, *, embedder: Encoder | None = None, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self._embedder = embedder
        self.model: NewsModel | None = None
        self.model_error: str | None = "the model bundle is still loading"
        self.store: ArticleStore | None = None
        self.store_error: str | None = "the article store is not open yet"
        # Held while serving (shared with replicas), so a backfill refuses to write under us.
        self._writer: WriterLock | None = None
        self.metrics = metrics or Metrics()
        self.batcher = MicroBatcher(
            max_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
            on_batch=self.metrics.batch_size.observe,
            on_wait=self.metrics.queue_wait.observe,
        )
        self.keyring = build_keyring(
            settings.api_keys.get_secret_value() if settings.api_keys else None,
            settings.api_keys_file,
            settings.admin_token.get_secret_value() if settings.admin_token else None,
        )
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
        self.write_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self.progress = Progress()
        # Set once start-up has settled (model served, or it failed): tests and tools wait on it.
        self.settled = threading.Event()
        self._loading: asyncio.Task[None] | None = None
        self._ann_task: asyncio.Future[None] | None = None
        self.snapshot_used = False  # whether the last start restored from the index snapshot
        # Which encoder made a shared store's vectors (read when a bundle is loaded): a query vector
        # of another encoder is never compared with them (`check_shared_vectors`).
        self.store_vectors: str | None = None
        self._stopping = threading.Event()  # set at shutdown: background work stops early
        # A bundle on another encoder waiting for its vector generation (`service.generations`).
        self.pending: Pending | None = None
        self._pending_task: asyncio.Task[None] | None = None
        # The store's vector generations with their sizes, as /readyz and /metrics show them
        # (refreshed after a start, a switch or a retirement: counting them reads every row).
        self.generation_info: list[dict[str, object]] = []
        # A shared store's generation of each encoder, once found (`check_shared_vectors`).
        self._shared_generations: dict[str, int] = {}

    # --- what routes ask for ---------------------------------------------------------------

    def require_model(self) -> NewsModel:
        model = self.model  # one read: the caller keeps this reference even if a reload swaps
        if model is None:
            raise ModelUnavailableError(f"no model loaded: {self.not_ready_reason()}")
        return model

    def not_ready_reason(self) -> str:
        if self.model is None and self.progress.phase in ("loading bundle", "restoring stored articles"):
            p = self.progress
            return f"still starting: {p.phase} ({p.restored} of {p.stored} stored articles restored)"
        return str(self.model_error)

    def require_store(self) -> ArticleStore:
        if self.store is None:
            raise StoreUnavailableError(f"article store unavailable: {self.store_error}")
        return self.store

    def search_for(self, model: NewsModel) -> ArticleSearch:
        """Where related coverage is searched, for one request (`/v1/similar` and the pages alike):
        the model's index, which holds what this process ingested; with a shared store, the
        database (the generation of ``model``'s encoder) beside the bundle's own corpus (in memory)."""
        store = self.store
        if isinstance(store, SharedArticleStore):
            generation = self.check_shared_vectors(model)
            return MergedSearch(model.index, store.search(generation))
        return model.index

    def check_shared_vectors(self, model: NewsModel) -> int | None:
        """The shared store's vector generation ``model``'s encoder made (None: a store without
        generations), which its searches and ingests read and write; refuse (409) when the store
        has none of this encoder's vectors ready: another encoder's are never compared with them."""
        mine = vectors_id(model.embedder)
        store = self.store
        if isinstance(store, GenerationStore) and hasattr(store, "generation_for"):
            generation = self._shared_generations.get(mine)
            if generation is None:
                generation = store.generation_for(mine)
                if generation is not None:  # a generation keeps its id for its encoder
                    self._shared_generations[mine] = generation
            if generation is not None:
                return int(generation)
            raise VectorsMismatchError(
                f"the shared article store holds no complete vector generation of {mine}, which the "
                f"served bundle {model.version} encodes with: search and ingest are refused until "
                "its vectors are made (a reload of the bundle makes them), or a bundle on the store's "
                "encoder is served"
            )
        if self.store_vectors is not None and self.store_vectors != mine:
            raise VectorsMismatchError(
                f"the shared article store holds vectors of {self.store_vectors}, the served bundle "
                f"{model.version} encodes with {mine}: search and ingest are refused until the store is "
                "re-embedded with this encoder, or a bundle on the store's encoder is served"
            )
        return None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and begin loading the bundle and stored articles in the background.

        Returns at once, so the port opens and /healthz answers while loading; /readyz says 503
        with the progress until the model is served. A missing bundle leaves the service up
        (model endpoints say 503 and why) unless ``require_bundle`` is set, in which case a bundle
        that cannot even be found stops the start.
        """
        self.batcher.start()
        try:
            url = self.settings.database_url
            where = (self.settings.store_backend, self.settings.data_dir)
            secret = url.get_secret_value() if url is not None else None
            self._writer = await asyncio.to_thread(hold_writer, *where, secret, exclusive=False)
            self.store = await asyncio.to_thread(open_store, *where, secret)
            self.store_error = None
        except NewsDeskError as error:
            self.store_error = str(error)
            logger.error("article store unavailable: %s", error)
        try:
            folder = resolve_bundle(self.settings.bundle)
        except NewsDeskError as error:
            self.model_error = str(error)
            logger.error("no model bundle loaded: %s", error)
            self.progress.phase = "failed"
            self.settled.set()
            if self.settings.require_bundle:
                raise
            return
        self._loading = asyncio.get_running_loop().create_task(self._load(folder), name="load-bundle")

    async def _load(self, folder: Path) -> None:
        try:
            await self._load_model(folder)
        finally:
            self.settled.set()

    async def _load_model(self, folder: Path) -> None:
        started = time.perf_counter()
        try:
            serve, later = await asyncio.to_thread(self._plan_start, folder)
            if serve is None:
                # Nothing on record serves the store's live vectors: fill this bundle's generation
                # before it serves (the fill swaps the model in when done).
                self.progress.phase = "re-embedding stored articles"
                model = await asyncio.to_thread(self._load_only, folder, self._embedder)
                await self._begin_pending(folder, model, wait=True)
                self.settled.set()
                return
            model, restored = await asyncio.to_thread(self._build, serve, _fitting(self._embedder, serve))
            staged: Pending | None = None
            if later is not None:
                # The bundle to serve is on another encoder (a switch a restart interrupted): the one
                # on the live vectors serves while its generation fills, resuming where it stopped.
                # Staged before ready, so /readyz never shows ready without the re-embedding.
                try:
                    pending_model = await asyncio.to_thread(self._load_only, later, self._embedder)
                    staged = self.pending = await asyncio.to_thread(stage, self, later, pending_model)
                except NewsDeskError as error:
                    logger.error("pending bundle %s cannot load: %s", later.name, error)
        except NewsDeskError as error:
            self.model_error = str(error)
            self.progress.phase = "failed"
            logger.error("no model bundle loaded: %s", error)
            return
        except Exception as error:  # a broken bundle must not kill the process: say why in /readyz
            self.model_error = f"loading failed ({type(error).__name__}: {error})"
            self.progress.phase = "failed"
            logger.exception("loading the bundle failed")
            return
        await asyncio.to_thread(release_free_heap)  # what the restore parsed and dropped
        async with self.write_lock:
            # Articles ingested while we restored cannot exist (no model, no ingest), so swap.
            self.model = model
            self.model_error = None
        self.progress.phase = "ready"
        logger.info(
            "serving bundle %s (%d stored articles restored) in %.1fs",
            model.version,
            restored,
            time.perf_counter() - started,
        )
        # The ANN graph (past 50k articles) is built after ready; search is exact meanwhile.
        self._ann_task = asyncio.get_running_loop().create_task(self._after_ready(model), name="build-ann")
        await self.refresh_generations()
        if staged is not None:
            self._pending_task = asyncio.get_running_loop().create_task(
                fill_and_switch(self, staged), name="re-embed"
            )

    def _plan_start(self, folder: Path) -> tuple[Path | None, Path | None]:
        """(the bundle to serve now, one to stage as pending): ``folder`` alone when the store's
        live vectors are its encoder's; else the bundle last served on them, with ``folder``
        pending; (None, folder) when no such bundle is at hand."""
        if not needs_generation(self, _bundle_vectors(folder)):
            return folder, None
        live = live_bundle_folder(self)
        logger.warning(
            "bundle %s encodes with another encoder than the stored vectors: %s",
            folder.name,
            f"serving {live.name} while its vectors are made" if live else "making its vectors first",
        )
        return live, folder

    def _load_only(self, folder: Path, embedder: Encoder | None) -> NewsModel:
        """The bundle alone (no stored rows restored), its encoder warmed up."""
        model = NewsModel.load(folder, embedder=_fitting(embedder, folder), encoder=self.settings.encoder)
        model.embedder.encode(["warm-up"])
        return model

    async def _begin_pending(self, folder: Path, model: NewsModel, *, wait: bool = False) -> Pending:
        """Stage ``model`` as pending and start its worker (``wait``: run it to the switch)."""
        pending = await asyncio.to_thread(stage, self, folder, model)
        self.pending = pending
        if wait:
            await fill_and_switch(self, pending)
            if self.pending is pending:  # the fill failed: say why in /readyz
                self.model_error = f"re-embedding for bundle {model.version} failed: {pending.error}"
                self.progress.phase = "failed"
            return pending
        self._pending_task = asyncio.get_running_loop().create_task(
            fill_and_switch(self, pending), name="re-embed"
        )
        return pending

    async def _cancel_pending(self) -> None:
        """Stop the worker (its generation keeps what it filled: a later stage resumes)."""
        task, self._pending_task = self._pending_task, None
        pending = self.pending
        if task is not None and not task.done():
            if pending is not None and pending.phase == "switching":
                # Past the point of no return (the store's live generation is flipping under the
                # write lock): let it finish, so the store and the served model never disagree.
                with contextlib.suppress(Exception):
                    await task
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.pending = None

    async def after_switch(self, model: NewsModel) -> None:
        """A generation switch swapped ``model`` in: retire generations past the kept ones, build
        its graph and snapshot."""
        store = generation_store(self)
        if store is not None:
            old = [g for g in await asyncio.to_thread(store.generations) if g.state == "complete"]
            old.sort(key=lambda g: (g.switched_at is not None, g.switched_at, g.id), reverse=True)
            for generation in old[self.settings.keep_generations :]:
                freed = await asyncio.to_thread(store.retire_generation, generation.id)
                logger.info(
                    "retired vector generation %d (%s): %d bytes of vectors dropped",
                    generation.id,
                    generation.vectors_id,
                    freed,
                )
        await self.refresh_generations()
        self._ann_task = asyncio.get_running_loop().create_task(self._after_ready(model), name="build-ann")

    async def retire_generation(self, generation: int) -> int:
        """Drop a kept generation's vectors (not the live one, nor the one a pending bundle fills)."""
        store = generation_store(self)
        known = {g.id: g for g in await asyncio.to_thread(store.generations)} if store is not None else {}
        found = known.get(generation)
        pending = self.pending
        if store is None or found is None or found.state in ("live", "retired"):
            raise GenerationNotFoundError(f"no kept vector generation {generation} to retire")
        if pending is not None and pending.generation == generation:
            raise GenerationNotFoundError(f"vector generation {generation} is filling for a pending bundle")
        freed = await asyncio.to_thread(store.retire_generation, generation)
        await self.refresh_generations()
        return freed

    async def refresh_generations(self) -> list[dict[str, object]]:
        """Read the store's generations with their sizes (for /readyz, /metrics, the admin API)."""
        store = generation_store(self)
        if store is None:
            return []

        def read() -> list[dict[str, object]]:
            rows = []
            for generation in store.generations():
                count, size = store.generation_bytes(generation.id)
                rows.append(
                    {
                        "id": generation.id,
                        "vectors_id": generation.vectors_id,
                        "state": generation.state,
                        "filled_seq": generation.filled_seq,
                        "bundle_version": generation.bundle_version,
                        "rows": count,
                        "vector_bytes": size,
                    }
                )
            return rows

        try:
            self.generation_info = await asyncio.to_thread(read)
        except NewsDeskError as error:
            logger.warning("could not read the vector generations: %s", error)
        return self.generation_info

    async def _after_ready(self, model: NewsModel) -> None:
        """Build the ANN graph, then snapshot the index so the next start skips both."""
        if not await asyncio.to_thread(model.build_graph, self._stopping):
            return  # shutting down: the snapshot at stop() saves the rows without the graph
        if not model.snapshot_outdated:
            return  # the snapshot just loaded holds all of it; stop() saves the rows since
        async with self.write_lock:
            try:
                await asyncio.to_thread(self.write_snapshot)
            except (OSError, NewsDeskError) as error:  # a snapshot is an optimisation: never fatal
                logger.warning("could not write the index snapshot: %s", error)
        await asyncio.to_thread(release_free_heap)  # the matrix the graph replaced, the write's buffers

    async def stop(self) -> None:
        self._stopping.set()
        for task in (self._loading, self._ann_task, self._pending_task):
            if task is not None and not task.done():
                task.cancel()
        if self._pending_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pending_task  # its lease released before the store closes
        await self.batcher.stop()
        async with self.write_lock:
            try:
                # Articles ingested since start-up: the next start replays fewer of them.
                await asyncio.to_thread(self.write_snapshot)
            except (OSError, NewsDeskError) as error:
                logger.warning("could not write the index snapshot: %s", error)
        if self.store is not None:
            self.store.close()
        if self._writer is not None:
            self._writer.release()

    def _build(self, folder: Path, embedder: Encoder | None) -> tuple[NewsModel, int]:
        self.progress.phase = "loading bundle"
        model = NewsModel.load(folder, embedder=embedder, encoder=self.settings.encoder)
        # Load the encoder's weights now, so "ready" means the first request pays no load time.
        model.embedder.encode(["warm-up"])
        detect_language("warm-up")  # the language model too (~0.5 s on first use)
        if self.store is None:
            return model, 0
        if isinstance(self.store, SharedArticleStore):
            # The database searches and links stories itself: nothing to rebuild in memory. An
            # empty store takes this bundle's encoder; a bundle serves on its encoder's vector
            # generation (the live one, or a kept one until this replica follows a switch); with
            # none, search and ingest are refused per request (`check_shared_vectors`), so the
            # service still answers what needs no vectors.
            stored = stored_vectors_id(self.store)
            mine = vectors_id(model.embedder)
            if stored is None:
                stored = mine
                record_vectors_id(self.store, stored)
            own = None
            if isinstance(self.store, GenerationStore) and (live := self.store.live_generation()) is not None:
                if live.vectors_id == mine:
                    self.store.set_generation_bundle(live.id, model.version)
                stored = live.vectors_id
                own = getattr(self.store, "generation_for", lambda _: None)(mine)
            if stored != mine and own is None:
                logger.error(
                    "the shared store's vectors are %s's, bundle %s encodes with %s: search and ingest "
                    "will be refused",
                    stored,
                    model.version,
                    vectors_id(model.embedder),
                )
            self.store_vectors = stored
            return model, self.store.count()
        self.progress.phase = "restoring stored articles"
        self.progress.stored = self.store.count()
        restored = model.restore_from(StoreRows(self.store), self.snapshot_dir, progress=self._restored)
        self.snapshot_used = restored.from_snapshot
        if isinstance(self.store, GenerationStore) and (live := self.store.live_generation()) is not None:
            # Which bundle serves the live vectors: a start that finds a newer bundle on another
            # encoder serves this one while that one's vectors are made.
            self.store.set_generation_bundle(live.id, model.version)
        return model, restored.articles

    async def _catch_up_shared(self, model: NewsModel) -> None:
        """After following a switch on a shared store: the rows this replica stored into its old
        generation before it followed get their vectors in the live one (`catch_up`)."""
        store = generation_store(self)
        if store is None or not isinstance(store, SharedArticleStore):
            return
        live = await asyncio.to_thread(store.live_generation)
        if live is None or live.vectors_id != vectors_id(model.embedder):
            return
        await asyncio.sleep(SETTLE_S)  # requests that took the old model finish their writes first
        try:
            await asyncio.to_thread(catch_up, store, model, live.id)
        except NewsDeskError as error:  # the next follow or switch catches them up
            logger.warning("could not catch up the live vector generation: %s", error)

    def _restored(self, count: int) -> None:
        self.progress.restored = count

    # --- the index snapshot beside the embedded store ----------------------------------------------

    @property
    def snapshot_dir(self) -> Path:
        return self.settings.data_dir / "index-snapshot"

    def write_snapshot(self) -> int:
        """Snapshot the stored part of the index (after start-up, and at shutdown); 0 when there is
        nothing worth writing (no model, a shared store, fewer rows than the setting)."""
        model, store = self.model, self.store
        if model is None or store is None or isinstance(store, SharedArticleStore):
            return 0
        if store.count() < self.settings.snapshot_min_articles:
            return 0
        return model.write_snapshot(self.snapshot_dir)

    async def reload(self, *, force: bool = False, folder: Path | None = None) -> ReloadResult:
        """Load the newest bundle under the configured path (or the version ``folder``) and swap
        it in. With a shared store the swapped-in version becomes the live one every replica
        follows (`service.replicas`)."""
        async with self._reload_lock:
            started = time.perf_counter()
            current = self.model
            folder = await asyncio.to_thread(resolve_bundle, folder or self.settings.bundle)
            previous = current.version if current is not None else None
            pending = self.pending
            if pending is not None and pending.folder == folder and pending.phase != "failed":
                # Already on its way: say how far.
                version = current.version if current is not None else pending.model.version
                seconds = time.perf_counter() - started
                return ReloadResult(False, previous, version, 0, seconds, pending.as_dict())
            # Another bundle than the pending one: its fill stops (resumable: the generation keeps
            # what it has). A switch already under way finishes first, so read the model after.
            await self._cancel_pending()
            current = self.model
            previous = current.version if current is not None else None
            if (
                current is not None
                and not force
                and current.path is not None
                and Path(current.path) == folder
            ):
                return ReloadResult(False, previous, current.version, 0, time.perf_counter() - started)
            vectors = await asyncio.to_thread(_bundle_vectors, folder)
            if current is not None and await asyncio.to_thread(needs_generation, self, vectors):
                # Another encoder than the store's live vectors: the live bundle serves on.
                model = await asyncio.to_thread(self._load_only, folder, self._embedder)
                staged = await self._begin_pending(folder, model)
                seconds = time.perf_counter() - started
                logger.info("reload: bundle %s pending while its vectors are made", model.version)
                return ReloadResult(False, previous, current.version, 0, seconds, staged.as_dict())
            # Reuse the loaded encoder when the new bundle is on the same one (the loader checks), so
            # there is no second copy in memory; a bundle on another encoder builds its own.
            embedder = current.embedder if current is not None else self._embedder
            if embedder is not None and vectors_id(embedder) != await asyncio.to_thread(
                _bundle_vectors, folder
            ):
                embedder = None
            model, restored = await asyncio.to_thread(self._build, folder, embedder)
            async with self.write_lock:
                # What was ingested while the new model restored (none with a shared store).
                restored += await asyncio.to_thread(model.restore_new)
                self.model = model
                self.model_error = None
            if isinstance(self.store, SharedArticleStore):
                await asyncio.to_thread(self.store.set_meta, LIVE_VERSION_KEY, folder.name)
                if current is not None and vectors_id(current.embedder) != vectors_id(model.embedder):
                    await self._catch_up_shared(model)  # followed a switch of vector generations
            seconds = time.perf_counter() - started
            logger.info(
                "reloaded: %s -> %s (%d stored articles) in %.1fs", previous, model.version, restored, seconds
            )
            return ReloadResult(True, previous, model.version, restored, seconds)
