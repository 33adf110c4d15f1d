"""The centred cosine in the built-in pair scorers' graded output, measured per language pair.

`PairScorer.default` now carries each language's mean vector (`model.coverage.pair_centring`,
learnt from the shared pair sets' texts, no grades) and, per language pair, a third route for its
graded output: the centred cosine on the map's scale, beside the map and the raw cosine's line. This
measures, for each encoder, on the 1,122 semeval_ml pairs (which the built-in scorer's numbers were
not fitted on) and the 161 English SemEval pairs:

- ``cosine`` and ``centred_cosine``: the raw and the centred encoder cosine alone;
- ``routes_before``: the graded output with each language pair's route chosen between the map and
  the cosine line (the built-in scorer before the centred cosine);
- ``routes_now``: chosen among map, cosine line and centred line (the built-in scorer now);
- both also with each language pair's route chosen **out of fold** (``*_out_of_fold``): the pair's
  pairs split in two halves at random, each half scored by the route that won on the other half,
  ``--repeats`` splits averaged: what a route choice on pairs it did not see gives;
- ``probability_unchanged``: the same-story probability (what verdicts and the story rule cut) does
  not read the centred cosine: the largest change of `PairScorer.predict` over every shared pair
  when the centred column is replaced by the raw cosine;
- ``compare_many_200``: what the centring costs a query: one `PairScorer.compare_many` against 200
  candidates with the language means and without.

|Pearson| with the grade throughout (what ``training evaluate --pairs`` reports).

    nice -n 10 python -m benchmarks.pairs_centred --out benchmarks/results/pairs_centred.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr

from benchmarks.common import EMBEDDING_CACHE, corpus_dir, emit
from benchmarks.pairs_out_of_set import (
    MIN_PAIRS_PER_LANGUAGE,
    SETS,
    HeldSet,
    centre,
    fit_means,
    load_set,
    make_encode,
    route_scores,
)
from model.coverage.pair_evidence import FEATURE_INDEX
from model.coverage.pair_files import read_pairs_tsv
from model.coverage.pair_scorer import PairScorer, best_route

ENCODERS = ("minilm", "e5-multilingual")


def _r(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    return abs(float(pearsonr(x, y)[0])) if np.ptp(x) > 0 else 0.0


def _routed(
    by_route: dict[str, npt.NDArray[np.float64]], groups: dict[str, npt.NDArray[np.intp]], y: Any, routes: Any
) -> tuple[npt.NDArray[np.float64], dict[str, str]]:
    """Each language pair scored by the route that correlates most with ``y`` on its own pairs."""
    out, chosen = np.zeros(len(y)), {}
    for key, rows in groups.items():
        chosen[key] = best_route({r: _r(by_route[r][rows], y[rows]) for r in routes})
        out[rows] = by_route[chosen[key]][rows]
    return out, chosen


def _out_of_fold(
    by_route: dict[str, npt.NDArray[np.float64]],
    groups: dict[str, npt.NDArray[np.intp]],
    y: npt.NDArray[np.float64],
    routes: tuple[str, ...],
    seed: int,
) -> npt.NDArray[np.float64]:
    """Each half of each language pair scored by the route that won on the other half."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y))
    for rows in groups.values():
        halves = np.array_split(rng.permutation(rows), 2)
        for held, other in ((halves[0], halves[1]), (halves[1], halves[0])):
            route = best_route({r: _r(by_route[r][other], y[other]) for r in routes})
            out[held] = by_route[route][held]
    return out


