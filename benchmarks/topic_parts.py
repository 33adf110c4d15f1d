"""Parts vs whole of the topic tagger, by cross-validation on training data only.

Four ways to use the two feature blocks, on the same folds:

* ``tfidf_only``: `TopicTagger` with the embedding block dropped (word + char TF-IDF);
* ``embedding_only``: `TopicTagger` on the MiniLM embedding alone;
* ``concat`` (shipped): `TopicTagger()` on ``[embedding | word | char]`` as one matrix;
* ``late_fusion``: the two single-block taggers' calibrated probabilities averaged,
  ``m·p_embedding + (1 - m)·p_tfidf``. ``m`` (from 0.3 to 0.7) and the thresholds of the mix are
  chosen on the two taggers' own out-of-fold probabilities (their calibration folds, inside the
  training part), so no held-out row picks anything. Labels too rare for a linear model keep the
  embedding tagger's nearest-example probability.

AG News: 5-fold stratified CV (seed 0), the folds of ``benchmarks.quality agnews``; accuracy.
Reuters: 3-fold CV over ``reuters/train`` only (identical texts kept in one fold), micro- and
macro-F1 of the pooled out-of-fold predictions (macro over labels in the pooled truth).

    PYTHONPATH=. .venv/bin/python -m benchmarks.topic_parts agnews
    PYTHONPATH=. .venv/bin/python -m benchmarks.topic_parts reuters   # ~15-25 min on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import GroupKFold, StratifiedKFold

from benchmarks.common import add_common_arguments, emit
from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.tagging import topic_metrics
from model.evaluation.thresholds import best_f1_threshold
from model.tagging.features import ArticleFeaturizer
from model.tagging.topic_classifier import THRESHOLD_GRID, TopicClassifier
from model.tagging.topic_tagger import TopicTagger

logger = logging.getLogger("benchmarks.topic_parts")
SEED = 0
MIX_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)


class _OOFTopicClassifier(TopicClassifier):
    """`TopicClassifier` that keeps the out-of-fold probabilities it tunes its thresholds on."""

    def _fit_thresholds(
        self, oof_prob: npt.NDArray[np.float64], Y: npt.NDArray[np.bool_], learned: npt.NDArray[np.intp]
    ) -> None:
        self.oof_prob_, self.oof_truth_ = oof_prob, Y
        super()._fit_thresholds(oof_prob, Y, learned)


def _tagger(block: str) -> TopicTagger:
    featurizer = {
        "concat": ArticleFeaturizer(),
        "tfidf_only": ArticleFeaturizer(embedding_weight=0.0),
        "embedding_only": ArticleFeaturizer(word_ngrams=None, char_ngrams=None),
    }[block]
    return TopicTagger(featurizer, _OOFTopicClassifier(show_progress=False))


def _micro(chosen: npt.NDArray[np.bool_], Y: npt.NDArray[np.bool_]) -> float:
    tp = (chosen & Y).sum()
    return float(2 * tp / max(2 * tp + (chosen & ~Y).sum() + (~chosen & Y).sum(), 1))


def _tune_thresholds(
    prob: npt.NDArray[np.float64], Y: npt.NDArray[np.bool_], clf: TopicClassifier
) -> npt.NDArray[np.float64]:
    """`TopicClassifier`'s own rule on the fused out-of-fold probabilities: a global threshold by
    micro-F1, then per-label best-F1 thresholds shrunk toward it."""

    def chosen_at(t: Any) -> npt.NDArray[np.bool_]:
        chosen = prob >= t
        chosen[np.arange(len(prob)), prob.argmax(1)] = True  # min_labels = 1
        return chosen

    g = float(THRESHOLD_GRID[int(np.argmax([_micro(chosen_at(t), Y) for t in THRESHOLD_GRID]))])
    thresholds = np.full(Y.shape[1], g)
    k = clf.threshold_shrinkage
    for j in range(Y.shape[1]):
        support = int(Y[:, j].sum())
        if support >= clf.tune_min_support:
            best = best_f1_threshold(prob[:, j], Y[:, j], grid=THRESHOLD_GRID, prefer=g)
            thresholds[j] = (support * best + k * g) / (support + k)
    return thresholds


class LateFusion:
    """Mix two fitted single-block taggers (see the module docstring)."""

    def __init__(self, dense: TopicTagger, lexical: TopicTagger) -> None:
        self.dense, self.lexical = dense, lexical
        d, lx = dense.classifier_, lexical.classifier_
        if not np.array_equal(d.learned_index_, lx.learned_index_):
            raise RuntimeError("both block taggers must learn the same labels")
        self.learned = d.learned_index_
        self.single = not d.multilabel_ or d.max_labels == 1
        pd_, pl_, Y = d.oof_prob_, lx.oof_prob_, d.oof_truth_
        scores = []
        for m in MIX_GRID:
            p = m * pd_ + (1 - m) * pl_
            if self.single:
                scores.append(float(np.mean(p.argmax(1) == Y.argmax(1))))
            else:
                scores.append(_micro(p >= _tune_thresholds(p, Y, d), Y))
        self.mix = MIX_GRID[int(np.argmax(scores))]
        self.thresholds = d.thresholds_.copy()
        if not self.single:
            fused = self.mix * pd_ + (1 - self.mix) * pl_
            self.thresholds[self.learned] = _tune_thresholds(fused, Y, d)

    def predict_labels(self, articles: list[Article], emb: npt.NDArray[np.float32]) -> list[tuple[str, ...]]:
        d, lx = self.dense.classifier_, self.lexical.classifier_
        pd_ = d._label_probabilities(self.dense.featurizer_.transform(articles, emb))
        pl_ = lx._label_probabilities(self.lexical.featurizer_.transform(articles, emb))
        prob = pd_.copy()
        prob[:, self.learned] = self.mix * pd_[:, self.learned] + (1 - self.mix) * pl_[:, self.learned]
        labels = d.classes_
        if self.single:
            return [(str(labels[j]),) for j in prob.argmax(1)]
        chosen = d._apply_thresholds(prob, self.thresholds)
        return [tuple(str(labels[j]) for j in np.flatnonzero(row)) for row in chosen]


def _load(folder: Path, embedder: Embedder) -> tuple[list[Article], npt.NDArray[np.float32]]:
    if not folder.is_dir():
        raise SystemExit(f"no corpus at {folder}: pass --data-dir pointing at shared/data")
    articles = sorted((a for a in read_seeds([folder]).articles.values() if a.topics), key=lambda a: a.id)
    return articles, embedder.encode([a.text for a in articles])


def _run_folds(
    articles: list[Article], emb: npt.NDArray[np.float32], folds: list[tuple[Any, Any]]
) -> tuple[dict[str, list[list[tuple[str, ...]]]], list[list[int]], list[float]]:
    """Predictions of every variant on every fold's held-out part (and the chosen mixes)."""
    preds: dict[str, list[list[tuple[str, ...]]]] = {
        k: [] for k in ("tfidf_only", "embedding_only", "concat", "late_fusion")
    }
    tests, mixes = [], []
    for f, (train, test) in enumerate(folds):
        tr, te = [articles[i] for i in train], [articles[i] for i in test]
        fitted = {}
        for block in ("embedding_only", "tfidf_only", "concat"):
            start = time.perf_counter()
            fitted[block] = _tagger(block).fit(tr, emb[train])
            preds[block].append(fitted[block].predict_labels(te, emb[test]))
            logger.info("fold %d %s: %.0fs", f, block, time.perf_counter() - start)
        fusion = LateFusion(fitted["embedding_only"], fitted["tfidf_only"])
        preds["late_fusion"].append(fusion.predict_labels(te, emb[test]))
        mixes.append(fusion.mix)
        tests.append(list(test))
    return preds, tests, mixes


