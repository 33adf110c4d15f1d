"""`PairScorer`: the graded verdict on two articles (duplicate, same story, related or unrelated).

A standardised logistic regression over a few columns of `pair_feature_matrix`, fitted on pairs
labelled same story or not, gives the probability that two articles cover the same story; the
``same_story`` verdict and the story rule cut that probability. What a comparison shows as its score
is the graded output (`PairScorer.similarity`): a monotone map of the same log-odds fitted to
correlate with human grades, or, where that was measured to lose to the encoder cosine (pairs across
two languages, mostly), the cosine on the same scale.

Why these features (chosen out of set: each shared pair set held out in turn, the scorer fitted on
the others, `benchmarks/pairs_out_of_set.py`): the encoder cosine carries the topic, the square
root of the character cosine the rare names, numbers and places that mark *this* event (the root
weighs the low end, where the decision lies), the word TF-IDF cosine the shared words. At the
second step of the forward selection the word and the raw character cosine both qualified; the word
one is kept because the story rule on storychains keeps its B-cubed F1 with it (0.964, against 0.956
with the character one; `benchmarks/stories.py`). Nothing else won on most held-out sets: word
overlap, the shingle score, provider, script and language-profile evidence, and the time gap (only
storychains is dated, so no held-out set can show it helps; `max_same_story_gap_hours` is the
explicit cap).

Duplicates are decided by rules, not by the curve: an equal canonical URL, or near-identical
text (shingle Jaccard at or above ``duplicate_threshold``) is the same write-up whatever the model
says. The graded output lifts only the URL duplicate to 1.0: near-identical text keeps what its map
or cosine line gives, since two different stories can share most of their text (two headlines over
one paywall excerpt: SemEval grades such a pair 3.3, "different", and the lift to 1.0 alone took the
built-in MiniLM scorer from the cosine's |Pearson| 0.851 to 0.832).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from model.articles.article import Article
from model.coverage import neardup
from model.coverage.pair_centring import LanguageMeans, built_in_means, centred_pairs, with_centred
from model.coverage.pair_evidence import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    HashedIdf,
    indexed_pair_evidence,
    pair_evidences,
    pair_feature_matrix,
)
from model.coverage.pair_files import SAME_STORY_MAX_OVERALL
from model.coverage.pair_map import MIN_PAIR_MAP_PAIRS, PairMap, linked_groups
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

# Text-overlap features that mean something only between two texts in one language: a German title
# and its English translation share no character n-grams and few words, however alike the story.
# Such a feature is used as it is where both sides are in one language (`same_language`: the
# articles' own languages, from the seed or detected, else their script and trigram profile), and
# elsewhere replaced by what it is expected to be for a same-language pair of that encoder cosine
# (a line fitted on the training pairs), so it neither lifts nor drags a cross-language pair and
# the cosine alone speaks for it.
LANGUAGE_GATED: dict[str, str] = {
    "sqrt_char_tfidf_same_language": "sqrt_char_tfidf",
    "char_tfidf_same_language": "char_tfidf",
    "tfidf_same_language": "tfidf",
}


def same_language(X: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Rows whose two articles are in one language (`PairEvidence.same_language`)."""
    return X[:, FEATURE_INDEX["same_language"]] > 0


# The columns the scorer uses unless told otherwise, chosen forward from the cosine alone by
# `benchmarks.pairs_out_of_set`: a feature joined only when it won on most held-out sets and lost on
# none by more than the bootstrap noise. Bundles fitted with an earlier default (the raw character
# cosine; PREVIOUS_FEATURES, which also had the word TF-IDF cosine and the time gap) keep their
# own pickled list and score as before.
PREVIOUS_FEATURES: tuple[str, ...] = ("cosine", "tfidf", "sqrt_char_tfidf", "has_time_gap", "log_time_gap")
DEFAULT_FEATURES: tuple[str, ...] = ("cosine", "sqrt_char_tfidf", "tfidf")


def _feature_column(
    X: npt.NDArray[np.float64], name: str, lines: dict[str, tuple[float, float]] | None = None
) -> npt.NDArray[np.float64]:
    """Column ``name`` of `pair_feature_matrix` rows ``X``: a raw column, a `DERIVED_FEATURES` one,
    or a `LANGUAGE_GATED` one (``lines``: its fitted expected value, intercept and cosine slope)."""
    if name in LANGUAGE_GATED:
        raw = _feature_column(X, LANGUAGE_GATED[name])
        intercept, slope = (lines or {}).get(name, (0.0, 0.0))
        return np.where(same_language(X), raw, intercept + slope * X[:, FEATURE_INDEX["cosine"]])
    if name in DERIVED_FEATURES:
        source, transform = DERIVED_FEATURES[name]
        return transform(X[:, FEATURE_INDEX[source]])
    return X[:, FEATURE_INDEX[name]]


