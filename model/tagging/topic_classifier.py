"""`TopicClassifier`: a multi-label topic estimator on feature matrices (scikit-learn API).

One-vs-rest: a linear model per label with enough examples, a nearest-example (prototype) score
for labels with too few, Platt-calibrated probabilities from out-of-fold scores, and one decision
threshold per label tuned on those out-of-fold scores only (so test data never touches the fit).
`model.tagging.topic_tagger.TopicTagger` wraps it for articles.

The fit grows linearly with the examples: each label's solver stops at a tolerance that leaves
the decisions unchanged (``tol``, and a looser ``cv_tol`` for the fold models that only score
their held-out rows), each fold's rows are cut and converted once for all labels (one fold in
memory at a time), and the labels are fitted on ``n_jobs`` threads (liblinear releases the GIL).

The fold models are solved on a working set (``solver="working-set"``): the final models come
first, and each fold's model of a label is fitted on the rows inside the final model's margin (and
the label's positives), then checked against every row of the fold: rows outside the margin add
nothing to a squared-hinge loss, so once no other row falls inside, the working set's solution *is*
the fold's solution. A label with few positives has a few hundred such rows out of thousands.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d, validate_data
from tqdm.auto import tqdm

from model.evaluation.thresholds import best_f1_threshold

logger = logging.getLogger(__name__)

# Per-estimator caches of transposed weights (see TopicClassifier._transposed).
_TRANSPOSED: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = weakref.WeakKeyDictionary()

_LOSSES = ("logistic", "squared_hinge")
_SOLVERS = ("working-set", "full")
# Rounds of adding the rows that fall inside the margin before a fold model is fitted on all rows.
_MAX_WORKING_SET_ROUNDS = 8
# One label's linear model: (coef, intercept).
_Linear = tuple[npt.NDArray[np.float64], float]
# Default prototype calibration when no label has two examples to learn it from:
# p = 0.5 at cosine 0.5, ~0.9 at cosine 0.75.
_DEFAULT_PROTOTYPE_SIGMOID = (9.0, -4.5)
# The thresholds tried for the global cut and for each label's own.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def _fit_sigmoid(
    scores: npt.NDArray[np.float64],
    y: npt.NDArray[np.bool_],
    sample_weight: npt.NDArray[np.float64] | None = None,
) -> tuple[float, float]:
    """Platt scaling: (a, b) of p = 1 / (1 + exp(-(a·s + b))), fit on held-out scores.

    Uses Platt's smoothed targets (N+ + 1) / (N+ + 2), which keep few-positive labels from
    collapsing to probabilities of exactly 0 or 1.
    """
    scores = np.asarray(scores, dtype=np.float64)
    w = np.ones_like(scores) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    n_pos, n_neg = float(w[y].sum()), float(w[~y].sum())
    target = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    scale = float(np.std(scores)) or 1.0

    def loss(params: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        z = params[0] * scores / scale + params[1]
        # log(1 + exp(z)) - t·z, written stably
        nll = np.logaddexp(0.0, z) - target * z
        p = 1.0 / (1.0 + np.exp(-z))
        g = w * (p - target)
        return float(np.sum(w * nll)), np.array([np.sum(g * scores / scale), np.sum(g)])

    prior = np.log((n_pos + 1.0) / (n_neg + 1.0))
    result = minimize(loss, np.array([1.0, prior]), jac=True, method="L-BFGS-B")
    a, b = result.x
    return float(a / scale), float(b)


def sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _is_multilabel(y: Any) -> bool:
    """A sequence of label collections (not strings) is multi-label; anything else is 1-D."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        return False
    if isinstance(y, (str, bytes)) or not isinstance(y, Sequence | np.ndarray) or len(y) == 0:
        return False
    return all(isinstance(item, Collection) and not isinstance(item, str | bytes) for item in y)


