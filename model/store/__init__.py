"""The durable article store: one interface (`base.ArticleStore`), one module per backend."""

from __future__ import annotations

from pathlib import Path

from model.store.base import ArticleQuery, ArticleStore, StoredArticle, StoreError, StorySummary

__all__ = ["ArticleQuery", "ArticleStore", "StoreError", "StoredArticle", "StorySummary", "open_store"]

BACKENDS = ("sqlite", "postgres")


def open_store(backend: str, store_dir: Path, database_url: str | None = None) -> ArticleStore:
    """The configured store; a new backend adds a module beside `sqlite` and a branch here."""
    if backend == "sqlite":
        from model.store.sqlite import SqliteArticleStore

        return SqliteArticleStore(store_dir / "articles.sqlite3")
    if backend == "postgres":
        if not database_url:
            raise StoreError("the postgres store needs a database URL")
        from model.store.postgres import PgArticleStore

        return PgArticleStore(database_url)
    raise StoreError(f"unknown store backend {backend!r}, expected one of: {', '.join(BACKENDS)}")