def _sigmoid(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# The graded output, ``sigmoid((decision - shift) / temperature)``: a monotone map of the log-odds,
# so it ranks pairs as the probability does, fitted for |Pearson| with graded pairs. The probability
# itself (shift 0, temperature 1) squashes every pair that is not the same story towards 0, so a
# "related" grade and an "unrelated" one read alike; moving the map's middle down the log-odds
# (SemEval en: shift about -3) spreads them out again. Grid searched: two numbers, few graded pairs.
GRADED_SHIFTS: tuple[float, ...] = tuple(float(v) for v in np.arange(-6.0, 3.01, 0.25))
GRADED_TEMPERATURES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0)
# Folds of the cross-validated check of the graded output against the encoder cosine, and the graded
# pairs of one kind (same language, across languages) a group needs for that check to count.
GRADED_FOLDS = 5
MIN_GRADED_PAIRS = 20


def _abs_pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return abs(float(np.corrcoef(x, y)[0, 1]))


def _unit_line(cosine: npt.NDArray[np.float64], mapped: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(slope, intercept) of the line that best puts ``cosine`` on ``mapped``, kept inside [0, 1]
    from the lowest cosine to 1 so that `PairScorer.similarity` never clips it (a clipped line would
    no longer correlate with the grade as the cosine does)."""
    low = float(cosine.min())
    if low >= 1.0:
        return 0.0, float(mapped.mean())
    slope, intercept = np.polyfit(cosine, mapped, 1) if np.ptp(cosine) > 0 else (0.0, 0.5)
    bottom = min(max(slope * low + intercept, 0.0), 1.0)
    top = min(max(slope + intercept, bottom), 1.0)
    slope = (top - bottom) / (1.0 - low)
    return float(slope), float(bottom - slope * low)


# How far the centred cosine's line must read above the better of the map and the cosine line, in a
# language pair, to take its route. Without it, `training fit --pairs` on the four shared pair files
# (10-fold CV, `benchmarks.pairs_encoders`) flipped English pairs between the map and the centred
# line from fold to fold (0.879 against 0.889, 0.881 against 0.877) and lost English SemEval
# |Pearson| (e5 0.876 to 0.846); the gains worth a route were 0.04-0.15.
CENTRED_MARGIN = 0.02
# The learnt map's line (`model.coverage.pair_map`) in a language pair's route choice: it replaces
# the cosine lines (raw or centred: a language pair whose best route is a rescaled cosine reads the
# learnt cosine instead, one scale for every such pair), and takes the fitted map's place only where
# it leads that out of fold by `LEARNT_MARGIN`. Chosen by `benchmarks.pairs_learnt` (outer folds by
# article, e5): semeval_ml 0.709 to 0.745 |Pearson|, English SemEval unchanged (0.884); with the
# learnt route taken only where it led every other by 0.02 the choice flipped from fold to fold on
# 13-85 pairs a language pair and gained nothing (0.705).
LEARNT_REPLACES: tuple[str, ...] = ("cosine", "centred")
LEARNT_MARGIN = float("inf")


def best_route(
    figure: dict[str, Any],
    *,
    learnt_replaces: tuple[str, ...] | None = None,
    learnt_margin: float | None = None,
) -> str:
    """The route of a language pair's graded output with the largest measured |Pearson| (ties: the
    map, then the raw cosine); the centred cosine's only where it leads by `CENTRED_MARGIN`. Where
    the learnt map's line was measured it replaces the routes in ``learnt_replaces`` (default
    `LEARNT_REPLACES`) and any other only where it leads every other by ``learnt_margin`` (default
    `LEARNT_MARGIN`)."""
    plain = max(("map", "cosine"), key=lambda r: (figure[r], r == "map"))
    best = plain
    if "centred" in figure and figure["centred"] >= figure[plain] + CENTRED_MARGIN:
        best = "centred"
    if "learnt" not in figure:
        return best
    if best in (LEARNT_REPLACES if learnt_replaces is None else learnt_replaces):
        return "learnt"
    margin = LEARNT_MARGIN if learnt_margin is None else learnt_margin
    others = max(figure[r] for r in ("map", "cosine", "centred") if r in figure)
    return "learnt" if figure["learnt"] >= others + margin else best


def language_pair(a: str | None, b: str | None) -> str | None:
    """The key of a pair's two languages, in either order ("de-en"); None if either is unknown."""
    return "-".join(sorted((a, b))) if a and b else None


def graded_groups(y: npt.NDArray[np.float64], groups: Any = None) -> dict[str, npt.NDArray[np.intp]]:
    """Rows of each group whose labels are grades (more than two values), not 0/1 or 1/4 labels."""
    labels = np.zeros(len(y), dtype=object) if groups is None else np.asarray(groups).ravel()
    out = {}
    for group in np.unique(labels):
        rows = np.flatnonzero(labels == group)
        if len(np.unique(y[rows])) > 2:
            out[str(group)] = rows
    return out


