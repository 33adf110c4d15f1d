"""Who writes a store: services share it, a backfill takes it alone.

A backfill decides each article's story in memory against what the store held when it started
(`training.backfill`), so nothing else may write meanwhile; replicas of the service, which decide
through the store itself, write side by side. Both say so by holding one lock for their lifetime:
every service shared, a backfill exclusive. Neither waits: the one that finds the lock taken the
other way refuses at once, with one line.

SQLite: `flock` on ``articles.lock`` beside the store file (released by the kernel when the process
dies, kill -9 included). PostgreSQL: a session advisory lock held on a connection of its own
(released when that session ends).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.store.base import GenerationStore, StoreError

logger = logging.getLogger(__name__)

LOCK_FILE = "articles.lock"  # beside the SQLite store's file, in the service's data folder
# The advisory lock key every writer of one database takes (an arbitrary constant: "newsdesk").
PG_WRITERS_KEY = 0x6E657773_6465736B


class StoreBusyError(StoreError):
    """The store is held the other way: a service while a backfill runs, or the reverse."""


class WriterLock:
    """A held writer lock; `release` (or process exit) gives it back."""

    def __init__(self, release: Any, where: str) -> None:
        self._release = release
        self.where = where

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _busy(where: str, exclusive: bool) -> StoreBusyError:
    if exclusive:
        return StoreBusyError(
            f"{where} is being written by a running service (or another backfill): stop it, then run again"
        )
    return StoreBusyError(f"{where} is being loaded by a backfill: start the service when it has finished")


def hold_writer(
    backend: str, store_dir: Path, database_url: str | None = None, *, exclusive: bool
) -> WriterLock:
    """Take the store's writer lock, shared (a service) or ``exclusive`` (a backfill), without
    waiting; `StoreBusyError` (one line) when it is held the other way."""
    if backend == "postgres":
        if not database_url:
            raise StoreError("the postgres store needs a database URL")
        return _hold_pg(database_url, exclusive)
    return _hold_file(Path(store_dir) / LOCK_FILE, exclusive)


def _hold_file(path: Path, exclusive: bool) -> WriterLock:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StoreError(
            f"cannot open the article store at {path.parent} (its lock file: {error})"
        ) from error
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(str(path.parent), exclusive) from None
    except OSError as error:
        os.close(fd)
        raise StoreError(f"cannot lock {path}: {error}") from error
    return WriterLock(lambda: os.close(fd), str(path.parent))


def _hold_pg(url: str, exclusive: bool) -> WriterLock:
    import psycopg

    from model.store.pg_rows import one_line

    take = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10, application_name="news-desk writer")
    except psycopg.Error as error:
        raise StoreError(f"cannot open the article store: {one_line(error)}") from error
    try:
        row = conn.execute(f"SELECT {take}(%s)", (PG_WRITERS_KEY,)).fetchone()
    except psycopg.Error as error:
        conn.close()
        raise StoreError(f"cannot lock the article store: {one_line(error)}") from error
    if not row or not row[0]:
        conn.close()
        raise _busy("the PostgreSQL store", exclusive)
    return WriterLock(conn.close, "the PostgreSQL store")


# --- the re-embedding lease's holders (`GenerationStore.take_reembed_lease`) -----------------------


def reembed_lease_owner(role: str) -> str:
    """A lease holder's name, ``host:pid:role-nonce``: `dead_lease_holder` reads host and pid back."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}-{uuid.uuid4().hex[:8]}"


def dead_lease_holder(store: GenerationStore) -> str | None:
    """The lease's holder when it is a process of this host that no longer runs (a service or a
    `reembed` run killed with -9, whose lease would otherwise stand until it lapses)."""
    holder = store.reembed_lease_holder()
    if holder is None:
        return None
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return holder
    except PermissionError:
        return None  # alive, someone else's
    return None


@contextlib.contextmanager
def no_reembedding(store: Any, role: str, seconds: float = 300.0) -> Iterator[None]:
    """Hold the re-embedding lease for a writer that must not run beside a re-embedding (a backfill
    writes the live generation's vectors; a filler would miss rows it adds after its last check and
    a switch would change which generation that is). Refuses (`StoreError`, one line) while another
    holds it; renewed in the background, released at the end. Nothing to hold on a store without
    vector generations."""
    if not isinstance(store, GenerationStore):
        yield
        return
    owner = reembed_lease_owner(role)
    if not store.take_reembed_lease(owner, seconds, take_from=dead_lease_holder(store)):
        raise StoreError(
            f"{store.reembed_lease_holder()} is re-embedding this store: run the {role} once its vector "
            "generation is filled and switched to"
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 4):
            try:
                store.take_reembed_lease(owner, seconds)
            except StoreError as error:  # the writer's own next call says what is wrong
                logger.warning("could not renew the re-embedding lease: %s", error)

    renewer = threading.Thread(target=renew, name="reembed-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        store.release_reembed_lease(owner)
