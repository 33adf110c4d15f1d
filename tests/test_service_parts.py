"""The service's parts without HTTP: the SQLite store, the settings, the encode batcher."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import shared_embedder

from model.store import ArticleStore, StoredArticle, StoreError
from model.store.sqlite import SqliteArticleStore
from service.batching import MicroBatcher
from service.config import Settings


def stored(
    article_id: str, story: str = "s1", published: str | None = "2024-03-01T00:00:00+00:00"
) -> StoredArticle:
    return StoredArticle(
        id=article_id,
        record={"id": article_id, "title": f"Title {article_id}"},
        embedding=np.arange(4, dtype=np.float32) + len(article_id),
        story_id=story,
        classification={"id": article_id, "topics": []},
        published_at=datetime.fromisoformat(published) if published else None,
        model_version="v1",
    )


# --- store ---------------------------------------------------------------------------------


def test_store_is_wal_with_full_sync_and_survives_reopening(tmp_path):
    path = tmp_path / "store" / "articles.sqlite3"
    store = SqliteArticleStore(path)
    assert isinstance(store, ArticleStore)
    assert store.put_many([stored("a"), stored("bb")]) == [True, True]
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteArticleStore(path)
    assert again._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    got = again.get("bb")
    assert got is not None and got.record["title"] == "Title bb" and got.story_id == "s1"
    np.testing.assert_array_equal(got.embedding, np.arange(4, dtype=np.float32) + 2)
    assert got.embedding.dtype == np.float32 and got.created_at.tzinfo is not None
    assert again.count() == 2 and again.get("zz") is None


def test_store_put_is_idempotent_per_id(tmp_path):
    store = SqliteArticleStore(tmp_path / "s.sqlite3")
    assert store.put_many([stored("a")]) == [True]
    assert store.put_many([stored("a", story="other"), stored("b")]) == [False, True]
    assert store.get("a").story_id == "s1"  # the first write wins


def test_store_lists_a_story_newest_first_and_pages_in_insertion_order(tmp_path):
    store = SqliteArticleStore(tmp_path / "s.sqlite3")
    store.put_many(
        [
            stored("old", published="2024-01-01T00:00:00+00:00"),
            stored("undated", published=None),
            stored("new", published="2024-05-01T00:00:00+00:00"),
            stored("elsewhere", story="s2"),
        ]
    )
    assert [a.id for a in store.by_story("s1")] == ["new", "old", "undated"]
    assert [a.id for a in store.iter_since(0, chunk=2)] == ["old", "undated", "new", "elsewhere"]
    seq = store.get("undated").seq
    assert [a.id for a in store.iter_since(seq)] == ["new", "elsewhere"]
    assert store.last_seq() == store.get("elsewhere").seq
    assert set(store.get_many(["old", "new", "missing"])) == {"old", "new"}


def test_store_that_cannot_be_opened_says_where(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the article store"):
        SqliteArticleStore(blocker / "articles.sqlite3")


# --- settings ------------------------------------------------------------------------------


def test_settings_precedence_is_explicit_then_env_then_yaml_then_defaults(tmp_path, monkeypatch):
    config = tmp_path / "newsdesk.yaml"
    config.write_text("port: 9001\nmax_k: 7\nbundle: from-yaml\nadmin_token: yaml-token\n")
    monkeypatch.setenv("NEWSDESK_CONFIG", str(config))
    monkeypatch.setenv("NEWSDESK_MAX_K", "11")
    monkeypatch.setenv("NEWSDESK_BUNDLE", "from-env")
    settings = Settings(bundle="explicit")
    assert str(settings.bundle) == "explicit"  # explicit beats env
    assert settings.max_k == 11  # env beats YAML
    assert (
        settings.port == 9001 and settings.admin_token.get_secret_value() == "yaml-token"
    )  # YAML beats defaults
    assert settings.max_batch == 256 and settings.store_path.name == "articles.sqlite3"  # defaults


def test_settings_refuse_a_missing_yaml_file_and_bad_values(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSDESK_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        Settings()
    monkeypatch.delenv("NEWSDESK_CONFIG")
    monkeypatch.setenv("NEWSDESK_MAX_BATCH", "0")
    with pytest.raises(ValueError, match="max_batch"):
        Settings()


# --- batcher -------------------------------------------------------------------------------


class CountingEncoder:
    """The real encoder, counting its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts):
        self.calls.append(len(texts))
        return shared_embedder().encode(texts)


def test_batcher_merges_concurrent_requests_and_returns_each_its_rows():
    encoder = CountingEncoder()
    texts = [[f"story number {i} about rockets"] for i in range(6)] + [["a", "pair of texts"]]

    async def run() -> list[np.ndarray]:
        batcher = MicroBatcher(max_size=64, max_wait_ms=20)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.encode(encoder, t) for t in texts))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert sum(encoder.calls) == 8 and len(encoder.calls) < len(texts)
    for request, rows in zip(texts, results, strict=True):
        np.testing.assert_allclose(rows, shared_embedder().encode(request), atol=1e-5)


def test_batcher_passes_encoder_errors_to_the_waiting_requests():
    class Broken:
        def encode(self, texts):
            raise RuntimeError("encoder exploded")

    async def run() -> None:
        batcher = MicroBatcher(max_wait_ms=1)
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.encode(Broken(), ["x"])
            ok = await batcher.encode(CountingEncoder(), ["still works"])  # the worker lives on
            assert ok.shape == (1, 384)
        finally:
            await batcher.stop()

    asyncio.run(run())


def test_datetimes_in_records_round_trip_as_utc(tmp_path):
    store = SqliteArticleStore(tmp_path / "s.sqlite3")
    store.put_many([stored("a", published="2024-03-01T05:00:00+02:00")])
    assert store.get("a").published_at == datetime(2024, 3, 1, 3, 0, tzinfo=UTC)
