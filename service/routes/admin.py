"""Admin: reload, retrain (fit -> compare -> promote or reject), jobs, bundle versions, promotion."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from service.deps import AdminDep, RetrainerDep, StateDep
from service.retrain_jobs import JOB_ID_PATTERN
from service.retrain_schemas import BundleOut, BundlesOut, JobOut, PromoteIn
from service.schemas import ErrorOut, GenerationsOut, ReloadOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])

_AUTH = {
    401: {"model": ErrorOut, "description": "Missing or wrong bearer token."},
    403: {"model": ErrorOut, "description": "Admin endpoints disabled (no admin token configured)."},
}


@router.post(
    "/reload",
    responses={
        401: {"model": ErrorOut, "description": "Missing or wrong bearer token."},
        403: {"model": ErrorOut, "description": "Admin endpoints disabled (no admin token configured)."},
        503: {
            "model": ErrorOut,
            "description": "The new bundle cannot be loaded; the old one keeps serving.",
        },
    },
    summary="Load the newest bundle and swap it in",
)
async def reload_bundle(
    _: AdminDep,
    state: StateDep,
    force: Annotated[bool, Query(description="Reload even if the newest bundle is already served.")] = False,
) -> ReloadOut:
    """Builds the new model fully (bundle, then the stored articles with their stored vectors
    and story ids) while the old one serves, then swaps the reference. Requests in flight finish
    on the model they started with. Needs ``Authorization: Bearer <NEWSDESK_ADMIN_TOKEN>``."""
    result = await state.reload(force=force)
    return ReloadOut(
        changed=result.changed,
        previous_version=result.previous_version,
        model_version=result.model_version,
        restored_articles=result.restored_articles,
        seconds=round(result.seconds, 3),
        pending=result.pending,
    )


@router.get(
    "/generations",
    responses=_AUTH,
    summary="The store's vector generations, their disk cost, and a re-embedding under way",
)
async def generations(_: AdminDep, state: StateDep) -> GenerationsOut:
    """Each encoder's vectors for the stored articles is a generation; the live one is searched and
    written, kept ones make a rollback instant (`NEWSDESK_KEEP_GENERATIONS`)."""
    rows = await state.refresh_generations()
    live = next((int(str(row["id"])) for row in rows if row["state"] == "live"), None)
    pending = state.pending.as_dict() if state.pending is not None else None
    return GenerationsOut(live=live, generations=rows, reembedding=pending)


@router.post(
    "/generations/{generation}/retire",
    responses={
        **_AUTH,
        404: {"model": ErrorOut, "description": "No such generation, or it is live."},
    },
    summary="Drop a kept vector generation's vectors (a rollback to it then re-embeds)",
)
async def retire_generation(
    _: AdminDep, state: StateDep, generation: Annotated[int, Path(ge=0)]
) -> GenerationsOut:
    await state.retire_generation(generation)
    return await generations(_, state)


@router.post(
    "/retrain",
    status_code=202,
    responses={
        **_AUTH,
        409: {"model": ErrorOut, "description": "A retrain or promotion job is already running."},
        503: {"model": ErrorOut, "description": "The article store is unavailable."},
    },
    summary="Retrain on the seeds + stored corrections, compare with the live bundle, promote or reject",
)
async def retrain(_: AdminDep, retrainer: RetrainerDep) -> JobOut:
    """Starts a job and answers at once (202): ``python -m training fit`` in a separate process on
    ``NEWSDESK_SEEDS`` plus the stored corrections and graded pairs, then ``python -m training
    compare`` against the live bundle on the fixed held-out split, then promotion (and background
    re-classification of stored articles) or rejection with the gate's reasons. Follow it at
    ``GET /v1/admin/jobs/{id}``. One job at a time: a second answers 409."""
    return JobOut.model_validate(retrainer.start_retrain().as_dict())


@router.get(
    "/jobs/{job_id}",
    responses={**_AUTH, 404: {"model": ErrorOut, "description": "No job with this id."}},
    summary="A retrain or promotion job: state, progress, log tail, the comparison",
)
async def get_job(
    _: AdminDep,
    retrainer: RetrainerDep,
    job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN, description="The id a retrain or promote returned.")],
) -> JobOut:
    return JobOut.model_validate(retrainer.get(job_id).as_dict())


@router.get("/bundles", responses=_AUTH, summary="Every bundle version, its metrics, which is live and why")
async def bundles(_: AdminDep, state: StateDep, retrainer: RetrainerDep) -> BundlesOut:
    """Newest first, with the ledger's decision (promoted, rejected, rolled back) and its reason."""
    model = state.model
    live = model.version if model is not None else None
    rows = await asyncio.to_thread(retrainer.registry.describe, live)
    return BundlesOut(live=live, bundles=[BundleOut.model_validate(row) for row in rows])


@router.post(
    "/promote",
    status_code=202,
    responses={
        **_AUTH,
        404: {"model": ErrorOut, "description": "No bundle version of this name."},
        409: {"model": ErrorOut, "description": "A retrain or promotion job is already running."},
    },
    summary="Serve a given bundle version (promotion by hand, or a rollback to an earlier one)",
)
async def promote(_: AdminDep, retrainer: RetrainerDep, body: PromoteIn) -> JobOut:
    """Records the decision in the ledger, swaps the version in without dropping a request, then
    re-classifies the stored articles in the background (follow the returned job)."""
    return JobOut.model_validate(retrainer.start_promote(body.version).as_dict())
