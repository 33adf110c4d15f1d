"""The one duplicate-and-story decision: copies at any age, stories inside the window, and the batch
clustering deciding as one-at-a-time ingest does."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import shared_embedder

from model.articles.article import Article, Provider
from model.coverage.article_index import ArticleIndex
from model.coverage.pair_evidence import HashedIdf
from model.coverage.pair_scorer import PairScorer
from model.coverage.story_links import cluster_stories
from model.coverage.story_rule import candidates, link_story, new_story_id
from model.news_model import NewsModel

T0 = datetime(2024, 3, 1, 8, tzinfo=UTC)
WINDOW_DAYS = 30.0

QUAKE = Article(
    id="quake",
    title="Strong earthquake of magnitude 7.1 strikes off the coast of Japan",
    excerpt="A powerful earthquake struck off Japan's north-east coast on Friday, shaking buildings in "
    "Tokyo and prompting a tsunami warning for coastal areas, the meteorological agency said.",
    published_at=T0,
    provider=Provider(name="Wire", domain="wire.example"),
)
FOLLOW_UP = Article(
    id="follow-up",
    title="Japan hit by 7.1-magnitude quake, tsunami warning issued for coastal areas",
    excerpt="Residents of Japan's north-east coast were told to move to higher ground after a strong "
    "earthquake on Friday; no damage was reported in the first hours.",
    published_at=T0 + timedelta(hours=3),
    provider=Provider(name="Daily", domain="daily.example"),
)
TRANSFER = Article(
    id="transfer",
    title="Real Madrid sign Brazilian striker for a record transfer fee",
    excerpt="The Spanish champions completed the signing of the 19-year-old forward on Tuesday.",
    published_at=T0 + timedelta(hours=5),
)


def _repost(article: Article, days: float, suffix: str = "repost") -> Article:
    """The same write-up on another site ``days`` later."""
    return dataclasses.replace(
        article,
        id=f"{article.id}-{suffix}",
        urls={},
        provider=Provider(name="Copycat", domain="copycat.example"),
        published_at=article.published_at + timedelta(days=days),
    )


def _ingest(articles: list[Article], scorer: PairScorer) -> dict[str, tuple[str, str | None]]:
    """(story, duplicate_of) per id, each article decided from the ones before it (as `NewsModel.add`)."""
    vectors = shared_embedder().encode([a.text for a in articles])
    index, out = ArticleIndex(), {}
    for article, vector in zip(articles, vectors, strict=True):
        recent, nearest = candidates(index, article, vector, WINDOW_DAYS)
        link = link_story(scorer, article, vector, recent, nearest)
        out[article.id] = link
        index.add([article], vector[None, :], [link.story_id])
    return out


def _scorer(articles: list[Article]) -> PairScorer:
    return PairScorer.default(idf=HashedIdf().fit(a.text for a in articles))


def test_a_copy_reposted_after_the_window_is_a_duplicate_in_its_originals_story():
    late = _repost(QUAKE, days=90)
    articles = [QUAKE, FOLLOW_UP, TRANSFER, late]
    links = _ingest(articles, _scorer(articles))
    assert links["quake"] == (new_story_id(QUAKE), None)
    assert links["transfer"].story_id == new_story_id(TRANSFER)
    assert links[late.id] == (links["quake"].story_id, "quake")


def test_joining_a_story_needs_the_window():
    """The follow-up joins the quake's story a few hours later, and founds its own 90 days later."""
    late_follow_up = dataclasses.replace(FOLLOW_UP, published_at=QUAKE.published_at + timedelta(days=90))
    scorer = _scorer([QUAKE, FOLLOW_UP])
    near = _ingest([QUAKE, FOLLOW_UP], scorer)
    far = _ingest([QUAKE, late_follow_up], scorer)
    assert near["follow-up"] == (near["quake"].story_id, None)
    assert far["follow-up"] == (new_story_id(FOLLOW_UP), None)


