"""POST /v1/admin/reload: serve the newest bundle without dropping a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.deps import AdminDep, StateDep
from service.schemas import ErrorOut, ReloadOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])


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
    )
