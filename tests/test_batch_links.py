"""A batch decided at once (`BatchLinker`, what a backfill uses) gives every article the story and
duplicate link that adding the articles one at a time, in the same order, gives."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from helpers import corpus_path, shared_embedder

from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.coverage.article_index import ArticleIndex
from model.coverage.batch_links import BatchLinker
from model.news_model import NewsModel
from model.results import SearchFilters
from training.backfill import published_order


def _archive() -> list[Article]:
    """Storychains articles (real storylines), word-for-word copies of some a day later and a
    year later under another URL, and undated copies (no story window: every article is a
    candidate)."""
    files = sorted(corpus_path("storychains").glob("storychains_*.md"))[:60]
    articles = list(read_seeds(files).articles.values())
    extra = []
    for k, original in enumerate(articles[:12]):
        when = original.published_at
        later = when + timedelta(days=1 if k % 2 else 400) if when is not None else None
        copy = Article(
            id=f"copy-{k}",
            title=original.title,
            excerpt=original.excerpt,
            published_at=None if k % 3 == 0 else later,
            urls={"webUrl": f"https://reposts.example/{k}"},
        )
        extra.append(copy)
    return published_order([*articles, *extra])


def test_batches_decide_as_one_article_at_a_time(small_bundle):
    embedder = shared_embedder()
    articles = _archive()
    vectors = embedder.encode([a.text for a in articles], show_progress_bar=False)

    one_by_one = NewsModel.load(small_bundle, embedder=embedder)
    expected = [one_by_one.add([a], vectors[i : i + 1])[0] for i, a in enumerate(articles)]
    assert any(done.duplicate_of for done in expected)  # the copies found their originals
    assert len({done.story_id for done in expected}) < len(articles)  # and stories were joined

    batched = NewsModel.load(small_bundle, embedder=embedder)
    linker = BatchLinker(batched.pair_scorer, batched.window_days, kept_texts=10)  # kept rows evicted too
    got = []
    for start in range(0, len(articles), 7):
        # A repeated article in a batch is added once, as a second post of it would be.
        batch, rows = articles[start : start + 7], vectors[start : start + 7]
        done = batched.add([*batch, batch[0]], np.vstack([rows, rows[:1]]), linker=linker)
        assert done[-1].is_new is False and done[-1].story_id == done[0].story_id
        got.extend(done[:-1])
    assert got == expected
    again = batched.add(articles[:3], vectors[:3], linker=linker)  # already indexed: not new
    assert [done.is_new for done in again] == [False] * 3
    assert [done.story_id for done in again] == [done.story_id for done in expected[:3]]


def test_nearest_many_answers_as_nearest_per_query():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    articles = [
        Article(id=f"a{i}", title=f"article {i}", published_at=None if i % 10 == 0 else _day(i))
        for i in range(300)
    ]
    index = ArticleIndex(dim=16)
    index.add(articles, vectors, [f"s{i}" for i in range(300)])
    queries = vectors[:40] + rng.normal(scale=0.1, size=(40, 16)).astype(np.float32)
    filters = [
        SearchFilters(since=_day(i) - timedelta(days=20), until=_day(i) + timedelta(days=20))
        if i % 2
        else SearchFilters(exclude_ids=frozenset({f"a{i}"}))
        for i in range(40)
    ]
    anywhere = [SearchFilters(exclude_ids=frozenset({f"new{i}"})) for i in range(40)]  # as a backfill asks
    for removed in (False, True):  # every row passing (no mask made) and a removed row masked
        if removed:
            index.remove("a5")
        many = index.nearest_many(queries, [(12, filters), (3, anywhere)], chunk=16)
        for k, searches, found in ((12, filters, many[0]), (3, anywhere, many[1])):
            for query, f, hits in zip(queries, searches, found, strict=True):
                expected = index.nearest(query, k, f)
                assert [h[0] for h in hits] == [h[0] for h in expected]
                assert np.allclose([h[1] for h in hits], [h[1] for h in expected], atol=1e-5)


def _day(i: int) -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=i)


def _reposted_excerpt(excerpt: str, k: int) -> str:
    if k % 2:
        return f"LONDON (Wires) - {excerpt}"
    return f"{excerpt} (Reporting by Jane Doe; Editing by Sam Roe)" if k % 4 == 2 else excerpt


def _thousands() -> list[Article]:
    """About 1,900 articles: AG News items dated over four months (every tenth undated), storychains'
    storylines, and for every twelfth AG News item a re-post (a day later, a new headline and
    dateline: a copy by its excerpt), a word-for-word copy a year later, or every fourth a copy with
    a credit line added (its shingle sets a little larger: Jaccards on both sides of the duplicate
    threshold, where the batch skips the pairs whose sizes alone keep them under it)."""
    files = sorted(corpus_path("agnews").glob("*.md"))[:1600]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    news = [
        replace(a, published_at=None if k % 10 == 0 else start + timedelta(hours=1.8 * k))
        for k, a in enumerate(read_seeds(files).articles.values())
    ]
    copies = []
    for k, original in enumerate(news[::12]):
        moved = original.published_at + timedelta(days=1 if k % 2 else 365) if original.published_at else None
        copies.append(
            Article(
                id=f"repost-{k}",
                title=original.title if k % 2 == 0 else f"UPDATE: {original.title}",
                excerpt=_reposted_excerpt(original.excerpt, k),
                published_at=moved,
                urls={"webUrl": f"https://reposts.example/{k}"},
            )
        )
    stories = list(read_seeds(sorted(corpus_path("storychains").glob("storychains_*.md"))).articles.values())
    return published_order([*news, *copies, *stories])


def test_backfill_batches_decide_as_one_article_at_a_time_on_thousands(small_bundle):
    """The batch path's kept rows, shingles, candidate reads and centred cosines change no decision:
    a backfill's batches of 256 against the same articles added one at a time."""
    embedder = shared_embedder()
    articles = _thousands()
    vectors = embedder.encode([a.text for a in articles], show_progress_bar=False)

    one_by_one = NewsModel.load(small_bundle, embedder=embedder)
    expected = [one_by_one.add([a], vectors[i : i + 1])[0] for i, a in enumerate(articles)]
    assert sum(done.duplicate_of is not None for done in expected) >= 100  # the copies were found
    assert len({done.story_id for done in expected}) < len(articles) - 300  # stories were joined

    batched = NewsModel.load(small_bundle, embedder=embedder)
    linker = BatchLinker(batched.pair_scorer, batched.window_days, kept_texts=600)  # kept rows evicted too
    got = []
    for start in range(0, len(articles), 256):
        got.extend(batched.add(articles[start : start + 256], vectors[start : start + 256], linker=linker))
    assert got == expected