def test_a_copy_inside_the_window_is_linked_to_its_best_scoring_original():
    copy = _repost(QUAKE, days=1)
    articles = [QUAKE, FOLLOW_UP, copy]
    links = _ingest(articles, _scorer(articles))
    assert links[copy.id] == (links["quake"].story_id, "quake")


def test_batch_clustering_decides_as_one_at_a_time_ingest():
    """`cluster_stories` (training, dedup) and ingest give one partition, re-posts included."""
    articles = [
        QUAKE,
        FOLLOW_UP,
        TRANSFER,
        _repost(QUAKE, 90),
        _repost(TRANSFER, 200),
        _repost(QUAKE, 1, "b"),
    ]
    scorer = _scorer(articles)
    vectors = shared_embedder().encode([a.text for a in articles])
    batch = cluster_stories(articles, np.asarray(vectors), scorer, window_days=WINDOW_DAYS)
    ingested = _ingest(sorted(articles, key=lambda a: (a.published_at, a.id)), scorer)
    assert batch == [ingested[a.id].story_id for a in articles]
    assert len(set(batch)) == 2


def test_batch_clustering_through_the_graph_decides_as_the_exact_one():
    """Past ``ann_threshold`` the any-age candidates come from the HNSW graph: same partition."""
    articles = [
        QUAKE,
        FOLLOW_UP,
        TRANSFER,
        _repost(QUAKE, 90),
        _repost(TRANSFER, 200),
        _repost(QUAKE, 1, "b"),
    ]
    scorer = _scorer(articles)
    vectors = np.asarray(shared_embedder().encode([a.text for a in articles]))
    exact = cluster_stories(articles, vectors, scorer, window_days=WINDOW_DAYS)
    graph = cluster_stories(articles, vectors, scorer, window_days=WINDOW_DAYS, ann_threshold=0, block=2)
    assert graph == exact


def test_both_stores_decide_the_same_duplicates_and_stories_from_one_stream(small_bundle, pg_url):
    """One stream, copies in and beyond the window included, through `NewsModel.add` (the SQLite
    store's path) and through the PostgreSQL ingest: the same duplicate links and stories."""
    postgres = pytest.importorskip("model.store.postgres", reason="psycopg is not installed")
    from service.ingest import _ingest_shared

    follow_up = Article(
        id="transfer-2",
        title="Brazilian teenager joins Real Madrid in a record deal",
        excerpt="The forward, 19, passed his medical in Madrid and signed a six-year contract.",
        published_at=TRANSFER.published_at + timedelta(days=1),
    )
    stream = [
        QUAKE,
        FOLLOW_UP,
        TRANSFER,
        _repost(QUAKE, 1, "same-week"),
        follow_up,
        _repost(QUAKE, 90),
        _repost(TRANSFER, 200),
        _repost(FOLLOW_UP, 200),
    ]
    memory = NewsModel.load(small_bundle, embedder=shared_embedder())
    shared = NewsModel.load(small_bundle, embedder=memory.embedder)
    vectors = memory.embed(stream)
    in_memory = {done.article_id: (done.story_id, done.duplicate_of) for done in memory.add(stream, vectors)}
    store = postgres.PgArticleStore(pg_url)
    try:
        results = shared.classify(stream, embeddings=vectors, all_scores=True)
        stored = _ingest_shared(shared, store, stream, results, vectors)
        on_postgres = {row.id: (row.story_id, row.duplicate_of) for row, created in stored if created}
    finally:
        store.close()
    assert on_postgres == in_memory
    quake_story = in_memory[QUAKE.id][0]
    assert in_memory[f"{QUAKE.id}-same-week"] == (quake_story, QUAKE.id)
    # The best-scoring copy: the one nearer in time.
    assert in_memory[f"{QUAKE.id}-repost"] == (quake_story, f"{QUAKE.id}-same-week")
    assert in_memory[f"{TRANSFER.id}-repost"] == (in_memory[TRANSFER.id][0], TRANSFER.id)
    assert in_memory[f"{FOLLOW_UP.id}-repost"] == (in_memory[FOLLOW_UP.id][0], FOLLOW_UP.id)
