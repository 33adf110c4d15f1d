"""AnnIndex: recall on clustered vectors, filters honoured, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install faiss-cpu)")

from model.coverage.faiss_ann import AnnIndex

DIM, N, CLUSTERS, QUERIES = 384, 20_000, 400, 100


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, CLUSTERS, N)] + 0.6 * rng.standard_normal((N, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = centres[rng.integers(0, CLUSTERS, QUERIES)] + 0.6 * rng.standard_normal(
        (QUERIES, DIM), np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    keys = rng.permutation(10 * N)[:N].astype(np.int64) + 1_000_000  # sparse, unordered ids
    return keys, vectors, queries


@pytest.fixture(scope="module")
def index(data):
    keys, vectors, _ = data
    built = AnnIndex(DIM, dtype="f16", M=16, ef_construction=80, ef_search=64)
    built.add(keys, vectors)
    return built


def exact(vectors, keys, query, allowed=None, k=10):
    scores = vectors @ query
    if allowed is not None:
        scores[~allowed] = -np.inf
    return set(keys[np.argsort(-scores)[:k]].tolist())


def recall(index, data, allowed=None, **kwargs):
    keys, vectors, queries = data
    hits = []
    for query in queries:
        found, _ = index.search(query, 10, allowed=allowed, **kwargs)
        hits.append(len(set(found.tolist()) & exact(vectors, keys, query, allowed)) / 10)
    return float(np.mean(hits))


def test_recall_at_10_is_at_least_095_on_clustered_vectors(index, data):
    assert len(index) == N
    assert recall(index, data) >= 0.95


def test_scores_are_cosines_best_first(index, data):
    _, vectors, queries = data
    found, scores = index.search(queries[0], 10)
    assert np.all(np.diff(scores) <= 1e-6)
    expected = vectors[index.positions(found)] @ queries[0]
    np.testing.assert_allclose(scores, expected, atol=2e-3)  # float16 codes


@pytest.mark.parametrize("fraction", [0.3, 0.1, 0.05, 0.005])  # graph, flat scan, decoded subset
def test_filters_are_honoured_with_high_recall(index, data, fraction):
    keys, _, queries = data
    allowed = np.random.default_rng(1).random(N) < fraction
    for query in queries[:20]:
        found, _ = index.search(query, 10, allowed=allowed)
        assert np.isin(found, keys[allowed]).all()
        assert len(found) == min(10, int(allowed.sum()))
    assert recall(index, data, allowed) >= 0.95


def test_filter_by_key_list_and_predicate(index, data):
    keys, _, queries = data
    subset = keys[::3]
    found, _ = index.search(queries[1], 10, allowed=subset)
    assert len(found) == 10 and np.isin(found, subset).all()
    found, _ = index.search(queries[1], 10, filter_fn=lambda key: key % 2 == 0)
    assert len(found) == 10 and np.all(found % 2 == 0)
    assert len(index.search(queries[1], 10, allowed=np.zeros(N, dtype=bool))[0]) == 0


def test_save_load_round_trip_gives_the_same_answers(index, data, tmp_path):
    _, _, queries = data
    loaded = AnnIndex.load(index.save(tmp_path / "ann"))
    assert len(loaded) == len(index) and loaded.dtype == "f16" and loaded.ef_search == index.ef_search
    for query in queries[:10]:
        a, sa = index.search(query, 10)
        b, sb = loaded.search(query, 10)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(sa, sb)


def test_adding_a_known_key_or_wrong_shape_raises(index, data):
    keys, vectors, _ = data
    with pytest.raises(ValueError, match="unique"):
        index.add(keys[:1], vectors[:1])
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.array([1], dtype=np.int64), np.zeros((1, 10), dtype=np.float32))
