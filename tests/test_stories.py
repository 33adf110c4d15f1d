"""StoryClusterer: order-independent batch clustering, stable ids, time window, restore, pickling."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
from helpers import shared_embedder

from model.articles.article import Article
from model.coverage.stories import StoryClusterer

T0 = datetime(2024, 3, 1, 8, tzinfo=UTC)

TEXTS = [
    # story 1: an earthquake
    ("Strong earthquake of magnitude 7.1 strikes off the coast of Japan", 0),
    ("Japan hit by 7.1-magnitude quake, tsunami warning issued for coastal areas", 2),
    ("Tsunami warning lifted after powerful earthquake shakes northern Japan", 5),
    # story 2: a football transfer
    ("Real Madrid sign Brazilian striker for a record transfer fee", 1),
    ("Record fee: Brazilian forward completes move to Real Madrid", 4),
    # story 3: a chip launch
    ("Nvidia unveils a new AI chip for data centres", 3),
    ("Nvidia's latest data-centre GPU promises faster AI training", 6),
]


def _articles():
    articles = [
        Article(id=f"a{i}", title=title, published_at=T0 + timedelta(hours=hours))
        for i, (title, hours) in enumerate(TEXTS)
    ]
    return articles, shared_embedder().encode([a.text for a in articles])


def _partition(articles, story_ids):
    groups: dict[str, set[str]] = {}
    for article, story in zip(articles, story_ids, strict=True):
        groups.setdefault(story, set()).add(article.id)
    return {frozenset(g) for g in groups.values()}


def test_fit_finds_the_three_stories():
    articles, vectors = _articles()
    partition = _partition(articles, StoryClusterer().fit(articles, vectors))
    assert partition == {frozenset({"a0", "a1", "a2"}), frozenset({"a3", "a4"}), frozenset({"a5", "a6"})}


def test_fit_is_independent_of_input_order():
    articles, vectors = _articles()
    reference = StoryClusterer().fit(articles, vectors)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(articles))
        shuffled = [articles[i] for i in order]
        ids = StoryClusterer().fit(shuffled, vectors[order])
        assert dict(zip([a.id for a in shuffled], ids, strict=True)) == dict(
            zip([a.id for a in articles], reference, strict=True)
        )


def test_story_ids_never_change_when_later_articles_arrive():
    articles, vectors = _articles()
    clusterer = StoryClusterer()
    before = clusterer.fit(articles[:4], vectors[:4])
    for article, vector in zip(articles[4:], vectors[4:], strict=True):
        clusterer.assign(article, vector)
    assert [clusterer.story_of(a.id) for a in articles[:4]] == before
    assert clusterer.story_of("a4") == clusterer.story_of("a3")
    assert clusterer.members(clusterer.story_of("a0")) == ["a0", "a1", "a2"]


def test_same_event_outside_the_window_starts_a_new_story():
    articles, vectors = _articles()
    clusterer = StoryClusterer(window_days=3)
    first = clusterer.assign(articles[0], vectors[0])
    late = Article(id="late", title=articles[1].title, published_at=T0 + timedelta(days=30))
    assert clusterer.assign(late, vectors[1]) != first


def test_restore_keeps_known_ids_and_pickling_keeps_state():
    articles, vectors = _articles()
    clusterer = StoryClusterer()
    assert clusterer.restore(articles[0], vectors[0], "story-from-db") == "story-from-db"
    assert clusterer.assign(articles[1], vectors[1]) == "story-from-db"
    copy = pickle.loads(pickle.dumps(clusterer))
    assert copy.story_of("a1") == "story-from-db"
    assert copy.assign(articles[2], vectors[2]) == "story-from-db"
    assert copy.assign(articles[3], vectors[3]) not in {"story-from-db", None}


def test_undated_articles_cluster_too():
    articles, vectors = _articles()
    undated = [Article(id=a.id, title=a.title) for a in articles]
    partition = _partition(undated, StoryClusterer().fit(undated, vectors))
    assert frozenset({"a3", "a4"}) in partition
