"""The one duplicate-and-story decision: copies at any age, stories inside the window, and the batch
clustering deciding as one-at-a-time ingest does."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
from helpers import shared_embedder

from model.articles.article import Article, Provider
from model.coverage.article_index import ArticleIndex
from model.coverage.pairs import HashedIdf, PairScorer
from model.coverage.story_links import cluster_stories
from model.coverage.story_rule import candidates, link_story, new_story_id

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
    articles = [QUAKE, FOLLOW_UP, TRANSFER, _repost(QUAKE, 90), _repost(TRANSFER, 200), _repost(QUAKE, 1, "b")]
    scorer = _scorer(articles)
    vectors = shared_embedder().encode([a.text for a in articles])
    batch = cluster_stories(articles, np.asarray(vectors), scorer, window_days=WINDOW_DAYS)
    ingested = _ingest(sorted(articles, key=lambda a: (a.published_at, a.id)), scorer)
    assert batch == [ingested[a.id].story_id for a in articles]
    assert len(set(batch)) == 2