def bench_agnews(data_dir: Path, embedder: Embedder, folds: int = 5, limit: int | None = None) -> dict:
    articles, emb = _load(data_dir / "agnews", embedder)
    if limit:
        articles, emb = articles[:limit], emb[:limit]
    labels = np.array([a.topics[0] for a in articles])
    split = list(StratifiedKFold(folds, shuffle=True, random_state=SEED).split(emb, labels))
    preds, tests, mixes = _run_folds(articles, emb, split)
    out: dict[str, Any] = {
        "split": f"{folds}-fold stratified CV (seed {SEED}) over agnews (benchmarks.quality's folds)",
        "n": len(articles),
        "late_fusion_mix_per_fold": mixes,
    }
    for name, per_fold in preds.items():
        acc = [
            float(np.mean([p[:1] == (labels[i],) for p, i in zip(fold, test, strict=True)]))
            for fold, test in zip(per_fold, tests, strict=True)
        ]
        out[name] = {
            "accuracy_mean": round(float(np.mean(acc)), 4),
            "accuracy_sd": round(float(np.std(acc)), 4),
            "folds": [round(a, 4) for a in acc],
        }
    return out


def bench_reuters(data_dir: Path, embedder: Embedder, folds: int = 3, limit: int | None = None) -> dict:
    articles, emb = _load(data_dir / "reuters" / "train", embedder)
    if limit:
        articles, emb = articles[:limit], emb[:limit]
    # identical texts (Reuters repeats some wire items) stay in one fold
    groups = [hashlib.sha1(a.text.encode("utf-8")).hexdigest() for a in articles]
    order = np.random.default_rng(SEED).permutation(len(articles))
    split = [
        (order[tr], order[te]) for tr, te in GroupKFold(folds).split(order, groups=[groups[i] for i in order])
    ]
    preds, tests, mixes = _run_folds(articles, emb, split)
    truth = [articles[i].topics for test in tests for i in test]
    out: dict[str, Any] = {
        "split": f"{folds}-fold CV over reuters/train (identical texts grouped, seed {SEED}); "
        "micro/macro-F1 of the pooled out-of-fold predictions, macro over labels in the pooled truth",
        "n": len(articles),
        "late_fusion_mix_per_fold": mixes,
    }
    for name, per_fold in preds.items():
        m = topic_metrics(truth, [p for fold in per_fold for p in fold])
        out[name] = {
            "micro_f1": round(m["micro_f1"], 4),
            "macro_f1": round(m["macro_f1"], 4),
            "macro_labels": m["macro_labels"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.topic_parts",
        description="TF-IDF only, embeddings only, their concatenation (shipped) and late fusion of "
        "their calibrated probabilities, by CV on training data; prints JSON.",
    )
    parser.add_argument("corpus", choices=["agnews", "reuters"], help="which corpus to cross-validate")
    parser.add_argument("--folds", type=int, default=None, help="CV folds (default: agnews 5, reuters 3)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N articles (smoke runs)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    embedder = Embedder(cache=EmbeddingCache(args.cache))
    run = bench_agnews if args.corpus == "agnews" else bench_reuters
    folds = args.folds or (5 if args.corpus == "agnews" else 3)
    start = time.perf_counter()
    result = {args.corpus: run(args.data_dir, embedder, folds, args.limit)}
    result[args.corpus]["seconds"] = round(time.perf_counter() - start, 1)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
