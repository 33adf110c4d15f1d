"""The PostgreSQL store on a real server: migrations, filtered search vs exact, the live model version."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import ready_client, shared_embedder

from model.results import SearchFilters
from service.config import Settings
from service.main import create_app
from service.store.base import StoredArticle, StoreError

postgres = pytest.importorskip("service.store.postgres", reason="psycopg is not installed")
PgArticleStore, migrate, SCHEMA_VERSION = postgres.PgArticleStore, postgres.migrate, postgres.SCHEMA_VERSION

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TOKEN = "test-admin-token-0123"


def _corpus(n: int, seed: int = 0) -> list[StoredArticle]:
    """Clustered unit vectors (200 centres + noise, like sentence embeddings), 10 providers, a year."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, 384)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, n)] + 0.6 * rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = []
    for i in range(n):
        provider = f"p{i % 10}.example"
        out.append(
            StoredArticle(
                id=f"a{i:06d}",
                record={"title": f"t{i}", "provider": {"name": provider, "domain": provider}},
                embedding=vectors[i],
                story_id=f"s{i}",
                classification={"topics": []},
                canonical_url=f"https://{provider}/{i}",
                published_at=T0 + timedelta(hours=int(rng.integers(0, 24 * 365))),
            )
        )
    return out


def _provider(article: StoredArticle) -> str:
    return article.record["provider"]["domain"]


def _exact(corpus: list[StoredArticle], query: np.ndarray, k: int, keep) -> list[str]:
    rows = [a for a in corpus if keep(a)]
    sims = np.stack([a.embedding for a in rows]) @ query
    return [rows[i].id for i in np.argsort(-sims, kind="stable")[:k]]


def test_migrations_run_once_under_concurrency_and_a_newer_schema_is_refused(pg_url):
    import psycopg

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: migrate(pg_url), range(4))) == [SCHEMA_VERSION] * 4
    with psycopg.connect(pg_url) as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 'x')")
    with pytest.raises(StoreError, match="schema is at version 999, this service knows up to"):
        PgArticleStore(pg_url)


def test_filtered_search_matches_exact_search_on_both_paths(pg_url):
    corpus = _corpus(3000)
    store = PgArticleStore(pg_url)
    try:
        assert store.bulk_load(corpus) == len(corpus)
        store.ping()
        rng = np.random.default_rng(1)
        in_window = (T0 + timedelta(days=100), T0 + timedelta(days=160))
        cases = [
            (SearchFilters(), lambda a: True),
            (SearchFilters(providers=frozenset({"p3.example"})), lambda a: _provider(a) == "p3.example"),
            (SearchFilters(since=in_window[0], until=in_window[1]),
             lambda a: in_window[0] <= a.published_at <= in_window[1]),
            (SearchFilters(exclude_provider="p0.example"), lambda a: _provider(a) != "p0.example"),
        ]  # fmt: skip
        for exact_max in (20_000, 100):  # everything exact / the sized HNSW beam for the filters
            store.EXACT_MAX_ROWS = exact_max
            for filters, keep in cases:
                recall = []
                for i in rng.integers(0, len(corpus), 10):
                    query = corpus[i].embedding
                    got = [article_id for article_id, _ in store.search().nearest(query, 10, filters)]
                    want = _exact(corpus, query, 10, keep)
                    assert all(keep(corpus[int(g[1:])]) for g in got), filters
                    recall.append(len(set(got) & set(want)) / len(want))
                assert np.mean(recall) >= 0.95, (exact_max, filters, np.mean(recall))
    finally:
        store.close()


def _settings(tmp_path, bundle, url: str, **more) -> Settings:
    return Settings(bundle=bundle, data_dir=tmp_path / "unused", database_url=url, admin_token=TOKEN, **more)


def test_a_promotion_on_one_replica_is_followed_by_the_other(small_bundle, pg_url, tmp_path):
    bundles = tmp_path / "bundles"
    shutil.copytree(small_bundle, bundles)
    current = next(p for p in bundles.iterdir() if (p / "manifest.json").is_file())
    embedder = shared_embedder()
    one = ready_client(create_app(_settings(tmp_path, bundles, pg_url, model_poll_s=0), embedder=embedder))
    two = ready_client(create_app(_settings(tmp_path, bundles, pg_url, model_poll_s=0.2), embedder=embedder))
    with one as first, two as second:
        assert second.app.state.news.model.path == current
        newer = bundles / ("99999999T000000Z-" + current.name.split("-")[-1])
        shutil.copytree(current, newer)
        reload = first.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reload.status_code == 200 and reload.json()["changed"] is True
        deadline = time.monotonic() + 30
        while second.app.state.news.model.path != newer:
            assert time.monotonic() < deadline, "the second replica did not follow the promotion"
            time.sleep(0.1)
        # A replica started now serves the live version even though it is not the newest.
        shutil.copytree(current, bundles / "99999999T999999Z-later")
        third = ready_client(
            create_app(_settings(tmp_path, bundles, pg_url, model_poll_s=0.2), embedder=embedder)
        )
        with third as late:
            deadline = time.monotonic() + 30
            while late.app.state.news.model.path != newer:
                assert time.monotonic() < deadline, "a late replica did not take the live version"
                time.sleep(0.1)


def test_an_unreachable_database_fails_readiness_and_ingest_but_not_classify(small_bundle, tmp_path):
    url = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    with ready_client(
        create_app(_settings(tmp_path, small_bundle, url), embedder=shared_embedder())
    ) as broken:
        ready = broken.get("/readyz")
        assert ready.status_code == 503 and "cannot open the article store" in ready.text
        article = {"title": "A rocket lands", "excerpt": "The booster landed on a ship."}
        response = broken.post("/v1/articles", json=article)
        assert response.status_code == 503 and "cannot open the article store" in response.json()["detail"]
        assert broken.post("/v1/classify", json=article).status_code == 200
