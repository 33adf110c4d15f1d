"""Liveness, readiness and what model is served."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from model.errors import NewsDeskError
from service.deps import ModelDep, ReaderDep, StateDep
from service.schemas import ErrorOut, HealthOut, ModelOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> HealthOut:
    """Always 200 while the process runs, with or without a bundle."""
    return HealthOut()


@router.get(
    "/readyz",
    responses={503: {"model": ReadyOut, "description": "Not ready: no bundle loaded or store unreachable."}},
    summary="A bundle is loaded and the store answers",
)
async def readyz(state: StateDep, response: Response) -> ReadyOut:
    reasons = []
    store_status = "ok"
    if state.model is None:
        reasons.append(f"no model loaded: {state.model_error}")
    if state.store is None:
        store_status = state.store_error or "not open"
        reasons.append(f"article store unavailable: {store_status}")
    else:
        try:
            await asyncio.to_thread(state.store.ping)
        except NewsDeskError as error:
            store_status = str(error)
            reasons.append(f"article store unreachable: {error}")
    ready = ReadyOut(
        status="not ready" if reasons else "ready",
        model_version=state.model.version if state.model is not None else None,
        store=store_status,
        reasons=reasons,
    )
    if reasons:
        response.status_code = 503
    return ready


@router.get(
    "/v1/model",
    tags=["model"],
    responses={503: {"model": ErrorOut, "description": "No model bundle is loaded."}},
    summary="The served bundle: version, labels, metrics",
)
async def model_info(model: ModelDep, state: StateDep, _: ReaderDep) -> ModelOut:
    manifest = model.manifest
    stored = None
    if state.store is not None:
        try:
            stored = await asyncio.to_thread(state.store.count)
        except NewsDeskError:
            stored = None
    return ModelOut(
        version=model.version,
        path=str(model.path) if model.path else None,
        created=manifest.get("created"),
        labels=model.labels,
        scores=sorted(model.scores),
        embedding=dict(manifest.get("embedding", {})),
        metrics=dict(manifest.get("metrics", {})),
        indexed_articles=len(model.index),
        stored_articles=stored,
    )
