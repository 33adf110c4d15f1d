"""Champion vs challenger on the same held-out data: paired bootstrap intervals and a promotion gate.

Both models answer the same held-out articles (and pairs, and related-search queries), so their
difference is measured per resample of those items: the 95% interval of ``challenger - champion``
comes from resampling items with replacement (percentile bootstrap), the same resample for both.
A difference is *significant* when its interval lies entirely on one side of zero.

`Gate` decides from that table: by default promote unless topic micro-F1 drops significantly, a
label with at least 20 held-out examples loses more than 0.05 F1, or same-story pair F1 drops
significantly. Every rule is configurable (`Gate.from_mapping`, e.g. from a YAML file).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr, spearmanr

from model.coverage.pair_files import SAME_STORY_MAX_OVERALL
from model.evaluation.tagging import topic_metrics

# Metrics where lower is better; every other one is higher-is-better.
LOWER_IS_BETTER = frozenset({"quality.mae", "heat.mae"})


@dataclass(frozen=True, slots=True)
class PairOutputs:
    """One model's answers on graded pairs: similarity scores and whether it called same story."""

    scores: npt.NDArray[np.floating]
    same_story: npt.NDArray[np.bool_]


@dataclass
class HeldOut:
    """What both models are measured on, with each model's answers (champion, challenger).

    ``topics``: true label sets and each model's predicted sets, one per article. ``scores``:
    field -> (true values, champion's, challenger's). ``pairs``: human ``overall`` grades and each
    model's `PairOutputs`. ``related``: per-query recall@10 of each model, same queries in order.
    """

    topics_true: list[set[str]] = field(default_factory=list)
    topics: tuple[list[set[str]], list[set[str]]] | None = None
    scores: dict[str, tuple[npt.NDArray[np.floating], ...]] = field(default_factory=dict)
    pairs_overall: npt.NDArray[np.floating] | None = None
    pairs: tuple[PairOutputs, PairOutputs] | None = None
    related: tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]] | None = None


