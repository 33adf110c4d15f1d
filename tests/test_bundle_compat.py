"""A bundle written by an earlier release still loads and answers as it did when written.

Bundles pickle their parts by module path (e.g. ``model.tagging.topics.TopicTagger``), so moving
a class to another module breaks every bundle on users' disks unless the old path still resolves.
The fixture is a real bundle, written before the topic and pair modules were split, by::

    python -m training fit --seeds <tests/conftest.py write_seed_set> --holdout 0 --no-onnx \
        --pairs ../shared/data/tgpairs/pairs.tsv --out bundles

(commit 5bb82a5). It is kept as a tar.xz: the pair scorer's hashed IDF tables are 8 MB raw and
compress to almost nothing. The expected answers below are what that code gave on this bundle.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from helpers import AI, FOOTBALL, SPACE, shared_embedder

from model.news_model import NewsModel

FIXTURE = Path(__file__).parent / "fixtures" / "bundle_before_split.tar.xz"
VERSION = "20261207T161114164121Z-52b29c30"

SAME_STORY_AS_AI = {
    "title": "OpenAI shows an AI system that turns English into software",
    "excerpt": "The company says its new model writes working programs from plain requests.",
    "publishedDateTime": "2024-03-05T14:00:00Z",
    "webUrl": "https://other.example/openai",
    "provider": {"name": "Other", "domain": "other.example"},
}


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory: pytest.TempPathFactory) -> NewsModel:
    root = tmp_path_factory.mktemp("old_bundle")
    with tarfile.open(FIXTURE, "r:xz") as archive:
        archive.extractall(root, filter="data")
    return NewsModel.load(root, embedder=shared_embedder())


def test_the_old_bundle_loads_every_part(old_bundle: NewsModel) -> None:
    assert old_bundle.version == VERSION
    assert old_bundle.labels == ["AI", "AWS AI", "Computer Vision", "Football", "Space"]
    assert sorted(old_bundle.scores) == ["heat", "quality"]
    assert old_bundle.topics is not None and old_bundle.topics.gate_ is not None


def test_the_old_bundle_classifies_as_when_written(old_bundle: NewsModel) -> None:
    ai, space, football = old_bundle.classify([AI, SPACE, FOOTBALL], all_scores=True)
    assert ai.labels == ["AI", "AWS AI", "Computer Vision"]
    assert space.labels == ["Space", "AI", "AWS AI"]
    assert football.labels == ["Football"]
    probabilities = {topic.label: topic.probability for topic in space.all_topics or []}
    assert probabilities["Space"] == pytest.approx(0.9993, abs=2e-3)
    assert probabilities["AI"] == pytest.approx(0.4561, abs=2e-3)
    assert ai.scores["heat"].value == pytest.approx(35.987, abs=0.05)
    assert ai.scores["quality"].value == pytest.approx(51.621, abs=0.05)


def test_the_old_bundle_compares_as_when_written(old_bundle: NewsModel) -> None:
    same = old_bundle.compare(AI, SAME_STORY_AS_AI)
    assert same.verdict == "same_story"
    assert same.score == pytest.approx(0.9827, abs=2e-3)
    other = old_bundle.compare(AI, SPACE)
    assert other.verdict == "unrelated"
    assert other.score == pytest.approx(0.009, abs=2e-3)


def test_the_old_bundle_finds_its_related_articles(old_bundle: NewsModel) -> None:
    hits = old_bundle.similar(AI, k=3)
    assert [(hit.article_id, hit.verdict) for hit in hits] == [
        ("b96eeb3fd6f6426a", "same_story"),
        ("828c0e55f9f195b9", "same_story"),
        ("7778864580673e72", "related"),
    ]
