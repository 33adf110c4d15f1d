"""The few-shot prototype path of the topic tagger, and smoke runs of the story-clustering (B-cubed,
single-link) and learning-curve benchmarks."""

from __future__ import annotations

import json

import numpy as np
from helpers import corpus_path, shared_embedder

from benchmarks import learning_curve
from benchmarks.stories import _single_link, bcubed
from model.articles.article import Article
from model.tagging.topic_tagger import TopicTagger


def test_bcubed_scores_a_perfect_a_merged_and_a_split_clustering():
    gold = [0, 0, 1, 1]
    assert bcubed(["a", "a", "b", "b"], gold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    merged = bcubed(["a"] * 4, gold)
    assert merged["precision"] == 0.5 and merged["recall"] == 1.0
    split = bcubed(["a", "b", "c", "d"], gold)
    assert split["precision"] == 1.0 and split["recall"] == 0.5


def test_single_link_joins_chains_of_pairs_above_the_cut():
    sim = np.array([[1, 0.9, 0.1], [0.9, 1, 0.8], [0.1, 0.8, 1]])
    labels = _single_link(sim, 0.75)
    assert labels[0] == labels[1] == labels[2]
    assert len(set(_single_link(sim, 0.95))) == 3


def test_a_tagger_with_one_example_per_label_ranks_by_name_and_example_prototypes():
    embedder = shared_embedder()
    train = [
        Article(id="s", title="Liverpool beat Arsenal 2-0 at Anfield", topics=("Sports",)),
        Article(id="b", title="Central bank raises interest rates by a quarter point", topics=("Business",)),
    ]
    tagger = TopicTagger().fit(train, embedder.encode([a.text for a in train]))
    tagger.fit_label_gate(embedder.encode)
    assert tagger.uses_prototype_scores() and tagger.report_["prototype_scores"]
    probe = [Article(id="p", title="Tennis star wins the Wimbledon final in straight sets")]
    [(topics, _)] = tagger.predict(probe, embedder.encode([probe[0].text]))
    assert [t.label for t in topics] in (["Sports"], [])  # the closest prototype, or abstain
    tagger.prototype_scores = False
    assert not tagger.uses_prototype_scores()


def test_learning_curve_smoke_run_writes_every_method(tmp_path):
    data = corpus_path("agnews").parent
    out = tmp_path / "curve.json"
    argv = ["--data-dir", str(data), "--limit", "240", "--ks", "0", "2", "--draws", "1"]
    assert learning_curve.main([*argv, "--test", "40", "--validation", "40", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    test = result["accuracy"]["test"]
    assert {"names_prototype", "tagger", "tagger_top1", "embedding_lr", "tfidf_lr"} <= set(test)
    assert set(test["names_prototype"]) == {"0", "2"} and "0" not in test["tagger"]
