"""Graded comparison of two articles: duplicate, same story, related or unrelated.

`pair_evidence` gathers the signals (embedding cosine, word overlap, character-shingle overlap,
time gap, provider, canonical URL); `PairScorer` turns them into one similarity score in [0, 1]
and a verdict. The score is a logistic curve over a linear combination of features, fitted by
least squares to graded human similarity (SemEval-2022 Task 8 ``overall``: 1 = same story …
4 = unrelated, mapped to ``(4 - overall) / 3``), so it reads as "predicted similarity" and is
*positively* correlated with similarity, *negatively* with ``overall``.

Duplicates are decided by rules, not by the curve: an equal canonical URL, or near-identical
text (shingle Jaccard above ``duplicate_threshold``) is the same write-up whatever the model says.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.utils.validation import check_is_fitted

from model.articles.article import Article
from model.coverage import neardup
from model.errors import DataFileError
from model.results import Comparison, PairEvidence, Verdict

# Columns of `pair_feature_matrix`, in order.
FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "lexical",
    "near_duplicate",
    "url_match",
    "has_time_gap",
    "log_time_gap",
    "same_provider",
    "has_provider",
)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}

# SemEval-2022 Task 8 grades pairs 1 (same story) to 4 (unrelated); a mean `overall` at or below
# this is a same-story pair (the task's own binarisation), at or below RELATED_MAX_OVERALL related.
SAME_STORY_MAX_OVERALL = 1.5
RELATED_MAX_OVERALL = 2.5
_WORD = re.compile(r"[^\W\d_][\w'’-]+|\d[\d.,]*", re.UNICODE)


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ characters that are not English stop words."""
    return {
        word
        for raw in _WORD.findall(text)
        if len(word := raw.lower().strip("'’-")) > 2 and word not in ENGLISH_STOP_WORDS
    }


