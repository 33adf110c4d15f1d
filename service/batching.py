"""Micro-batching of encoder calls across concurrent requests.

The encoder is several times faster per text on a batch than one text at a time, and a
request handler only has one or a few texts. `EncodeBatcher` queues every request's texts,
and one worker task takes whatever is waiting (up to ``max_size`` texts, waiting at most
``max_wait_ms`` for more once the first arrives), encodes it in a worker thread so the event
loop keeps accepting requests, and hands each request its own rows back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass
class _Job:
    texts: list[str]
    encoder: Encoder
    future: asyncio.Future[npt.NDArray[np.float32]] = field(repr=False)


class EncodeBatcher:
    """Collects `encode` calls from concurrent requests into few encoder calls.

    Parameters
    ----------
    max_size : most texts per encoder call (one request's texts are never split, so a large
        request may exceed it on its own).
    max_wait_ms : how long to wait for more requests after the first one arrives; 0 sends
        whatever is already queued at once.
    """

    def __init__(self, *, max_size: int = 64, max_wait_ms: float = 2.0) -> None:
        self.max_size = max_size
        self.max_wait_ms = max_wait_ms
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0  # encoder calls made, for the logs and the tests
        self.texts = 0

    def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="encode-batcher")

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

    async def encode(self, encoder: Encoder, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Rows for ``texts`` (in order), encoded together with other requests' texts."""
        if self._worker is None or self._worker.done():
            # No running worker (e.g. used outside the app's lifespan): encode directly.
            return await asyncio.to_thread(encoder.encode, list(texts))
        future: asyncio.Future[npt.NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(list(texts), encoder, future))
        return await future

    async def _gather(self) -> list[_Job]:
        jobs = [await self._queue.get()]
        size = len(jobs[0].texts)
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
            size += len(job.texts)
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            # A reload may swap the encoder between requests; each encoder gets its own call.
            groups: dict[int, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(id(job.encoder), []).append(job)
            for group in groups.values():
                await self._encode_group(group)

    async def _encode_group(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if not job.future.done()]  # a cancelled request needs no rows
        if not live:
            return
        texts = [text for job in live for text in job.texts]
        started = time.perf_counter()
        try:
            vectors = await asyncio.to_thread(live[0].encoder.encode, texts)
        except Exception as error:  # every waiting request gets the error, the worker lives on
            logger.exception("encoder call failed for %d texts", len(texts))
            for job in live:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.calls += 1
        self.texts += len(texts)
        logger.debug(
            "encoded %d texts for %d requests in %.1f ms",
            len(texts),
            len(live),
            (time.perf_counter() - started) * 1000,
        )
        start = 0
        for job in live:
            end = start + len(job.texts)
            if not job.future.done():
                job.future.set_result(vectors[start:end])
            start = end
