"""ArticleIndex: exact search, filters, updates, persistence; the sample seed's related items."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from helpers import SAMPLE_SEED, shared_embedder

from model.articles.article import Article, Provider
from model.articles.seeds import read_seeds
from model.coverage.article_index import ArticleIndex
from model.errors import ArticleNotFoundError
from model.results import SearchFilters

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def small_index():
    rng = np.random.default_rng(0)
    articles = [
        Article(
            id=f"a{i}",
            title=f"title {i}",
            published_at=T0 + timedelta(days=i) if i != 5 else None,
            provider=Provider(domain=("one.example", "two.example")[i % 2]),
        )
        for i in range(10)
    ]
    vectors = _unit(rng, 10)
    index = ArticleIndex(dim=8)
    index.add(articles, vectors, [f"s{i // 2}" for i in range(10)])
    return index, articles, vectors


def test_search_returns_the_exact_neighbours_by_cosine(small_index):
    index, _, vectors = small_index
    hits = index.search(vectors[3], k=3)
    assert hits[0][0] == "a3"
    assert hits[0][1] == pytest.approx(1.0, abs=2e-3)  # float16 storage
    expected = np.argsort(-(vectors @ vectors[3]))[:3]
    assert [h[0] for h in hits] == [f"a{i}" for i in expected]


def test_search_honours_every_filter(small_index):
    index, _, vectors = small_index
    since, until = T0 + timedelta(days=2), T0 + timedelta(days=6)
    hits = index.search(vectors[0], k=10, filters=SearchFilters(since=since, until=until))
    assert {h[0] for h in hits} == {"a2", "a3", "a4", "a6"}  # a5 has no date
    hits = index.search(vectors[0], k=10, filters=SearchFilters(providers=frozenset({"two.example"})))
    assert {h[0] for h in hits} == {f"a{i}" for i in range(1, 10, 2)}
    hits = index.search(vectors[0], k=10, filters=SearchFilters(exclude_provider="one.example"))
    assert {h[0] for h in hits} == {f"a{i}" for i in range(1, 10, 2)}
    hits = index.search(vectors[0], k=10, filters=SearchFilters(exclude_ids=frozenset({"a0", "a1"})))
    assert {h[0] for h in hits} == {f"a{i}" for i in range(2, 10)}


def test_get_vector_contains_and_missing_ids(small_index):
    index, articles, vectors = small_index
    assert len(index) == 10 and "a4" in index and "zz" not in index
    assert index.get("a4") == articles[4]
    np.testing.assert_allclose(index.vector("a4"), vectors[4], atol=2e-3)
    assert index.story_of("a4") == "s2"
    with pytest.raises(ArticleNotFoundError):
        index.get("zz")
    with pytest.raises(ArticleNotFoundError):
        index.vector("zz")


def test_re_adding_an_id_updates_it_in_place(small_index):
    index, articles, vectors = small_index
    index.add([articles[0]], vectors[1:2], ["s-new"])
    assert len(index) == 10
    assert index.story_of("a0") == "s-new"
    np.testing.assert_allclose(index.vector("a0"), vectors[1], atol=2e-3)


def test_save_and_load_round_trip(small_index, tmp_path):
    index, _, vectors = small_index
    index.save(tmp_path / "idx")
    loaded = ArticleIndex.load(tmp_path / "idx")
    assert loaded.ids() == index.ids()
    assert loaded.get("a3").published_at == index.get("a3").published_at
    assert loaded.get("a3").provider_key == "two.example"
    assert loaded.story_of("a7") == "s3"
    assert loaded.search(vectors[7], k=1)[0][0] == "a7"


def test_readers_see_consistent_results_while_one_writer_adds():
    rng = np.random.default_rng(1)
    index = ArticleIndex(dim=8)
    first = _unit(rng, 50)
    index.add([Article(id=f"x{i}", title="t") for i in range(50)], first, ["s"] * 50)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(200):
                hits = index.search(first[0], k=5)
                assert hits[0][0] == "x0"
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for batch in range(20):
        more = _unit(rng, 10) * 0.5 + 0.0  # never closer to first[0] than itself
        index.add([Article(id=f"y{batch}_{i}", title="t") for i in range(10)], more, ["s"] * 10)
    for thread in readers:
        thread.join()
    assert not errors
    assert len(index) == 250


def test_sample_seed_related_items_are_found_by_similarity():
    corpus = read_seeds([SAMPLE_SEED])
    articles = list(corpus.articles.values())
    vectors = shared_embedder().encode([a.text for a in articles])
    index = ArticleIndex(dim=vectors.shape[1])
    index.add(articles, vectors, [a.id for a in articles])
    main_id = corpus.main_ids[0]
    related = set(corpus.related_of()[main_id])
    hits = index.search(
        index.vector(main_id), k=len(related), filters=SearchFilters(exclude_ids=frozenset({main_id}))
    )
    assert {h[0] for h in hits} == related


def _clustered(n: int, dim: int = 32, seed: int = 5, providers: int = 1) -> tuple[list[Article], np.ndarray]:
    """``n`` articles an hour apart over ``providers`` outlets, unit vectors around 40 topics."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng, 40, dim=dim)
    vectors = centres[rng.integers(0, 40, n)] + rng.normal(scale=0.15, size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    articles = [
        Article(
            id=f"g{i}",
            title=f"t{i}",
            published_at=T0 + timedelta(hours=i),
            provider=Provider(domain=f"p{i % providers}.example"),
        )
        for i in range(n)
    ]
    return articles, vectors


def test_above_the_threshold_search_goes_through_the_ann_graph_and_keeps_filters():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    rng = np.random.default_rng(3)
    n = 6_000
    articles, vectors = _clustered(n, seed=3, providers=7)
    exact = ArticleIndex(dim=32, ann_threshold=10**9)
    approximate = ArticleIndex(dim=32, ann_threshold=1_000)
    # One by one past the threshold too: the graph must follow articles added later.
    for index in (exact, approximate):
        index.add(articles[:4_000], vectors[:4_000], ["s"] * 4_000)
        for i in range(4_000, n, 500):
            index.add(articles[i : i + 500], vectors[i : i + 500], ["s"] * 500)
    assert approximate._ann is not None and len(approximate._ann) == n
    window = SearchFilters(
        since=T0 + timedelta(hours=1_000),
        until=T0 + timedelta(hours=4_000),
        providers=frozenset({"p3.example", "p4.example"}),
    )
    recalls = []
    for query in vectors[rng.choice(n, 40, replace=False)]:
        for filters in (SearchFilters(), window):
            truth = {i for i, _ in exact.search(query, 10, filters)}
            found = approximate.search(query, 10, filters)
            assert (
                all(approximate.get(i).provider_key in {"p3.example", "p4.example"} for i, _ in found)
                or filters is not window
            )
            recalls.append(len(truth & {i for i, _ in found}) / len(truth))
    assert np.mean(recalls) >= 0.95


def test_once_the_graph_holds_every_row_it_is_the_only_copy_of_the_vectors(tmp_path):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    articles, vectors = _clustered(3_000)
    index = ArticleIndex(dim=32, ann_threshold=1_000)
    index.add(articles[:2_000], vectors[:2_000], ["s"] * 2_000, sync_ann=False)  # a bulk restore
    assert index._buffer is not None and index._ann is None
    assert index.build_ann()
    assert index._buffer is None  # the float16 matrix is gone: one copy of 2,000 rows, in the graph
    np.testing.assert_allclose(index.vector("g7"), vectors[7], atol=2e-3)

    # Later rows go straight into the graph and are found; a rewritten row is scored by its new vector.
    index.add(articles[2_000:], vectors[2_000:], ["s"] * 1_000)
    assert len(index._ann) == 3_000 and index._buffer is None
    assert index.search(vectors[2_500], 1)[0][0] == "g2500"
    index.add([articles[7]], vectors[2_500][None, :], ["s"])
    np.testing.assert_allclose(index.vector("g7"), vectors[2_500], atol=2e-3)
    assert {hit for hit, _ in index.search(vectors[2_500], 2)} == {"g7", "g2500"}

    # The snapshot round trip keeps the graph as the only copy; truncating takes the rows back out.
    index.write_snapshot(tmp_path / "snap", from_row=0, meta={})
    restored = ArticleIndex(dim=32, ann_threshold=1_000)
    assert restored.load_snapshot(tmp_path / "snap") == 3_000
    assert restored._buffer is None
    np.testing.assert_allclose(restored.vector("g7"), vectors[2_500], atol=2e-3)
    assert restored.search(vectors[100], 1)[0][0] == "g100"
    restored.truncate(1_500)
    assert restored._buffer is not None and restored._ann is None and len(restored) == 1_500
    np.testing.assert_allclose(restored.vector("g100"), vectors[100], atol=2e-3)
    assert restored.search(vectors[100], 1)[0][0] == "g100"
    restored.add(articles[1_500:2_600], vectors[1_500:2_600], ["s"] * 1_100)  # grows again past the cut
    assert restored.search(vectors[2_550], 1)[0][0] == "g2550"


def test_a_row_rewritten_while_the_graph_is_built_keeps_its_new_vector():
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    articles, vectors = _clustered(2_000)
    index = ArticleIndex(dim=32, ann_threshold=500)
    index.add(articles, vectors, ["s"] * 2_000, sync_ann=False)
    stop = threading.Event()
    make_graph = index._new_graph

    def graph_that_sees_a_rewrite_mid_build():  # the rewrite lands after the graph copied the rows
        graph = make_graph()
        real_add = graph.add

        def add(keys, rows, **kwargs):
            real_add(keys, rows, **kwargs)
            if keys[-1] == 1_999:
                index.add([articles[3]], vectors[1_000][None, :], ["s"])

        graph.add = add
        return graph

    index._new_graph = graph_that_sees_a_rewrite_mid_build
    assert index.build_ann(stop)
    assert index._buffer is None
    np.testing.assert_allclose(index.vector("g3"), vectors[1_000], atol=2e-3)


def test_searches_while_ingests_grow_the_graph_never_fail():
    """faiss may reallocate the graph during an add: searches must not read it meanwhile."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed")
    articles, vectors = _clustered(6_000)
    index = ArticleIndex(dim=32, ann_threshold=500)
    index.add(articles[:1_000], vectors[:1_000], ["s"] * 1_000)
    assert index._buffer is None
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                hits = index.search(vectors[10], k=5, filters=SearchFilters(since=T0))
                assert hits[0][0] == "g10"
                index.vector("g20")
        except BaseException as error:  # surfaced in the main thread
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for start in range(1_000, 6_000, 50):
        index.add(articles[start : start + 50], vectors[start : start + 50], ["s"] * 50)
    done.set()
    for thread in readers:
        thread.join()
    assert not errors
    assert len(index._ann) == 6_000