def fit_graded_map(
    decisions: Sequence[npt.NDArray[np.float64]], grades: Sequence[npt.NDArray[np.float64]]
) -> tuple[float, float]:
    """(shift, temperature) of the graded map with the best mean |Pearson| over the given sets."""
    best = (-1.0, 0.0, 1.0)
    for shift in GRADED_SHIFTS:
        for temperature in GRADED_TEMPERATURES:
            value = float(
                np.mean(
                    [
                        _abs_pearson(_sigmoid((d - shift) / temperature), g)
                        for d, g in zip(decisions, grades, strict=True)
                    ]
                )
            )
            if value > best[0] + 1e-9:
                best = (value, shift, temperature)
    return best[1], best[2]


# What a bundle trained without `--pairs` uses, per encoder: fitted by `python -m
# benchmarks.pairs_out_of_set --encoder NAME` ("fitted_on_english") on the 5,146 English labelled
# pairs of ../shared/data: storychains (4,950; CC BY-NC 4.0, research / non-commercial), SemEval-2022
# en-en (161, overall <= 1.5; its grades also fit the graded output) and tgpairs (35), each set's
# IDF from its own texts. semeval_ml chose the features but is left out of these numbers: its
# looser "same story" grades would pull the same-story cut from 0.40 to 0.22 and call same-topic
# pairs the same story. ``related_cosine``: the encoder cosine's best-F1 cut for SemEval en-en
# ``overall`` <= 2.5. ``language_routes``: each semeval_ml language pair's route of the graded
# output (map, cosine line, or ``centred_line``: the centred cosine, `model.coverage.pair_centring`,
# on the map's scale), chosen on those pairs, which the numbers were not fitted on; the language means
# ship beside (``pair_means/<encoder>.npz``, from every shared pair set's texts, no grades; `python -m
# benchmarks.pairs_out_of_set --means-out`). Measured: `benchmarks.pairs_centred`. A commercial
# deployment should refit them on its own labelled pairs (`python -m training fit --pairs ...`).
# ``pair_map``: whether `training fit --pairs` with graded pairs learns the pair map
# (`model.coverage.pair_map`) for this encoder: out of fold (`benchmarks.pairs_learnt`) it lifted e5's
# semeval_ml 0.709 to 0.745 with English SemEval held (0.884), while for MiniLM, whose English pairs
# read the cosine line that the learnt line then replaces, English SemEval fell 0.835 to 0.749.
BUILT_IN: dict[str, dict[str, Any]] = {
    "minilm": {
        "features": DEFAULT_FEATURES,
        "mean": (0.24191, 0.22729, 0.03264),
        "scale": (0.13597, 0.10073, 0.08738),
        "coef": (1.37249, 1.89002, -0.76455),
        "intercept": -7.01953,
        "same_story_threshold": 0.52855,
        "n_pairs": 5146,
        "n_positive": 142,
        "related_cosine": 0.36,
        "pair_map": False,
        "graded": {
            "source": "routed",
            "shift": -3.25,
            "temperature": 3.0,
            "cosine_line": (0.92124, 0.07876),
            "routes": {"same_language": "cosine", "cross_language": "cosine"},
            "centred_line": (0.87976, 0.12024),
            "language_routes": {
                "ar-ar": "map",
                "de-de": "map",
                "de-en": "map",
                "de-fr": "map",
                "en-es": "centred",
                "en-pl": "map",
                "en-zh": "centred",
                "es-es": "map",
                "es-it": "cosine",
                "fr-fr": "centred",
                "it-it": "map",
                "pl-pl": "map",
                "ru-ru": "map",
                "tr-tr": "map",
                "zh-zh": "map",
            },
        },
    },
    # The out-of-set check kept the cosine alone (the features lost on tgpairs: ROC AUC 0.990 vs
    # 1.000); e5's cosines sit high (0.7-1.0), hence its own cuts.
    "e5-multilingual": {
        "features": ("cosine",),
        "mean": (0.80817,),
        "scale": (0.03102,),
        "coef": (2.14065,),
        "intercept": -6.2929,
        "same_story_threshold": 0.32659,
        "n_pairs": 5146,
        "n_positive": 142,
        "related_cosine": 0.8479,
        "pair_map": True,
        "graded": {
            "source": "routed",
            "shift": -3.75,
            "temperature": 1.5,
            "cosine_line": (3.73294, -2.73294),
            "routes": {"same_language": "map", "cross_language": "cosine"},
            "centred_line": (0.89207, 0.10793),
            "language_routes": {
                "ar-ar": "cosine",
                "de-de": "map",
                "de-en": "map",
                "de-fr": "cosine",
                "en-es": "cosine",
                "en-pl": "centred",
                "en-zh": "centred",
                "es-es": "map",
                "es-it": "cosine",
                "fr-fr": "centred",
                "it-it": "map",
                "pl-pl": "map",
                "ru-ru": "cosine",
                "tr-tr": "centred",
                "zh-zh": "cosine",
            },
        },
    },
}


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
        Columns used: names in `FEATURE_NAMES`, `DERIVED_FEATURES` or `LANGUAGE_GATED`. None:
        `DEFAULT_FEATURES` (encoder cosine, square root of the character TF-IDF cosine and the
        word TF-IDF cosine).
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
    pair_map : PairMap or None, default=None
        How the learnt pair map is fitted when `fit` is given the pair vectors (None: `PairMap()`).

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
        pair_map: PairMap | None = None,
    ) -> None:
        self.features = features
        self.C = C
        self.idf = idf
        self.duplicate_threshold = duplicate_threshold
        self.same_story_threshold = same_story_threshold
        self.related_cosine = related_cosine
        self.max_same_story_gap_hours = max_same_story_gap_hours
        self.undated_terms = undated_terms
        self.pair_map = pair_map

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Scorers pickled before the pair map had no such parameter: None, the map left unlearnt.
        state.setdefault("pair_map", None)
        super().__setstate__(state)

    @classmethod
    def default(cls, *, encoder: str = "minilm", **params: Any) -> PairScorer:
        """The scorer fitted on the public labelled pairs for ``encoder`` (`BUILT_IN`), without
        refitting: each encoder's cosine lives on its own scale, so each has its own numbers.

        Pass ``idf=HashedIdf().fit(texts)`` to weigh the TF-IDF cosines by a corpus.
        """
        if encoder not in BUILT_IN:
            raise ValueError(
                f"no built-in pair scorer for encoder {encoder!r}, expected one of {sorted(BUILT_IN)}"
            )
        fitted = BUILT_IN[encoder]
        scorer = cls(**params)
        if "related_cosine" not in params:
            scorer.related_cosine = fitted["related_cosine"]
        scorer.feature_names_ = tuple(fitted["features"])
        scorer.language_lines_ = {}
        scorer.mean_ = np.array(fitted["mean"], dtype=np.float64)
        scorer.scale_ = np.array(fitted["scale"], dtype=np.float64)
        scorer.coef_ = np.array(fitted["coef"], dtype=np.float64)
        scorer.intercept_ = float(fitted["intercept"])
        scorer.same_story_threshold_ = (
            fitted["same_story_threshold"]
            if scorer.same_story_threshold is None
            else scorer.same_story_threshold
        )
        scorer.n_pairs_, scorer.n_positive_ = fitted["n_pairs"], fitted["n_positive"]
        scorer.graded_ = dict(fitted["graded"])
        scorer.out_of_set_, scorer.fallback_ = {}, False
        scorer.language_means_ = built_in_means(encoder)
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

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        groups: Any = None,
        language_pairs: Any = None,
        *,
        vectors: Any = None,
        languages: Sequence[str | None] | None = None,
        means: LanguageMeans | None = None,
    ) -> PairScorer:
        """Fit the logistic regression and (unless given) the same-story cut.

        With ``groups`` (one label per pair: the pair file or set it came from), each group is first
        held out in turn: a scorer with these features is fitted on the other groups and measured on
        it against the raw encoder cosine (|Spearman| with the grade where the group is graded, else
        same-story ROC AUC: both compare rankings, which a calibration of the cosine keeps). If it
        falls below the cosine on any group, the scorer is fitted on the cosine alone (``fallback_``
        True), a calibration of the cosine that ranks pairs as it does.

        Parameters
        ----------
        X : array-like of shape (n_pairs, len(FEATURE_NAMES))
            From `pair_feature_matrix` (with the same ``idf`` as this scorer's).
        y : array-like of shape (n_pairs,)
            1 = same story, 0 = not; or graded ``overall`` scores in [1, 4] (1 = same story).
        sample_weight : array-like of shape (n_pairs,) or None
        groups : array-like of shape (n_pairs,) or None
            The set each pair came from, for the out-of-set check above; None skips it.
        language_pairs : array-like of shape (n_pairs,) or None
            Each pair's two languages (`language_pair`; None where one is unknown): the graded
            output then also picks its route per language pair (see `_fit_graded`).
        vectors : array-like of shape (2 * n_pairs, dim) or None
            Each pair's two unit vectors, rows ``[a0, b0, a1, b1, ...]``, with ``languages`` (each
            row's) and ``means`` (`LanguageMeans`, kept as ``language_means_``): with at least
            `MIN_PAIR_MAP_PAIRS` graded pairs, a `PairMap` is learnt on their centred vectors and
            competes as a fourth route of the graded output (``pair_map_``); the probability, the
            verdicts and stories never read it.

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
        known = (*FEATURE_NAMES, *DERIVED_FEATURES, *LANGUAGE_GATED)
        unknown = [name for name in features if name not in known]
        if unknown:
            raise ValueError(f"unknown features {unknown}, expected some of {known}")
        self.out_of_set_: dict[str, dict[str, float]] = {}
        self.fallback_ = False
        if groups is not None:
            self.out_of_set_ = self._out_of_set(X, np.asarray(y, dtype=np.float64).ravel(), features, groups)
            self.fallback_ = any(m["scorer"] < m["cosine"] for m in self.out_of_set_.values())
            if self.fallback_:
                features = ("cosine",)
        self._fit_linear(X, positive, features, sample_weight)
        grades = np.asarray(y, dtype=np.float64).ravel()
        self.pair_map_: PairMap | None = None
        if means is not None:
            self.language_means_ = means
        if vectors is not None:
            X = self._fit_pair_map(X, grades, groups, vectors, languages, means)
        self.graded_ = self._fit_graded(X, grades, groups, sample_weight, language_pairs)
        return self

    def _fit_pair_map(
        self,
        X: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        groups: Any,
        vectors: Any,
        languages: Sequence[str | None] | None,
        means: LanguageMeans | None,
    ) -> npt.NDArray[np.float64]:
        """Learn ``pair_map_`` on the graded pairs whose two sides have a language mean; return ``X``
        with those pairs' learnt cosine out of fold (what the routes are chosen on; the other rows
        keep the raw cosine there)."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.shape[0] != 2 * X.shape[0] or languages is None or len(languages) != len(vectors):
            raise ValueError(f"expected 2 x {X.shape[0]} vectors and as many languages, got {vectors.shape}")
        X = X.copy()
        X[:, FEATURE_INDEX["learnt_cosine"]] = X[:, FEATURE_INDEX["cosine"]]
        graded = graded_groups(y, groups)
        if means is None or not graded:
            return X
        rows = np.concatenate(list(graded.values()))
        centred = means.centred(vectors, languages)
        known = ~np.isnan(centred).any(axis=1)
        rows = rows[known[2 * rows] & known[2 * rows + 1]]
        if len(rows) < MIN_PAIR_MAP_PAIRS:
            return X
        # Folds by article: a text in two pairs never sits on both sides.
        keys = [vectors[r].tobytes() for r in range(len(vectors))]
        linked = linked_groups([keys[2 * r] for r in rows], [keys[2 * r + 1] for r in rows])
        template = PairMap() if self.pair_map is None else clone(self.pair_map)
        self.pair_map_ = template.fit(centred[2 * rows], centred[2 * rows + 1], y[rows], linked)
        X[rows, FEATURE_INDEX["learnt_cosine"]] = self.pair_map_.oof_cosines_
        return X

    def _fit_linear(
        self,
        X: npt.NDArray[np.float64],
        positive: npt.NDArray[np.bool_],
        features: tuple[str, ...],
        sample_weight: Any = None,
    ) -> PairScorer:
        """The logistic regression on ``features`` and the same-story cut: the probability."""
        self.feature_names_ = features
        self.language_lines_ = self._language_lines(X, features)
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

    def _fit_graded(
        self,
        X: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        groups: Any,
        sample_weight: Any,
        language_pairs: Any = None,
    ) -> dict[str, Any]:
        """The graded output (`similarity`), fitted on the graded pairs among the training pairs.

        Without graded pairs it is the probability. With them: the map's shift and temperature,
        fitted on them, and a line that puts the encoder cosine on the map's scale. Pairs in one
        language and pairs across languages (`same_language`) each take the map or the cosine line,
        whichever correlated more with the grades there by cross-validation (`GRADED_FOLDS` folds,
        the scorer, map and line fitted on the other folds) in every graded group with at least
        `MIN_GRADED_PAIRS` such pairs; a kind no group has that many of takes the cosine line. So the
        graded output reads no worse than the encoder it is given where that was measured (the
        character features say little between two languages, and the encoder cosine is all there is).
        With ``language_pairs``, each language pair with at least `MIN_GRADED_PAIRS` graded pairs
        takes its own route the same way (a map fitted mostly on English grades can bend another
        language's cosine range the wrong way); other pairs keep their kind's route.
        """
        graded = graded_groups(y, groups)
        if not graded:
            return {"source": "probability", "shift": 0.0, "temperature": 1.0}
        cosine = X[:, FEATURE_INDEX["cosine"]]
        centred = X[:, FEATURE_INDEX["centred_cosine"]]
        shift, temperature, line = self._graded_map(self.decision(X), cosine, y, list(graded.values()))
        centred_line = self._centred_line(self.decision(X), centred, shift, temperature, graded)
        learnt = X[:, FEATURE_INDEX["learnt_cosine"]]
        has_map = getattr(self, "pair_map_", None) is not None
        learnt_line = self._centred_line(self.decision(X), learnt, shift, temperature, graded)
        mapped, lined, centred_lined = np.zeros(len(y)), np.zeros(len(y)), np.zeros(len(y))
        learnt_lined = np.zeros(len(y))
        folds = np.random.default_rng(0).permutation(len(y)) % GRADED_FOLDS
        positive = self.same_story_labels(y)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        for fold in range(GRADED_FOLDS):
            test, train = folds == fold, folds != fold
            if positive[train].all() or not positive[train].any():
                continue
            inner = PairScorer(**{**self.get_params(deep=False), "same_story_threshold": 0.5})
            inner._fit_linear(
                X[train], positive[train], self.feature_names_, None if weights is None else weights[train]
            )
            d = inner.decision(X)
            f_shift, f_temperature, f_line = self._graded_map(
                d, cosine, y, [r[train[r]] for r in graded.values()]
            )
            mapped[test] = _sigmoid((d[test] - f_shift) / f_temperature)
            lined[test] = f_line[0] * cosine[test] + f_line[1]
            f_centred = self._centred_line(
                d, centred, f_shift, f_temperature, {k: r[train[r]] for k, r in graded.items()}
            )
            centred_lined[test] = f_centred[0] * centred[test] + f_centred[1]
            if has_map:
                f_learnt = self._centred_line(
                    d, learnt, f_shift, f_temperature, {k: r[train[r]] for k, r in graded.items()}
                )
                learnt_lined[test] = f_learnt[0] * learnt[test] + f_learnt[1]
        same = same_language(X)
        routes, check = {}, {}
        for route, kind in (("same_language", same), ("cross_language", ~same)):
            measured = {}
            for name, rows in graded.items():
                rows = rows[kind[rows]]
                if len(rows) >= MIN_GRADED_PAIRS:
                    measured[name] = {
                        "n": len(rows),
                        "map": round(_abs_pearson(mapped[rows], y[rows]), 4),
                        "cosine": round(_abs_pearson(lined[rows], y[rows]), 4),
                    }
            wins = bool(measured) and all(m["map"] >= m["cosine"] for m in measured.values())
            routes[route], check[route] = ("map" if wins else "cosine"), measured
        by_language, checked = {}, {}
        if language_pairs is not None:
            keys = np.asarray(language_pairs, dtype=object).ravel()
            rated = np.zeros(len(y), dtype=bool)
            rated[np.concatenate(list(graded.values()))] = True
            for key in sorted({k for k in keys[rated] if k}):
                rows = np.flatnonzero(rated & (keys == key))
                if len(rows) >= MIN_GRADED_PAIRS:
                    figure = {
                        "n": len(rows),
                        "map": round(_abs_pearson(mapped[rows], y[rows]), 4),
                        "cosine": round(_abs_pearson(lined[rows], y[rows]), 4),
                    }
                    # The centred cosine competes only where a language mean moved it.
                    if np.any(centred[rows] != cosine[rows]):
                        figure["centred"] = round(_abs_pearson(centred_lined[rows], y[rows]), 4)
                    # The learnt map's: its cosines here are out of fold (`_fit_pair_map`).
                    if has_map and np.all(learnt[rows] != cosine[rows]):
                        figure["learnt"] = round(_abs_pearson(learnt_lined[rows], y[rows]), 4)
                    by_language[str(key)] = best_route(figure)
                    checked[str(key)] = figure
        out = {
            "source": "routed",
            "shift": shift,
            "temperature": temperature,
            "cosine_line": line,
            "centred_line": centred_line,
            "routes": routes,
            "language_routes": by_language,
            "cross_validated": {**check, "by_language": checked},
        }
        if has_map:
            out["learnt_line"] = learnt_line
            out["pair_map"] = {"epochs": self.pair_map_.epochs_, "cv": self.pair_map_.cv_}
        return out

    @staticmethod
    def _centred_line(
        decision: npt.NDArray[np.float64],
        centred: npt.NDArray[np.float64],
        shift: float,
        temperature: float,
        graded: dict[str, npt.NDArray[np.intp]],
    ) -> tuple[float, float]:
        """The line that puts the centred cosine on the map's values on the graded rows (as
        `_graded_map`'s cosine line, kept inside [0, 1] from the lowest centred cosine to 1)."""
        rows = np.concatenate(list(graded.values()))
        return _unit_line(centred[rows], _sigmoid((decision[rows] - shift) / temperature))

    @staticmethod
    def _graded_map(
        decision: npt.NDArray[np.float64],
        cosine: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        groups: Sequence[npt.NDArray[np.intp]],
    ) -> tuple[float, float, tuple[float, float]]:
        """(shift, temperature) of the map on the graded ``groups`` rows, and the line (slope,
        intercept) that best puts the cosine on the map's values there, kept inside [0, 1] from the
        lowest cosine to 1 so that `similarity` never clips it (a clipped line would no longer
        correlate with the grade as the cosine does)."""
        shift, temperature = fit_graded_map([decision[r] for r in groups], [y[r] for r in groups])
        rows = np.concatenate(list(groups))
        mapped = _sigmoid((decision[rows] - shift) / temperature)
        return shift, temperature, _unit_line(cosine[rows], mapped)

    # --- prediction ----------------------------------------------------------------------

    def _out_of_set(
        self, X: npt.NDArray[np.float64], y: npt.NDArray[np.float64], features: tuple[str, ...], groups: Any
    ) -> dict[str, dict[str, float]]:
        """Per group: the held-out figure of a scorer fitted on the other groups, and the cosine's."""
        groups = np.asarray(groups).ravel()
        if groups.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} pairs but groups has {groups.shape[0]} labels")
        positive = self.same_story_labels(y)
        out: dict[str, dict[str, float]] = {}
        if tuple(features) == ("cosine",):
            return out
        for group in np.unique(groups):
            held = groups == group
            if positive[~held].all() or not positive[~held].any():
                continue
            params = {**self.get_params(deep=False), "same_story_threshold": 0.5}
            learned = PairScorer(**params)._fit_linear(X[~held], positive[~held], features).predict(X[held])
            cosine = X[held, FEATURE_INDEX["cosine"]]
            if len(np.unique(y[held])) > 2 and np.ptp(learned) > 0:
                # Rank correlation: the cosine and the probability are squashed differently.
                figure = {
                    "scorer": abs(float(spearmanr(learned, y[held])[0])),
                    "cosine": abs(float(spearmanr(cosine, y[held])[0])),
                }
            elif positive[held].any() and not positive[held].all():
                figure = {
                    "scorer": float(roc_auc_score(positive[held], learned)),
                    "cosine": float(roc_auc_score(positive[held], cosine)),
                }
            else:
                continue
            out[str(group)] = {k: round(v, 4) for k, v in figure.items()}
        return out

    @staticmethod
    def _language_lines(
        X: npt.NDArray[np.float64], features: Sequence[str]
    ) -> dict[str, tuple[float, float]]:
        """For each `LANGUAGE_GATED` feature, the line (on the cosine) it follows on same-language pairs."""
        lines = {}
        same = same_language(X)
        cosine = X[same, FEATURE_INDEX["cosine"]]
        for name in features:
            if name not in LANGUAGE_GATED:
                continue
            raw = _feature_column(X[same], LANGUAGE_GATED[name])
            if len(raw) >= 2 and np.ptp(cosine) > 0:
                slope, intercept = np.polyfit(cosine, raw, 1)
            else:
                slope, intercept = 0.0, float(raw.mean()) if len(raw) else 0.0
            lines[name] = (float(intercept), float(slope))
        return lines

    def _design(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        lines = getattr(self, "language_lines_", None)
        Z = np.column_stack([_feature_column(X, name, lines) for name in self.feature_names_])
        if not getattr(self, "undated_terms", False):
            return Z
        undated = 1.0 - X[:, [FEATURE_INDEX["has_time_gap"]]]
        plain = [k for k, name in enumerate(self.feature_names_) if name not in _TIME_COLUMNS]
        return np.hstack([Z, Z[:, plain] * undated])

    def _uses_languages(self) -> bool | Literal["same_language"]:
        """Whether a used feature needs the script and language-profile evidence (True), or only
        the graded output's routes need `same_language` ("same_language")."""
        needs = {"same_script", "language_profile", "same_language", *LANGUAGE_GATED}
        if needs.intersection(getattr(self, "feature_names_", ())):
            return True
        routes = (getattr(self, "graded_", None) or {}).get("routes", {})
        return "same_language" if len(set(routes.values())) > 1 else False

    def decision(self, X: Any) -> npt.NDArray[np.float64]:
        """The linear score (log-odds of same story) of each row."""
        check_is_fitted(self, ["coef_", "intercept_"])
        X = self._check_X(X)
        Z = self._design(X)
        return ((Z - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def predict(self, X: Any) -> npt.NDArray[np.float64]:
        """Same-story probabilities in [0, 1] for `pair_feature_matrix` rows (1 for URL duplicates)."""
        X = self._check_X(X)
        return self._with_duplicates(X, _sigmoid(self.decision(X)))

    def similarity(self, X: Any, language_pairs: Any = None) -> npt.NDArray[np.float64]:
        """The graded output in [0, 1] for `pair_feature_matrix` rows: how alike two articles are, on
        a scale fitted to correlate with a human grade (``graded_``); the probability where the
        scorer was fitted without graded pairs (or before it had a graded output).
        ``language_pairs`` (`language_pair` of each row) picks a language pair's own route. A URL
        duplicate reads 1.0; near-identical text reads what its route gives (its verdict is still
        ``duplicate``)."""
        X = self._check_X(X)
        graded = getattr(self, "graded_", None) or {"source": "probability"}
        if graded["source"] != "routed":
            return self.predict(X)
        mapped = _sigmoid((self.decision(X) - graded["shift"]) / graded["temperature"])
        slope, intercept = graded["cosine_line"]
        lined = np.clip(slope * X[:, FEATURE_INDEX["cosine"]] + intercept, 0.0, 1.0)
        routes = graded["routes"]
        same = same_language(X)
        scores = np.where(
            same,
            mapped if routes["same_language"] == "map" else lined,
            mapped if routes["cross_language"] == "map" else lined,
        )
        by_language = graded.get("language_routes") or {}
        if language_pairs is not None and by_language:
            route = np.array([by_language.get(k) if k else None for k in language_pairs], dtype=object)
            scores = np.where(route == "map", mapped, np.where(route == "cosine", lined, scores))
            if "centred_line" in graded:  # bundles fitted before the centred cosine have no such route
                c_slope, c_intercept = graded["centred_line"]
                centred = np.clip(c_slope * X[:, FEATURE_INDEX["centred_cosine"]] + c_intercept, 0.0, 1.0)
                # A side without a language mean reads the raw cosine there: its cosine line, then.
                moved = X[:, FEATURE_INDEX["centred_cosine"]] != X[:, FEATURE_INDEX["cosine"]]
                scores = np.where(route == "centred", np.where(moved, centred, lined), scores)
            if "learnt_line" in graded:
                l_slope, l_intercept = graded["learnt_line"]
                learnt = np.clip(l_slope * X[:, FEATURE_INDEX["learnt_cosine"]] + l_intercept, 0.0, 1.0)
                # No map on a side (no language mean): its cosine line.
                moved = X[:, FEATURE_INDEX["learnt_cosine"]] != X[:, FEATURE_INDEX["cosine"]]
                scores = np.where(route == "learnt", np.where(moved, learnt, lined), scores)
        # An equal canonical URL is one article; near-identical text is not lifted (see the module
        # docstring): its verdict and probability still say duplicate.
        return np.where(X[:, FEATURE_INDEX["url_match"]] > 0, 1.0, scores)

    def _with_duplicates(
        self, X: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
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
        return self._verdict(evidence, score)

    def _verdict(self, evidence: PairEvidence, score: float) -> Verdict:
        """`verdict` of a fitted scorer (checked once per batch of pairs, not once per pair)."""
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
        if not others:
            return []
        evidences = pair_evidences(query, others, vq, vothers, self.idf, languages=self._uses_languages())
        vectors = np.vstack([np.asarray(vq).reshape(1, -1), np.asarray(vothers).reshape(len(others), -1)])
        languages = [query.language, *(other.language for other in others)]
        zeros = np.zeros(len(others), dtype=np.intp)
        evidences = self._centred(evidences, vectors, languages, zeros, np.arange(1, len(others) + 1))
        keys = [language_pair(query.language, other.language) for other in others]
        return self._comparisons(evidences, keys)

    def compare_pairs(
        self,
        articles: Sequence[Article],
        vectors: npt.NDArray[np.floating],
        i: Sequence[int],
        j: Sequence[int],
        **kept: Any,
    ) -> list[Comparison]:
        """`compare` of each pair ``(articles[i[k]], articles[j[k]])``, in one evidence pass (a
        backfill's batch); ``kept``: what `indexed_pair_evidence` may reuse (``rows``, ``content``,
        ``urls``)."""
        languages = [article.language for article in articles]
        # The centred and learnt cosines go into the evidence as it is made (`_centred` copies each).
        centred = centred_pairs(
            getattr(self, "language_means_", None), vectors, languages, i, j, getattr(self, "pair_map_", None)
        )
        evidences = indexed_pair_evidence(
            articles, vectors, i, j, self.idf, languages=self._uses_languages(), centred=centred, **kept
        )
        keys = [language_pair(languages[p], languages[q]) for p, q in zip(i, j, strict=True)]
        return self._comparisons(evidences, keys)

    def _centred(
        self,
        evidences: list[PairEvidence],
        vectors: npt.NDArray[np.floating],
        languages: Sequence[str | None],
        i: Any,
        j: Any,
    ) -> list[PairEvidence]:
        """``evidences`` with their centred (and learnt) cosine where this scorer has both sides'
        language means."""
        return with_centred(
            evidences,
            getattr(self, "language_means_", None),
            vectors,
            languages,
            i,
            j,
            getattr(self, "pair_map_", None),
        )

    def _comparisons(self, evidences: Sequence[PairEvidence], keys: Sequence[Any]) -> list[Comparison]:
        if not evidences:
            return []
        check_is_fitted(self, ["same_story_threshold_"])
        X = pair_feature_matrix(evidences)
        probabilities, scores = self.predict(X), self.similarity(X, keys)
        return [
            Comparison(score=s, verdict=self._verdict(ev, p), evidence=ev, probability=p)
            for ev, s, p in zip(
                evidences, np.asarray(scores).tolist(), np.asarray(probabilities).tolist(), strict=True
            )
        ]
