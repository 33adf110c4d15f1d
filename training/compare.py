"""``python -m training compare``: champion vs challenger on the same held-out articles.

The held-out articles are the seeds that the bundles' recorded split (`EvalSplit`) holds out,
minus any article either bundle was trained on (its index knows every training article), so
neither model is measured on text it has seen. ``--no-split`` takes every given seed instead
(a separate test folder). Both models answer the same articles, pairs and related-search queries;
`model.evaluation.comparison` turns the answers into bootstrap intervals and the gate's verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.articles.seeds import SeedCorpus
from model.coverage.pair_files import read_pairs_tsv
from model.encoders.registry import vectors_id
from model.evaluation.comparison import Gate, HeldOut, PairOutputs, compare_held_out
from model.evaluation.coverage import related_retrieval_per_query
from model.evaluation.split import EvalSplit
from model.news_model import NewsModel
from training.trainer import SCORE_FIELDS, embed_articles, split_holdout, subset_corpus

logger = logging.getLogger(__name__)


@dataclass
class HeldOutSet:
    corpus: SeedCorpus
    split: dict[str, Any] | None
    excluded_known: int
    note: str | None = None


def held_out_set(
    corpus: SeedCorpus, champion: NewsModel, challenger: NewsModel, *, use_split: bool = True
) -> HeldOutSet:
    """The seeds both models are measured on (see the module docstring)."""
    note = None
    split = None
    if use_split:
        records = [m.manifest.get("eval_split") for m in (challenger, champion)]
        splits = [EvalSplit.from_record(r) for r in records]
        split = next((s for s in splits if s is not None and s.fraction > 0), None)
        if split is None:
            split = EvalSplit()
            note = f"neither bundle records an evaluation split: using the default ({split.fraction:.0%})"
        elif splits[0] is not None and splits[1] is not None and splits[0] != splits[1]:
            note = "the bundles record different splits: using the challenger's"
        _, held = split_holdout(corpus, split.fraction)
    else:
        held = subset_corpus(corpus, corpus.main_ids)
    known = [i for i in held.articles if champion.index.known(i) is not None or challenger.index.known(i)]
    for article_id in known:
        del held.articles[article_id]
    held.links = [(a, b) for a, b in held.links if a in held.articles and b in held.articles]
    held.main_ids = [m for m in held.main_ids if m in held.articles]
    return HeldOutSet(held, split.to_record() if split else None, len(known), note)


def collect_answers(
    held: SeedCorpus,
    champion: NewsModel,
    challenger: NewsModel,
    *,
    pairs: Sequence[Path] = (),
    progress: bool = False,
) -> HeldOut:
    """Both models' answers on the held-out articles, the graded pairs and the related queries."""
    data = HeldOut()
    articles = list(held.articles.values())
    models = (champion, challenger)
    # Each model answers from its own encoder's vectors (two bundles may be built on different
    # encoders); one embedding serves both when their vectors are the same kind.
    shared = vectors_id(champion.embedder) == vectors_id(challenger.embedder)
    embedders = (
        (challenger.embedder, challenger.embedder) if shared else (champion.embedder, challenger.embedder)
    )
    both = [embed_articles(e, articles, progress) if articles else None for e in dict.fromkeys(embedders)]
    per_model = (both[0], both[-1])
    labelled = [i for i, article in enumerate(articles) if article.topics]
    if per_model[0] is not None and labelled and all(m.topics is not None for m in models):
        chosen = [articles[i] for i in labelled]
        data.topics_true = [set(a.topics) for a in chosen]
        answers = [
            [{t.label for t in row[0]} for row in m.topics.predict(chosen, v[labelled])]  # type: ignore[union-attr,index]
            for m, v in zip(models, per_model, strict=True)
        ]
        data.topics = (answers[0], answers[1])
    for name in SCORE_FIELDS:
        have = [i for i, a in enumerate(articles) if getattr(a, name) is not None]
        if per_model[0] is None or not have or not all(name in m.scores for m in models):
            continue
        chosen = [articles[i] for i in have]
        true = np.array([float(getattr(a, name)) for a in chosen])
        predicted = [
            np.array([p.value for p in m.scores[name].predict(chosen, v[have])])  # type: ignore[index]
            for m, v in zip(models, per_model, strict=True)
        ]
        data.scores[name] = (true, predicted[0], predicted[1])
    if held.links and per_model[0] is not None:
        rows = [
            related_retrieval_per_query(
                held,
                {article.id: v[i] for i, article in enumerate(articles)},  # type: ignore[index]
                m.pair_scorer,
            )
            for m, v in zip(models, per_model, strict=True)
        ]
        common = sorted({q for q, _, _ in rows[0]} & {q for q, _, _ in rows[1]})
        recall = [{q: r for q, r, _ in per} for per in rows]
        data.related = (np.array([recall[0][q] for q in common]), np.array([recall[1][q] for q in common]))
    graded = [pair for path in pairs for pair in read_pairs_tsv(path)]
    if graded:
        outputs = []
        for m in models:
            va = m.embedder.encode([pair.a.text for pair in graded])
            vb = m.embedder.encode([pair.b.text for pair in graded])
            found = [m.pair_scorer.compare(p.a, p.b, a, b) for p, a, b in zip(graded, va, vb, strict=True)]
            outputs.append(
                PairOutputs(
                    scores=np.array([c.score for c in found]),
                    same_story=np.array([c.verdict in ("same_story", "duplicate") for c in found]),
                )
            )
        data.pairs_overall = np.array([p.overall for p in graded])
        data.pairs = (outputs[0], outputs[1])
    return data


def compare_models(
    champion: NewsModel,
    challenger: NewsModel,
    corpus: SeedCorpus,
    *,
    gate: Gate,
    pairs: Sequence[Path] = (),
    use_split: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """The whole comparison as one JSON-ready dict, with the gate's verdict and reasons."""
    held = held_out_set(corpus, champion, challenger, use_split=use_split)
    labelled = sum(1 for a in held.corpus.articles.values() if a.topics)
    logger.info(
        "held out: %d articles (%d with topics), %d left out as training articles of either bundle",
        len(held.corpus.articles),
        labelled,
        held.excluded_known,
    )
    data = collect_answers(held.corpus, champion, challenger, pairs=pairs, progress=progress)
    result = compare_held_out(data, rounds=gate.rounds, confidence=gate.confidence, seed=gate.seed)
    promote, reasons = gate.decide(result, held_out=len(held.corpus.articles))
    return {
        "verdict": "promote" if promote else "reject",
        "reasons": reasons,
        "champion": champion.version,
        "challenger": challenger.version,
        "held_out": {
            "articles": len(held.corpus.articles),
            "with_topics": labelled,
            "excluded_as_training": held.excluded_known,
            "pairs": 0 if data.pairs_overall is None else len(data.pairs_overall),
            "related_queries": 0 if data.related is None else len(data.related[0]),
            "split": held.split,
            "note": held.note,
        },
        "gate": gate.to_record(),
        **result,
    }
