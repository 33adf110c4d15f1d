"""`PairScorer`: the graded verdict on two articles (duplicate, same story, related or unrelated).

A standardised logistic regression over a few columns of `pair_feature_matrix`, fitted on pairs
labelled same story or not, so its score reads as "probability that this is the same story"; the
``same_story`` verdict is that score above a best-F1 cut.

Why these features (cross-validated on storychains, SemEval-2022 and tgpairs, see
`benchmarks/pairs.py`): MiniLM carries the topic, the character cosine the rare names, numbers and
places that mark *this* event (through its square root, which weighs its low end most), and the
time gap follow-ups days apart.

Duplicates are decided by rules, not by the curve: an equal canonical URL, or near-identical
text (shingle Jaccard at or above ``duplicate_threshold``) is the same write-up whatever the model
says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from model.articles.article import Article
from model.coverage import neardup
from model.coverage.pair_evidence import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    HashedIdf,
    pair_evidences,
    pair_feature_matrix,
)
from model.coverage.pair_files import SAME_STORY_MAX_OVERALL
from model.evaluation.thresholds import best_f1_threshold
from model.results import Comparison, PairEvidence, Verdict

_TIME_COLUMNS = frozenset({"has_time_gap", "log_time_gap"})

# Features the scorer may use besides the raw columns: a fixed transform of one column, computed at
# scoring time (so `pair_feature_matrix` and a bundle's stored feature list stay as they were).
# ``sqrt_char_tfidf``: the character cosine of different stories is mostly under 0.1, that of
# same-story pairs spreads from about 0.15 (a rewrite sharing the names) to 0.9 (a near-copy). A
# linear term makes the step from rewrite to near-copy count as much as the step from unrelated to
# "shares the names", and lets the character cosine overrule MiniLM among pairs that plainly share
# them; the square root stretches the low end, where the decision lies, and flattens the top.
# (Cross-validated: SemEval AUC 0.929 -> 0.938, storychains 0.988 -> 0.990; `benchmarks/pairs.py`.)
DERIVED_FEATURES: dict[str, tuple[str, Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]]] = {
    "sqrt_char_tfidf": ("char_tfidf", lambda x: np.sqrt(np.maximum(x, 0.0))),
}

# The columns the scorer uses unless told otherwise. Title/excerpt embeddings, entity overlap,
# shingles and provider columns were tried and did not help in cross-validation (benchmarks/pairs.py
# --variants); the time columns stay constant (and do nothing) for undated pairs. Bundles fitted
# with the earlier default (raw ``char_tfidf``) keep their own list and score as before.
DEFAULT_FEATURES: tuple[str, ...] = ("cosine", "tfidf", "sqrt_char_tfidf", "has_time_gap", "log_time_gap")


def _feature_column(X: npt.NDArray[np.float64], name: str) -> npt.NDArray[np.float64]:
    """Column ``name`` of `pair_feature_matrix` rows ``X``: a raw column or a `DERIVED_FEATURES` one."""
    if name in DERIVED_FEATURES:
        source, transform = DERIVED_FEATURES[name]
        return transform(X[:, FEATURE_INDEX[source]])
    return X[:, FEATURE_INDEX[name]]


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class PairScorer(BaseEstimator):
    """Probability that two articles cover the same story, and a graded verdict.

    A logistic regression (L2, on standardised columns) over `pair_feature_matrix` rows, fitted on
    pairs labelled same story (1) or not (0), or on SemEval-style grades (``overall`` ≤ 1.5 = same
    story). Verdicts: ``duplicate`` (same canonical URL or near-identical text); else
    ``same_story`` (score ≥ ``same_story_threshold_``, and within ``max_same_story_gap_hours``
    when that is set and both dates are known); else ``related`` (MiniLM cosine ≥
    ``related_cosine``); else ``unrelated``.

    Parameters
    ----------
    features : tuple of str or None, default=None
        Columns used: names in `FEATURE_NAMES` or `DERIVED_FEATURES`. None: `DEFAULT_FEATURES`
        (MiniLM cosine, word TF-IDF cosine, square root of the character TF-IDF cosine,
        time gap).
    C : float, default=1.0
        Inverse L2 penalty on the standardised coefficients.
    idf : HashedIdf or None, default=None
        The fitted IDF that weighs the TF-IDF cosines in `compare` (fit it on the bundle's own
        articles); None weighs every term the same.
    duplicate_threshold : float, default=0.8
        Shingle Jaccard at or above which two texts are the same write-up.
    same_story_threshold : float or None, default=None
        Score cut for ``same_story``; None learns the best-F1 cut on the training pairs.
    related_cosine : float, default=0.36
        MiniLM cosine from which a pair is ``related``: the best-F1 cut for SemEval ``overall`` ≤
        2.5 of the earlier cosine-only scorer.
    max_same_story_gap_hours : float or None, default=None
        An optional hard cap: a larger gap makes the verdict at most ``related``. None: the time
        gap only acts through the learnt coefficient (story chains run for weeks).
    undated_terms : bool, default=False
        Give undated pairs their own coefficients (each non-time column times "no time gap"),
        so pairs without dates are not weighed as dated pairs are.

    Attributes
    ----------
    feature_names_ : tuple of str
    mean_, scale_ : ndarray of shape (n_features_used,)
        Standardisation of the used columns.
    coef_ : ndarray of shape (n_features_used,)
        Coefficients on the standardised columns (comparable in size).
    intercept_ : float
    same_story_threshold_ : float
    n_pairs_, n_positive_ : int
        Training pairs and their same-story count.

    Examples
    --------
    >>> X = np.zeros((6, len(FEATURE_NAMES)))
    >>> X[:, 0] = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]
    >>> scorer = PairScorer(features=("cosine",)).fit(X, [1, 1, 0, 0, 0, 0])
    >>> bool(scorer.predict(X)[0] > scorer.predict(X)[5])
    True
    """

    def __init__(
        self,
        *,
        features: tuple[str, ...] | None = None,
        C: float = 1.0,
        idf: HashedIdf | None = None,
        duplicate_threshold: float = neardup.NEAR_DUPLICATE_JACCARD,
        same_story_threshold: float | None = None,
        related_cosine: float = 0.36,
        max_same_story_gap_hours: float | None = None,
        undated_terms: bool = False,
    ) -> None:
        self.features = features
        self.C = C
        self.idf = idf
        self.duplicate_threshold = duplicate_threshold
        self.same_story_threshold = same_story_threshold
        self.related_cosine = related_cosine
        self.max_same_story_gap_hours = max_same_story_gap_hours
        self.undated_terms = undated_terms

    # Fitted by `python -m benchmarks.pairs --fit-default` on all 5,146 labelled pairs of
    # ../shared/data: storychains (4,950; CC BY-NC 4.0, research / non-commercial), SemEval-2022
    # en-en (161, overall <= 1.5) and tgpairs (35), each set's IDF from its own articles. These
    # numbers are what a bundle trained without `--pairs` uses; a commercial deployment should refit
    # them on its own labelled pairs (`python -m training fit --pairs ...`).
    _DEFAULT_FEATURES = DEFAULT_FEATURES
    _DEFAULT_MEAN = (0.24191, 0.03264, 0.22729, 0.96191, 4.45083)
    _DEFAULT_SCALE = (0.13597, 0.08737, 0.10073, 0.19141, 1.51237)
    _DEFAULT_COEF = (1.38702, -0.7733, 1.85863, 0.3146, -0.58026)
    _DEFAULT_INTERCEPT = -7.08986
    _DEFAULT_SAME_STORY = 0.47812

    @classmethod
    def default(cls, **params: Any) -> PairScorer:
        """The scorer fitted on the public labelled pairs (see the constants), without refitting.

        Pass ``idf=HashedIdf().fit(texts)`` to weigh the TF-IDF cosines by a corpus.
        """
        scorer = cls(**params)
        scorer.feature_names_ = tuple(cls._DEFAULT_FEATURES)
        scorer.mean_ = np.array(cls._DEFAULT_MEAN, dtype=np.float64)
        scorer.scale_ = np.array(cls._DEFAULT_SCALE, dtype=np.float64)
        scorer.coef_ = np.array(cls._DEFAULT_COEF, dtype=np.float64)
        scorer.intercept_ = float(cls._DEFAULT_INTERCEPT)
        scorer.same_story_threshold_ = (
            cls._DEFAULT_SAME_STORY if scorer.same_story_threshold is None else scorer.same_story_threshold
        )
        scorer.n_pairs_, scorer.n_positive_ = 5146, 142
        return scorer

    # --- fitting -------------------------------------------------------------------------

    def _check_X(self, X: Any) -> npt.NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(FEATURE_NAMES):
            raise ValueError(
                f"X must be a pair_feature_matrix with {len(FEATURE_NAMES)} columns {FEATURE_NAMES}, "
                f"got shape {X.shape}"
            )
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinite values; build it with pair_feature_matrix")
        return X

    @staticmethod
    def same_story_labels(y: Any) -> npt.NDArray[np.bool_]:
        """0/1 labels as they are; SemEval grades in [1, 4] as ``overall <= 1.5``."""
        y = np.asarray(y, dtype=np.float64).ravel()
        if np.isin(y, (0.0, 1.0)).all():
            return y == 1.0
        if not np.isfinite(y).all() or y.min() < 1 or y.max() > 4:
            raise ValueError(
                f"y must be 0/1 same-story labels or graded overall scores in [1, 4], got range "
                f"[{np.nanmin(y):g}, {np.nanmax(y):g}]"
            )
        return y <= SAME_STORY_MAX_OVERALL

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> PairScorer:
        """Fit the logistic regression and (unless given) the same-story cut.

        Parameters
        ----------
        X : array-like of shape (n_pairs, len(FEATURE_NAMES))
            From `pair_feature_matrix` (with the same ``idf`` as this scorer's).
        y : array-like of shape (n_pairs,)
            1 = same story, 0 = not; or graded ``overall`` scores in [1, 4] (1 = same story).
        sample_weight : array-like of shape (n_pairs,) or None

        Returns
        -------
        self : PairScorer
        """
        X = self._check_X(X)
        positive = self.same_story_labels(y)
        if positive.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} pairs but y has {positive.shape[0]} labels")
        if positive.all() or not positive.any():
            raise ValueError(
                f"need same-story and other pairs to fit, got {int(positive.sum())} of {len(positive)} "
                "same-story; add pairs of the missing kind"
            )
        features = DEFAULT_FEATURES if self.features is None else tuple(self.features)
        unknown = [name for name in features if name not in FEATURE_INDEX and name not in DERIVED_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown features {unknown}, expected some of {FEATURE_NAMES + tuple(DERIVED_FEATURES)}"
            )
        self.feature_names_ = features
        Z = self._design(X)
        self.mean_ = Z.mean(axis=0)
        scale = Z.std(axis=0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)  # constant columns (undated pairs) stay 0
        model = LogisticRegression(C=self.C, max_iter=1000)
        model.fit((Z - self.mean_) / self.scale_, positive.astype(int), sample_weight=sample_weight)
        self.coef_ = model.coef_.ravel().astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        self.n_pairs_, self.n_positive_ = len(positive), int(positive.sum())
        if self.same_story_threshold is not None:
            self.same_story_threshold_ = float(self.same_story_threshold)
        else:
            # The cut on the scores the duplicate rule does not override, as `predict` gives them.
            cut = best_f1_threshold(self.decision(X), positive)
            self.same_story_threshold_ = float(_sigmoid(np.array([cut]))[0])
        return self

    # --- prediction ----------------------------------------------------------------------

    def _design(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        Z = np.column_stack([_feature_column(X, name) for name in self.feature_names_])
        if not getattr(self, "undated_terms", False):
            return Z
        undated = 1.0 - X[:, [FEATURE_INDEX["has_time_gap"]]]
        plain = [k for k, name in enumerate(self.feature_names_) if name not in _TIME_COLUMNS]
        return np.hstack([Z, Z[:, plain] * undated])

    def decision(self, X: Any) -> npt.NDArray[np.float64]:
        """The linear score (log-odds of same story) of each row."""
        check_is_fitted(self, ["coef_", "intercept_"])
        X = self._check_X(X)
        Z = self._design(X)
        return ((Z - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """Same-story probabilities in [0, 1] for `pair_feature_matrix` rows (1 for URL duplicates)."""
        X = self._check_X(X)
        scores = _sigmoid(self.decision(X))
        # Duplicates are as similar as two articles get, whatever the model says.
        scores = np.where(X[:, FEATURE_INDEX["url_match"]] > 0, 1.0, scores)
        dup = X[:, FEATURE_INDEX["near_duplicate"]] >= self.duplicate_threshold
        return np.where(dup, np.maximum(scores, X[:, FEATURE_INDEX["near_duplicate"]]), scores)

    def score(self, evidence: PairEvidence) -> float:  # type: ignore[override]
        """The same-story probability of one pair."""
        return float(self.predict(pair_feature_matrix([evidence]))[0])

    def verdict(self, evidence: PairEvidence, score: float) -> Verdict:
        """The graded verdict for a pair with this evidence and score."""
        check_is_fitted(self, ["same_story_threshold_"])
        if evidence.url_match or evidence.near_duplicate >= self.duplicate_threshold:
            return "duplicate"
        if score >= self.same_story_threshold_:
            gap, cap = evidence.time_gap_hours, self.max_same_story_gap_hours
            if gap is None or cap is None or gap <= cap:
                return "same_story"
            return "related"
        if evidence.cosine >= self.related_cosine:
            return "related"
        return "unrelated"

    def compare(
        self, a: Article, b: Article, va: npt.NDArray[np.floating], vb: npt.NDArray[np.floating]
    ) -> Comparison:
        """Evidence, score and verdict for articles ``a`` and ``b`` with embeddings ``va``, ``vb``."""
        return self.compare_many(a, [b], va, np.asarray(vb)[None, :])[0]

    def compare_many(
        self,
        query: Article,
        others: Sequence[Article],
        vq: npt.NDArray[np.floating],
        vothers: npt.NDArray[np.floating],
    ) -> list[Comparison]:
        """`compare` of ``query`` with each of ``others`` (one hashing pass for all of them)."""
        evidences = pair_evidences(query, others, vq, vothers, self.idf)
        if not evidences:
            return []
        scores = self.predict(pair_feature_matrix(evidences))
        return [
            Comparison(score=float(s), verdict=self.verdict(ev, float(s)), evidence=ev)
            for ev, s in zip(evidences, scores, strict=True)
        ]
