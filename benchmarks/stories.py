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

Ingest, one article at a time in published order (`model.coverage.story_rule`, the decision
`NewsModel.add` and the PostgreSQL ingest make), compared with the two rules it replaced:

* ``in_memory_before``: the story from the 20 nearest inside the window, ``duplicate_of`` the first
  of the 5 nearest at any age that the scorer calls a copy (the old `NewsModel.add`);
* ``postgres_before``: story and duplicate from the 10 nearest inside the window only (the old
  PostgreSQL ingest);
* ``unified``: `link_story` as shipped (copies from the nearest at any age, stories in the window);
  ``unified_10``: the same with 10 window candidates instead of 20.

Each on the set as it is and with ``--reposts`` copies of its articles re-posted 90 days later
(beyond the window; gold: the original's story, ``duplicate_of`` the original): B-cubed, duplicate
links, links whose story differs from their original's, and for the re-posts how many were linked
to their original and put in its story.

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
from datetime import timedelta
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
from model.coverage.article_index import ArticleIndex
from model.coverage.pair_evidence import HashedIdf
from model.coverage.pair_scorer import PairScorer
from model.coverage.story_links import cluster_stories
from model.coverage.story_rule import STORY_WINDOW_DAYS, StoryLink, candidates, link_story
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.thresholds import best_f1_threshold

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


REPOST_DAYS = 90.0  # re-posts land this long after their original: beyond any story window measured


def _reposts(
    ps: PairSet, vectors: npt.NDArray[np.float32], every: int
) -> tuple[list[Article], npt.NDArray[np.float32], list[Any], list[int]]:
    """The set plus a copy of every ``every``-th article (by id) re-posted `REPOST_DAYS` later under a
    new id and no URL; returns articles, vectors, gold stories and the original's index per copy."""
    gold = _gold(ps)
    originals = [k for k in sorted(range(len(ps.articles)), key=lambda k: ps.articles[k].id)][::every]
    copies = [
        dataclasses.replace(
            ps.articles[k],
            id=f"{ps.articles[k].id}-repost",
            urls={},
            published_at=ps.articles[k].published_at + timedelta(days=REPOST_DAYS)
            if ps.articles[k].published_at
            else None,
        )
        for k in originals
    ]
    articles = [*ps.articles, *copies]
    return (
        articles,
        np.vstack([vectors, vectors[originals]]),
        [*gold, *(gold[k] for k in originals)],
        originals,
    )


def _order(articles: list[Article]) -> list[int]:
    return sorted(
        range(len(articles)),
        key=lambda k: (
            articles[k].published_at is None,
            articles[k].published_at.timestamp() if articles[k].published_at else 0.0,
            articles[k].id,
        ),
    )


def _ingest(
    articles: list[Article],
    vectors: npt.NDArray[np.float32],
    scorer: PairScorer,
    rule: str,
    window_days: float,
) -> tuple[list[str], list[str | None]]:
    """Story and duplicate_of per article (input order), ingesting one at a time in published order."""
    index = ArticleIndex()
    story: list[str] = [""] * len(articles)
    duplicate: list[str | None] = [None] * len(articles)
    for k in _order(articles):
        article, vector = articles[k], vectors[k]
        recent, nearest = candidates(index, article, vector, window_days)  # nearest first
        if rule == "in_memory_before":
            link = link_story(scorer, article, vector, recent)
            others = [c.article for c in nearest]
            verdicts = scorer.compare_many(article, others, vector, np.array([c.vector for c in nearest]))
            first = (c.article.id for c, v in zip(nearest, verdicts, strict=True) if v.verdict == "duplicate")
            link = StoryLink(link.story_id, next(first, None))
        elif rule == "postgres_before":
            link = link_story(scorer, article, vector, recent[:10])
        elif rule == "unified":
            link = link_story(scorer, article, vector, recent, nearest)
        elif rule == "unified_10":
            link = link_story(scorer, article, vector, recent[:10], nearest)
        else:
            raise ValueError(rule)
        story[k], duplicate[k] = link
        index.add([article], vectors[k : k + 1], [link.story_id])
    return story, duplicate


INGEST_RULES = ("in_memory_before", "postgres_before", "unified", "unified_10")


def _ingest_scores(
    articles: list[Article], story: list[str], duplicate: list[str | None], gold: list[Any]
) -> dict[str, Any]:
    story_of = {a.id: s for a, s in zip(articles, story, strict=True)}
    links = [(a.id, d) for a, d in zip(articles, duplicate, strict=True) if d is not None]
    return bcubed(story, gold) | {
        "clusters": len(set(story)),
        "duplicate_links": len(links),
        "links_outside_original_story": sum(story_of[a] != story_of[d] for a, d in links),
    }


def _ingest_check(
    ps: PairSet, vectors: npt.NDArray[np.float32], scorer: PairScorer, window_days: float, every: int
) -> dict[str, Any]:
    """The ingest rules on the set as it is and with re-posted copies."""
    out: dict[str, Any] = {"window_days": window_days}
    gold = _gold(ps)
    for rule in INGEST_RULES:
        story, duplicate = _ingest(ps.articles, vectors, scorer, rule, window_days)
        out[rule] = _ingest_scores(ps.articles, story, duplicate, gold)
    if every:
        articles, matrix, gold_r, originals = _reposts(ps, vectors, every)
        n = len(ps.articles)
        out["reposts"] = {"copies": len(originals), "days_after": REPOST_DAYS}
        for rule in INGEST_RULES:
            story, duplicate = _ingest(articles, matrix, scorer, rule, window_days)
            copies = range(n, len(articles))
            out["reposts"][rule] = _ingest_scores(articles, story, duplicate, gold_r) | {
                "reposts_linked_to_original": sum(
                    duplicate[c] == articles[o].id for c, o in zip(copies, originals, strict=True)
                ),
                "reposts_in_original_story": sum(
                    story[c] == story[o] for c, o in zip(copies, originals, strict=True)
                ),
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


def run(
    data_dir: Path, embedder: Embedder, timing_n: int, *, ingest: bool = True, reposts: int = 5
) -> dict[str, Any]:
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
        if ingest:
            out[name]["ingest"] = _ingest_check(ps, vectors, scorer, STORY_WINDOW_DAYS, reposts)
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
    parser.add_argument(
        "--no-ingest", action="store_true", help="skip the one-at-a-time ingest rules (the old output)"
    )
    parser.add_argument(
        "--reposts",
        type=int,
        default=5,
        help="re-post a copy of every N-th article 90 days later for the ingest rules (0: none)",
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    embedder = Embedder(cache=EmbeddingCache(args.cache))
    result = run(args.data_dir, embedder, args.timing_n, ingest=not args.no_ingest, reposts=args.reposts)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
