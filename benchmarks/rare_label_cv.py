"""Train-only cross-validation of how the topic tagger calibrates its rare-label (nearest-example) path.

`TopicClassifier.rare_calibration_support` says which labels the prototype sigmoid learns from:
labels with 2..N examples (default 50) or every label. This compares settings by K-fold CV on
Reuters *train* only, so the default is chosen without looking at the test split.

    PYTHONPATH=. .venv/bin/python -m benchmarks.rare_label_cv --folds 3
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from benchmarks.common import EMBEDDING_CACHE, corpus_dir
from model.articles.seeds import read_seeds
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.tagging import topic_metrics
from model.tagging.topic_classifier import TopicClassifier
from model.tagging.topic_tagger import TopicTagger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--train", type=Path, default=corpus_dir() / "reuters" / "train", help="labelled seeds"
    )
    parser.add_argument("--folds", type=int, default=3, help="CV folds (default 3)")
    parser.add_argument(
        "--settings", type=int, nargs="+", default=[50, 1_000_000], help="rare_calibration_support values"
    )
    parser.add_argument("--cache", type=Path, default=EMBEDDING_CACHE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rare_label_cv.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    articles = [a for a in read_seeds([args.train]).articles.values() if a.topics]
    vectors = Embedder(cache=EmbeddingCache(args.cache)).encode([a.text for a in articles])
    folds = list(KFold(args.folds, shuffle=True, random_state=0).split(articles))
    results: dict[str, dict[str, object]] = {}
    for setting in args.settings:
        scores = []
        for train, test in folds:
            tagger = TopicTagger(
                classifier=TopicClassifier(rare_calibration_support=setting, show_progress=False)
            )
            tagger.fit([articles[i] for i in train], vectors[train])
            predicted = tagger.predict_labels([articles[i] for i in test], vectors[test])
            m = topic_metrics([articles[i].topics for i in test], predicted)
            scores.append((m["micro_f1"], m["macro_f1"]))
        results[str(setting)] = {
            "micro_f1": float(np.mean([s[0] for s in scores])),
            "macro_f1": float(np.mean([s[1] for s in scores])),
            "per_fold": scores,
        }
    report = {
        "benchmark": "rare_label_cv",
        "data": str(args.train),
        "folds": args.folds,
        "n": len(articles),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