class TopicClassifier(ClassifierMixin, BaseEstimator):
    """One-vs-rest topic classifier with calibrated probabilities and per-label thresholds.

    Fit with ``y`` as a list of label collections (multi-label: ``predict`` returns a list of
    label tuples) or as a 1-D array of labels (multiclass: ``predict`` returns a 1-D array and
    ``predict_proba`` rows sum to 1).

    Labels with at least ``min_support`` positive examples get a linear model; their
    out-of-fold scores (``cv`` folds, training data only) fit a Platt sigmoid and a per-label
    threshold. Rarer labels (down to a single example) are scored by their nearest training
    example (cosine on L2-normalised rows), mapped to a probability by one sigmoid learnt from
    example pairs; they are listed in ``rare_labels_``, never dropped.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength of each per-label linear model.
    loss : {"logistic", "squared_hinge"}, default="squared_hinge"
        Logistic regression or linear SVM (both liblinear) per label.
    balanced : bool, default=True
        Weight positives and negatives of each label inversely to their frequency.
    cv : int, default=3
        Folds for the out-of-fold scores behind calibration and thresholds.
    min_support : int, default=3
        Labels with fewer positive examples use the nearest-example path.
    threshold : float or None, default=None
        Global decision threshold on calibrated probabilities; None tunes it by CV (best micro-F1).
    per_label_thresholds : bool, default=True
        Tune one threshold per label (labels with ≥ ``tune_min_support`` positives), shrunk toward
        the global one: t = (s·t_label + k·t_global) / (s + k), s = support, k = ``threshold_shrinkage``.
    tune_min_support : int, default=5
    threshold_shrinkage : float, default=10.0
    min_labels : int, default=1
        Always emit at least this many labels (the most probable) in multi-label ``predict``.
    max_labels : int or None, default=None
        Emit at most this many labels; 1 makes multi-label ``predict`` single-label.
    rare_calibration_support : int, default=50
        The nearest-example sigmoid is learnt from labels with 2 to this many examples (all
        labels with ≥ 2 when none qualifies): frequent labels have a far higher base rate and
        would make rare-label probabilities overconfident (on Reuters, all labels: +1.2 points of
        false-positive-driven micro-F1 loss).
    coef_tol : float, default=1e-4
        Weights smaller than this in absolute value are dropped from ``coef_``, which is kept
        sparse: on Reuters (132k features) ~70% of weights go, the saved model shrinks from 44 to
        ~27 MB and decision values move by < 1e-3.
    tol : float, default=1e-3
        Stopping tolerance of each final per-label liblinear solver. sklearn's 1e-4 costs twice
        the time for the same Reuters figures (train -> test micro-F1 0.8783, macro-F1 0.5396 with
        either); 1e-2 costs a third but loses 0.0005 micro-F1 there.
    cv_tol : float or None, default=1e-2
        Stopping tolerance of the fold models, whose only use is the out-of-fold scores behind
        calibration and thresholds (None: ``tol``). With 1e-2 (and the working sets) the Reuters
        and AG News figures are those of 1e-3 on all rows (`benchmarks/topic_solver.py`).
    solver : {"working-set", "full"}, default="working-set"
        How the fold models of ``loss="squared_hinge"`` are solved: "working-set" fits each on the
        rows inside the final model's margin plus the positives, adding rows that fall inside
        until none does (the same solution as "full", the fold's every row, within ``cv_tol``);
        "full" fits every fold model on all of its rows. The logistic loss always uses "full".
    n_jobs : int or None, default=None
        Threads fitting labels at once (None: 1, -1: every core); the fitted model is the same.
    random_state : int, default=0
        Seed of the CV fold shuffle, so refits are identical.
    show_progress : bool or None, default=None
        tqdm bar over the per-label fits; None: on when this module logs at INFO or below.

    Attributes
    ----------
    classes_ : ndarray of shape (n_labels,)
        Label values (strings for topics), sorted.
    multilabel_ : bool
        Whether ``y`` was a list of label collections.
    support_ : ndarray of shape (n_labels,)
        Positive training examples per label.
    rare_labels_ : list
        Labels scored by the nearest-example path (support < ``min_support``).
    thresholds_ : ndarray of shape (n_labels,)
        Decision threshold of each label.
    global_threshold_ : float
    coef_ : sparse CSR matrix of shape (n_learned, n_features), float32
        Weights of the linear labels, |w| < ``coef_tol`` dropped.
    intercept_ : ndarray of shape (n_learned,)
    sigmoid_ : ndarray of shape (n_labels, 2)
        Platt (a, b) per label; nearest-example labels share ``prototype_sigmoid_``.
    prototype_sigmoid_ : tuple of float
    cv_scores_ : dict
        Out-of-fold micro/macro-F1 of the chosen thresholds (empty when no CV was possible).
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(m, 0.3, size=(20, 4)) for m in (-1, 1)])
    >>> y = [("a",)] * 20 + [("b", "c")] * 20
    >>> clf = TopicClassifier().fit(X, y)
    >>> clf.predict(X[-1:])
    [('b', 'c')]
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        loss: str = "squared_hinge",
        balanced: bool = True,
        cv: int = 3,
        min_support: int = 3,
        threshold: float | None = None,
        per_label_thresholds: bool = True,
        tune_min_support: int = 5,
        threshold_shrinkage: float = 10.0,
        min_labels: int = 1,
        max_labels: int | None = None,
        rare_calibration_support: int = 50,
        coef_tol: float = 1e-4,
        tol: float = 1e-3,
        cv_tol: float | None = 1e-2,
        solver: str = "working-set",
        n_jobs: int | None = None,
        random_state: int = 0,
        show_progress: bool | None = None,
    ) -> None:
        self.C = C
        self.loss = loss
        self.balanced = balanced
        self.cv = cv
        self.min_support = min_support
        self.threshold = threshold
        self.per_label_thresholds = per_label_thresholds
        self.tune_min_support = tune_min_support
        self.threshold_shrinkage = threshold_shrinkage
        self.min_labels = min_labels
        self.max_labels = max_labels
        self.rare_calibration_support = rare_calibration_support
        self.coef_tol = coef_tol
        self.tol = tol
        self.cv_tol = cv_tol
        self.solver = solver
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.show_progress = show_progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # --- fitting ---------------------------------------------------------------------------

    def _validate_params(self) -> None:
        if self.loss not in _LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}, expected one of {_LOSSES}")
        if not self.C > 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        if self.cv < 2:
            raise ValueError(f"cv must be ≥ 2 folds, got {self.cv}")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.cv_tol is not None and not self.cv_tol > 0:
            raise ValueError(f"cv_tol must be > 0 or None, got {self.cv_tol}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"Unknown solver {self.solver!r}, expected one of {_SOLVERS}")
        if self.min_support < 1:
            raise ValueError(f"min_support must be ≥ 1, got {self.min_support}")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1) or None, got {self.threshold}")
        if self.max_labels is not None and self.max_labels < max(self.min_labels, 1):
            raise ValueError(
                f"max_labels ({self.max_labels}) must be ≥ min_labels ({self.min_labels}) and ≥ 1"
            )

    def _encode_y(self, y: Any, n: int) -> npt.NDArray[np.bool_]:
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if _is_multilabel(y):
            if len(y) != n:
                raise ValueError(f"X has {n} samples but y has {len(y)} label sets")
            self.multilabel_ = True
            sets = [set(item) for item in y]
            self.classes_ = np.array(sorted(set().union(*sets)), dtype=object)
            index = {label: i for i, label in enumerate(self.classes_)}
            Y = np.zeros((n, len(self.classes_)), dtype=bool)
            for row, labels in enumerate(sets):
                Y[row, [index[label] for label in labels]] = True
            return Y
        y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
        if y.ndim == 2 and y.shape[1] != 1:
            raise ValueError(
                f"y of shape {y.shape}: pass multi-label targets as a list of label collections, "
                "e.g. [('earn',), ('grain', 'wheat')]"
            )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if len(y) != n:
            raise ValueError(f"X has {n} samples but y has {len(y)} labels")
        self.multilabel_ = False
        self.classes_, codes = np.unique(y, return_inverse=True)
        return np.eye(len(self.classes_), dtype=bool)[codes]

    def _make_model(
        self, tol: float | None = None, class_weight: Any = None
    ) -> LogisticRegression | LinearSVC:
        weight = class_weight if class_weight is not None else ("balanced" if self.balanced else None)
        tol = self.tol if tol is None else tol
        # A fixed solver seed: liblinear shuffles its coordinates, and the threads of ``n_jobs``
        # would otherwise draw those seeds from numpy's global generator in any order.
        seed = self.random_state
        if self.loss == "logistic":
            return LogisticRegression(
                C=self.C, solver="liblinear", class_weight=weight, tol=tol, random_state=seed
            )
        return LinearSVC(C=self.C, class_weight=weight, max_iter=5000, tol=tol, random_state=seed)

    def _fit_linear(
        self, X: Any, y: npt.NDArray[np.bool_], tol: float | None = None, class_weight: Any = None
    ) -> _Linear:
        model = self._make_model(tol, class_weight).fit(X, y)
        return model.coef_.ravel(), float(model.intercept_[0])

    def _fit_working_set(
        self, X: Any, y: npt.NDArray[np.bool_], start: npt.NDArray[np.bool_], tol: float
    ) -> _Linear:
        """The squared-hinge model of (X, y), solved on a working set of rows: ``start`` and the
        positives first, then every row the model puts inside its margin, until none is left
        outside the set (those rows add nothing to the loss, so the solution is that of all rows);
        all rows when the set grows past half of them or takes too many rounds."""
        n = len(y)
        # The class weights of all rows: "balanced" on the working set would weigh it differently.
        weight = None
        if self.balanced:
            n_pos = int(y.sum())
            weight = {False: n / (2 * (n - n_pos)), True: n / (2 * n_pos)}
        sign = np.where(y, 1.0, -1.0)
        rows = np.flatnonzero(start | y)
        for _ in range(_MAX_WORKING_SET_ROUNDS):
            if 2 * len(rows) > n or y[rows].all():
                break
            coef, intercept = self._fit_linear(X[rows], y[rows], tol, weight)
            inside = sign * (X @ coef + intercept) < 1.0
            inside[rows] = False
            if not inside.any():
                return coef, intercept
            rows = np.union1d(rows, np.flatnonzero(inside))
        return self._fit_linear(X, y, tol, weight)

    def _fit_fold(
        self,
        X: Any,
        Y: npt.NDArray[np.bool_],
        tol: float | None = None,
        start: npt.NDArray[np.bool_] | None = None,
    ) -> list[_Linear | None]:
        """Each column of ``Y``'s linear model on ``X`` (None where the column has one class),
        the labels on ``n_jobs`` threads; with ``start`` (rows by labels), each solved on a working
        set from its column. liblinear wants float64 CSR: converted once here, for all labels, and
        dropped when the fold is done."""
        X64 = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)

        def one(j: int) -> _Linear | None:
            y = Y[:, j]
            if y.all() or not y.any():
                return None
            if start is not None:
                return self._fit_working_set(X64, y, start[:, j], self.tol if tol is None else tol)
            return self._fit_linear(X64, y, tol)

        columns = (delayed(one)(j) for j in range(Y.shape[1]))
        return list(Parallel(n_jobs=self.n_jobs, prefer="threads")(columns))

    def _progress(self, total: int, desc: str) -> tqdm:
        show = self.show_progress
        if show is None:
            show = logger.getEffectiveLevel() <= logging.INFO and total > 50
        return tqdm(total=total, desc=desc, disable=not show, leave=False)

    def fit(self, X: Any, y: Any) -> TopicClassifier:
        """Fit the per-label models, calibration and thresholds on (X, y).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : list of label collections (multi-label) or array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        _TRANSPOSED.pop(self, None)  # weights are about to change
        start = time.perf_counter()
        self._validate_params()
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=True)
        if sp.issparse(X):
            X.indices, X.indptr = X.indices.astype(np.int32), X.indptr.astype(np.int32)
        n = X.shape[0]
        Y = self._encode_y(y, n)
        n_labels = len(self.classes_)
        self.support_ = Y.sum(axis=0)
        learned = np.flatnonzero((self.support_ >= self.min_support) & (self.support_ < n))
        always = np.flatnonzero(self.support_ == n)  # a label on every example needs no model
        rare = np.setdiff1d(np.arange(n_labels), np.union1d(learned, always))
        self.learned_index_ = learned
        self.always_index_ = always
        self.rare_index_ = rare
        self.rare_labels_ = [self.classes_[i] for i in rare]
        if len(rare):
            logger.info(
                "%d of %d labels have < %d examples and use the nearest-example path: %s",
                len(rare),
                n_labels,
                self.min_support,
                ", ".join(map(str, self.rare_labels_[:20])),
            )
        self.sigmoid_ = np.zeros((n_labels, 2))
        self.sigmoid_[always] = (0.0, 50.0)

        # Nearest-example path: normalised rows of the rare labels' examples.
        Xn = normalize(X)
        self.prototype_sigmoid_ = self._fit_prototype_sigmoid(Xn, Y)
        self.prototype_rows_ = Xn[np.flatnonzero(Y[:, rare].any(axis=1))] if len(rare) else Xn[:0]
        self.prototype_labels_ = Y[np.flatnonzero(Y[:, rare].any(axis=1))][:, rare] if len(rare) else None
        self.sigmoid_[rare] = self.prototype_sigmoid_
        del Xn  # a full copy of the rows: not held through the linear fits' own float64 copies

        # The final models on all data, then the out-of-fold decision scores: fold by fold, so one
        # fold's copy of the rows is in memory at a time, its labels fitted together, each fold
        # model solved from the rows inside its final model's margin (see the module docstring).
        n_folds = min(self.cv, n)
        folds = list(KFold(n_folds, shuffle=True, random_state=self.random_state).split(X)) if n >= 2 else []
        Y_learned = Y[:, learned]
        oof = np.full((n, len(learned)), np.nan)
        cv_tol = self.tol if self.cv_tol is None else self.cv_tol
        with self._progress(len(folds) + 1, "topic models") as bar:
            final = self._fit_fold(X, Y_learned)
            bar.update()
            inside = None
            if self.solver == "working-set" and self.loss == "squared_hinge" and folds:
                inside = np.zeros(Y_learned.shape, dtype=bool)
                for j, model in enumerate(final):
                    if model is not None:
                        inside[:, j] = np.where(Y_learned[:, j], 1.0, -1.0) * (X @ model[0] + model[1]) < 1.0
            for train, test in folds:
                from_rows = None if inside is None else inside[train]
                for j, model in enumerate(self._fit_fold(X[train], Y_learned[train], cv_tol, from_rows)):
                    if model is None:  # one class in this fold's training part: the prior
                        oof[test, j] = 1.0 if Y_learned[train, j].all() else -1.0
                    else:
                        oof[test, j] = X[test] @ model[0] + model[1]
                bar.update()
        self.coef_ = np.zeros((len(learned), X.shape[1]), dtype=np.float32)
        self.intercept_ = np.zeros(len(learned))
        for j, (label, model) in enumerate(zip(learned, final, strict=True)):
            if model is not None:  # always: a learned label has both classes (support < n)
                self.coef_[j], self.intercept_[j] = model
            self.sigmoid_[label] = _fit_sigmoid(oof[:, j], Y[:, label])

        self.coef_[np.abs(self.coef_) < self.coef_tol] = 0.0
        self.coef_ = sp.csr_matrix(self.coef_)
        oof_prob = sigmoid(oof * self.sigmoid_[learned, 0] + self.sigmoid_[learned, 1])
        self._fit_thresholds(oof_prob, Y[:, learned], learned)
        self.fit_seconds_ = time.perf_counter() - start
        logger.info(
            "fitted %d labels (%d linear, %d nearest-example) on %d examples in %.1fs",
            n_labels,
            len(learned),
            len(rare),
            n,
            self.fit_seconds_,
        )
        return self

    def _fit_prototype_sigmoid(self, Xn: Any, Y: npt.NDArray[np.bool_]) -> tuple[float, float]:
        """P(article has label | cosine to one known example of the label), from example pairs.

        For a few examples of each label that has ≥ 2, the cosine to every other training row is
        paired with whether that row shares the label — exactly the one-example situation.
        """
        rng = np.random.default_rng(self.random_state)
        sims, hits, weights = [], [], []
        n = Xn.shape[0]
        support = Y.sum(axis=0)
        like_rare = np.flatnonzero((support >= 2) & (support <= self.rare_calibration_support))
        pairs = []
        for label in like_rare if len(like_rare) else np.flatnonzero(support >= 2):
            members = np.flatnonzero(Y[:, label])
            for anchor in rng.choice(members, size=min(5, len(members)), replace=False):
                others = np.delete(np.arange(n), anchor)
                pos = others[Y[others, label]]
                neg = others[~Y[others, label]]
                keep = rng.choice(neg, size=min(50, len(neg)), replace=False) if len(neg) else neg
                pairs.append((anchor, pos, keep))
                hits += [np.ones(len(pos), bool), np.zeros(len(keep), bool)]
                weights += [np.ones(len(pos)), np.full(len(keep), len(neg) / max(len(keep), 1))]
        # Every anchor's cosines in one pass over the rows per 64 anchors (one product per
        # anchor re-reads all rows each time).
        for start in range(0, len(pairs), 64):
            chunk = pairs[start : start + 64]
            anchors = Xn[[anchor for anchor, _, _ in chunk]]
            anchors = anchors.toarray() if sp.issparse(anchors) else np.asarray(anchors)
            sim = np.asarray(Xn @ anchors.T)
            for k, (_, pos, keep) in enumerate(chunk):
                sims += [sim[pos, k], sim[keep, k]]
        if not sims:
            return _DEFAULT_PROTOTYPE_SIGMOID
        hit = np.concatenate(hits)
        if hit.all() or not hit.any():
            return _DEFAULT_PROTOTYPE_SIGMOID
        a, b = _fit_sigmoid(np.concatenate(sims), hit, np.concatenate(weights))
        # A negative slope would mean "more similar, less likely": never trust it.
        return (a, b) if a > 0 else _DEFAULT_PROTOTYPE_SIGMOID

    def _apply_thresholds(self, prob: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]) -> Any:
        chosen = prob >= thresholds
        if self.min_labels > 0 and prob.shape[1]:
            top = np.argsort(-prob, axis=1)[:, : self.min_labels]
            rows = np.arange(len(prob))[:, None]
            chosen[rows, top] = True
        if self.max_labels is not None and prob.shape[1] > self.max_labels:
            masked = np.where(chosen, prob, -np.inf)
            drop = np.argsort(-masked, axis=1)[:, self.max_labels :]
            chosen[np.arange(len(prob))[:, None], drop] = False
        return chosen

    def _fit_thresholds(
        self, oof_prob: npt.NDArray[np.float64], Y: npt.NDArray[np.bool_], learned: npt.NDArray[np.intp]
    ) -> None:
        n_labels = len(self.classes_)
        self.cv_scores_: dict[str, float] = {}
        evaluable = len(learned) > 0 and not np.isnan(oof_prob).any()
        if self.threshold is not None:
            self.global_threshold_ = float(self.threshold)
        elif evaluable:
            scores = [self._micro_macro(self._apply_thresholds(oof_prob, t), Y)[0] for t in THRESHOLD_GRID]
            self.global_threshold_ = float(THRESHOLD_GRID[int(np.argmax(scores))])
        else:
            self.global_threshold_ = 0.5
        self.thresholds_ = np.full(n_labels, self.global_threshold_)
        if not evaluable:
            return
        if self.per_label_thresholds:
            k = self.threshold_shrinkage
            for j, label in enumerate(learned):
                support = int(Y[:, j].sum())
                if support >= self.tune_min_support:
                    best = best_f1_threshold(
                        oof_prob[:, j], Y[:, j], grid=THRESHOLD_GRID, prefer=self.global_threshold_
                    )
                    self.thresholds_[label] = (support * best + k * self.global_threshold_) / (support + k)
        micro, macro = self._micro_macro(self._apply_thresholds(oof_prob, self.thresholds_[learned]), Y)
        self.cv_scores_ = {"micro_f1": micro, "macro_f1": macro, "labels": len(learned)}
        logger.info(
            "global threshold %.3f; out-of-fold micro-F1 %.3f, macro-F1 %.3f over %d learnt labels",
            self.global_threshold_,
            micro,
            macro,
            len(learned),
        )

    @staticmethod
    def _micro_macro(pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> tuple[float, float]:
        tp = (pred & truth).sum(0)
        fp = (pred & ~truth).sum(0)
        fn = (~pred & truth).sum(0)
        micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
        macro = np.mean(2 * tp / np.maximum(2 * tp + fp + fn, 1))
        return float(micro), float(macro)

    # --- prediction ------------------------------------------------------------------------

    def _transposed(self, name: str, dtype: Any) -> Any:
        """``getattr(self, name).T`` in the layout a CSR product wants, built once per process.

        A CSR matrix's ``.T`` is CSC, and ``csr @ csc`` converts the whole weight matrix on every
        call (~15 ms per request on Reuters). The converted copy lives outside the estimator, so
        predicting leaves ``__dict__`` unchanged and pickles stay small.
        """
        cache = _TRANSPOSED.setdefault(self, {})
        key = (name, np.dtype(dtype).str)
        if key not in cache:
            matrix = getattr(self, name).T
            matrix = matrix.tocsr() if sp.issparse(matrix) else np.ascontiguousarray(matrix)
            cache[key] = matrix.astype(dtype, copy=False)
        return cache[key]

    def _label_probabilities(self, X: Any) -> npt.NDArray[np.float64]:
        """Independent per-label probabilities, shape (n, n_labels)."""
        n = X.shape[0]
        prob = np.zeros((n, len(self.classes_)))
        prob[:, self.always_index_] = 1.0
        if len(self.learned_index_):
            scores = X @ self._transposed("coef_", X.dtype)
            scores = (scores.toarray() if sp.issparse(scores) else np.asarray(scores)) + self.intercept_
            a, b = self.sigmoid_[self.learned_index_].T
            prob[:, self.learned_index_] = sigmoid(scores * a + b)
        if len(self.rare_index_):
            sim = normalize(X) @ self._transposed("prototype_rows_", X.dtype)
            sim = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
            # nearest example of each rare label
            best = np.stack(
                [sim[:, self.prototype_labels_[:, j]].max(axis=1) for j in range(len(self.rare_index_))],
                axis=1,
            )
            a, b = self.prototype_sigmoid_
            prob[:, self.rare_index_] = sigmoid(a * best + b)
        return prob

    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]:
        """Calibrated probabilities, shape (n_samples, n_labels), columns in ``classes_`` order.

        Multi-label: each column is that label's own probability. Multiclass: rows sum to 1.
        """
        check_is_fitted(self, "thresholds_")
        X = validate_data(self, X, accept_sparse="csr", dtype=[np.float64, np.float32], reset=False)
        prob = self._label_probabilities(X)
        if not self.multilabel_:
            total = prob.sum(axis=1, keepdims=True)
            prob = np.where(total > 0, prob / np.where(total > 0, total, 1), 1.0 / prob.shape[1])
        return prob

    def predict_indicator(self, X: Any) -> npt.NDArray[np.bool_]:
        """Boolean (n_samples, n_labels) matrix of the labels ``predict`` would emit."""
        prob = self.predict_proba(X)
        return self._apply_thresholds(prob, self.thresholds_)

    def predict(self, X: Any) -> Any:
        """Multi-label: a list of label tuples (most probable first). Multiclass: a 1-D array."""
        prob = self.predict_proba(X)
        if not self.multilabel_:
            return self.classes_[np.argmax(prob, axis=1)]
        chosen = self._apply_thresholds(prob, self.thresholds_)
        out = []
        for row_prob, row_chosen in zip(prob, chosen, strict=True):
            idx = np.flatnonzero(row_chosen)
            idx = idx[np.argsort(-row_prob[idx], kind="stable")]
            out.append(tuple(self.classes_[i] for i in idx))
        return out
