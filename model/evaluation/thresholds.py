"""The decision threshold with the best F1 on held-out scores, for every head that learns a cut.

Both learnt cuts go through `best_f1_threshold`: a topic label's probability threshold (on
out-of-fold probabilities, from a fixed grid) and the pair scorer's same-story cut (between the
training pairs' own scores).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _f1_at_cuts(
    scores: npt.NDArray[np.float64], positive: npt.NDArray[np.bool_], cuts: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """F1 of calling ``score >= cut`` positive, for each of ``cuts``."""
    order = np.argsort(scores, kind="stable")
    ascending = scores[order]
    # Positives at or above the i-th lowest score: a suffix sum (0 past the end).
    positives_from = np.r_[np.cumsum(positive[order][::-1])[::-1], 0]
    first = np.searchsorted(ascending, np.asarray(cuts, dtype=np.float64), side="left")
    tp = positives_from[first]
    called = len(scores) - first
    return 2 * tp / np.maximum(called + positive.sum(), 1)


def best_f1_threshold(
    scores: npt.ArrayLike,
    positive: npt.ArrayLike,
    *,
    grid: npt.ArrayLike | None = None,
    prefer: float | None = None,
) -> float:
    """The cut maximising F1 of ``score >= cut``.

    Without ``grid`` the cut falls between two of the scores, halfway to the next lower one, so a
    new item scoring just under the lowest accepted one is not rejected by a hair; of equal F1 the
    higher cut wins; NaN when ``positive`` is all one class. With ``grid`` the cut is one of its
    values, and of equal F1 (to 1e-9) the one nearest ``prefer`` (default: the lowest).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if grid is not None:
        values = np.asarray(grid, dtype=np.float64)
        f1 = _f1_at_cuts(s, y, values)
        best = np.flatnonzero(f1 >= f1.max() - 1e-9)
        if prefer is None:
            return float(values[best[0]])
        return float(values[best[np.argmin(np.abs(values[best] - prefer))]])
    if not y.any() or y.all():
        return float("nan")
    distinct = np.unique(s)[::-1]  # a cut only falls between scores, so try each score, highest first
    k = int(np.argmax(_f1_at_cuts(s, y, distinct)))
    lower = distinct[k + 1] if k + 1 < len(distinct) else distinct[k]
    return float((distinct[k] + lower) / 2)
