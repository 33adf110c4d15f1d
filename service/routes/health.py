"""Liveness, readiness and what model is served."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Response

from model.encoders.registry import manifest_embedding
from model.errors import NewsDeskError
from service.deps import ModelDep, ReaderDep, StateDep
from service.errors import redact_paths
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
        reasons.append(f"no model loaded: {state.not_ready_reason()}")
    if state.store is None:
        store_status = state.store_error or "not open"
        reasons.append(f"article store unavailable: {store_status}")
    else:
        try:
            await asyncio.to_thread(state.store.ping)
        except NewsDeskError as error:
            store_status = str(error)
            reasons.append(f"article store unreachable: {error}")
    reasons = [redact_paths(reason) for reason in reasons]
    store_status = redact_paths(store_status)
    ready = ReadyOut(
        status="not ready" if reasons else "ready",
        model_version=state.model.version if state.model is not None else None,
        store=store_status,
        reasons=reasons,
        progress=state.progress.as_dict() if state.model is None else None,
        warnings=state.model.warnings if state.model is not None else [],
        reembedding=state.pending.as_dict() if state.pending is not None else None,
        generations=state.generation_info,
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
        path=model.path.name if model.path else None,  # the version folder, never a server path
        created=manifest.get("created"),
        labels=model.labels,
        scores=sorted(model.scores),
        embedding=manifest_embedding(manifest),
        metrics=json.loads(redact_paths(json.dumps(manifest.get("metrics", {}), default=str))),
        indexed_articles=len(model.index),
        stored_articles=stored,
        warnings=model.warnings,
        examples_per_label={str(k): int(v) for k, v in manifest.get("examples_per_label", {}).items()},
    )