def _dice(a: set[str], b: set[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def near_duplicate_score(a: Article, b: Article) -> float:
    """The shared duplicate rule's score (`model.coverage.neardup.near_duplicate_score`) for two articles."""
    return neardup.near_duplicate_score(a.text, b.text, a.excerpt, b.excerpt)


def pair_evidence(
    a: Article, b: Article, va: npt.NDArray[np.floating], vb: npt.NDArray[np.floating]
) -> PairEvidence:
    """Every signal the pair scorer looks at, for ``a`` and ``b`` with unit vectors ``va``, ``vb``."""
    cosine = float(np.dot(np.asarray(va, dtype=np.float32), np.asarray(vb, dtype=np.float32)))
    if a.published_at is not None and b.published_at is not None:
        gap: float | None = abs((a.published_at - b.published_at).total_seconds()) / 3600.0
    else:
        gap = None
    pa, pb = a.provider_key, b.provider_key
    ua, ub = a.canonical_url, b.canonical_url
    return PairEvidence(
        cosine=max(-1.0, min(1.0, cosine)),
        lexical=_dice(content_words(a.text), content_words(b.text)),
        near_duplicate=near_duplicate_score(a, b),
        time_gap_hours=gap,
        same_provider=(pa == pb) if pa and pb else None,
        url_match=bool(ua and ub and ua == ub),
    )


def pair_feature_matrix(evidences: Sequence[PairEvidence]) -> npt.NDArray[np.float64]:
    """One row per pair, columns `FEATURE_NAMES`; missing time/provider read as 0 with a flag column."""
    X = np.zeros((len(evidences), len(FEATURE_NAMES)), dtype=np.float64)
    for i, ev in enumerate(evidences):
        X[i, 0] = ev.cosine
        X[i, 1] = ev.lexical
        X[i, 2] = ev.near_duplicate
        X[i, 3] = float(ev.url_match)
        if ev.time_gap_hours is not None:
            X[i, 4] = 1.0
            X[i, 5] = math.log1p(ev.time_gap_hours)
        if ev.same_provider is not None:
            X[i, 6] = float(ev.same_provider)
            X[i, 7] = 1.0
    return X


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _best_f1_threshold(scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_]) -> float:
    """The score cut that maximises F1 of ``score >= cut`` against ``positive`` (midpoint between scores)."""
    if not positive.any() or positive.all():
        return float("nan")
    order = np.sort(np.unique(scores))
    best_f1, best_cut = -1.0, float(order[0])
    for i, cut in enumerate(order):
        called = scores >= cut
        tp = int((called & positive).sum())
        f1 = 2 * tp / (int(called.sum()) + int(positive.sum()))
        if f1 > best_f1:
            # Halfway to the next lower score, so a new pair scoring just under the lowest
            # accepted training pair is not rejected by a hair.
            lower = order[i - 1] if i > 0 else cut
            best_f1, best_cut = f1, float((cut + lower) / 2)
    return best_cut


class PairScorer(BaseEstimator):
    """Score how closely two articles cover the same thing and give a graded verdict.

    The score is ``sigmoid(coef_ · x + intercept_)`` over the chosen columns of
    `pair_feature_matrix`, fitted by (ridge-penalised) least squares to a similarity target
    in [0, 1]. Verdicts: ``duplicate`` (same canonical URL or near-identical text), else
    ``same_story`` (score ≥ ``same_story_threshold`` and published within
    ``max_same_story_gap_hours`` when both dates are known), else ``related``
    (score ≥ ``related_threshold``), else ``unrelated``.

    Parameters
    ----------
    features : tuple of str or None, default=None
        Columns of `pair_feature_matrix` the score uses. ``None``: ``cosine``, plus the time-gap
        columns when the training pairs have dates and the provider columns when they have
        providers. (On SemEval, adding ``lexical`` or ``near_duplicate`` to the cosine lowered
        the cross-validated Pearson r; see `PairScorer.default`.)
    alpha : float, default=1e-3
        Ridge penalty on the coefficients (not the intercept).
    duplicate_threshold : float, default=0.8
        Shingle Jaccard at or above which two texts are the same write-up.
    same_story_threshold : float or None, default=None
        Score cut for ``same_story``; ``None`` learns it in `fit` (best F1 for overall ≤ 1.5 with
        graded ``y``), or keeps the SemEval default with binary ``y``.
    related_threshold : float or None, default=None
        Score cut for ``related``; ``None`` learns it in `fit` (best F1 for overall ≤ 2.5 with
        graded ``y``, or for the positive class with binary ``y``).
    max_same_story_gap_hours : float, default=168.0
        Two write-ups of one event rarely lie more than a week apart; a larger gap caps the
        verdict at ``related``.

    Attributes
    ----------
    feature_names_ : tuple of str
        The columns used.
    coef_ : ndarray of shape (n_features_used,)
    intercept_ : float
    same_story_threshold_ : float
    related_threshold_ : float
    target_ : {"graded", "binary"}
        What ``y`` was in `fit`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.zeros((4, len(FEATURE_NAMES))); X[:, 0] = [0.9, 0.7, 0.3, 0.05]
    >>> scorer = PairScorer().fit(X, [1.0, 1.5, 3.0, 4.0])
    >>> bool(scorer.predict(X)[0] > scorer.predict(X)[3])
    True
    """

    def __init__(
        self,
        *,
        features: tuple[str, ...] | None = None,
        alpha: float = 1e-3,
        duplicate_threshold: float = neardup.NEAR_DUPLICATE_JACCARD,
        same_story_threshold: float | None = None,
        related_threshold: float | None = None,
        max_same_story_gap_hours: float = 168.0,
    ) -> None:
        self.features = features
        self.alpha = alpha
        self.duplicate_threshold = duplicate_threshold
        self.same_story_threshold = same_story_threshold
        self.related_threshold = related_threshold
        self.max_same_story_gap_hours = max_same_story_gap_hours

    # Measured on ../shared/data/semeval/pairs.tsv (161 en-en pairs, no dates or providers):
    #   .venv/bin/python -m benchmarks.pairs --fit-default
    # fits sigmoid(w*cosine + b) to (4 - overall)/3 on all pairs, and the thresholds as best-F1
    # cuts for overall <= 1.5 (same_story) and <= 2.5 (related). Cross-validated figures of the
    # same procedure (10-fold x 5): see benchmarks/pairs.py output, reported in the README.
    _DEFAULT_COEF = (7.28370964,)
    _DEFAULT_INTERCEPT = -3.18981863
    _DEFAULT_SAME_STORY = 0.6430
    _DEFAULT_RELATED = 0.3626

    @classmethod
    def default(cls, **params: Any) -> PairScorer:
        """A scorer fitted on the public SemEval pairs (cosine only), usable without any labels."""
        scorer = cls(**params)
        scorer.feature_names_ = ("cosine",)
        scorer.coef_ = np.array(cls._DEFAULT_COEF, dtype=np.float64)
        scorer.intercept_ = float(cls._DEFAULT_INTERCEPT)
        scorer.same_story_threshold_ = (
            cls._DEFAULT_SAME_STORY if scorer.same_story_threshold is None else scorer.same_story_threshold
        )
        scorer.related_threshold_ = (
            cls._DEFAULT_RELATED if scorer.related_threshold is None else scorer.related_threshold
        )
        scorer.target_ = "graded"
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

    def _choose_features(self, X: npt.NDArray[np.float64]) -> tuple[str, ...]:
        if self.features is not None:
            unknown = [name for name in self.features if name not in _COLUMN]
            if unknown:
                raise ValueError(f"unknown features {unknown}, expected some of {FEATURE_NAMES}")
            return tuple(self.features)
        chosen = ["cosine"]
        # Time and provider only help when the pairs carry them; constant columns add nothing.
        if X[:, _COLUMN["has_time_gap"]].any():
            chosen += ["has_time_gap", "log_time_gap"]
        if X[:, _COLUMN["has_provider"]].any():
            chosen += ["same_provider", "has_provider"]
        return tuple(chosen)

    def fit(self, X: Any, y: Any) -> PairScorer:
        """Fit the score curve and (unless given) the verdict thresholds.

        Parameters
        ----------
        X : array-like of shape (n_pairs, len(FEATURE_NAMES))
            From `pair_feature_matrix`.
        y : array-like of shape (n_pairs,)
            Graded ``overall`` scores in [1, 4] (1 = same story, 4 = unrelated), or binary
            related labels (1 = related, 0 = not).

        Returns
        -------
        self : PairScorer
        """
        X = self._check_X(X)
        y = np.asarray(y, dtype=np.float64).ravel()
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} pairs but y has {y.shape[0]} labels")
        if X.shape[0] < 2:
            raise ValueError(f"need at least 2 labelled pairs to fit, got {X.shape[0]}")
        binary = bool(np.isin(y, (0.0, 1.0)).all())
        if not binary and (y.min() < 1 or y.max() > 4):
            raise ValueError(
                f"y must be graded overall scores in [1, 4] or binary 0/1 labels, got range "
                f"[{y.min():g}, {y.max():g}]"
            )
        target = y if binary else (4.0 - y) / 3.0
        self.target_ = "binary" if binary else "graded"
        self.feature_names_ = self._choose_features(X)
        Z = X[:, [_COLUMN[name] for name in self.feature_names_]]
        penalty = math.sqrt(self.alpha)

        def residuals(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            fitted = _sigmoid(Z @ w[:-1] + w[-1])
            return np.concatenate([fitted - target, penalty * w[:-1]])

        start = np.zeros(Z.shape[1] + 1)
        start[0], start[-1] = 8.0, -4.0  # the SemEval optimum for cosine: converge from near it
        solution = least_squares(residuals, start).x
        self.coef_ = solution[:-1]
        self.intercept_ = float(solution[-1])
        scores = self.predict(X)
        if self.same_story_threshold is not None:
            self.same_story_threshold_ = float(self.same_story_threshold)
        elif binary:
            self.same_story_threshold_ = self._DEFAULT_SAME_STORY
        else:
            cut = _best_f1_threshold(scores, y <= SAME_STORY_MAX_OVERALL)
            self.same_story_threshold_ = self._DEFAULT_SAME_STORY if math.isnan(cut) else cut
        if self.related_threshold is not None:
            self.related_threshold_ = float(self.related_threshold)
        else:
            cut = _best_f1_threshold(scores, y >= 0.5 if binary else y <= RELATED_MAX_OVERALL)
            self.related_threshold_ = self._DEFAULT_RELATED if math.isnan(cut) else cut
        # A related cut above the same-story cut would make same_story unreachable.
        self.related_threshold_ = min(self.related_threshold_, self.same_story_threshold_)
        return self

    # --- prediction ----------------------------------------------------------------------

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """Similarity scores in [0, 1] for rows of a `pair_feature_matrix` (1 for URL duplicates)."""
        check_is_fitted(self, ["coef_", "intercept_"])
        X = self._check_X(X)
        Z = X[:, [_COLUMN[name] for name in self.feature_names_]]
        scores = _sigmoid(Z @ self.coef_ + self.intercept_)
        # Duplicates are as similar as two articles get, whatever the embedding says.
        scores = np.where(X[:, _COLUMN["url_match"]] > 0, 1.0, scores)
        dup = X[:, _COLUMN["near_duplicate"]] >= self.duplicate_threshold
        return np.where(dup, np.maximum(scores, X[:, _COLUMN["near_duplicate"]]), scores)

    def score(self, evidence: PairEvidence) -> float:  # type: ignore[override]
        """The similarity score in [0, 1] of one pair (higher = more similar)."""
        return float(self.predict(pair_feature_matrix([evidence]))[0])

    def verdict(self, evidence: PairEvidence, score: float) -> Verdict:
        """The graded verdict for a pair with this evidence and score."""
        check_is_fitted(self, ["same_story_threshold_", "related_threshold_"])
        if evidence.url_match or evidence.near_duplicate >= self.duplicate_threshold:
            return "duplicate"
        if score >= self.same_story_threshold_:
            gap = evidence.time_gap_hours
            if gap is None or gap <= self.max_same_story_gap_hours:
                return "same_story"
            return "related"
        if score >= self.related_threshold_:
            return "related"
        return "unrelated"

    def compare(
        self, a: Article, b: Article, va: npt.NDArray[np.floating], vb: npt.NDArray[np.floating]
    ) -> Comparison:
        """Evidence, score and verdict for articles ``a`` and ``b`` with embeddings ``va``, ``vb``."""
        evidence = pair_evidence(a, b, va, vb)
        value = self.score(evidence)
        return Comparison(score=value, verdict=self.verdict(evidence, value), evidence=evidence)


# --- graded pair files ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GradedPair:
    """Two articles and a human similarity grade (``overall``: 1 = same story … 4 = unrelated)."""

    a: Article
    b: Article
    overall: float


def read_pairs_tsv(path: str | Path) -> list[GradedPair]:
    """Read a graded pair file with columns ``id1 id2 overall title1 title2 excerpt1 excerpt2 [file]``.

    Raises `DataFileError` naming the file, line and column when the file cannot be read or a
    row is malformed.
    """
    path = Path(path)
    try:
        return _read_pairs(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(f"{path}: cannot read a graded pairs file ({error})") from None


def _read_pairs(path: Path) -> list[GradedPair]:
    pairs = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        required = {"id1", "id2", "overall", "title1", "title2", "excerpt1", "excerpt2"}
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise DataFileError(
                f"{path}: missing columns {sorted(missing)}; "
                f"expected tab-separated columns {sorted(required)}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                overall = float(row["overall"])
            except (TypeError, ValueError):
                raise DataFileError(
                    f"{path}:{line}: overall: expected a number, got {row['overall']!r}"
                ) from None
            pairs.append(
                GradedPair(
                    a=Article(
                        id=f"pair:{row['id1']}", title=row["title1"] or "", excerpt=row["excerpt1"] or ""
                    ),
                    b=Article(
                        id=f"pair:{row['id2']}", title=row["title2"] or "", excerpt=row["excerpt2"] or ""
                    ),
                    overall=overall,
                )
            )
    return pairs


def graded_pair_evidence(
    pairs: Sequence[GradedPair], vectors: npt.NDArray[np.floating]
) -> list[PairEvidence]:
    """Evidence for each pair, with ``vectors`` rows ``[a0, b0, a1, b1, ...]`` (see `pair_texts`)."""
    if len(vectors) != 2 * len(pairs):
        raise ValueError(f"expected {2 * len(pairs)} vectors (a and b of each pair), got {len(vectors)}")
    return [pair_evidence(p.a, p.b, vectors[2 * i], vectors[2 * i + 1]) for i, p in enumerate(pairs)]


def pair_texts(pairs: Sequence[GradedPair]) -> list[str]:
    """The texts to embed for `graded_pair_evidence`, in its row order."""
    return [text for p in pairs for text in (p.a.text, p.b.text)]
