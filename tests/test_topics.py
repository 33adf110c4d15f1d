"""TopicClassifier (estimator contract, few-shot and rare labels) and TopicTagger on real articles."""

from __future__ import annotations

import itertools
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import corpus_path
from sklearn.preprocessing import normalize
from sklearn.utils.estimator_checks import parametrize_with_checks

from model.articles.article import Article
from model.evaluation.tagging import topic_metrics
from model.results import TopicScore
from model.tagging.features import ArticleFeaturizer
from model.tagging.topic_classifier import TopicClassifier
from model.tagging.topic_tagger import MAX_TOPIC_EXAMPLES, TopicTagger, capped_sample, examples_within


@parametrize_with_checks([TopicClassifier(cv=3)])
def test_topic_classifier_follows_the_sklearn_contract(estimator, check):
    check(estimator)


def _clusters(n_per: int, centres: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, dim)) * 3
    X = np.vstack([rng.normal(m, 1.0, size=(n_per, dim)) for m in means])
    return X, np.repeat(np.arange(centres), n_per)


def test_multilabel_fit_returns_label_tuples_and_per_label_probabilities():
    X, c = _clusters(40, 3)
    names = [("grain", "wheat"), ("earn",), ("crude",)]
    y = [names[k] for k in c]
    clf = TopicClassifier().fit(X, y)
    assert list(clf.classes_) == ["crude", "earn", "grain", "wheat"]
    prob = clf.predict_proba(X)
    assert prob.shape == (120, 4) and ((prob >= 0) & (prob <= 1)).all()
    pred = clf.predict(X)
    assert sum(set(p) == set(t) for p, t in zip(pred, y, strict=True)) / len(y) > 0.95
    assert clf.rare_labels_ == []
    assert clf.thresholds_.shape == (4,)


def test_one_example_per_label_uses_the_nearest_example_path():
    X, c = _clusters(1, 5, seed=1)
    y = [(f"topic{k}",) for k in c]
    clf = TopicClassifier().fit(X, y)
    # every label is rare, and each example is tagged with its own label
    assert clf.rare_labels_ == [f"topic{k}" for k in range(5)]
    assert [p[0] for p in clf.predict(X)] == [t[0] for t in y]
    # a noisy copy of an example is still tagged with that example's label first
    noisy = X + np.random.default_rng(2).normal(0, 0.3, size=X.shape)
    assert [p[0] for p in clf.predict(noisy)] == [t[0] for t in y]


def test_rare_labels_are_reported_and_still_predicted():
    X, c = _clusters(30, 3, seed=3)
    y = [(f"common{k}",) for k in c]
    y[0] = ("common0", "oddity")  # one example only
    clf = TopicClassifier(min_support=3).fit(X, y)
    assert "oddity" in clf.classes_
    assert clf.rare_labels_ == ["oddity"]
    col = list(clf.classes_).index("oddity")
    prob = clf.predict_proba(X[:1])
    assert prob[0, col] > np.median(clf.predict_proba(X[40:])[:, col])


def test_min_labels_always_emits_a_topic():
    X, c = _clusters(30, 3, seed=4)
    y = [(str(k),) for k in c]
    rng = np.random.default_rng(4)
    between = rng.normal(0, 1.0, size=(20, X.shape[1]))  # near no cluster centre
    strict = TopicClassifier(threshold=0.99, per_label_thresholds=False, min_labels=0).fit(X, y)
    prob = strict.predict_proba(between)
    none = strict.predict(between)
    # without the fallback a label is emitted only above the threshold, so some rows stay empty
    assert [set(p) for p in none] == [{str(k) for k in strict.classes_[row >= 0.99]} for row in prob]
    assert any(len(p) == 0 for p in none)
    fallback = (
        TopicClassifier(threshold=0.99, per_label_thresholds=False, min_labels=1).fit(X, y).predict(between)
    )
    assert all(len(p) >= 1 for p in fallback)
    assert [p[0] for p in fallback if len(p) == 1] == [
        strict.classes_[np.argmax(r)] for r, p in zip(prob, fallback, strict=True) if len(p) == 1
    ]


def test_refit_is_deterministic_and_pickles(tmp_path):
    X, c = _clusters(20, 3, seed=5)
    y = [(str(k),) for k in c]
    a = TopicClassifier().fit(X, y)
    b = TopicClassifier().fit(X, y)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X))
    joblib.dump(a, tmp_path / "clf.joblib")
    np.testing.assert_allclose(joblib.load(tmp_path / "clf.joblib").predict_proba(X), a.predict_proba(X))


