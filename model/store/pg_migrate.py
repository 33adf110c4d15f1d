"""PostgreSQL schema migrations: ``pg_migrations/NNNN_name.sql``, applied in order, once.

Each runs in its own transaction under a session advisory lock (replicas starting together queue
on it; one applies, the others find nothing to do) and is recorded with its checksum in
``schema_migrations``. A database newer than this code is refused. Applied files never change:
their checksums are recorded on users' databases, so a schema change is a new file.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from model.store.base import StoreError
from model.store.pg_rows import one_line, scalar

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("pg_migrations")
# Session advisory lock held while migrating (bigint: "newsdsk" + 1); replicas starting together
# queue on it, one applies, the others then find nothing to do.
MIGRATION_LOCK = 0x6E657773_64736B01 & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]


def load_migrations(folder: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """``NNNN_name.sql`` files, in version order; a gap or a repeated number is a packaging bug."""
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", path.name)
        if match is None:
            raise StoreError(f"{path}: migration files are named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise StoreError(f"{folder}: migrations must be numbered 1..n without gaps, found {versions}")
    return tuple(found)


MIGRATIONS = load_migrations()
SCHEMA_VERSION = MIGRATIONS[-1].version


def migrate(url: str, migrations: Sequence[Migration] = MIGRATIONS, *, lock_timeout_s: float = 60) -> int:
    """Apply the missing migrations, one transaction each, under a session advisory lock.

    Returns the schema version. Raises `StoreError` when the database records a migration newer
    than ``migrations`` (an older service on a newer database) or the lock is not granted in time.
    """
    known = {m.version: m for m in migrations}
    latest = max(known)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            # lock_timeout does not cover advisory locks: poll the try-variant against a deadline.
            deadline = time.monotonic() + lock_timeout_s
            while not scalar(conn, "SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK,)):
                if time.monotonic() > deadline:
                    raise StoreError("timed out waiting for another replica's schema migration")
                time.sleep(0.2)
            try:
                return _apply(conn, migrations, known, latest)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    except psycopg.Error as error:
        raise StoreError(f"cannot open the article store: {one_line(error)}") from error


def _apply(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration], known: dict[int, Migration], latest: int
) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
        " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied = dict(conn.execute("SELECT version, checksum FROM schema_migrations").fetchall())
    newer = sorted(v for v in applied if v > latest)
    if newer:
        raise StoreError(
            f"the article database's schema is at version {max(newer)}, this service knows up to "
            f"{latest}: deploy the newer service version (or point it at another database)"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            logger.warning("migration %04d was edited after it was applied to this database", version)
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version in applied:
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())  # no parameters: multi-statement text is fine
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        logger.info("applied migration %04d_%s", migration.version, migration.name)
    return max([*applied, latest])
