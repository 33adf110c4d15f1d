"""A bundle trained on the one sample seed knows what it doesn't know: it abstains and warns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import train_bundle
from helpers import shared_embedder

from model import NewsModel

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SEED = ROOT / "seeds" / "000_80b44f21389d41d0.txt"
UNRELATED = {"title": "Liverpool beat Arsenal 2-0 at Anfield", "excerpt": "Goals from Salah and Nunez."}


@pytest.fixture(scope="module")
def seed_bundle(tmp_path_factory) -> Path:
    if not SAMPLE_SEED.is_file():
        pytest.skip(f"the sample seed {SAMPLE_SEED} is absent")
    root = tmp_path_factory.mktemp("one_seed")
    (root / "seeds").mkdir()
    shutil.copy(SAMPLE_SEED, root / "seeds" / SAMPLE_SEED.name)
    return train_bundle(root / "seeds", root / "bundles", root / "cache")


def test_one_seed_bundle_tags_an_unrelated_article_with_no_topic_above_threshold(seed_bundle):
    model = NewsModel.load(seed_bundle, embedder=shared_embedder(), encoder="torch")
    [result] = model.classify([UNRELATED], all_scores=True)
    assert result.topics == []
    thresholds = model.topics.thresholds_
    assert result.all_topics
    assert all(t.probability < thresholds[t.label] for t in result.all_topics)
    # ... while the seed's own subject still gets its tags.
    [own] = model.classify(
        [{"title": "Amazon's facial recognition software Rekognition and AI for police"}], all_scores=True
    )
    assert own.topics


def test_one_seed_bundle_warns_in_readyz_model_and_card(seed_bundle):
    from helpers import ready_client
    from test_service import make_settings

    from service.main import create_app

    model = NewsModel.load(seed_bundle, embedder=shared_embedder(), encoder="torch")
    assert any("trained on 1 labelled articles" in w for w in model.warnings)
    assert model.manifest["examples_per_label"] == {"AI": 1, "AWS AI": 1, "Computer Vision": 1}
    card = (Path(model.path) / "README.md").read_text(encoding="utf-8")
    assert "**Warning:**" in card
    settings = make_settings(seed_bundle.parent / "service", seed_bundle, admin_token=None)
    with ready_client(create_app(settings, embedder=shared_embedder())) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert any("fewer than" in w for w in ready.json()["warnings"])
        info = client.get("/v1/model").json()
        assert info["warnings"] and info["examples_per_label"]["AI"] == 1
