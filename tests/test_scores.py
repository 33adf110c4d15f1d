"""ScoreRegressor (estimator contract, interval coverage) and ScoreHead on real HN headlines."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from helpers import corpus_path
from sklearn.utils.estimator_checks import parametrize_with_checks

from model.articles.article import Article, Provider
from model.errors import NotFittedError
from model.evaluation.tagging import score_metrics
from model.results import ScorePrediction
from model.tagging.scores import InsufficientDataError, ScoreHead, ScoreRegressor


@parametrize_with_checks([ScoreRegressor()])
def test_score_regressor_follows_the_sklearn_contract(estimator, check):
    check(estimator)


def test_interval_contains_about_the_coverage_share_of_new_targets():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.gumbel(size=3000)  # skewed noise
    reg = ScoreRegressor(coverage=0.8).fit(X[:2000], y[:2000])
    low, high = reg.predict_interval(X[2000:]).T
    inside = np.mean((y[2000:] >= low) & (y[2000:] <= high))
    assert 0.76 < inside < 0.84
    # skewed residuals give an asymmetric interval: the upper tail is longer
    lo_q, hi_q = reg.residual_quantiles_
    assert hi_q > -lo_q
    wider = ScoreRegressor(coverage=0.95).fit(X[:2000], y[:2000]).predict_interval(X[2000:])
    assert np.all(wider[:, 1] - wider[:, 0] > high - low)


def test_the_penalty_search_uses_a_capped_sample_and_the_interval_every_row():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 0.0]) + rng.gumbel(size=3000)
    capped = ScoreRegressor(coverage=0.8, cv_max_samples=1000).fit(X[:2000], y[:2000])
    full = ScoreRegressor(coverage=0.8, cv_max_samples=None).fit(X[:2000], y[:2000])
    # the penalty is chosen on 1,000 rows; the residuals and the model come from all 2,000, so
    # with the same penalty they are the ones the uncapped search gives
    assert capped.alpha_ == full.alpha_
    np.testing.assert_allclose(capped.cv_residuals_, full.cv_residuals_)
    np.testing.assert_allclose(capped.coef_, full.coef_)
    low, high = capped.predict_interval(X[2000:]).T
    assert 0.75 < np.mean((y[2000:] >= low) & (y[2000:] <= high)) < 0.85
    with pytest.raises(ValueError, match="cv_max_samples must be"):
        ScoreRegressor(cv_max_samples=3).fit(X, y)


def test_many_sparse_features_are_solved_by_conjugate_gradients_to_the_exact_ridge():
    import scipy.sparse as sp
    from sklearn.linear_model import Ridge

    from model.tagging.scores import DIRECT_MAX_FEATURES

    rng = np.random.default_rng(2)
    n, d = 1500, DIRECT_MAX_FEATURES + 500  # above the direct solve's limit: the CG path
    dense = rng.normal(size=(n, 20)) * 3.0  # columns on very different scales, as in the heat design
    words = sp.random(n, d - 20, density=0.01, random_state=3, format="csr") * 0.1
    X = sp.hstack([sp.csr_matrix(dense), words], format="csr").astype(np.float32)
    y = dense[:, 0] - dense[:, 1] + np.asarray(words.sum(axis=1)).ravel() * 5 + rng.normal(size=n)
    reg = ScoreRegressor(alpha=3.0, tol=1e-8).fit(X, y)
    exact = Ridge(alpha=3.0, solver="lsqr", tol=1e-10).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(reg.coef_, exact.coef_, atol=1e-4)
    assert reg.intercept_ == pytest.approx(exact.intercept_, abs=1e-4)
    # a start near the answer (the penalty search's) changes the steps taken, not the answer
    searched = ScoreRegressor(alphas=(1.0, 3.0), tol=1e-8).fit(X, y)
    again = ScoreRegressor(alpha=searched.alpha_, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(searched.coef_, again.coef_, atol=1e-4)
    np.testing.assert_allclose(searched.cv_residuals_, again.cv_residuals_, atol=1e-3)


def test_coverage_outside_zero_one_is_rejected():
    with pytest.raises(ValueError, match=r"coverage must be in \(0, 1\), got 1.5"):
        ScoreRegressor(coverage=1.5).fit(np.zeros((5, 2)), np.zeros(5))


def _synthetic_articles(n: int, seed: int = 0) -> tuple[list[Article], np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    domains = ["big.example", "small.example", "mid.example"]
    articles = []
    for i in range(n):
        domain = domains[i % 3]
        base = {"big.example": 4.0, "small.example": 1.0, "mid.example": 2.5}[domain]
        heat = float(np.expm1(max(0.0, base + 2 * emb[i, 0] + rng.normal(0, 0.3))))
        articles.append(Article(id=str(i), title=f"story {i}", provider=Provider(domain, domain), heat=heat))
    return articles, emb


def test_score_head_ignores_missing_values_clips_and_pickles(tmp_path):
    articles, emb = _synthetic_articles(300)
    articles[0] = Article(id="0", title="no heat here")  # no heat: ignored when fitting
    head = ScoreHead("heat", log_scale=True).fit(articles[:240], emb[:240])
    assert head.report_["n_train"] == 239 and head.report_["n_ignored"] == 1
    preds = head.predict(articles[240:], emb[240:])
    assert all(isinstance(p, ScorePrediction) and 0 <= p.low <= p.value <= p.high for p in preds)
    assert all(p.coverage == 0.8 for p in preds)
    truth = [a.heat for a in articles[240:]]
    assert score_metrics(truth, [p.value for p in preds])["spearman"] > 0.8
    joblib.dump(head, tmp_path / "head.joblib")
    again = joblib.load(tmp_path / "head.joblib").predict(articles[240:], emb[240:])
    assert again == preds


def test_score_head_says_when_there_is_too_little_data():
    articles, emb = _synthetic_articles(10)
    assert not ScoreHead.can_fit(articles, "heat", min_samples=30)
    assert ScoreHead.count_values(articles, "quality") == 0
    with pytest.raises(InsufficientDataError, match="only 0 of 10 articles have 'quality'"):
        ScoreHead("quality", log_scale=False).fit(articles, emb)
    with pytest.raises(NotFittedError, match="not fitted"):
        ScoreHead("quality", log_scale=False).predict(articles, emb)


def test_quality_predictions_stay_within_0_to_100():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 8)).astype(np.float32)
    articles = [
        Article(id=str(i), title="t", quality=float(np.clip(50 + 60 * emb[i, 0], 0, 100))) for i in range(200)
    ]
    head = ScoreHead("quality", log_scale=False).fit(articles, emb)
    value, low, high = head.predict_values(articles, emb * 5)  # far outside the training range
    assert value.min() >= 0 and high.max() <= 100 and low.min() >= 0


@pytest.mark.slow
def test_score_head_beats_the_provider_mean_on_real_hn_headlines():
    from model.articles.seeds import read_seeds
    from model.encoders.embedder import Embedder, EmbeddingCache

    path = corpus_path("hn")
    articles = sorted(read_seeds([path]).articles.values(), key=lambda a: a.id)[:3000]
    emb = Embedder(cache=EmbeddingCache(Path.home() / ".cache" / "news-desk" / "embeddings.sqlite")).encode(
        [a.text for a in articles]
    )
    head = ScoreHead("heat", log_scale=True).fit(articles[:2400], emb[:2400])
    value, low, high = head.predict_values(articles[2400:], emb[2400:])
    truth = np.array([a.heat for a in articles[2400:]])
    metrics = score_metrics(truth, value, low=low, high=high)
    assert metrics["spearman"] > 0.15
    assert 0.7 < metrics["coverage"] < 0.9


def test_score_metrics_reports_error_rank_correlation_and_coverage():
    m = score_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.5, 5.0], low=[0, 0, 0, 0], high=[2, 1, 4, 4])
    assert m["n"] == 4 and m["mae"] == pytest.approx(0.625)
    assert m["rmse"] == pytest.approx(np.sqrt((0 + 1 + 0.25 + 1) / 4))
    assert m["spearman"] == pytest.approx(0.8) and m["coverage"] == 0.75 and m["mean_width"] == 2.75
