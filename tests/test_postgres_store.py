"""The PostgreSQL store on a real server: migrations, filtered search vs exact, the live model version."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import ready_client, shared_embedder

from model.results import SearchFilters
from model.store.base import StoredArticle, StoreError
from service.config import Settings
from service.main import create_app

postgres = pytest.importorskip("model.store.postgres", reason="psycopg is not installed")
pg_migrate = pytest.importorskip("model.store.pg_migrate", reason="psycopg is not installed")
pg_ingest = pytest.importorskip("model.store.pg_ingest", reason="psycopg is not installed")
PgArticleStore = postgres.PgArticleStore
migrate, SCHEMA_VERSION = pg_migrate.migrate, pg_migrate.SCHEMA_VERSION

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


def test_list_filters_pick_the_same_rows_on_sqlite_and_postgresql(pg_url, tmp_path):
    from model.store import ArticleQuery
    from model.store.sqlite import SqliteArticleStore

    corpus = [
        replace(
            article,
            record={**article.record, "title": f"Title {i}", "excerpt": "Rain" if i % 7 == 0 else "sun"},
            classification={"topics": [{"label": "Even" if i % 2 == 0 else "Odd", "probability": 0.9}]},
            story_id=f"s{i % 20}",
        )
        for i, article in enumerate(_corpus(200, seed=3))
    ]
    pg, lite = PgArticleStore(pg_url), SqliteArticleStore(tmp_path / "articles.sqlite3")
    try:
        pg.put_many(corpus)
        lite.put_many(corpus)
        queries = [
            ArticleQuery(),
            ArticleQuery(topic="Even"),
            ArticleQuery(provider="P3.EXAMPLE"),
            ArticleQuery(story_id="s4"),
            ArticleQuery(since=T0 + timedelta(days=90), until=T0 + timedelta(days=200)),
            ArticleQuery(q="rain", topic="Odd"),
            ArticleQuery(q="title 1", before_seq=150),
        ]
        for query in queries:
            got = [a.id for a in pg.list_articles(query, 500)]
            assert got == [a.id for a in lite.list_articles(query, 500)], query
            assert got or query.before_seq, query
    finally:
        pg.close()
        lite.close()


def test_training_reads_the_editors_answers_read_only_and_an_unmigrated_database_as_none(pg_url, tmp_path):
    import psycopg
    from test_store_export import fill

    from model.feedback import Correction
    from model.store import open_read_only
    from training.corrections import load_corrections

    parts = psycopg.conninfo.conninfo_to_dict(pg_url)  # fit --corrections takes a postgresql:// URL
    url = f"postgresql://{parts['user']}@/{parts['dbname']}?host={parts['host']}"
    empty = load_corrections(url, tmp_path / "empty")  # nothing was ever stored here
    assert empty.corrected_ids == set() and empty.pairs is None
    with psycopg.connect(pg_url) as conn:  # and reading it did not migrate it
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,)
    store = PgArticleStore(pg_url)
    try:
        rows = fill(store)
    finally:
        store.close()
    data = load_corrections(url, tmp_path / "filled")
    assert data.corrected_ids == {rows[0].id} and data.pair_count == 1
    reader = open_read_only(url)
    try:
        with pytest.raises(StoreError, match="read-only"):
            reader.add_correction(Correction(rows[1].id, topics=("Space",)))
    finally:
        reader.close()


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


# --- optimistic story linking (migration 0005) -----------------------------------------------------

WINDOW = timedelta(days=3)


def _live(title: str, vector: np.ndarray, hours: float = 0.0) -> StoredArticle:
    """A new article published on T0's day (every story window overlaps: a live feed), with the
    id the service gives it (the hash of its URL)."""
    from model.articles.article import article_from_record

    record = {"title": title, "webUrl": f"https://live.example/{title}"}
    article = article_from_record(record)
    return StoredArticle(
        id=article.id,
        record=record,
        embedding=vector / np.linalg.norm(vector),
        story_id="",
        classification={"topics": []},
        canonical_url=article.canonical_url,
        published_at=T0 + timedelta(hours=hours),
    )


def _join_nearest(article, candidates, nearest=()):
    """The model's decision, reduced to its rule: join the nearest candidate at cosine >= 0.8."""
    best = max(candidates, key=lambda c: float(c.vector @ article.embedding), default=None)
    if best is not None and float(best.vector @ article.embedding) >= 0.8:
        return best.story_id, None
    return f"story-{article.record['title']}", None


