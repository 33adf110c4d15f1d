"""Evaluation metrics for the topic tagger and the score heads, as plain JSON-ready dicts.

Macro-F1 convention (stated once, used everywhere): ``macro_f1`` averages per-label F1 over the
labels that occur in ``y_true`` (the evaluation set's labels, each with support ≥ 1). A label the
model predicts but that never occurs in ``y_true`` still hurts micro-F1 (a false positive) and is
listed in ``per_label`` with support 0, but does not enter ``macro_f1``. ``macro_f1_union`` averages
over ``y_true ∪ y_pred`` labels instead (scikit-learn's default after binarising both), for readers
who want the stricter figure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import spearmanr


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def topic_metrics(
    y_true: Sequence[Collection[str]],
    y_pred: Sequence[Collection[str]],
    *,
    labels: Collection[str] | None = None,
) -> dict:
    """Multi-label scores of predicted topic sets against true ones.

    Parameters
    ----------
    y_true, y_pred : one collection of label strings per document (a bare string counts as a
        one-label set, so single-label data can be passed as a list of strings).
    labels : labels that ``macro_f1`` averages over; default: those occurring in ``y_true``.

    Returns
    -------
    dict with ``n``, ``micro_f1``, ``micro_precision``, ``micro_recall``, ``macro_f1``,
    ``macro_f1_union``, ``macro_labels`` (how many labels macro averages over), ``accuracy``
    (exact-set match) and ``per_label`` {label: {precision, recall, f1, support}}.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} documents but y_pred has {len(y_pred)}")
    true_sets = [{t} if isinstance(t, str) else set(t) for t in y_true]
    pred_sets = [{p} if isinstance(p, str) else set(p) for p in y_pred]
    all_labels = sorted(set().union(*true_sets, *pred_sets)) if true_sets else []
    counts = {label: [0, 0, 0] for label in all_labels}  # tp, fp, fn
    exact = 0
    for true, pred in zip(true_sets, pred_sets, strict=True):
        exact += true == pred
        for label in true & pred:
            counts[label][0] += 1
        for label in pred - true:
            counts[label][1] += 1
        for label in true - pred:
            counts[label][2] += 1
    per_label = {}
    for label, (tp, fp, fn) in counts.items():
        precision, recall, f1 = _f1(tp, fp, fn)
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn}
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    micro_p, micro_r, micro_f1 = _f1(tp, fp, fn)
    macro_set = sorted(labels) if labels is not None else sorted(set().union(*true_sets)) if true_sets else []
    macro = [per_label[label]["f1"] if label in per_label else 0.0 for label in macro_set]
    return {
        "n": len(true_sets),
        "micro_f1": micro_f1,
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "macro_f1": float(np.mean(macro)) if macro else 0.0,
        "macro_f1_union": float(np.mean([v["f1"] for v in per_label.values()])) if per_label else 0.0,
        "macro_labels": len(macro_set),
        "accuracy": exact / len(true_sets) if true_sets else 0.0,
        "per_label": per_label,
    }


def score_metrics(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    low: npt.ArrayLike | None = None,
    high: npt.ArrayLike | None = None,
) -> dict:
    """Regression scores: ``n``, ``mae``, ``rmse``, ``spearman`` and, given interval bounds,
    ``coverage`` (share of true values inside ``[low, high]``) and ``mean_width``."""
    true = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has shape {true.shape} but y_pred has shape {pred.shape}")
    error = pred - true
    out: dict = {
        "n": int(true.size),
        "mae": float(np.mean(np.abs(error))) if true.size else float("nan"),
        "rmse": float(np.sqrt(np.mean(error**2))) if true.size else float("nan"),
        # Spearman is undefined for constant inputs (e.g. a one-provider baseline): report 0.
        "spearman": float(np.nan_to_num(spearmanr(true, pred).statistic)) if true.size > 1 else float("nan"),
    }
    if low is not None and high is not None:
        lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        out["coverage"] = float(np.mean((true >= lo) & (true <= hi))) if true.size else float("nan")
        out["mean_width"] = float(np.mean(hi - lo)) if true.size else float("nan")
    return out