def measure(sets: list[HeldSet], encoder: str, repeats: int) -> dict[str, Any]:
    scorer = PairScorer.default(encoder=encoder)
    ml = next(s for s in sets if s.name == "semeval_ml")
    en = next(s for s in sets if s.name == "semeval")
    assert ml.keys is not None
    y = ml.overall
    groups = {
        str(k): np.flatnonzero(ml.keys == k)
        for k in sorted({k for k in ml.keys if k})
        if (ml.keys == k).sum() >= MIN_PAIRS_PER_LANGUAGE
    }
    by_route = route_scores(scorer, ml)
    by_route["raw"] = ml.X[:, FEATURE_INDEX["cosine"]]
    by_route["centred_raw"] = ml.X[:, FEATURE_INDEX["centred_cosine"]]
    before, routes_before = _routed(by_route, groups, y, ("map", "cosine"))
    now, routes_now = _routed(by_route, groups, y, ("map", "cosine", "centred"))
    shipped = scorer.similarity(ml.X, ml.keys)
    oof = {
        name: [_out_of_fold(by_route, groups, y, routes, seed) for seed in range(repeats)]
        for name, routes in (
            ("routes_before", ("map", "cosine")),
            ("routes_now", ("map", "cosine", "centred")),
        )
    }
    columns = {
        "cosine": by_route["raw"],
        "centred_cosine": by_route["centred_raw"],
        "routes_before": before,
        "routes_now": now,
    }

    def figures(rows: npt.NDArray[np.intp]) -> dict[str, float]:
        out = {name: round(_r(v[rows], y[rows]), 4) for name, v in columns.items()}
        for name, runs in oof.items():
            out[f"{name}_out_of_fold"] = round(float(np.mean([_r(v[rows], y[rows]) for v in runs])), 4)
        return out

    per_pair = {key: {"n": len(rows), **figures(rows)} for key, rows in groups.items()}
    below = {
        name: sorted(k for k, f in per_pair.items() if f[name] < f["cosine"])
        for name in ("routes_before", "routes_now", "routes_before_out_of_fold", "routes_now_out_of_fold")
    }
    # The probability must not move: replace the centred column by the raw cosine and compare.
    moved = 0.0
    for s in sets:
        plain = s.X.copy()
        plain[:, FEATURE_INDEX["centred_cosine"]] = plain[:, FEATURE_INDEX["cosine"]]
        moved = max(moved, float(np.abs(scorer.predict(s.X) - scorer.predict(plain)).max()))
    return {
        "language_means": sorted(scorer.language_means_.means_) if scorer.language_means_ else [],
        "semeval_ml": {"n": len(y), **figures(np.arange(len(y))), "shipped": round(_r(shipped, y), 4)},
        "semeval_en": {
            "n": len(en.overall),
            "cosine": round(_r(en.X[:, FEATURE_INDEX["cosine"]], en.overall), 4),
            "centred_cosine": round(_r(en.X[:, FEATURE_INDEX["centred_cosine"]], en.overall), 4),
            "shipped": round(_r(scorer.similarity(en.X, en.keys), en.overall), 4),
        },
        "by_language_pair": per_pair,
        "below_cosine": below,
        "routes_before": routes_before,
        "routes_now": routes_now,
        "routes_shipped": scorer.graded_["language_routes"],
        "probability_unchanged": moved,
    }


def compare_cost(data: Path, sets: list[HeldSet], encoder: str, candidates: int = 200) -> dict[str, float]:
    """Milliseconds (wall, CPU) of one `PairScorer.compare_many` of a semeval_ml article against
    ``candidates`` others, with the built-in language means and without (20 runs each)."""
    ml = next(s for s in sets if s.name == "semeval_ml")
    assert ml.vectors is not None
    articles = [p.a for p in read_pairs_tsv(data / "semeval_ml" / "pairs.tsv")][: candidates + 1]
    vectors = ml.vectors[0 : 2 * len(articles) : 2]
    scorer = PairScorer.default(encoder=encoder)
    out = {}
    for label, means in (("with_means", scorer.language_means_), ("without_means", None)):
        scorer.language_means_ = means
        scorer.compare_many(articles[0], articles[1:], vectors[0], vectors[1:])
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(20):
            scorer.compare_many(articles[0], articles[1:], vectors[0], vectors[1:])
        out[f"{label}_wall_ms"] = round((time.perf_counter() - wall) / 20 * 1e3, 1)
        out[f"{label}_cpu_ms"] = round((time.process_time() - cpu) / 20 * 1e3, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_centred",
        description="The built-in pair scorers' graded output with and without the centred-cosine "
        "route, per language pair; prints one JSON object.",
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache (SQLite); default ~/.cache/news-desk/embeddings.sqlite",
    )
    parser.add_argument("--repeats", type=int, default=20, help="random half splits per language pair (20)")
    parser.add_argument(
        "--e5-runtime",
        default="native",
        choices=("native", "torch", "onnx-int8"),
        help="e5's runtime (default native: the engine the built-in numbers were fitted with)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    data = args.data or corpus_dir()
    started, cpu = time.perf_counter(), time.process_time()
    report: dict[str, Any] = {"data": str(data), "repeats": args.repeats, "e5_runtime": args.e5_runtime}
    for encoder in ENCODERS:
        sets = [
            load_set(data, name, make_encode(encoder, args.cache, e5_runtime=args.e5_runtime))
            for name in SETS
        ]
        # The same means `PairScorer.default` ships (`benchmarks.pairs_out_of_set --means-out`).
        centre(sets, fit_means(sets))
        report[encoder] = measure(sets, encoder, args.repeats)
        report[encoder]["compare_many_200"] = compare_cost(data, sets, encoder)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
