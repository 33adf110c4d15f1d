"""The service's live state: the loaded model, the store, the encode batcher, and bundle reloads.

A request takes the current `NewsModel` reference once and uses it to the end, so a reload
(which builds the new model fully before swapping the reference) never changes a model under
a request in flight. Index and store writes go through ``write_lock``; a reload takes it only for
its last step (re-adding what was ingested meanwhile, then swapping), so ingests wait for
milliseconds, never fail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.articles.article import article_from_record
from model.bundle import resolve_bundle
from model.encoders.embedder import Embedder
from model.errors import NewsDeskError
from model.news_model import NewsModel
from service.auth import RateLimiter, build_keyring
from service.batching import MicroBatcher
from service.config import Settings
from service.errors import ModelUnavailableError, StoreUnavailableError
from service.store import ArticleStore, StoredArticle, open_store
from service.store.shared import LIVE_VERSION_KEY, SharedArticleStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    changed: bool
    previous_version: str | None
    model_version: str
    restored_articles: int
    seconds: float


def restore_index(
    model: NewsModel, store: ArticleStore, *, since: int = 0, chunk: int = 1000
) -> tuple[int, int]:
    """Re-add stored articles (after ``since``) with their stored vectors and story ids.

    Nothing is re-embedded unless the stored vectors are of another size than the bundle's
    encoder (a bundle built on a different embedding model). Returns (articles added, last seq).
    """
    added, last = 0, since
    batch: list[StoredArticle] = []

    def flush() -> None:
        nonlocal added
        if not batch:
            return
        articles = [article_from_record(stored.record) for stored in batch]
        dims = {stored.embedding.shape[0] for stored in batch}
        vectors = np.stack([stored.embedding for stored in batch]) if dims == {model.embedder.dim} else None
        if vectors is None:
            logger.warning(
                "stored vectors have dim %s, the bundle's encoder %d: re-embedding", dims, model.embedder.dim
            )
        model.add(articles, vectors, story_ids=[stored.story_id for stored in batch])
        added += len(batch)
        batch.clear()

    for stored in store.iter_since(since, chunk):
        batch.append(stored)
        last = stored.seq
        if len(batch) >= chunk:
            flush()
    flush()
    return added, last


class ServiceState:
    """Everything the routes share; built by the lifespan, reached through `service.deps`."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self.model: NewsModel | None = None
        self.model_error: str | None = "the model bundle is still loading"
        self.store: ArticleStore | None = None
        self.store_error: str | None = "the article store is not open yet"
        self.batcher = MicroBatcher(max_size=settings.batch_max_size, max_wait_ms=settings.batch_max_wait_ms)
        self.keyring = build_keyring(
            settings.api_keys.get_secret_value() if settings.api_keys else None,
            settings.api_keys_file,
            settings.admin_token.get_secret_value() if settings.admin_token else None,
        )
        self.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
        self.write_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()

    # --- what routes ask for ---------------------------------------------------------------

    def require_model(self) -> NewsModel:
        model = self.model  # one read: the caller keeps this reference even if a reload swaps
        if model is None:
            raise ModelUnavailableError(f"no model loaded: {self.model_error}")
        return model

    def require_store(self) -> ArticleStore:
        if self.store is None:
            raise StoreUnavailableError(f"article store unavailable: {self.store_error}")
        return self.store

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load the bundle and rebuild the index from the store.

        A missing bundle leaves the service up (health answers, model endpoints say 503 and
        why) unless ``require_bundle`` is set.
        """
        try:
            url = self.settings.database_url
            self.store = await asyncio.to_thread(
                open_store,
                self.settings.store_backend,
                self.settings.data_dir,
                url.get_secret_value() if url is not None else None,
            )
            self.store_error = None
        except NewsDeskError as error:
            self.store_error = str(error)
            logger.error("article store unavailable: %s", error)
        try:
            started = time.perf_counter()
            self.model, restored, _ = await asyncio.to_thread(
                self._build, resolve_bundle(self.settings.bundle), self._embedder
            )
            self.model_error = None
            logger.info(
                "serving bundle %s from %s (%d stored articles re-indexed) in %.1fs",
                self.model.version,
                self.model.path,
                restored,
                time.perf_counter() - started,
            )
        except NewsDeskError as error:
            self.model_error = str(error)
            logger.error("no model bundle loaded: %s", error)
            if self.settings.require_bundle:
                raise
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        if self.store is not None:
            self.store.close()

    def _build(self, folder: Path, embedder: Embedder | None) -> tuple[NewsModel, int, int]:
        model = NewsModel.load(folder, embedder=embedder, encoder=self.settings.encoder)
        # Load the encoder's weights now, so "ready" means the first request pays no load time.
        model.embedder.encode(["warm-up"])
        if isinstance(self.store, SharedArticleStore):
            # The database searches and links stories itself: nothing to rebuild in memory.
            return model, self.store.count(), 0
        restored, last = restore_index(model, self.store) if self.store is not None else (0, 0)
        return model, restored, last

    async def reload(self, *, force: bool = False, folder: Path | None = None) -> ReloadResult:
        """Load the newest bundle under the configured path (or the version ``folder``) and swap
        it in. With a shared store the swapped-in version becomes the live one every replica
        follows (`service.replicas`)."""
        async with self._reload_lock:
            started = time.perf_counter()
            current = self.model
            folder = await asyncio.to_thread(resolve_bundle, folder or self.settings.bundle)
            previous = current.version if current is not None else None
            if (
                current is not None
                and not force
                and current.path is not None
                and Path(current.path) == folder
            ):
                return ReloadResult(False, previous, current.version, 0, time.perf_counter() - started)
            # Reuse the loaded encoder: same weights (the loader checks), no second copy in memory.
            embedder = current.embedder if current is not None else self._embedder
            model, restored, last = await asyncio.to_thread(self._build, folder, embedder)
            async with self.write_lock:
                if self.store is not None and not isinstance(self.store, SharedArticleStore):
                    more, _ = await asyncio.to_thread(restore_index, model, self.store, since=last)
                    restored += more
                self.model = model
                self.model_error = None
            if isinstance(self.store, SharedArticleStore):
                await asyncio.to_thread(self.store.set_meta, LIVE_VERSION_KEY, folder.name)
            seconds = time.perf_counter() - started
            logger.info(
                "reloaded: %s -> %s (%d stored articles) in %.1fs", previous, model.version, restored, seconds
            )
            return ReloadResult(True, previous, model.version, restored, seconds)