def test_labels_fitted_on_threads_give_the_same_model():
    X, c = _clusters(30, 4, seed=3)
    y = [(str(k), "even") if k % 2 == 0 else (str(k),) for k in c]
    one = TopicClassifier(n_jobs=1).fit(X, y)
    two = TopicClassifier(n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(one.coef_.toarray(), two.coef_.toarray())
    np.testing.assert_array_equal(one.thresholds_, two.thresholds_)
    assert one.predict(X) == two.predict(X)


def test_capped_sample_keeps_rare_labels_whole_and_is_stable():
    articles = [Article(id=f"a{i}", title=f"t{i}", topics=("common",)) for i in range(300)]
    articles += [Article(id=f"r{i}", title=f"r{i}", topics=("rare", "common")) for i in range(5)]
    chosen = capped_sample(articles, 100)
    assert len(chosen) == 100 and chosen == sorted(chosen)
    assert {articles[i].id for i in chosen} >= {f"r{i}" for i in range(5)}
    assert capped_sample(articles, 100) == chosen  # by id hash: the same sample every run
    assert capped_sample(articles, None) == capped_sample(articles, 1000) == list(range(305))


def test_a_memory_budget_sizes_the_topic_sample():
    """``fit --max-memory-gb``: half the budget over the head's bytes per example, never below 1,000."""
    assert examples_within(None) == MAX_TOPIC_EXAMPLES
    assert examples_within(1.0) < examples_within(2.0) < examples_within(8.0)
    assert examples_within(8.0) > MAX_TOPIC_EXAMPLES  # a larger budget learns from more
    assert examples_within(0.001) == 1_000
    with pytest.raises(ValueError, match="> 0 GB"):
        examples_within(0)


def test_bad_params_are_rejected_with_the_allowed_values():
    X, c = _clusters(10, 2)
    with pytest.raises(ValueError, match="Unknown loss 'hinge', expected one of"):
        TopicClassifier(loss="hinge").fit(X, c)
    with pytest.raises(ValueError, match="Unknown solver 'sgd', expected one of"):
        TopicClassifier(solver="sgd").fit(X, c)
    with pytest.raises(ValueError, match="cv_tol must be > 0 or None"):
        TopicClassifier(cv_tol=0).fit(X, c)


def _sparse_labels(seed: int = 6) -> tuple[sp.csr_matrix, np.ndarray]:
    """Text-like rows (sparse, unit norm, more columns than rows) and labels of 3 to 150 positives."""
    rng = np.random.default_rng(seed)
    X = sp.random(600, 2_000, density=0.02, random_state=seed, format="csr", dtype=np.float64)
    topics = rng.random((2_000, 6)) < 0.01
    Y = np.asarray(X @ topics) > 0
    Y[:, 0] = rng.random(600) < 0.25
    Y[:3, 5], Y[3:, 5] = True, False
    X.data += 0.1
    return normalize(X).tocsr(), Y


def test_working_set_fold_models_are_the_models_of_all_rows():
    """A squared-hinge model solved on the rows inside the margin (grown until no other row falls
    inside) is the model of all the rows, and so are the classifier's out-of-fold figures."""
    X, Y = _sparse_labels()
    clf = TopicClassifier(tol=1e-6)
    for j in range(Y.shape[1]):
        full_coef, full_b = clf._fit_linear(X, Y[:, j])
        inside = np.where(Y[:, j], 1.0, -1.0) * (X @ full_coef + full_b) < 1.0
        start = inside & (np.random.default_rng(j).random(len(inside)) < 0.5)  # half: it must grow
        coef, b = clf._fit_working_set(X, Y[:, j], start, 1e-6)
        np.testing.assert_allclose(X @ coef + b, X @ full_coef + full_b, atol=1e-3)
    y = [tuple(str(k) for k in np.flatnonzero(row)) or ("none",) for row in Y]
    fast = TopicClassifier(tol=1e-6, cv_tol=1e-6).fit(X, y)
    full = TopicClassifier(tol=1e-6, cv_tol=1e-6, solver="full").fit(X, y)
    np.testing.assert_allclose(fast.sigmoid_, full.sigmoid_, rtol=1e-2, atol=1e-3)
    np.testing.assert_array_equal(fast.thresholds_, full.thresholds_)
    assert fast.predict(X) == full.predict(X)


# --- facade on real data ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder():
    from model.encoders.embedder import Embedder, EmbeddingCache

    return Embedder(cache=EmbeddingCache(Path.home() / ".cache" / "news-desk" / "embeddings.sqlite"))


def _read(folder: str, limit: int) -> list[Article]:
    from model.articles.seeds import read_seeds

    path = corpus_path(folder)
    articles = sorted(read_seeds([path]).articles.values(), key=lambda a: a.id)
    return articles[:limit]


@pytest.fixture(scope="module")
def agnews(embedder):
    articles = _read("agnews", 600)
    return articles, embedder.encode([a.text for a in articles])


@pytest.fixture(scope="module")
def reuters(embedder):
    articles = _read("reuters/train", 500)
    return articles, embedder.encode([a.text for a in articles])


def test_tagger_learns_agnews_topics_from_a_few_hundred_articles(agnews):
    articles, emb = agnews
    tagger = TopicTagger(ArticleFeaturizer(char_ngrams=None)).fit(articles[:450], emb[:450])
    assert tagger.labels_ == ["Business", "Sci/Tech", "Sports", "World"]
    assert tagger.report_["single_label"] is True and tagger.report_["n_train"] == 450
    results = tagger.predict(articles[450:], emb[450:], all_scores=True)
    chosen, every = results[0]
    assert len(chosen) == 1 and isinstance(chosen[0], TopicScore)
    assert every is not None and every[0].label == chosen[0].label and len(every) == 4
    metrics = topic_metrics(
        [a.topics for a in articles[450:]], tagger.predict_labels(articles[450:], emb[450:])
    )
    assert metrics["accuracy"] > 0.75


def test_featurizer_fit_transform_tokenises_once_and_matches_fit_then_transform(agnews):
    """fit_transform takes the TF-IDF blocks from the vectorizers' own fit_transform: the same
    matrix as fit followed by transform, with each training text tokenised once."""
    articles, emb = agnews
    part, vectors = articles[:200], emb[:200]
    once = ArticleFeaturizer(provider=True).fit_transform(part, vectors)
    twice = ArticleFeaturizer(provider=True).fit(part, vectors).transform(part, vectors)
    assert once.shape == twice.shape and once.dtype == twice.dtype == np.float32
    assert abs(once - twice).max() == 0


def test_tagger_capped_to_fewer_examples_keeps_a_quality_floor(agnews):
    """Past ``max_examples`` the head learns from a sample, and still tags well."""
    articles, emb = agnews
    tagger = TopicTagger(ArticleFeaturizer(char_ngrams=None), max_examples=300).fit(articles[:450], emb[:450])
    assert tagger.report_["n_train"] == 300 and tagger.report_["n_labelled"] == 450
    assert tagger.report_["n_ignored"] == 0
    metrics = topic_metrics(
        [a.topics for a in articles[450:]], tagger.predict_labels(articles[450:], emb[450:])
    )
    assert metrics["accuracy"] > 0.75


def test_tagger_on_reuters_reports_rare_labels_and_survives_joblib(reuters, tmp_path):
    articles, emb = reuters
    untagged = Article(id="no-topics", title="An untagged wire story")
    train = [*articles[:400], untagged]
    tagger = TopicTagger(ArticleFeaturizer(char_ngrams=None)).fit(train, np.vstack([emb[:400], emb[:1]]))
    report = tagger.report_
    assert report["n_ignored"] == 1 and report["n_train"] == 400
    support = report["support"]
    assert set(tagger.rare_labels_) == {label for label, count in support.items() if count < 3}
    assert tagger.rare_labels_, "500 Reuters articles always include labels seen once or twice"
    assert set(tagger.thresholds_) == set(tagger.labels_)
    results = tagger.predict(articles[400:], emb[400:])
    assert all(
        topics and all(a.probability >= b.probability for a, b in itertools.pairwise(topics))
        for topics, _ in results
    )
    predicted = tagger.predict_labels(articles[400:], emb[400:])
    metrics = topic_metrics([a.topics for a in articles[400:]], predicted)
    assert metrics["micro_f1"] > 0.6
    joblib.dump(tagger, tmp_path / "tagger.joblib")
    again = joblib.load(tmp_path / "tagger.joblib")
    np.testing.assert_allclose(
        again.predict_proba(articles[400:], emb[400:]), tagger.predict_proba(articles[400:], emb[400:])
    )


def test_unfitted_tagger_says_how_to_fit():
    from model.errors import NotFittedError

    with pytest.raises(NotFittedError, match="call fit"):
        TopicTagger().predict([Article(id="x", title="t")], np.zeros((1, 384), dtype=np.float32))


def test_topic_metrics_macro_averages_over_the_true_labels_only():
    truth = [("earn",), ("grain", "wheat"), ("acq",)]
    pred = [("earn",), ("grain",), ("acq", "crude")]
    m = topic_metrics(truth, pred)
    assert m["n"] == 3 and m["accuracy"] == 1 / 3
    # tp 3 (earn, grain, acq), fp 1 (crude), fn 1 (wheat)
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # macro over earn, grain, wheat, acq: 1, 1, 0, 1; crude (never true) is left out
    assert m["macro_f1"] == pytest.approx(3 / 4) and m["macro_labels"] == 4
    assert m["macro_f1_union"] == pytest.approx(3 / 5)
    assert m["per_label"]["wheat"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert topic_metrics(truth, pred, labels=["earn"])["macro_f1"] == 1.0
