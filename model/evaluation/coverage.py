"""Evaluation of related-coverage search and of graded pair scoring, as JSON-ready dicts.

Conventions: pair scores are similarities (high = similar), so their Pearson r against the human
``overall`` grade (1 = same story … 4 = unrelated) is negative; ``pearson`` reports it as is and
``abs_pearson`` its magnitude.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import precision_recall_fscore_support

from model.articles.article import Article
from model.articles.seeds import SeedCorpus
from model.coverage.pair_files import SAME_STORY_MAX_OVERALL, GradedPair
from model.coverage.pair_scorer import PairScorer
from model.results import Verdict

# (query article, its vector, candidate article, candidate vector) -> score, higher = more related
Ranker = Callable[[Article, npt.NDArray[np.float32], Article, npt.NDArray[np.float32]], float]


def related_retrieval_metrics(
    corpus: SeedCorpus,
    vectors_by_id: Mapping[str, npt.NDArray[np.floating]],
    scorer: PairScorer | Ranker | None = None,
    *,
    k: int = 10,
    candidates: int = 50,
) -> dict[str, float | int]:
    """Recall@k and MRR of each seed's related items when its main article queries the corpus.

    Every article with a vector is a candidate except the query itself. Candidates are ranked by
    cosine; with a ``scorer`` (a `PairScorer` or a ranker function) the top ``candidates`` by
    cosine are re-ranked by its score, as the service does.

    Returns ``recall_at_{k}`` (mean over queries of the share of its related items in the top
    k), ``mrr`` (mean reciprocal rank of the first related item, 0 if none in the top
    ``candidates``) and ``n`` (queries).
    """
    per_query = related_retrieval_per_query(corpus, vectors_by_id, scorer, k=k, candidates=candidates)
    recalls = [recall for _, recall, _ in per_query]
    reciprocal = [rr for _, _, rr in per_query]
    return {
        f"recall_at_{k}": float(np.mean(recalls)) if recalls else float("nan"),
        "mrr": float(np.mean(reciprocal)) if reciprocal else float("nan"),
        "n": len(recalls),
    }


def related_retrieval_per_query(
    corpus: SeedCorpus,
    vectors_by_id: Mapping[str, npt.NDArray[np.floating]],
    scorer: PairScorer | Ranker | None = None,
    *,
    k: int = 10,
    candidates: int = 50,
) -> list[tuple[str, float, float]]:
    """(query id, recall@k, reciprocal rank) for each query of `related_retrieval_metrics`, so two
    models can be compared query by query (paired bootstrap)."""
    ids = [i for i in corpus.articles if i in vectors_by_id]
    if not ids:
        return []
    matrix = np.stack([np.asarray(vectors_by_id[i], dtype=np.float32) for i in ids])
    position = {article_id: p for p, article_id in enumerate(ids)}
    related = corpus.related_of()
    rows: list[tuple[str, float, float]] = []
    for main_id, others in related.items():
        targets = {o for o in others if o in position and o != main_id}
        if main_id not in position or not targets:
            continue
        query = matrix[position[main_id]]
        sims = matrix @ query
        sims[position[main_id]] = -np.inf
        depth = min(max(candidates, k), len(ids) - 1)
        top = np.argpartition(-sims, depth - 1)[:depth]
        top = top[np.argsort(-sims[top], kind="stable")]
        ranked = [ids[p] for p in top]
        if scorer is not None:
            main = corpus.articles[main_id]
            rank_fn = _as_ranker(scorer)
            scores = [rank_fn(main, query, corpus.articles[o], matrix[position[o]]) for o in ranked]
            ranked = [ranked[p] for p in np.argsort(-np.asarray(scores), kind="stable")]
        first = next((rank for rank, o in enumerate(ranked, start=1) if o in targets), None)
        rows.append((main_id, len(targets & set(ranked[:k])) / len(targets), 1.0 / first if first else 0.0))
    return rows


def _as_ranker(scorer: PairScorer | Ranker) -> Ranker:
    if isinstance(scorer, PairScorer):
        return lambda a, va, b, vb: (
            scorer.compare(a, b, va, vb).same_story_probability
        )  # as the service ranks
    return scorer


def pearson_by_language(
    pairs: Sequence[GradedPair], scores: Sequence[float] | npt.NDArray[np.floating]
) -> dict[str, dict[str, float | int]]:
    """``n``, ``pearson`` and ``abs_pearson`` for each language pair (``de-en``: the first side's
    language, then the second's, as the pair file gives them; ``?`` for an unknown language)."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs but {len(values)} scores")
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(f"{pair.a.language or '?'}-{pair.b.language or '?'}", []).append(i)
    out = {}
    for key in sorted(groups, key=lambda k: (-len(groups[k]), k)):
        rows = groups[key]
        found = pair_metrics([pairs[i].overall for i in rows], values[rows])
        out[key] = {name: found[name] for name in ("n", "pearson", "abs_pearson")}
    return out


def pair_metrics(
    pairs: Sequence[object],
    scores: Sequence[float] | npt.NDArray[np.floating],
    verdicts: Sequence[Verdict] | None = None,
) -> dict[str, float | int]:
    """Agreement of pair scores and verdicts with human grades.

    Parameters
    ----------
    pairs : graded pairs (objects with an ``overall`` attribute, e.g. `GradedPair`) or the
        ``overall`` values themselves.
    scores : similarity scores, higher = more similar.
    verdicts : optional verdicts; ``same_story_f1`` is the F1 of calling ``same_story`` or
        ``duplicate`` against ``overall <= 1.5``.
    """
    overall = np.array([float(getattr(p, "overall", p)) for p in pairs])  # type: ignore[arg-type]
    values = np.asarray(scores, dtype=np.float64)
    if len(values) != len(overall):
        raise ValueError(f"{len(overall)} pairs but {len(values)} scores")
    result: dict[str, float | int] = {"n": len(overall)}
    if len(overall) >= 2 and np.ptp(values) > 0:
        r = float(pearsonr(values, overall)[0])
        result.update(pearson=r, abs_pearson=abs(r), spearman=float(spearmanr(values, overall)[0]))
    else:
        result.update(pearson=float("nan"), abs_pearson=float("nan"), spearman=float("nan"))
    if verdicts is not None:
        if len(verdicts) != len(overall):
            raise ValueError(f"{len(overall)} pairs but {len(verdicts)} verdicts")
        called = np.array([v in ("same_story", "duplicate") for v in verdicts])
        positive = overall <= SAME_STORY_MAX_OVERALL
        precision, recall, f1, _ = precision_recall_fscore_support(
            positive, called, average="binary", zero_division=0
        )
        result.update(
            same_story_f1=float(f1), same_story_precision=float(precision), same_story_recall=float(recall)
        )
    return result