def _interval(diffs: npt.NDArray[np.floating], confidence: float) -> tuple[float, float]:
    finite = diffs[np.isfinite(diffs)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _row(a: float, b: float, diffs: npt.NDArray[np.floating], n: int, confidence: float) -> dict[str, Any]:
    low, high = _interval(diffs, confidence)
    return {
        "champion": float(a),
        "challenger": float(b),
        "diff": float(b - a),
        "low": low,
        "high": high,
        "n": int(n),
    }


def _resample_counts(n: int, rounds: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """(rounds, n) how often each item is drawn in each bootstrap resample."""
    counts = np.zeros((rounds, n), dtype=np.float64)
    for r in range(rounds):
        counts[r] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return counts


def _f1(tp: npt.NDArray[np.float64], fp: npt.NDArray[np.float64], fn: npt.NDArray[np.float64]) -> Any:
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)


def _spearman(true: npt.NDArray[np.floating], pred: npt.NDArray[np.floating]) -> float:
    if true.size < 2 or np.ptp(true) == 0 or np.ptp(pred) == 0:
        return float("nan")
    return float(spearmanr(true, pred).statistic)


def _pearson(x: npt.NDArray[np.floating], y: npt.NDArray[np.floating]) -> float:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(pearsonr(x, y)[0])


def compare_held_out(
    data: HeldOut, *, rounds: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Every metric of both models with the bootstrap interval of their difference.

    Returns ``{"metrics": {name: {champion, challenger, diff, low, high, n}}, "per_label": {label:
    {..., support}}, "bootstrap": {...}}``. Metric names: ``topics.micro_f1``, ``topics.macro_f1``,
    ``<field>.mae`` / ``<field>.spearman``, ``pairs.same_story_f1``, ``pairs.abs_pearson``,
    ``related.recall_at_10``.
    """
    rng = np.random.default_rng(seed)
    metrics: dict[str, dict[str, Any]] = {}
    per_label: dict[str, dict[str, Any]] = {}

    if data.topics is not None and data.topics_true:
        truth_sets = data.topics_true
        champion_sets, challenger_sets = data.topics
        labels = sorted(set().union(*truth_sets, *champion_sets, *challenger_sets))
        position = {label: i for i, label in enumerate(labels)}

        def binary(rows: Sequence[Collection[str]]) -> npt.NDArray[np.float64]:
            matrix = np.zeros((len(rows), len(labels)), dtype=np.float64)
            for r, row in enumerate(rows):
                for label in row:
                    matrix[r, position[label]] = 1.0
            return matrix

        truth = binary(truth_sets)
        n = truth.shape[0]
        counts = _resample_counts(n, rounds, rng)
        macro_set = truth.sum(axis=0) > 0

        def stats(predicted: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]) -> tuple[Any, ...]:
            tp = weights @ (truth * predicted)
            fp = weights @ ((1 - truth) * predicted)
            fn = weights @ (truth * (1 - predicted))
            micro = _f1(tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1))
            label_f1 = _f1(tp, fp, fn)
            macro = label_f1[..., macro_set].mean(axis=-1) if macro_set.any() else np.zeros_like(micro)
            return micro, macro, label_f1

        full = np.ones((1, n))
        point = [stats(binary(rows), full) for rows in (champion_sets, challenger_sets)]
        boot = [stats(binary(rows), counts) for rows in (champion_sets, challenger_sets)]
        metrics["topics.micro_f1"] = _row(
            point[0][0][0], point[1][0][0], boot[1][0] - boot[0][0], n, confidence
        )
        metrics["topics.macro_f1"] = _row(
            point[0][1][0], point[1][1][0], boot[1][1] - boot[0][1], n, confidence
        )
        # Exact-set accuracy and the reference figures from the one metric function.
        for name, rows in (("champion", champion_sets), ("challenger", challenger_sets)):
            metrics.setdefault("topics.accuracy", {})[name] = topic_metrics(truth_sets, rows)["accuracy"]
        support = truth.sum(axis=0)
        for i, label in enumerate(labels):
            per_label[label] = _row(
                point[0][2][0, i], point[1][2][0, i], boot[1][2][:, i] - boot[0][2][:, i], n, confidence
            ) | {"support": int(support[i])}

    for name, (true, champion, challenger) in data.scores.items():
        true, champion, challenger = (np.asarray(v, dtype=np.float64) for v in (true, champion, challenger))
        n = true.size
        if n == 0:
            continue
        counts = _resample_counts(n, rounds, rng)
        error_a, error_b = np.abs(champion - true), np.abs(challenger - true)
        metrics[f"{name}.mae"] = _row(
            error_a.mean(), error_b.mean(), (counts @ (error_b - error_a)) / n, n, confidence
        )
        idx = rng.integers(0, n, size=(rounds, n))
        spearman_diff = np.array(
            [_spearman(true[i], challenger[i]) - _spearman(true[i], champion[i]) for i in idx]
        )
        metrics[f"{name}.spearman"] = _row(
            _spearman(true, champion), _spearman(true, challenger), spearman_diff, n, confidence
        )

    if data.pairs is not None and data.pairs_overall is not None and len(data.pairs_overall):
        overall = np.asarray(data.pairs_overall, dtype=np.float64)
        positive = (overall <= SAME_STORY_MAX_OVERALL).astype(np.float64)
        n = overall.size
        counts = _resample_counts(n, rounds, rng)

        def pair_f1(called: npt.NDArray[np.bool_], weights: npt.NDArray[np.float64]) -> Any:
            c = called.astype(np.float64)
            return _f1(
                weights @ (positive * c), weights @ ((1 - positive) * c), weights @ (positive * (1 - c))
            )

        a, b = data.pairs
        metrics["pairs.same_story_f1"] = _row(
            pair_f1(a.same_story, np.ones((1, n)))[0],
            pair_f1(b.same_story, np.ones((1, n)))[0],
            pair_f1(b.same_story, counts) - pair_f1(a.same_story, counts),
            n,
            confidence,
        )
        idx = rng.integers(0, n, size=(rounds, n))
        pearson_diff = np.array(
            [abs(_pearson(b.scores[i], overall[i])) - abs(_pearson(a.scores[i], overall[i])) for i in idx]
        )
        metrics["pairs.abs_pearson"] = _row(
            abs(_pearson(a.scores, overall)), abs(_pearson(b.scores, overall)), pearson_diff, n, confidence
        )

    if data.related is not None and len(data.related[0]):
        recall_a, recall_b = (np.asarray(r, dtype=np.float64) for r in data.related)
        n = recall_a.size
        counts = _resample_counts(n, rounds, rng)
        metrics["related.recall_at_10"] = _row(
            recall_a.mean(), recall_b.mean(), (counts @ (recall_b - recall_a)) / n, n, confidence
        )

    return {
        "metrics": metrics,
        "per_label": per_label,
        "bootstrap": {
            "rounds": rounds,
            "confidence": confidence,
            "seed": seed,
            "method": "paired percentile",
        },
    }


def significantly_worse(name: str, row: Mapping[str, Any]) -> bool:
    """The challenger is worse and the whole interval of the difference says so."""
    low, high = row.get("low"), row.get("high")
    if low is None or high is None or not np.isfinite(low) or not np.isfinite(high):
        return False
    return bool(low > 0) if name in LOWER_IS_BETTER else bool(high < 0)


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion.

    Parameters
    ----------
    reject_if_significant_drop : metric names (``topics.micro_f1``, ``pairs.same_story_f1``,
        ``quality.mae``, ...) whose significant worsening rejects. Metrics a comparison lacks
        (no pairs given, say) are skipped.
    label_min_support : a label needs this many held-out examples for its own rule.
    label_max_f1_drop : such a label losing more F1 than this rejects (point estimate).
    min_held_out : reject when fewer held-out articles than this were evaluated (0: off).
    rounds, confidence, seed : the bootstrap.
    """

    reject_if_significant_drop: tuple[str, ...] = ("topics.micro_f1", "pairs.same_story_f1")
    label_min_support: int = 20
    label_max_f1_drop: float = 0.05
    min_held_out: int = 0
    rounds: int = 1000
    confidence: float = 0.95
    seed: int = 0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Gate:
        """A gate from a mapping (a YAML file's contents); unknown keys are refused by name."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown gate setting(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}"
            )
        fields: dict[str, Any] = dict(values)
        if "reject_if_significant_drop" in fields:
            drop = fields["reject_if_significant_drop"]
            if isinstance(drop, str) or not isinstance(drop, Sequence):
                raise ValueError(f"reject_if_significant_drop: expected a list of metric names, got {drop!r}")
            fields["reject_if_significant_drop"] = tuple(str(name) for name in drop)
        for name in ("label_min_support", "min_held_out", "rounds", "seed"):
            if name in fields and (not isinstance(fields[name], int) or isinstance(fields[name], bool)):
                raise ValueError(f"{name}: expected a whole number, got {fields[name]!r}")
        for name in ("label_max_f1_drop", "confidence"):
            if name in fields and not isinstance(fields[name], int | float):
                raise ValueError(f"{name}: expected a number, got {fields[name]!r}")
        gate = cls(**fields)
        if not 0.5 <= gate.confidence < 1:
            raise ValueError(f"confidence: expected a number from 0.5 to below 1, got {gate.confidence}")
        if gate.rounds < 100:
            raise ValueError(f"rounds: expected at least 100 bootstrap rounds, got {gate.rounds}")
        return gate

    def to_record(self) -> dict[str, Any]:
        return {
            "reject_if_significant_drop": list(self.reject_if_significant_drop),
            "label_min_support": self.label_min_support,
            "label_max_f1_drop": self.label_max_f1_drop,
            "min_held_out": self.min_held_out,
            "rounds": self.rounds,
            "confidence": self.confidence,
            "seed": self.seed,
        }

    def decide(self, comparison: Mapping[str, Any], held_out: int | None = None) -> tuple[bool, list[str]]:
        """(promote, reasons): reasons name every rule the challenger broke (or why it passed)."""
        reasons: list[str] = []
        metrics = comparison.get("metrics", {})
        pct = f"{self.confidence:.0%}"
        if held_out is not None and held_out < self.min_held_out:
            reasons.append(
                f"only {held_out} held-out articles evaluated (the gate needs {self.min_held_out})"
            )
        for name in self.reject_if_significant_drop:
            row = metrics.get(name)
            if row is not None and significantly_worse(name, row):
                word = "rises" if name in LOWER_IS_BETTER else "drops"
                reasons.append(
                    f"{name} {word} significantly: {row['champion']:.4f} -> {row['challenger']:.4f} "
                    f"(difference {row['diff']:+.4f}, {pct} interval [{row['low']:+.4f}, {row['high']:+.4f}])"
                )
        for label, row in sorted(comparison.get("per_label", {}).items()):
            if row.get("support", 0) >= self.label_min_support and row["diff"] < -self.label_max_f1_drop:
                reasons.append(
                    f"label {label!r} ({row['support']} held-out examples) loses {-row['diff']:.3f} F1: "
                    f"{row['champion']:.3f} -> {row['challenger']:.3f} (allowed {self.label_max_f1_drop})"
                )
        if reasons:
            return False, reasons
        checked = [name for name in self.reject_if_significant_drop if name in metrics]
        summary = ", ".join(f"{name} {metrics[name]['diff']:+.4f}" for name in checked) or "no gated metric"
        return True, [f"no gate rule broken ({summary})"]


def comparison_table(comparison: Mapping[str, Any], *, labels: int = 15) -> str:
    """A fixed-width table of the comparison for a terminal: headline metrics, then the labels
    with the most held-out examples."""
    confidence = comparison.get("bootstrap", {}).get("confidence", 0.95)
    head = f"{'metric':<28} {'champion':>9} {'challenger':>10} {'diff':>8}   {confidence:.0%} interval      n"
    lines = [head, "-" * len(head)]

    def line(name: str, row: Mapping[str, Any]) -> str:
        mark = " *" if significantly_worse(name, row) else ""
        return (
            f"{name[:28]:<28} {row['champion']:>9.4f} {row['challenger']:>10.4f} {row['diff']:>+8.4f}   "
            f"[{row['low']:+.4f}, {row['high']:+.4f}] {row['n']:>6}{mark}"
        )

    for name, row in comparison.get("metrics", {}).items():
        if "diff" in row:
            lines.append(line(name, row))
    ranked = sorted(comparison.get("per_label", {}).items(), key=lambda kv: -kv[1].get("support", 0))
    if ranked:
        lines.append(f"per label (F1; the {min(labels, len(ranked))} with most held-out examples):")
        for label, row in ranked[:labels]:
            lines.append(line(f"  {label} ({row['support']})", row))
    lines.append("* significantly worse")
    return "\n".join(lines)
