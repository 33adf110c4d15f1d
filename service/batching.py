"""Micro-batching of model calls across concurrent requests.

The encoder (and, less so, the heads) is several times faster per article on a batch than one
article at a time, and a request handler usually has one article. `MicroBatcher` queues every
request's items; one worker task takes whatever is waiting (up to ``max_size`` items, waiting at
most ``max_wait_ms`` for more once the first arrives), runs the batch in a worker thread so the
event loop keeps accepting requests, and hands each request its own slice of the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

# Runs one batch: a result per item, in order (a list, or an array with a row per item).
Process = Callable[[list[Any]], Sequence[Any]]


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    process: Process
    future: asyncio.Future[Sequence[Any]] = field(repr=False)
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Collects calls from concurrent requests into few batched calls.

    Jobs with the same ``key`` must accept the same ``process``; they are merged into one call
    (e.g. key = which model, and whether all label scores are wanted).

    Parameters
    ----------
    max_size : most items per batched call (one request's items are never split, so a large
        request may exceed it on its own).
    max_wait_ms : how long to wait for more requests after the first one arrives; 0 sends
        whatever is already queued at once.
    """

    def __init__(
        self,
        *,
        max_size: int = 64,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self.on_batch = on_batch  # called with each batched call's size (metrics)
        self.on_wait = on_wait  # called with each request's wait before its batch ran
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0  # batched calls made, for the logs and the tests
        self.items = 0

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(self, key: Hashable, items: Sequence[Any], process: Process) -> Sequence[Any]:
        """``process(items)``, run in a thread together with other requests' items of the same key."""
        if self._worker is None or self._worker.done():
            # No running worker (used outside the app's lifespan): run directly.
            return await asyncio.to_thread(process, list(items))
        future: asyncio.Future[Sequence[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, list(items), process, future))
        return await future

    async def encode(self, encoder: Encoder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Rows for ``texts`` (in order), encoded together with other requests' texts."""
        rows = await self.submit(("encode", id(encoder)), texts, encoder.encode)
        return np.asarray(rows, dtype=np.float32)

    async def _gather(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        size = len(jobs[0].items)
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while size < self.max_size:
            if self._queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.items)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                await self._process_group(group)

    async def _process_alone(self, job: _Job) -> None:
        try:
            results = await asyncio.to_thread(job.process, job.items)
        except Exception as error:
            if not job.future.done():
                job.future.set_exception(error)
            return
        self.calls += 1
        self.items += len(job.items)
        if not job.future.done():
            job.future.set_result(results)

    async def _process_group(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if not job.future.done()]  # a cancelled request needs no results
        if not live:
            return
        items = [item for job in live for item in job.items]
        started = time.perf_counter()
        if self.on_wait is not None:
            for job in live:
                self.on_wait(started - job.queued)
        if self.on_batch is not None:
            self.on_batch(len(items))
        try:
            results = await asyncio.to_thread(live[0].process, items)
        except Exception as error:
            if len(live) == 1:
                live[0].future.set_exception(error)
                return
            # One request's items broke the shared call: run each request alone, so only the one
            # that caused it fails and every other request still gets its answer.
            logger.warning(
                "batched call failed for %d requests (%s); retrying them one by one", len(live), error
            )
            for job in live:
                await self._process_alone(job)
            return
        self.calls += 1
        self.items += len(items)
        logger.debug(
            "ran %d items for %d requests in %.1f ms",
            len(items),
            len(live),
            (time.perf_counter() - started) * 1000,
        )
        start = 0
        for job in live:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result(results[start:end])
            start = end
