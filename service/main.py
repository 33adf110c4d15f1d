"""Assembles the app: settings, lifespan (bundle, store, index), middleware, routers, error handlers.

``uvicorn service.main:app`` or ``python -m service`` runs it. The model loads in the lifespan,
not at import, so importing this module (and tests that need no model) stays fast.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model.encoders.embedder import Embedder
from service.auth import check_exposure
from service.config import Settings, get_settings
from service.errors import register_error_handlers
from service.middleware import BodySizeLimit
from service.replicas import start_following
from service.routes import admin, articles, classify, editorial, health, pages, similar
from service.state import ServiceState

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """A new app; ``settings`` default to `get_settings()` (env, then YAML, then defaults).

    ``embedder``: an already loaded encoder to reuse (tests share one across apps); by default
    the bundle's loader builds its own.
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:
            # Started by `uvicorn service.main:app`, which configures only its own loggers.
            logging.basicConfig(
                level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
            )
        logging.getLogger("service").setLevel(settings.log_level.upper())
        state = ServiceState(settings, embedder=embedder)
        check_exposure(state.keyring, settings.host, settings.allow_open)
        app.state.news = state
        await state.start()
        follower = start_following(state)  # replicas on one database follow its live model version
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            await state.stop()

    app = FastAPI(
        title="news-desk",
        summary="Topic tagging, quality and heat scores, same-story detection and related-coverage search.",
        version="1",
        lifespan=lifespan,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # off unless origins are configured
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        )
    register_error_handlers(app)
    for module in (health, classify, similar, articles, editorial, admin, pages):
        app.include_router(module.router)
    return app


app = create_app()
