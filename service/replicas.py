"""Replicas on one shared store follow the live model version kept in the database.

A promotion (`POST /v1/admin/reload` on any replica) records the served bundle folder in the
store's ``meta`` table; every replica checks that row every ``model_poll_s`` seconds (one
primary-key read) and, when it names another version, loads that folder from its own bundle path
and swaps it in with the same no-drop reload. The first replica to serve records its version.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from model.bundle import BundleRegistry
from model.errors import NewsDeskError
from model.store.shared import LIVE_VERSION_KEY, SharedArticleStore
from service.state import ServiceState

logger = logging.getLogger(__name__)


async def sync_live_version(state: ServiceState) -> bool:
    """Serve the version the store names as live (recording ours if it names none).

    Returns True when this replica switched. A version this replica's bundle path lacks is
    logged and left alone: the replica keeps serving what it has.
    """
    store, model = state.store, state.model
    if not isinstance(store, SharedArticleStore) or model is None or model.path is None:
        return False
    current = Path(model.path).name
    live = await asyncio.to_thread(store.get_meta, LIVE_VERSION_KEY)
    if live is None:
        await asyncio.to_thread(store.set_meta, LIVE_VERSION_KEY, current)
        return False
    if live == current:
        return False
    # The bundle setting is a folder of versions, or one version whose siblings are the others.
    registry = BundleRegistry.of(state.settings.bundle)
    folder = registry.find(live)
    if folder is None:
        logger.warning(
            "live model version %s is not under %s: still serving %s", live, registry.root, current
        )
        return False
    logger.info("following the live model version: %s -> %s", current, live)
    result = await state.reload(folder=folder)
    return result.changed


async def follow_live_version(state: ServiceState, interval_s: float) -> None:
    """Check the live version every ``interval_s`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await sync_live_version(state)
        except NewsDeskError as error:  # the store or the bundle is down: try again next tick
            logger.warning("could not follow the live model version: %s", error)


def start_following(state: ServiceState) -> asyncio.Task[None] | None:
    """The follower task, when the store is shared and polling is on."""
    if state.settings.model_poll_s <= 0 or state.settings.store_backend != "postgres":
        return None
    return asyncio.get_running_loop().create_task(
        follow_live_version(state, state.settings.model_poll_s), name="follow-live-version"
    )
