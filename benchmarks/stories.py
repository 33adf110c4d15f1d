"""Story clustering against gold stories: B-cubed precision/recall/F1 and how often pairs are merged.

Sets (under ``$NEWSDESK_CORPUS_DIR``): ``storychains`` (100 dated energy-business articles, gold
chains in ``chains.tsv``, spanning up to a month) and ``semeval`` (the articles of the 161
SemEval-2022 en-en pairs, i.e. the seeds' ``related`` lists; gold stories are the connected
components of the same-story pairs, ``overall`` ≤ 1.5; undated).

Methods, each clustering the whole set at once:

* ``story_rule``: the shipped rule, `cluster_stories` (mean-link over `PairScorer` verdicts within
  ``window_days``, default 14) with a scorer *fitted on the other sets' pairs only* (leave the set
  out), IDF from the set's own articles as a bundle has it;
* ``story_rule_default``: the same rule with `PairScorer.default()` (fitted on all public pairs,
  this set's included: in-sample, shown for reference);
* ``single_link_minilm`` / ``single_link_tfidf``: connected components of the pairs whose MiniLM
  (resp. TF-IDF) cosine reaches the best-F1 cut on the other sets' labelled pairs.

Per method: B-cubed precision, recall and F1 (per article, averaged), the share of gold same-story
pairs put in one cluster, and the share of labelled *not*-same-story pairs (on both sets these are
topically related: same industry, or listed as related coverage) merged anyway.

Also: the story window on storychains (default 14 days vs 30 days, no window and 3 days: how many
gold chains spanning more than the window are split), and the wall time of the shipped rule on an undated
slice of ``--timing-n`` AG News + Hacker News articles (dates dropped; embeddings from the cache).

    PYTHONPATH=. .venv/bin/python -m benchmarks.stories --out benchmarks/results/stories.json
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer

from benchmarks.common import add_common_arguments, emit
from benchmarks.pairs import SETS, PairSet, load_set, pool
from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.coverage.pairs import HashedIdf, PairScorer, best_f1_threshold
from model.coverage.story_links import cluster_stories
from model.encoders.embedder import Embedder, EmbeddingCache

logger = logging.getLogger("benchmarks.stories")
EVALUATED = ("storychains", "semeval")


def bcubed(pred: list[Any], gold: list[Any]) -> dict[str, float]:
    """B-cubed precision, recall and F1 of a clustering ``pred`` against ``gold`` (one id per item)."""
    pred_a, gold_a = np.asarray(pred, dtype=object), np.asarray(gold, dtype=object)
    precision, recall = [], []
    for i in range(len(pred_a)):
        same_pred, same_gold = pred_a == pred_a[i], gold_a == gold_a[i]
        both = float((same_pred & same_gold).sum())
        precision.append(both / same_pred.sum())
        recall.append(both / same_gold.sum())
    p, r = float(np.mean(precision)), float(np.mean(recall))
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-12), 4)}


def _single_link(sim: npt.NDArray[np.float64], cut: float) -> list[int]:
    n = len(sim)
    i, j = np.nonzero(np.triu(sim >= cut, k=1))
    return list(connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)[1])


def _gold(ps: PairSet) -> list[int]:
    if ps.name == "storychains":
        return list(ps.groups)  # chains.tsv
    same = ps.y == 1
    n = len(ps.articles)
    graph = coo_matrix((np.ones(int(same.sum())), (ps.i[same], ps.j[same])), shape=(n, n))
    return list(connected_components(graph, directed=False)[1])


def _scores(ps: PairSet, pred: list[Any], gold: list[int]) -> dict[str, Any]:
    together = np.array([pred[a] == pred[b] for a, b in zip(ps.i, ps.j, strict=True)])
    return bcubed(pred, gold) | {
        "clusters": len(set(pred)),
        "same_story_pairs_merged": round(float(together[ps.y == 1].mean()), 4),
        "other_pairs_merged": round(float(together[ps.y == 0].mean()), 4),
    }


def _window_check(ps: PairSet, vectors: npt.NDArray[np.float32], scorer: PairScorer) -> dict[str, Any]:
    """Does the story window split gold chains that span longer than it?"""
    gold = _gold(ps)
    days = np.array([a.published_at.timestamp() / 86400 if a.published_at else np.nan for a in ps.articles])
    spans = {
        g: float(np.nanmax(days[np.array(gold) == g]) - np.nanmin(days[np.array(gold) == g]))
        for g in set(gold)
    }
    out: dict[str, Any] = {
        "gold_chains": len(spans),
        "longest_chain_days": round(max(spans.values()), 1),
        "chains_over_14_days": sum(s > 14 for s in spans.values()),
    }
    for label, window in (("14_days_default", 14.0), ("30_days", 30.0), ("no_window", 1e9), ("3_days", 3.0)):
        pred = cluster_stories(ps.articles, vectors, scorer, window_days=window)
        long_chains = [g for g, s in spans.items() if s > min(window, 1e8)]
        split = sum(len({pred[k] for k in range(len(gold)) if gold[k] == g}) > 1 for g in long_chains)
        out[label] = _scores(ps, pred, gold) | {
            "chains_longer_than_window": len(long_chains),
            "of_which_split": split,
        }
    return out


def _timing(data_dir: Path, embedder: Embedder, n: int) -> dict[str, Any]:
    articles: list[Article] = []
    for folder in ("agnews", "hn"):
        if len(articles) < n and (data_dir / folder).is_dir():
            found = sorted(read_seeds([data_dir / folder]).articles.values(), key=lambda a: a.id)
            articles += found[: n - len(articles)]
    articles = [dataclasses.replace(a, published_at=None) for a in articles]  # undated: no window
    vectors = embedder.encode([a.text for a in articles])
    start = time.perf_counter()
    scorer = PairScorer.default(idf=HashedIdf().fit([a.text for a in articles]))
    stories = cluster_stories(articles, vectors, scorer)
    seconds = time.perf_counter() - start
    return {
        "articles": len(articles),
        "corpora": "agnews then hn, sorted by id, dates dropped",
        "seconds": round(seconds, 1),
        "stories": len(set(stories)),
    }


def run(data_dir: Path, embedder: Embedder, timing_n: int) -> dict[str, Any]:
    sets = {name: load_set(data_dir, name) for name in SETS}
    out: dict[str, Any] = {}
    for name in EVALUATED:
        ps = sets[name]
        others = [sets[o] for o in SETS if o != name]
        pooled = pool(others, embedder)
        positive = pooled.y == 1
        texts = [a.text for a in ps.articles]
        vectors = embedder.encode(texts)
        idf = HashedIdf().fit(texts)
        scorer = PairScorer(idf=idf).fit(pooled.X, pooled.y)
        gold = _gold(ps)
        tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(texts)
        cut_minilm = best_f1_threshold(pooled.baselines["minilm_cosine"], positive)
        cut_tfidf = best_f1_threshold(pooled.baselines["tfidf_cosine"], positive)
        methods = {
            "story_rule": cluster_stories(ps.articles, vectors, scorer),
            "story_rule_default": cluster_stories(ps.articles, vectors, PairScorer.default(idf=idf)),
            "single_link_minilm": _single_link(vectors @ vectors.T, cut_minilm),
            "single_link_tfidf": _single_link((tfidf @ tfidf.T).toarray(), cut_tfidf),
        }
        out[name] = {
            "articles": len(ps.articles),
            "gold_stories": len(set(gold)),
            "pairs": len(ps.y),
            "same_story_pairs": int(ps.y.sum()),
            "fitted_on": [o.name for o in others],
            "cuts": {
                "story_rule_same_story": round(scorer.same_story_threshold_, 4),
                "minilm_cosine": round(float(cut_minilm), 4),
                "tfidf_cosine": round(float(cut_tfidf), 4),
            },
        } | {method: _scores(ps, pred, gold) for method, pred in methods.items()}
        if name == "storychains":
            out["window"] = _window_check(ps, vectors, scorer)
    if timing_n:
        out["timing"] = _timing(data_dir, embedder, timing_n)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stories",
        description="B-cubed scores of the story rule vs single-link on MiniLM and TF-IDF cosine "
        "(storychains, SemEval), the story window on month-long chains, and a timing; prints JSON.",
    )
    parser.add_argument(
        "--timing-n", type=int, default=10_000, help="undated articles to time the rule on (0: skip)"
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    result = run(args.data_dir, Embedder(cache=EmbeddingCache(args.cache)), args.timing_n)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
