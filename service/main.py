"""Assembles the app: settings, lifespan (bundle, store, index), middleware, routers, error handlers.

``uvicorn service.main:app`` or ``python -m service`` runs it. The model loads in the lifespan,
not at import, so importing this module (and tests that need no model) stays fast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from model.encoders.base import Encoder
from model.encoders.e5_torch import use_cache_dir
from service.auth import check_exposure
from service.config import Settings, get_settings
from service.errors import register_error_handlers
from service.middleware import BodySizeLimit
from service.observability import Metrics, RequestContext, StateCollector, configure_logging
from service.openapi import install_openapi
from service.replicas import start_following
from service.retrain import Retrainer
from service.routes import admin, articles, classify, editorial, health, operations, pages, similar
from service.routes.operations import DOCS_ASSETS, DOCS_ASSETS_URL
from service.state import ServiceState

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, embedder: Encoder | None = None) -> FastAPI:
    """A new app; ``settings`` default to `get_settings()` (env, then YAML, then defaults).

    ``embedder``: an already loaded encoder to reuse (tests share one across apps); by default
    the bundle's loader builds its own.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:
            # Started by `uvicorn service.main:app`, which configures only its own loggers.
            configure_logging(settings.log_level, json_logs=settings.log_format == "json")
        logging.getLogger("service").setLevel(settings.log_level.upper())
        use_cache_dir(settings.cache_dir)  # before the bundle's encoder loads (and may build e5's graph)
        state = ServiceState(settings, embedder=embedder, metrics=metrics)
        check_exposure(state.keyring, settings.host, settings.allow_open)
        metrics.registry.register(StateCollector(state))
        app.state.news = state
        retrainer = Retrainer(state)
        app.state.retrainer = retrainer
        await state.start()
        follower = start_following(state)  # replicas on one database follow its live model version
        automatic = (
            asyncio.get_running_loop().create_task(retrainer.auto_loop(), name="auto-retrain")
            if settings.retrain_interval
            or settings.retrain_min_corrections
            or settings.retrain_on_seed_change
            else None
        )
        try:
            yield
        finally:
            for task in (follower, automatic):
                if task is not None:
                    task.cancel()
            await retrainer.stop()
            await state.stop()

    app = FastAPI(
        title="news-desk",
        summary="Topic tagging, quality and heat scores, same-story detection and related-coverage search.",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served offline by routes/operations.py
        redoc_url=None,
    )
    metrics = Metrics()
    app.state.metrics = metrics
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    # Outermost of ours: every response carries the request id and is counted, 500s included.
    app.add_middleware(RequestContext, metrics=metrics)
    register_error_handlers(app)
    install_openapi(app, settings)
    for module in (health, classify, similar, articles, editorial, admin, operations, pages):
        app.include_router(module.router)
    return app


app = create_app()
