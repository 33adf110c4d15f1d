"""Quality benchmarks of the topic tagger and the heat head on the shared public corpora.

Prints one JSON document. Each figure sits next to a plain baseline computed on the same split:

* reuters: fit on ``reuters/train``, score ``reuters/test`` (ModApte), TopicTagger vs TF-IDF + LinearSVC
  (one-vs-rest, threshold 0, top-1 when nothing fires). macro-F1 averages over labels present in test.
* agnews: 5-fold cross-validated accuracy, TopicTagger vs TF-IDF + logistic regression, same folds.
* hn: heat (points) Spearman on a held-out fifth (seed 0), ScoreHead vs the provider's mean log-points.

Usage: ``python -m benchmarks.quality [reuters|agnews|hn|all] --data-dir ../shared/data``
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC

from benchmarks.common import corpus_dir
from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.tagging import score_metrics, topic_metrics
from model.tagging.scores import ScoreHead
from model.tagging.topic_tagger import TopicTagger

logger = logging.getLogger("benchmarks.quality")
SEED = 0


def _load(data_dir: Path, folder: str, embedder: Embedder) -> tuple[list[Article], np.ndarray]:
    path = data_dir / folder
    if not path.is_dir():
        raise SystemExit(
            f"no corpus at {path}: pass --data-dir pointing at shared/data (or set NEWSDESK_CORPUS_DIR)"
        )
    articles = sorted(read_seeds([path]).articles.values(), key=lambda a: a.id)
    start = time.perf_counter()
    embeddings = embedder.encode([a.text for a in articles])
    logger.info("%s: %d articles, embedded in %.1fs", folder, len(articles), time.perf_counter() - start)
    return articles, embeddings


def _summary(metrics: dict) -> dict:
    keys = ("n", "micro_f1", "macro_f1", "macro_f1_union", "macro_labels", "accuracy")
    return {k: round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k] for k in keys}


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)


def bench_reuters(data_dir: Path, embedder: Embedder) -> dict:
    train, emb_train = _load(data_dir, "reuters/train", embedder)
    test, emb_test = _load(data_dir, "reuters/test", embedder)
    truth = [a.topics for a in test]

    start = time.perf_counter()
    tagger = TopicTagger().fit(train, emb_train)
    fit_seconds = time.perf_counter() - start
    predicted = tagger.predict_labels(test, emb_test)
    ours = topic_metrics(truth, predicted)
    # The ModApte "R90" convention: labels with ≥ 1 train and ≥ 1 test document.
    r90 = {label for t in truth for label in t} & {label for a in train for label in a.topics}
    ours_r90 = topic_metrics(truth, predicted, labels=r90)

    # Baseline: TF-IDF + one-vs-rest LinearSVC, decision > 0, top-1 when nothing fires.
    vectorizer = _tfidf()
    binarizer = MultiLabelBinarizer()
    Y = binarizer.fit_transform([a.topics for a in train])
    svc = OneVsRestClassifier(LinearSVC()).fit(vectorizer.fit_transform([a.text for a in train]), Y)
    scores = svc.decision_function(vectorizer.transform([a.text for a in test]))
    chosen = (scores > 0) | (scores == scores.max(axis=1, keepdims=True))
    baseline_pred = [tuple(binarizer.classes_[row]) for row in chosen]
    baseline = topic_metrics(truth, baseline_pred)
    baseline_r90 = topic_metrics(truth, baseline_pred, labels=r90)
    return {
        "split": "reuters/train -> reuters/test (ModApte), title + excerpt",
        "macro_over": "macro_f1: labels present in reuters/test; macro_f1_r90: labels in both train and test "
        "(ModApte R90); macro_f1_union: test ∪ predicted labels",
        "tagger": {
            **_summary(ours),
            "macro_f1_r90": round(ours_r90["macro_f1"], 4),
            "r90_labels": len(r90),
            "fit_seconds": round(fit_seconds, 1),
            "pickled_mb": round(len(pickle.dumps(tagger)) / 1e6, 1),
            "rare_labels": len(tagger.rare_labels_),
            "labels": len(tagger.labels_),
            "cv_scores": tagger.report_["cv_scores"],
        },
        "baseline_tfidf_linearsvc": _summary(baseline) | {"macro_f1_r90": round(baseline_r90["macro_f1"], 4)},
    }


def bench_agnews(data_dir: Path, embedder: Embedder, folds: int = 5) -> dict:
    articles, emb = _load(data_dir, "agnews", embedder)
    labels = np.array([a.topics[0] for a in articles])
    texts = [a.text for a in articles]
    ours, base, seconds = [], [], []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=SEED).split(texts, labels):
        start = time.perf_counter()
        tagger = TopicTagger().fit([articles[i] for i in train], emb[train])
        seconds.append(time.perf_counter() - start)
        predicted = tagger.predict_labels([articles[i] for i in test], emb[test])
        ours.append(topic_metrics([(labels[i],) for i in test], predicted)["accuracy"])
        vectorizer = _tfidf()
        model = LogisticRegression(max_iter=1000).fit(
            vectorizer.fit_transform([texts[i] for i in train]), labels[train]
        )
        base.append(
            float(np.mean(model.predict(vectorizer.transform([texts[i] for i in test])) == labels[test]))
        )
    return {
        "split": f"{folds}-fold stratified CV (seed {SEED}) over agnews, title + excerpt",
        "tagger_accuracy": round(float(np.mean(ours)), 4),
        "tagger_accuracy_folds": [round(x, 4) for x in ours],
        "tagger_fit_seconds_mean": round(float(np.mean(seconds)), 1),
        "baseline_tfidf_logreg_accuracy": round(float(np.mean(base)), 4),
        "baseline_accuracy_folds": [round(x, 4) for x in base],
    }


def bench_hn(data_dir: Path, embedder: Embedder) -> dict:
    articles, emb = _load(data_dir, "hn", embedder)
    keep = [i for i, a in enumerate(articles) if a.heat is not None]
    articles, emb = [articles[i] for i in keep], emb[keep]
    # a fixed-seed fifth held out
    train, test = next(KFold(5, shuffle=True, random_state=SEED).split(emb))
    truth = np.array([articles[i].heat for i in test])

    start = time.perf_counter()
    head = ScoreHead("heat", log_scale=True).fit([articles[i] for i in train], emb[train])
    fit_seconds = time.perf_counter() - start
    value, low, high = head.predict_values([articles[i] for i in test], emb[test])
    ours = score_metrics(truth, value, low=low, high=high)

    # Baseline: the provider's mean log1p(points) in training, the global mean for unseen providers.
    y_train = np.log1p([articles[i].heat for i in train])
    sums: dict[str, list[float]] = {}
    for i, y in zip(train, y_train, strict=True):
        sums.setdefault(articles[i].provider_key or "?", []).append(float(y))
    means = {key: float(np.mean(v)) for key, v in sums.items()}
    fallback = float(y_train.mean())
    baseline = np.expm1([means.get(articles[i].provider_key or "?", fallback) for i in test])
    base = score_metrics(truth, baseline)
    return {
        "split": f"hn, held-out fifth (KFold(5, shuffle, seed {SEED}), fold 1), heat = points, titles only",
        "score_head": {k: round(v, 4) if isinstance(v, float) else v for k, v in ours.items()}
        | {"fit_seconds": round(fit_seconds, 1), "n_train": len(train)},
        "baseline_provider_mean": {k: round(v, 4) if isinstance(v, float) else v for k, v in base.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Score the topic tagger (reuters, agnews) and the heat head (hn) against plain "
        "baselines; prints JSON.",
    )
    parser.add_argument(
        "corpus",
        nargs="?",
        default="all",
        choices=["reuters", "agnews", "hn", "all"],
        help="which benchmark to run (default: all)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=corpus_dir(),
        help="folder holding reuters/, agnews/ and hn/ (default: $NEWSDESK_CORPUS_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "news-desk" / "embeddings.sqlite",
        help="embedding cache file (default: ~/.cache/news-desk/embeddings.sqlite)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    embedder = Embedder(cache=EmbeddingCache(args.cache))
    runs = {"reuters": bench_reuters, "agnews": bench_agnews, "hn": bench_hn}
    chosen = list(runs) if args.corpus == "all" else [args.corpus]
    results = {name: runs[name](args.data_dir, embedder) for name in chosen}
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
