"""Numeric score heads (quality, heat) with prediction intervals.

`ScoreRegressor` is a ridge regression on a feature matrix whose interval comes from
cross-validated residual quantiles (split-conformal style, asymmetric, so skewed targets such as
log-points get a longer upper tail). `ScoreHead` fits it on the articles that carry a field, with
embedding, word TF-IDF and provider features, and returns `ScorePrediction`s clipped to the field's
range.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse import linalg as sparse_linalg
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold
from sklearn.preprocessing import TargetEncoder
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from model.articles.article import Article
from model.errors import NewsDeskError, NotFittedError
from model.results import ScorePrediction
from model.tagging.features import ArticleFeaturizer

logger = logging.getLogger(__name__)

# Each field's valid range; None = unbounded on that side.
FIELD_RANGES: dict[str, tuple[float | None, float | None]] = {"quality": (0.0, 100.0), "heat": (0.0, None)}


# Up to this many features the ridge is solved exactly through its (features x features) normal
# equations; above it by preconditioned conjugate gradients (the heat head's design has ~100k).
DIRECT_MAX_FEATURES = 2048


class InsufficientDataError(NewsDeskError, ValueError):
    """Too few articles carry the field to fit a score head."""


def _matvec(X: Any, w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """X @ w in X's own dtype (a float32 matrix is not copied to float64 on every product)."""
    return np.asarray(X @ w.astype(X.dtype, copy=False), dtype=np.float64).ravel()


