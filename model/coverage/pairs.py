"""Graded comparison of two articles: duplicate, same story, related or unrelated.

`pair_evidence` gathers the signals: MiniLM cosine, word and character 4-gram TF-IDF cosines
(hashed, with the IDF of the bundle's own articles: `HashedIdf`), word overlap, character-shingle
overlap, time gap, provider and canonical URL. `PairScorer` is a standardised logistic regression
over a few of them, fitted on pairs labelled same story or not, so its score reads as "probability
that this is the same story"; the ``same_story`` verdict is that score above a best-F1 cut.

Why these features (cross-validated on storychains, SemEval-2022 and tgpairs, see
`benchmarks/pairs.py`): MiniLM carries the topic, the character cosine the rare names, numbers and
places that mark *this* event (through its square root, which weighs its low end most), and the
time gap follow-ups days apart. The word and character cosines use an IDF in which a word the
corpus never saw gets the largest IDF instead of being dropped, as a fitted vocabulary would do to
exactly the names that mark a story.

Duplicates are decided by rules, not by the curve: an equal canonical URL, or near-identical
text (shingle Jaccard at or above ``duplicate_threshold``) is the same write-up whatever the model
says.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from model.articles.article import Article
from model.coverage import neardup
from model.errors import DataFileError, SeedFormatError
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
    "tfidf",
    "char_tfidf",
)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
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


# --- hashed TF-IDF with a corpus IDF -----------------------------------------------------------


class HashedIdf(BaseEstimator):
    """Word and character 4-gram TF-IDF rows without a vocabulary, with an IDF from a corpus.

    Terms are hashed into ``n_features`` buckets, so a word the corpus never saw still counts: it
    gets the largest IDF (``log(1 + N) + 1``), as a rare name should. Unfitted or fitted on no
    texts, every term weighs the same.

    Parameters
    ----------
    n_features : int, default=2**20
        Hash buckets per analyser. The fitted IDF tables are float32: 4 MiB each at 2**20.

    Attributes
    ----------
    word_idf_, char_idf_ : ndarray of shape (n_features,) or None
        Smoothed IDF ``log((1 + N) / (1 + df)) + 1`` per bucket; None when fitted on no texts.
    n_documents_ : int

    Examples
    --------
    >>> idf = HashedIdf(n_features=2**12).fit(["Rates rise again", "Rates fall"])
    >>> words, chars = idf.transform(["Rates rise", "Vestas wins order"])
    >>> float(round((words[0] @ words[1].T).toarray()[0, 0], 3))
    0.0
    """

    def __init__(self, *, n_features: int = 2**20) -> None:
        self.n_features = n_features

    def _hashers(self) -> tuple[HashingVectorizer, HashingVectorizer]:
        word = HashingVectorizer(
            n_features=self.n_features, alternate_sign=False, norm=None, stop_words="english"
        )
        char = HashingVectorizer(
            n_features=self.n_features,
            alternate_sign=False,
            norm=None,
            analyzer="char_wb",
            ngram_range=(4, 4),
        )
        return word, char

    def fit(self, texts: Iterable[str], y: Any = None) -> HashedIdf:
        """Learn the IDF tables from unlabelled texts (title + excerpt), e.g. the bundle's articles."""
        texts = [text for text in texts if text]
        self.n_documents_ = len(texts)
        self.word_idf_: npt.NDArray[np.float32] | None = None
        self.char_idf_: npt.NDArray[np.float32] | None = None
        if texts:
            for name, hasher in zip(("word_idf_", "char_idf_"), self._hashers(), strict=True):
                counts = hasher.transform(texts).tocsr()
                df = np.bincount(counts.indices, minlength=self.n_features)
                setattr(self, name, (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32))
        return self

    def transform(self, texts: Sequence[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """L2-normalised sublinear-tf TF-IDF rows: (word rows, character 4-gram rows)."""
        out = []
        idfs = (getattr(self, "word_idf_", None), getattr(self, "char_idf_", None))
        for hasher, idf in zip(self._hashers(), idfs, strict=True):
            counts = hasher.transform(list(texts)).tocsr().astype(np.float32)
            counts.data = 1.0 + np.log(counts.data)
            if idf is not None:  # index the table: multiplying by a dense row would densify
                counts.data *= idf[counts.indices]
            out.append(normalize(counts))
        return out[0], out[1]


def _row_cosines(left: sp.csr_matrix, right: sp.csr_matrix) -> npt.NDArray[np.float64]:
    return np.asarray(left.multiply(right).sum(axis=1), dtype=np.float64).ravel()


# --- evidence and feature rows -----------------------------------------------------------------


def pair_evidence(
    a: Article,
    b: Article,
    va: npt.NDArray[np.floating],
    vb: npt.NDArray[np.floating],
    idf: HashedIdf | None = None,
) -> PairEvidence:
    """Every signal the pair scorer looks at, for ``a`` and ``b`` with unit vectors ``va``, ``vb``.

    ``idf`` weighs the TF-IDF cosines (the scorer's own `HashedIdf`; None: equal weights).
    """
    return pair_evidences(a, [b], np.asarray(va)[None, :], np.asarray(vb)[None, :], idf)[0]


def pair_evidences(
    query: Article,
    others: Sequence[Article],
    vq: npt.NDArray[np.floating],
    vothers: npt.NDArray[np.floating],
    idf: HashedIdf | None = None,
) -> list[PairEvidence]:
    """`pair_evidence` of ``query`` against each of ``others``, hashing the query's text once."""
    if not others:
        return []
    articles = [query, *others]
    vectors = np.vstack(
        [
            np.asarray(vq, dtype=np.float32).reshape(1, -1),
            np.asarray(vothers, dtype=np.float32).reshape(len(others), -1),
        ]
    )
    zeros = np.zeros(len(others), dtype=np.intp)
    return indexed_pair_evidence(articles, vectors, zeros, np.arange(1, len(articles)), idf)


def indexed_pair_evidence(
    articles: Sequence[Article],
    vectors: npt.NDArray[np.floating],
    i: npt.ArrayLike,
    j: npt.ArrayLike,
    idf: HashedIdf | None = None,
) -> list[PairEvidence]:
    """Evidence of the pairs ``(articles[i[k]], articles[j[k]])``: every text is hashed once."""
    i = np.asarray(i, dtype=np.intp)
    j = np.asarray(j, dtype=np.intp)
    vectors = np.asarray(vectors, dtype=np.float32)
    words, chars = (idf or HashedIdf()).transform([a.text for a in articles])
    tfidf = _row_cosines(words[i], words[j])
    char = _row_cosines(chars[i], chars[j])
    cosines = np.einsum("ij,ij->i", vectors[i], vectors[j])
    content = [content_words(a.text) for a in articles]
    out = []
    for k, (p, q) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        a, b = articles[p], articles[q]
        if a.published_at is not None and b.published_at is not None:
            gap: float | None = abs((a.published_at - b.published_at).total_seconds()) / 3600.0
        else:
            gap = None
        pa, pb = a.provider_key, b.provider_key
        ua, ub = a.canonical_url, b.canonical_url
        out.append(
            PairEvidence(
                cosine=max(-1.0, min(1.0, float(cosines[k]))),
                lexical=_dice(content[p], content[q]),
                near_duplicate=near_duplicate_score(a, b),
                time_gap_hours=gap,
                same_provider=(pa == pb) if pa and pb else None,
                url_match=bool(ua and ub and ua == ub),
                tfidf=float(tfidf[k]),
                char_tfidf=float(char[k]),
            )
        )
    return out


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
        X[i, 8] = ev.tfidf if ev.tfidf is not None else 0.0
        X[i, 9] = ev.char_tfidf if ev.char_tfidf is not None else 0.0
    return X


def best_f1_threshold(scores: npt.ArrayLike, positive: npt.ArrayLike) -> float:
    """The cut maximising F1 of ``score >= cut``, placed halfway to the next lower score.

    Halfway, so a new pair scoring just under the lowest accepted training pair is not rejected by
    a hair. NaN when ``positive`` is all one class.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if not y.any() or y.all():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    called = np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # a cut only falls between scores
    f1 = np.where(last_of_tie, 2 * tp / (called + y.sum()), -1.0)
    k = int(np.argmax(f1))
    lower = s_sorted[k + 1] if k + 1 < len(s) else s_sorted[k]
    return float((s_sorted[k] + lower) / 2)


_best_f1_threshold = best_f1_threshold  # the name older benchmarks import


def _feature_column(X: npt.NDArray[np.float64], name: str) -> npt.NDArray[np.float64]:
    """Column ``name`` of `pair_feature_matrix` rows ``X``: a raw column or a `DERIVED_FEATURES` one."""
    if name in DERIVED_FEATURES:
        source, transform = DERIVED_FEATURES[name]
        return transform(X[:, _COLUMN[source]])
    return X[:, _COLUMN[name]]


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
        unknown = [name for name in features if name not in _COLUMN and name not in DERIVED_FEATURES]
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
        undated = 1.0 - X[:, [_COLUMN["has_time_gap"]]]
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
        scores = np.where(X[:, _COLUMN["url_match"]] > 0, 1.0, scores)
        dup = X[:, _COLUMN["near_duplicate"]] >= self.duplicate_threshold
        return np.where(dup, np.maximum(scores, X[:, _COLUMN["near_duplicate"]]), scores)

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


# --- labelled pair files -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GradedPair:
    """Two articles and a human judgement.

    ``overall`` is SemEval's grade (1 = same story … 4 = unrelated); files with a 0/1 ``label``
    (storychains, tgpairs, editors' feedback) set ``label`` and map it to ``overall`` 1 or 4.
    """

    a: Article
    b: Article
    overall: float
    label: int | None = None

    @property
    def same_story(self) -> bool:
        return self.label == 1 if self.label is not None else self.overall <= SAME_STORY_MAX_OVERALL


_GRADED_COLUMNS = {"id1", "id2", "overall", "title1", "title2", "excerpt1", "excerpt2"}
_LABEL_COLUMNS = {"file1", "file2", "label", "title1", "title2", "excerpt1", "excerpt2"}


def read_pairs_tsv(path: str | Path) -> list[GradedPair]:
    """Read a labelled pair file: tab-separated, one of two layouts.

    - graded (SemEval): ``id1 id2 overall title1 title2 excerpt1 excerpt2 [file]``;
    - binary (storychains, tgpairs, editors' feedback): ``file1 file2 label title1 title2
      excerpt1 excerpt2``, ``label`` 1 = same story. When ``file1``/``file2`` name seed files
      beside the TSV, the articles are read from them (dates, outlets, URLs); otherwise from the
      row's titles and excerpts.

    Raises `DataFileError` naming the file, line and column when the file cannot be read or a
    row is malformed.
    """
    path = Path(path)
    try:
        return _read_pairs(path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(f"{path}: cannot read a labelled pairs file ({error})") from None


def _seed_article(folder: Path, name: str, cache: dict[str, Article | None]) -> Article | None:
    if name not in cache:
        from model.articles.seeds import read_seeds  # lazy: seeds -> feedback -> pairs at import

        file = folder / name
        article = None
        if name and file.is_file():
            try:
                articles = list(read_seeds([file]).articles.values())
            except SeedFormatError:
                articles = []
            article = articles[0] if articles else None
        cache[name] = article
    return cache[name]


def _read_pairs(path: Path) -> list[GradedPair]:
    pairs = []
    seeds: dict[str, Article | None] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        columns = set(reader.fieldnames or ())
        binary = columns >= _LABEL_COLUMNS
        if not binary and not columns >= _GRADED_COLUMNS:
            raise DataFileError(
                f"{path}: missing columns; expected tab-separated columns {sorted(_GRADED_COLUMNS)} "
                f"(graded) or {sorted(_LABEL_COLUMNS)} (0/1 labels), got {sorted(columns)}"
            )
        key, first, second = ("label", "file1", "file2") if binary else ("overall", "id1", "id2")
        for line, row in enumerate(reader, start=2):
            raw = (row.get(key) or "").strip()
            try:
                value = float(raw)
            except ValueError:
                raise DataFileError(f"{path}:{line}: {key}: expected a number, got {raw!r}") from None
            if binary and value not in (0.0, 1.0):
                raise DataFileError(f"{path}:{line}: label: expected 0 or 1, got {raw!r}")
            sides = []
            for name, title, excerpt in ((first, "title1", "excerpt1"), (second, "title2", "excerpt2")):
                ref = (row.get(name) or "").strip()
                article = _seed_article(path.parent, ref, seeds) if binary else None
                sides.append(
                    article
                    or Article(id=f"pair:{ref}", title=row.get(title) or "", excerpt=row.get(excerpt) or "")
                )
            if binary:
                label = int(value)
                pairs.append(GradedPair(sides[0], sides[1], 1.0 if label else 4.0, label))
            else:
                pairs.append(GradedPair(sides[0], sides[1], value))
    return pairs


def graded_pair_evidence(
    pairs: Sequence[GradedPair], vectors: npt.NDArray[np.floating], idf: HashedIdf | None = None
) -> list[PairEvidence]:
    """Evidence for each pair, with ``vectors`` rows ``[a0, b0, a1, b1, ...]`` (see `pair_texts`)."""
    if len(vectors) != 2 * len(pairs):
        raise ValueError(f"expected {2 * len(pairs)} vectors (a and b of each pair), got {len(vectors)}")
    articles = [article for p in pairs for article in (p.a, p.b)]
    even = np.arange(0, 2 * len(pairs), 2)
    return indexed_pair_evidence(articles, vectors, even, even + 1, idf)


def pair_texts(pairs: Sequence[GradedPair]) -> list[str]:
    """The texts to embed for `graded_pair_evidence`, in its row order."""
    return [text for p in pairs for text in (p.a.text, p.b.text)]