def _direction(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(384).astype(np.float32)


def test_an_article_stored_between_the_read_and_the_claim_is_seen_and_the_decision_redone(pg_url):
    """Replica B reads its window, then replica A stores a same-story article, then B claims: the
    claim finds the window changed, B decides again with A among its candidates and joins A."""
    a_store, b_store = PgArticleStore(pg_url), PgArticleStore(pg_url)
    story = _direction(1)
    first, second = _live("a", story + 0.05 * _direction(2)), _live("b", story + 0.05 * _direction(3))
    seen_by_b: list[list[str]] = []

    def link_b(article, candidates, nearest):
        seen_by_b.append([c.article.title for c in candidates])
        if len(seen_by_b) == 1:  # A lands after B's read, before B's claim
            assert a_store.ingest_linked([first], _join_nearest, WINDOW)[0][1]
        return _join_nearest(article, candidates)

    try:
        ((stored_b, created),) = b_store.ingest_linked([second], link_b, WINDOW)
        assert created and seen_by_b[0] == [] and "a" in seen_by_b[1]
        assert stored_b.story_id == a_store.get(first.id).story_id == b_store.get(second.id).story_id
        assert stored_b.story_id == "story-a"
        assert b_store.ingest_outcomes == {"retried": 1}
        assert a_store.ingest_outcomes == {"first_try": 1}
    finally:
        a_store.close()
        b_store.close()


def test_a_row_landing_beyond_the_farthest_candidate_does_not_cost_a_retry(pg_url):
    """With the window full (`CANDIDATES`), a row farther than the last cannot change them."""
    store = PgArticleStore(pg_url)
    try:
        near = _direction(10)
        # Rows around `near` (the candidates and two more), one far from everything (lands mid-decision).
        neighbours = [
            _live(f"n{i}", near + 0.6 * _direction(100 + i)) for i in range(pg_ingest.CANDIDATES + 2)
        ]
        store.put_many([replace_story(n, f"s{n.id}") for n in neighbours])
        late = _live("far", _direction(999))
        article = _live("x", near + 0.3 * _direction(7))
        calls = []

        def link(stored, candidates, nearest):
            calls.append(len(candidates))
            if len(calls) == 1:
                store.put_many([replace_story(late, "s-far")])
            return _join_nearest(stored, candidates)

        ((_, created),) = store.ingest_linked([article], link, WINDOW)
        assert created and calls == [pg_ingest.CANDIDATES]
        assert store.ingest_outcomes == {"first_try": 1}
    finally:
        store.close()


def test_an_article_whose_window_keeps_changing_is_decided_under_the_locks(pg_url):
    """Each decision is overtaken by a new same-story row: after the optimistic tries the article
    takes the window's locks for the whole decision, and still joins the story."""
    store = PgArticleStore(pg_url)
    story = _direction(20)
    try:
        store.put_many([replace_story(_live("seed", story), "story-seed")])
        calls = []

        def link(stored, candidates, nearest):
            calls.append(len(candidates))
            if len(calls) <= PgArticleStore.OPTIMISTIC_TRIES:
                rival = _live(f"rival{len(calls)}", story + 0.05 * _direction(30 + len(calls)))
                store.put_many([replace_story(rival, "story-seed")])
            return _join_nearest(stored, candidates)

        ((stored, created),) = store.ingest_linked([_live("x", story + 0.05 * _direction(40))], link, WINDOW)
        assert created and stored.story_id == "story-seed"
        tries = PgArticleStore.OPTIMISTIC_TRIES
        assert len(calls) == tries + 1 and calls[-1] == 1 + tries  # the seed and every rival
        assert store.ingest_outcomes == {"locked": 1}
    finally:
        store.close()


def test_a_claim_left_by_a_dead_replica_is_taken_over_ignored_once_stale_and_swept(pg_url):
    import psycopg
    from psycopg.types.json import Jsonb

    store = PgArticleStore(pg_url)
    try:
        orphan = _live("orphan", _direction(50))
        stale = _live("stale", _direction(51))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for article, age in ((orphan, timedelta(0)), (stale, timedelta(minutes=11))):
                conn.execute(
                    "INSERT INTO story_claims (id, record, embedding, story_id, published_at, created_at) "
                    "VALUES (%s, %s, %s::vector, 'dead-story', %s, now() - %s)",
                    (article.id, Jsonb(article.record), vector_text(article), article.published_at, age),
                )
        ((stored, created),) = store.ingest_linked([orphan], _join_nearest, WINDOW)
        assert created and stored.story_id == store.get(orphan.id).story_id == "story-orphan"
        # The stale claim's story is not offered to a same-story article (its replica is gone).
        ((stored, created),) = store.ingest_linked(
            [_live("after", _direction(51) + 0.05 * _direction(52))], _join_nearest, WINDOW
        )
        assert created and stored.story_id == "story-after"
        reopened = PgArticleStore(pg_url)  # a replica starting sweeps the claims older than 10 min
        reopened.close()
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("SELECT id FROM story_claims").fetchall() == []
    finally:
        store.close()


def test_two_replicas_ingesting_the_same_day_at_once_agree_on_every_story(pg_url):
    """Two stores (replicas) x 8 threads, 48 articles of 6 stories, all on one day, interleaved:
    each story ends with one id, and most articles were stored on their first claim."""
    stores = [PgArticleStore(pg_url, max_size=8), PgArticleStore(pg_url, max_size=8)]
    centres = [_direction(60 + s) for s in range(6)]
    articles = [
        (_live(f"s{i % 6}-{i}", centres[i % 6] + 0.05 * _direction(200 + i), hours=i % 24), i % 6)
        for i in range(48)
    ]
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(
                pool.map(
                    lambda item: stores[item[0] % 2].ingest_linked([item[1][0]], _join_nearest, WINDOW),
                    enumerate(articles),
                )
            )
        assert all(created for ((_, created),) in results)
        stories: dict[int, set[str]] = {}
        for article, story in articles:
            stories.setdefault(story, set()).add(stores[0].get(article.id).story_id)
        assert all(len(ids) == 1 for ids in stories.values()), stories
        assert len({next(iter(ids)) for ids in stories.values()}) == 6
        outcomes = stores[0].ingest_outcomes + stores[1].ingest_outcomes
        assert sum(outcomes.values()) == 48
    finally:
        for store in stores:
            store.close()


def vector_text(article: StoredArticle) -> str:
    return str(np.asarray(article.embedding).tolist())


def replace_story(article: StoredArticle, story_id: str) -> StoredArticle:
    return replace(article, story_id=story_id, created_at=datetime.now(UTC))