def _ridge(
    X: Any, y: npt.NDArray[np.float64], alpha: float, tol: float, start: npt.NDArray[np.float64] | None
) -> tuple[npt.NDArray[np.float64], float]:
    """(coef, intercept) minimising ||y - X w - b||² + alpha ||w||², the intercept unpenalised.

    Few features: the centred normal equations, solved exactly (rows x features² work). Many:
    conjugate gradients on the same equations with the centring inside the operator (X stays
    sparse) and a Jacobi preconditioner, starting from ``start`` when given. Each step costs two
    passes over X's non-zeros; the preconditioner evens out the columns' very different scales
    (embedding dimensions in every row, word n-grams in few), so the steps needed grow only
    slowly with the rows (41, 47, 56 at 5k, 16k, 49k heat rows at penalty 1) where sklearn's
    unpreconditioned sparse CG needed ever more, and a start near the answer saves most of them.
    """
    n, d = X.shape
    mean = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel() / n
    y_mean = float(y.mean())
    yc = y - y_mean
    Xty = _matvec(X.T, yc) - mean * yc.sum()
    if d <= DIRECT_MAX_FEATURES:
        gram = X.T @ X
        gram = np.asarray(gram.toarray() if sp.issparse(gram) else gram, dtype=np.float64)
        gram -= n * np.outer(mean, mean)
        gram[np.diag_indices_from(gram)] += alpha
        try:
            coef = scipy.linalg.solve(gram, Xty, assume_a="pos")
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):  # singular at alpha 0
            coef = np.linalg.lstsq(gram, Xty, rcond=None)[0]
    else:
        squares = X.multiply(X) if sp.issparse(X) else np.square(X)
        diagonal = np.asarray(squares.sum(axis=0, dtype=np.float64)).ravel() - n * mean**2 + alpha
        diagonal[diagonal <= 0] = 1.0  # constant columns at alpha 0

        def normal(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            z = _matvec(X, w) - mean @ w
            return _matvec(X.T, z) - mean * z.sum() + alpha * w

        operator = sparse_linalg.LinearOperator((d, d), matvec=normal, dtype=np.float64)
        jacobi = sparse_linalg.LinearOperator((d, d), matvec=lambda v: v / diagonal, dtype=np.float64)
        coef, info = sparse_linalg.cg(operator, Xty, x0=start, rtol=tol, M=jacobi, maxiter=10 * d)
        if info > 0:
            logger.warning("ridge conjugate gradients stopped after %d steps short of tol=%g", info, tol)
    return coef, y_mean - float(mean @ coef)


class ScoreRegressor(RegressorMixin, BaseEstimator):
    """Ridge regression with a cross-validated prediction interval.

    Out-of-fold residuals (``cv`` folds on the training data) give the empirical
    ``(1 - coverage) / 2`` and ``(1 + coverage) / 2`` quantiles that ``predict_interval`` adds
    to each prediction, so about ``coverage`` of new targets fall inside (split-conformal style).

    Parameters
    ----------
    alpha : float or None, default=None
        Ridge penalty; None picks the one of ``alphas`` with the lowest out-of-fold squared error.
    alphas : tuple of float, default=(1, 3, 10, 30, 100)
        Candidates when ``alpha`` is None.
    coverage : float, default=0.8
        Target share of true values inside the interval, in (0, 1).
    cv : int, default=5
        Folds for the out-of-fold residuals.
    random_state : int, default=0
        Seed of the fold shuffle (and of the sample below).
    cv_max_samples : int or None, default=20000
        The penalty search uses at most this many rows (a fixed random sample); the interval's
        out-of-fold residuals (at the chosen penalty) and the final model use every row. Each
        sparse ridge solve needs more conjugate-gradient steps as the rows grow, so the search's
        25 solves on every row made the heat head grow ~23x from 10k to 100k articles.
    tol : float, default=1e-4
        Relative residual at which the conjugate-gradient ridge solves stop (more than
        ``DIRECT_MAX_FEATURES`` features; fewer are solved exactly). sklearn's `Ridge` default.

    Attributes
    ----------
    alpha_ : float
        The penalty used.
    coef_ : ndarray of shape (n_features,)
    intercept_ : float
    residual_quantiles_ : ndarray of shape (2,)
        Lower and upper residual offsets of the interval.
    cv_residuals_ : ndarray of shape (n_samples,)
        Out-of-fold residuals (true - predicted).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = X @ [1.0, 2.0, 0.0] + rng.normal(size=200)
    >>> reg = ScoreRegressor(coverage=0.8).fit(X, y)
    >>> low, high = reg.predict_interval(X).T
    >>> bool(0.7 < np.mean((y >= low) & (y <= high)) < 0.9)
    True
    """

    def __init__(
        self,
        *,
        alpha: float | None = None,
        alphas: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0),
        coverage: float = 0.8,
        cv: int = 5,
        random_state: int = 0,
        cv_max_samples: int | None = 20_000,
        tol: float = 1e-4,
    ) -> None:
        self.alpha = alpha
        self.alphas = alphas
        self.coverage = coverage
        self.cv = cv
        self.random_state = random_state
        self.cv_max_samples = cv_max_samples
        self.tol = tol

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X: Any, y: npt.ArrayLike) -> ScoreRegressor:
        """Fit the ridge model and the residual quantiles.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        if not 0 < self.coverage < 1:
            raise ValueError(f"coverage must be in (0, 1), got {self.coverage}")
        if self.cv < 2:
            raise ValueError(f"cv must be ≥ 2 folds, got {self.cv}")
        if self.cv_max_samples is not None and self.cv_max_samples < self.cv:
            raise ValueError(f"cv_max_samples must be ≥ cv ({self.cv}) or None, got {self.cv_max_samples}")
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=[np.float64, np.float32], y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        candidates = [self.alpha] if self.alpha is not None else list(self.alphas)
        if not candidates or min(candidates) < 0:
            raise ValueError(
                f"alpha must be ≥ 0 and alphas non-empty, got alpha={self.alpha}, alphas={self.alphas}"
            )
        # The solves' vector operations are short (one value per feature): BLAS threads only
        # hand them back and forth, 10x the CPU time on this 2-core machine under load.
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(X, y, candidates)
        return self

    def _fit(self, X: Any, y: npt.NDArray[np.float64], candidates: list[float]) -> None:
        n = X.shape[0]
        residuals = np.zeros(0)
        self.alpha_ = float(candidates[0])
        start = None
        if n >= 2 and len(candidates) > 1:
            Xs, ys = X, y
            if self.cv_max_samples is not None and n > self.cv_max_samples:
                rng = np.random.default_rng(self.random_state)
                rows = np.sort(rng.choice(n, size=self.cv_max_samples, replace=False))
                Xs, ys = X[rows], y[rows]
            oof, fold_coefs = self._out_of_fold(Xs, ys, candidates)
            errors = np.mean((ys[:, None] - oof) ** 2, axis=0)
            best = int(np.argmin(errors))  # the first of equal errors wins: ties keep the smaller penalty
            self.alpha_ = float(candidates[best])
            start = np.mean(fold_coefs[best], axis=0)
            if Xs.shape[0] == n:
                residuals = ys - oof[:, best]
        coef, intercept = _ridge(X, y, self.alpha_, self.tol, start)
        if n >= 2 and not residuals.size:
            # The interval's residuals come from fold models as large as the final one's data:
            # residuals of models fitted on the sample's folds were larger, so the intervals
            # came out too wide (coverage 0.857 for 0.8 at 49k articles with heat). Each fold
            # starts from the final model, which it differs from by a fifth of the rows.
            residuals = y - self._out_of_fold(X, y, [self.alpha_], start=coef)[0][:, 0]
        self.coef_ = coef
        self.intercept_ = intercept
        self.cv_residuals_ = residuals
        tail = (1 - self.coverage) / 2
        if residuals.size:
            # the finite-sample (n+1) correction of split-conformal intervals
            level = min(1.0, (1 - tail) * (1 + 1 / residuals.size))
            self.residual_quantiles_ = np.array(
                [np.quantile(residuals, 1 - level), np.quantile(residuals, level)]
            )
        else:
            self.residual_quantiles_ = np.zeros(2)

    def _out_of_fold(
        self,
        X: Any,
        y: npt.NDArray[np.float64],
        alphas: Sequence[float],
        start: npt.NDArray[np.float64] | None = None,
    ) -> tuple[npt.NDArray[np.float64], list[list[npt.NDArray[np.float64]]]]:
        """Each row's prediction (n_samples, n_alphas) by ridge models fitted on the other folds,
        and each penalty's fold coefficients. Within a fold the penalties are solved from the
        largest down, each starting from the previous solution (the best-conditioned first)."""
        n = X.shape[0]
        oof = np.zeros((n, len(alphas)))
        coefs: list[list[npt.NDArray[np.float64]]] = [[] for _ in alphas]
        order = sorted(range(len(alphas)), key=lambda k: -alphas[k])
        for train, test in KFold(min(self.cv, n), shuffle=True, random_state=self.random_state).split(X):
            previous = start
            for k in order:
                coef, intercept = _ridge(X[train], y[train], float(alphas[k]), self.tol, previous)
                oof[test, k] = _matvec(X[test], coef) + intercept
                coefs[k].append(coef)
                previous = coef
        return oof, coefs

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """Point predictions, shape (n_samples,)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=False)
        return np.asarray(X @ self.coef_).ravel() + self.intercept_

    def predict_interval(self, X: Any) -> npt.NDArray[np.float64]:
        """(low, high) bounds, shape (n_samples, 2), of the ``coverage`` prediction interval."""
        value = self.predict(X)
        return np.column_stack([value + self.residual_quantiles_[0], value + self.residual_quantiles_[1]])


