"""The durable article store: one interface (`base.ArticleStore`), one module per backend.

Every store is opened from arguments (a folder, a file or a URL), never from the environment:
the service opens it read-write (`open_store`), a reader such as training read-only
(`open_read_only`).
"""

from __future__ import annotations

import re
from pathlib import Path

from model.store.base import ArticleQuery, ArticleStore, StoredArticle, StoreError, StorySummary

__all__ = [
    "ArticleQuery",
    "ArticleStore",
    "StoreError",
    "StoredArticle",
    "StorySummary",
    "is_database_url",
    "open_read_only",
    "open_store",
]

BACKENDS = ("sqlite", "postgres")
STORE_FILE = "articles.sqlite3"  # the SQLite store's file in the service's data folder

_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


def open_store(backend: str, store_dir: Path, database_url: str | None = None) -> ArticleStore:
    """The configured store; a new backend adds a module beside `sqlite` and a branch here."""
    if backend == "sqlite":
        from model.store.sqlite import SqliteArticleStore

        return SqliteArticleStore(store_dir / STORE_FILE)
    if backend == "postgres":
        if not database_url:
            raise StoreError("the postgres store needs a database URL")
        from model.store.postgres import PgArticleStore

        return PgArticleStore(database_url)
    raise StoreError(f"unknown store backend {backend!r}, expected one of: {', '.join(BACKENDS)}")


def is_database_url(source: str | Path) -> bool:
    return bool(_URL.match(str(source)))


def open_read_only(source: str | Path) -> ArticleStore:
    """A store to read, never changed: ``source`` is a ``postgresql://`` URL, a SQLite store file
    or the folder holding `STORE_FILE`. Nothing is created or migrated; the editors' tables of a
    store from before them read as empty. Raises `StoreError` (one line, naming the file)."""
    if is_database_url(source):
        from model.store.postgres import PgArticleStore

        return PgArticleStore(str(source), min_size=1, max_size=2, read_only=True)
    from model.store.sqlite import SqliteArticleStore

    path = Path(source)
    return SqliteArticleStore(path if path.suffix == ".sqlite3" else path / STORE_FILE, read_only=True)
