"""Benchmark graded pair scoring on SemEval-2022 Task 8 (en-en) against two baselines, in one run.

Compares, on the same pairs and the same cross-validation folds:

- ``tfidf_cosine``: cosine of TF-IDF vectors (sublinear tf, English stop words, fitted on the
  pair texts), the plain lexical baseline;
- ``minilm_cosine``: cosine of the all-MiniLM-L6-v2 embeddings of title + excerpt;
- ``pair_scorer_cv``: `PairScorer` fitted on the training folds, scored on the held-out fold;
- ``pair_scorer_default``: `PairScorer.default()` (fitted on all of SemEval, so in-sample).

Pearson r is against ``overall`` (1 = same story … 4 = unrelated); scores are similarities, so
r is negative and ``abs_pearson`` is the figure to compare. ``same_story_f1`` is the F1 of calling
``same_story`` or ``duplicate`` against ``overall <= 1.5``; for the baselines the cut is the
best-F1 cut on the training folds. CV: 10-fold, repeated 5 times (mean ± std over repeats).

Run from the repository root:

    .venv/bin/python -m benchmarks.pairs                # prints JSON
    .venv/bin/python -m benchmarks.pairs --fit-default  # also the constants for PairScorer.default
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold

from model.coverage.pairs import (
    PairScorer,
    _best_f1_threshold,
    graded_pair_evidence,
    pair_feature_matrix,
    pair_texts,
    read_pairs_tsv,
)
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.coverage import SAME_STORY_MAX_OVERALL, pair_metrics

logger = logging.getLogger("benchmarks.pairs")


def _default_data_dir() -> Path:
    env = os.environ.get("NEWSDESK_CORPUS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _summarise(runs: list[dict]) -> dict:
    out: dict = {"n": runs[0]["n"], "repeats": len(runs)}
    for key in ("pearson", "abs_pearson", "spearman", "same_story_f1"):
        values = [run[key] for run in runs if key in run]
        if values:
            out[key] = round(float(np.mean(values)), 4)
            out[f"{key}_std"] = round(float(np.std(values)), 4)
    return out


def _cut_verdicts(scores: np.ndarray, overall: np.ndarray, folds: list) -> list[str]:
    """Same-story calls from a score cut chosen on the training folds only."""
    verdicts = [""] * len(scores)
    for train, test in folds:
        cut = _best_f1_threshold(scores[train], overall[train] <= SAME_STORY_MAX_OVERALL)
        for i in test:
            verdicts[i] = "same_story" if scores[i] >= cut else "unrelated"
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs",
        description="Pearson r and same-story F1 of pair scorers vs TF-IDF and MiniLM cosine on SemEval "
        "en-en pairs (cross-validated); prints one JSON object.",
    )
    parser.add_argument(
        "--pairs",
        type=Path,
        default=None,
        help="graded pair TSV (id1 id2 overall title1 title2 excerpt1 excerpt2 [file]); "
        "default: $NEWSDESK_CORPUS_DIR/semeval/pairs.tsv or ../shared/data/semeval/pairs.tsv",
    )
    parser.add_argument("--folds", type=int, default=10, help="CV folds (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="CV repeats with reshuffled folds (default 5)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache/news-desk/embeddings.sqlite",
        help="embedding cache (SQLite); default ~/.cache/news-desk/embeddings.sqlite",
    )
    parser.add_argument(
        "--fit-default", action="store_true", help="also print PairScorer constants fitted on all pairs"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    path = args.pairs or _default_data_dir() / "semeval" / "pairs.tsv"
    if not path.is_file():
        parser.error(f"no pair file at {path}; pass --pairs or set NEWSDESK_CORPUS_DIR")
    pairs = read_pairs_tsv(path)
    overall = np.array([p.overall for p in pairs])
    texts = pair_texts(pairs)
    vectors = Embedder(cache=EmbeddingCache(args.cache)).encode(texts)
    evidences = graded_pair_evidence(pairs, vectors)
    X = pair_feature_matrix(evidences)

    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(texts)
    matrix = tfidf.transform(texts)
    tfidf_cos = np.asarray(matrix[0::2].multiply(matrix[1::2]).sum(axis=1)).ravel()
    minilm_cos = X[:, 0]

    results: dict[str, list[dict]] = {"tfidf_cosine": [], "minilm_cosine": [], "pair_scorer_cv": []}
    for repeat in range(args.repeats):
        folds = list(KFold(args.folds, shuffle=True, random_state=repeat).split(X))
        for name, scores in (("tfidf_cosine", tfidf_cos), ("minilm_cosine", minilm_cos)):
            results[name].append(pair_metrics(pairs, scores, _cut_verdicts(scores, overall, folds)))
        cv_scores = np.zeros(len(pairs))
        cv_verdicts: list[str] = [""] * len(pairs)
        for train, test in folds:
            scorer = PairScorer().fit(X[train], overall[train])
            for i in test:
                cv_scores[i] = scorer.score(evidences[i])
                cv_verdicts[i] = scorer.verdict(evidences[i], cv_scores[i])
        results["pair_scorer_cv"].append(pair_metrics(pairs, cv_scores, cv_verdicts))

    default = PairScorer.default()
    default_scores = default.predict(X)
    report: dict = {
        "data": str(path),
        "pairs": len(pairs),
        "positives_overall_le_1_5": int((overall <= SAME_STORY_MAX_OVERALL).sum()),
        "cv": f"{args.folds}-fold x {args.repeats} repeats",
        "sign": "scores are similarities: pearson vs overall is negative; compare abs_pearson",
        **{name: _summarise(runs) for name, runs in results.items()},
        "pair_scorer_default_in_sample": pair_metrics(
            pairs,
            default_scores,
            [default.verdict(ev, s) for ev, s in zip(evidences, default_scores, strict=True)],
        ),
    }
    if args.fit_default:
        fitted = PairScorer().fit(X, overall)
        report["fitted_on_all"] = {
            "features": list(fitted.feature_names_),
            "coef": [float(c) for c in fitted.coef_],
            "intercept": fitted.intercept_,
            "same_story_threshold": fitted.same_story_threshold_,
            "related_threshold": fitted.related_threshold_,
        }
    json.dump(report, sys.stdout, indent=2, default=float)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