def _field_values(articles: Sequence[Article], field: str) -> list[float | None]:
    return [getattr(article, field) for article in articles]


class ScoreHead:
    """Predict one numeric article field (``quality`` or ``heat``) with an interval.

    Parameters
    ----------
    field : str
        Article attribute to learn, e.g. "heat" or "quality".
    log_scale : bool
        Model log1p(value) instead of the value (heavy-tailed fields such as heat).
    featurizer : ArticleFeaturizer or None
        Default: embeddings + word TF-IDF (1-2 grams) + provider one-hot, no char n-grams.
    regressor : ScoreRegressor or None
        Default: `ScoreRegressor(coverage=coverage)` (penalty picked by CV).
    coverage : float, default=0.8
    min_samples : int, default=30
        Fewest articles with the field that `fit` accepts.
    provider_encoding : bool, default=True
        Add a cross-fitted target encoding of the provider (its smoothed mean score) and
        log(1 + the provider's training count) as two extra features.

    Attributes
    ----------
    featurizer_ : ArticleFeaturizer
    regressor_ : ScoreRegressor
    provider_encoder_ : TargetEncoder or None
    provider_counts_ : dict of str to int
    report_ : dict
        n_train, n_ignored, target mean/std, residual quantiles, fit seconds, params.
    """

    def __init__(
        self,
        field: str,
        log_scale: bool,
        *,
        featurizer: ArticleFeaturizer | None = None,
        regressor: ScoreRegressor | None = None,
        coverage: float = 0.8,
        min_samples: int = 30,
        provider_encoding: bool = True,
    ) -> None:
        self.field = field
        self.log_scale = log_scale
        self.featurizer = featurizer
        self.regressor = regressor
        self.coverage = coverage
        self.min_samples = min_samples
        self.provider_encoding = provider_encoding

    @staticmethod
    def count_values(articles: Sequence[Article], field: str) -> int:
        """How many articles carry ``field``."""
        return sum(value is not None for value in _field_values(articles, field))

    @classmethod
    def can_fit(cls, articles: Sequence[Article], field: str, min_samples: int = 30) -> bool:
        """Whether enough articles carry ``field`` to fit a head (check before `fit`)."""
        return cls.count_values(articles, field) >= min_samples

    def _to_model_scale(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.log1p(np.maximum(values, 0.0)) if self.log_scale else values

    def _from_model_scale(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.expm1(values) if self.log_scale else values

    def _provider_block(
        self, articles: Sequence[Article], y: npt.NDArray[np.float64] | None
    ) -> sp.csr_matrix:
        keys = np.array([[article.provider_key or "?"] for article in articles], dtype=object)
        if y is not None:
            encoded = self.provider_encoder_.fit_transform(keys, y)  # cross-fitted: no target leak
        else:
            encoded = self.provider_encoder_.transform(keys)
        counts = np.log1p([self.provider_counts_.get(key[0], 0) for key in keys])[:, None]
        return sp.csr_matrix(np.hstack([encoded - self.target_mean_, counts]).astype(np.float32))

    def _design(
        self, articles: Sequence[Article], embeddings: npt.ArrayLike, y: npt.NDArray[np.float64] | None = None
    ) -> sp.csr_matrix:
        X = (
            self.featurizer_.fit_transform(articles, embeddings)
            if y is not None
            else (self.featurizer_.transform(articles, embeddings))
        )
        if self.provider_encoder_ is not None:
            X = sp.hstack([X, self._provider_block(articles, y)], format="csr")
        return X

    def fit(self, articles: Sequence[Article], embeddings: npt.ArrayLike) -> ScoreHead:
        """Fit on the articles where ``field`` is present (others are ignored and counted)."""
        start = time.perf_counter()
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(articles):
            raise ValueError(
                f"expected one embedding row per article ({len(articles)}), got shape {emb.shape}"
            )
        if self.field not in FIELD_RANGES and not all(hasattr(a, self.field) for a in articles[:1]):
            raise ValueError(f"unknown field {self.field!r}, expected one of {sorted(FIELD_RANGES)}")
        values = _field_values(articles, self.field)
        keep = [i for i, value in enumerate(values) if value is not None]
        if len(keep) < self.min_samples:
            raise InsufficientDataError(
                f"only {len(keep)} of {len(articles)} articles have {self.field!r}; a score head needs at "
                f"least {self.min_samples} (min_samples). Add labelled articles or skip this head "
                "(ScoreHead.can_fit tells in advance)."
            )
        train = [articles[i] for i in keep]
        y = self._to_model_scale(np.array([values[i] for i in keep], dtype=np.float64))
        self.target_mean_ = float(y.mean())
        self.featurizer_ = (
            clone(self.featurizer)
            if self.featurizer is not None
            else ArticleFeaturizer(char_ngrams=None, provider=True)
        )
        self.provider_encoder_ = None
        if self.provider_encoding:
            keys = [article.provider_key or "?" for article in train]
            # One pass: counting each distinct key with list.count grew with keys x providers
            # (about 15 CPU s at 100k articles and 15k outlets).
            self.provider_counts_ = dict(Counter(keys))
            self.provider_encoder_ = TargetEncoder(
                target_type="continuous", cv=KFold(5, shuffle=True, random_state=0)
            )
        X = self._design(train, emb[keep], y)
        self.regressor_ = (
            clone(self.regressor) if self.regressor is not None else ScoreRegressor(coverage=self.coverage)
        )
        self.regressor_.fit(X, y)
        self.report_ = {
            "field": self.field,
            "log_scale": self.log_scale,
            "n_train": len(train),
            "n_ignored": len(articles) - len(train),
            "n_features": int(X.shape[1]),
            "target_mean": self.target_mean_,
            "target_std": float(y.std()),
            "alpha": self.regressor_.alpha_,
            "residual_quantiles": self.regressor_.residual_quantiles_.tolist(),
            "coverage": self.regressor_.coverage,
            "params": {
                "featurizer": self.featurizer_.get_params(),
                "regressor": self.regressor_.get_params(),
            },
            "fit_seconds": round(time.perf_counter() - start, 2),
        }
        logger.info(
            "fitted %s head on %d articles in %.1fs", self.field, len(train), self.report_["fit_seconds"]
        )
        return self

    def predict_values(
        self, articles: Sequence[Article], embeddings: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(value, low, high) arrays on the field's own scale, clipped to its range."""
        if not hasattr(self, "regressor_"):
            raise NotFittedError(
                f"the {self.field!r} score head is not fitted: call fit(articles, embeddings)"
            )
        if not len(articles):
            empty = np.zeros(0)
            return empty, empty, empty
        X = self._design(articles, embeddings)
        value = self.regressor_.predict(X)
        low, high = self.regressor_.predict_interval(X).T
        lo, hi = FIELD_RANGES.get(self.field, (None, None))
        out = [np.clip(self._from_model_scale(v), lo, hi) for v in (value, low, high)]
        return out[0], out[1], out[2]

    def predict(self, articles: Sequence[Article], embeddings: npt.ArrayLike) -> list[ScorePrediction]:
        """One `ScorePrediction` (value, low, high, coverage) per article."""
        value, low, high = self.predict_values(articles, embeddings)
        coverage = float(self.regressor_.coverage)
        return [
            ScorePrediction(float(v), float(lo), float(hi), coverage)
            for v, lo, hi in zip(value, low, high, strict=True)
        ]
