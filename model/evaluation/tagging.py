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
from sklearn.metrics import precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer


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
    per_label: dict[str, dict[str, float]] = {}
    micro_p = micro_r = micro_f1 = 0.0
    if all_labels:
        binarizer = MultiLabelBinarizer(classes=all_labels)
        truth, predicted = binarizer.fit_transform(true_sets), binarizer.transform(pred_sets)
        precision, recall, f1, support = precision_recall_fscore_support(
            truth, predicted, average=None, zero_division=0
        )
        per_label = {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(all_labels, precision, recall, f1, support, strict=True)
        }
        micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(
            truth, predicted, average="micro", zero_division=0
        )
    exact = sum(true == pred for true, pred in zip(true_sets, pred_sets, strict=True))
    macro_set = sorted(labels) if labels is not None else sorted(set().union(*true_sets)) if true_sets else []
    macro = [per_label[label]["f1"] if label in per_label else 0.0 for label in macro_set]
    return {
        "n": len(true_sets),
        "micro_f1": float(micro_f1),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
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
