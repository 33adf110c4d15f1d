"""The learnt pair map (`model.coverage.pair_map`) as a route of the pair scorer's graded output,
out of fold, beside the scorer without it.

Protocol: the graded pairs of ``semeval`` (161 en-en) and ``semeval_ml`` (1,122, 15 language pairs)
are split into ``--folds`` folds grouped by article (pairs sharing a text, linked through any chain
of shared texts, sit in one fold: `model.coverage.pair_map.linked_groups`); ``storychains`` and
``tgpairs`` join every training part. Each fold's scorer is fitted as ``training fit --pairs`` with
the four shared files fits it (`PairScorer.fit`, one group per file, each pair's languages), its
language means from the training part's texts only (no grades), and scores the held-out fold:

- ``before``: the scorer as it is without the map (routes: map, cosine line, centred line);
- ``after``: with the pair vectors, so it also learns the map and its route (`LEARNT_MARGIN`);
- ``after_leads_<m>``: the same fit with the learnt route taken only where it leads every other
  route by ``m`` out of fold; ``after_replaces_lines_<m>``: taken where the best route is a cosine
  line (raw or centred), and elsewhere where it leads by ``m`` (``inf``: never);
- ``cosine``, ``centred``, ``learnt``: the raw, centred and learnt cosine alone (the last out of
  fold twice over: the outer fold's map never saw the pair); ``learnt_uncentred``: the same map
  learnt on the raw vectors, without the language means.

Reported: |Pearson| with the grade on semeval (English) and semeval_ml (pooled and per language
pair), how many of the 15 language pairs read below the raw cosine, the routes each fold chose,
and ``probability_moved``: the largest change of the same-story probability (what verdicts and the
story rule cut) between ``before`` and ``after`` over every held-out and storychains pair, which is
0 when stories and verdicts are untouched.

    nice -n 10 python -m benchmarks.pairs_learnt --out benchmarks/results/pairs_learnt_e5.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr
from sklearn.model_selection import GroupKFold

from benchmarks.common import EMBEDDING_CACHE, corpus_dir, emit
from benchmarks.pairs_out_of_set import MIN_PAIRS_PER_LANGUAGE, SETS, HeldSet, load_set, make_encode
from model.coverage.pair_centring import LanguageMeans
from model.coverage.pair_evidence import FEATURE_INDEX
from model.coverage.pair_map import PairMap, linked_groups
from model.coverage.pair_scorer import BUILT_IN, PairScorer, best_route
from model.encoders.registry import E5_NAME, ENCODER_NAMES

GRADED_SETS = ("semeval", "semeval_ml")
# (routes the learnt line replaces, margin by which it takes any other) of the route choices measured
# beside the shipped one (`best_route`).
CHOICES: tuple[tuple[tuple[str, ...], float], ...] = tuple(
    (replaces, margin)
    for replaces in ((), ("cosine", "centred"))
    for margin in (0.0, 0.02, 0.04, float("inf"))
)


def _r(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    return round(abs(float(pearsonr(x, y)[0])), 4) if len(x) > 2 and np.ptp(x) > 0 else 0.0


def _rows(s: HeldSet, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Vector rows (a, b of each pair) of pair rows ``rows``."""
    return np.column_stack([2 * rows, 2 * rows + 1]).ravel()


def _with_means(
    s: HeldSet, means: LanguageMeans, scorer: PairScorer | None = None
) -> npt.NDArray[np.float64]:
    """``s.X`` with its centred column from ``means`` and (``scorer`` with a map) its learnt column."""
    assert s.vectors is not None and s.languages is not None
    X = s.X.copy()
    even = np.arange(0, len(s.vectors), 2)
    cosine = X[:, FEATURE_INDEX["cosine"]]
    centred = means.centred_cosines(s.vectors, s.languages, even, even + 1)
    X[:, FEATURE_INDEX["centred_cosine"]] = np.where(np.isnan(centred), cosine, centred)
    X[:, FEATURE_INDEX["learnt_cosine"]] = cosine
    pair_map = getattr(scorer, "pair_map_", None)
    if pair_map is not None:
        learnt = means.centred_cosines(s.vectors, s.languages, even, even + 1, pair_map)
        X[:, FEATURE_INDEX["learnt_cosine"]] = np.where(np.isnan(learnt), cosine, learnt)
    return X


def _fit(
    parts: list[tuple[HeldSet, npt.NDArray[np.intp]]], means: LanguageMeans, related: float, *, learn: bool
) -> PairScorer:
    """`PairScorer` fitted on these rows of these sets as ``training fit --pairs`` fits it."""
    X = np.vstack([_with_means(s, means)[rows] for s, rows in parts])
    grades = np.concatenate([s.overall[rows] for s, rows in parts])
    groups = np.concatenate([[s.name] * len(rows) for s, rows in parts])
    keys = np.concatenate([s.keys[rows] for s, rows in parts])  # type: ignore[index]
    extra: dict[str, Any] = {}
    if learn:
        vectors = np.vstack([s.vectors[_rows(s, rows)] for s, rows in parts])  # type: ignore[index]
        languages = [s.languages[v] for s, rows in parts for v in _rows(s, rows)]  # type: ignore[index]
        extra = {"vectors": vectors, "languages": languages, "means": means}
    return PairScorer(related_cosine=related).fit(X, grades, groups=groups, language_pairs=keys, **extra)


def _choice_name(replaces: tuple[str, ...], margin: float) -> str:
    return f"after_{'replaces_lines' if replaces else 'leads'}_{margin:g}"


def _with_choice(scorer: PairScorer, replaces: tuple[str, ...], margin: float) -> dict[str, str]:
    """The scorer's language routes under another route choice (`best_route`'s arguments)."""
    figures = scorer.graded_["cross_validated"]["by_language"]
    return {k: best_route(f, learnt_replaces=replaces, learnt_margin=margin) for k, f in figures.items()}


def _uncentred_map(graded: list[HeldSet], rows: list[npt.NDArray[np.intp]]) -> PairMap:
    """The same map learnt on the raw vectors (no language means): what centring first is for."""
    a = np.vstack([s.vectors[2 * r] for s, r in zip(graded, rows, strict=True)])  # type: ignore[index]
    b = np.vstack([s.vectors[2 * r + 1] for s, r in zip(graded, rows, strict=True)])  # type: ignore[index]
    grades = np.concatenate([s.overall[r] for s, r in zip(graded, rows, strict=True)])
    texts = [(s.texts[2 * k], s.texts[2 * k + 1]) for s, r in zip(graded, rows, strict=True) for k in r]  # type: ignore[index]
    return PairMap().fit(a, b, grades, linked_groups([x for x, _ in texts], [y for _, y in texts]))


def _map_cost(graded: list[HeldSet], rows: list[npt.NDArray[np.intp]]) -> dict[str, Any]:
    """Wall and CPU seconds of one `PairMap` fit on every graded pair (passes chosen by its CV, then
    the final fit), as ``training fit --pairs`` runs it on the shared files."""
    parts = list(zip(graded, rows, strict=True))
    vectors = np.vstack([s.vectors[_rows(s, r)] for s, r in parts])  # type: ignore[index]
    languages = [s.languages[v] for s, r in parts for v in _rows(s, r)]  # type: ignore[index]
    centred = LanguageMeans().fit(vectors, languages).centred(vectors, languages)
    texts = [(s.texts[2 * k], s.texts[2 * k + 1]) for s, r in parts for k in r]  # type: ignore[index]
    grades = np.concatenate([s.overall[r] for s, r in parts])
    # As `PairScorer` does: only pairs whose two sides have a language mean.
    known = ~np.isnan(centred).any(axis=1)
    keep = np.flatnonzero(known[0::2] & known[1::2])
    texts = [texts[k] for k in keep]
    wall, cpu = time.perf_counter(), time.process_time()
    fitted = PairMap().fit(
        centred[2 * keep],
        centred[2 * keep + 1],
        grades[keep],
        linked_groups([a for a, _ in texts], [b for _, b in texts]),
    )
    return {
        "pairs": len(keep),
        "epochs": fitted.epochs_,
        "cv": fitted.cv_,
        "seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def measure(sets: list[HeldSet], encoder: str, folds: int) -> dict[str, Any]:
    by_name = {s.name: s for s in sets}
    graded = [by_name[n] for n in GRADED_SETS]
    always = [s for s in sets if s.name not in GRADED_SETS]
    # One pool of the graded pairs, folds grouped by shared texts across both files.
    pool = [(s, k) for s in graded for k in range(len(s.overall))]
    texts = [(s.texts[2 * k], s.texts[2 * k + 1]) for s, k in pool]  # type: ignore[index]
    linked = linked_groups([a for a, _ in texts], [b for _, b in texts])
    related = BUILT_IN[encoder]["related_cosine"] if encoder in BUILT_IN else PairScorer().related_cosine
    columns = [
        "cosine",
        "centred",
        "learnt",
        "learnt_uncentred",
        "before",
        "after",
        *(_choice_name(*c) for c in CHOICES),
    ]
    scores = {s.name: {c: np.zeros(len(s.overall)) for c in columns} for s in graded}
    fits, moved = [], 0.0
    started, cpu = time.perf_counter(), time.process_time()
    for fold, (train, test) in enumerate(GroupKFold(folds).split(np.zeros(len(pool)), groups=linked)):
        pick = lambda index, s: np.array([pool[i][1] for i in index if pool[i][0] is s], dtype=np.intp)  # noqa: E731
        parts = [(s, pick(train, s)) for s in graded] + [(s, np.arange(len(s.overall))) for s in always]
        # Language means from the training part's texts (no grades), as a bundle takes its own.
        vectors = np.vstack([s.vectors[_rows(s, rows)] for s, rows in parts])  # type: ignore[index]
        languages = [s.languages[v] for s, rows in parts for v in _rows(s, rows)]  # type: ignore[index]
        means = LanguageMeans().fit(vectors, languages)
        uncentred = _uncentred_map(graded, [pick(train, s) for s in graded])
        before = _fit(parts, means, related, learn=False)
        after = _fit(parts, means, related, learn=True)
        routes = {c: _with_choice(after, *c) for c in CHOICES}
        for s in graded:
            rows = pick(test, s)
            X = _with_means(s, means, after)[rows]
            keys = s.keys[rows]  # type: ignore[index]
            out = scores[s.name]
            out["cosine"][rows] = X[:, FEATURE_INDEX["cosine"]]
            out["centred"][rows] = X[:, FEATURE_INDEX["centred_cosine"]]
            out["learnt"][rows] = X[:, FEATURE_INDEX["learnt_cosine"]]
            out["learnt_uncentred"][rows] = uncentred.cosines(s.vectors[2 * rows], s.vectors[2 * rows + 1])  # type: ignore[index]
            out["before"][rows] = before.similarity(X, keys)
            out["after"][rows] = after.similarity(X, keys)
            shipped = after.graded_["language_routes"]
            for c in CHOICES:
                after.graded_["language_routes"] = routes[c]
                out[_choice_name(*c)][rows] = after.similarity(X, keys)
            after.graded_["language_routes"] = shipped
            moved = max(moved, float(np.abs(after.predict(X) - before.predict(X)).max()))
        story = by_name["storychains"]
        moved = max(moved, float(np.abs(after.predict(story.X) - before.predict(story.X)).max()))
        fits.append(
            {
                "fold": fold,
                "test_pairs": len(test),
                "pair_map": after.graded_.get("pair_map"),
                "routes_before": before.graded_["language_routes"],
                "routes_after": after.graded_["language_routes"],
                "figures_after": after.graded_["cross_validated"]["by_language"],
            }
        )
    fit_seconds = round(time.perf_counter() - started, 1)
    fit_cpu_seconds = round(time.process_time() - cpu, 1)
    en, ml = by_name["semeval"], by_name["semeval_ml"]
    assert ml.keys is not None
    lps = [k for k in sorted({k for k in ml.keys if k}) if (ml.keys == k).sum() >= MIN_PAIRS_PER_LANGUAGE]
    per_pair = {
        k: {"n": int((ml.keys == k).sum())}
        | {c: _r(scores["semeval_ml"][c][ml.keys == k], ml.overall[ml.keys == k]) for c in columns}
        for k in lps
    }
    below = {
        c: sorted(k for k, f in per_pair.items() if f[c] < f["cosine"]) for c in columns if c != "cosine"
    }
    cross = np.array([bool(k) and k.split("-")[0] != k.split("-")[1] for k in ml.keys])
    return {
        "semeval_en": {"n": len(en.overall)} | {c: _r(scores["semeval"][c], en.overall) for c in columns},
        "semeval_ml": {"n": len(ml.overall)} | {c: _r(scores["semeval_ml"][c], ml.overall) for c in columns},
        "semeval_ml_cross_lingual": {
            c: _r(scores["semeval_ml"][c][cross], ml.overall[cross]) for c in columns
        },
        "semeval_ml_monolingual": {
            c: _r(scores["semeval_ml"][c][~cross], ml.overall[~cross]) for c in columns
        },
        "by_language_pair": per_pair,
        "below_cosine": {c: {"count": len(v), "pairs": v} for c, v in below.items()},
        "probability_moved": moved,
        "fits": fits,
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu_seconds,
        "map_cost": _map_cost(graded, [np.arange(len(s.overall)) for s in graded]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_learnt",
        description="The pair scorer with and without the learnt pair map's route, out of fold on the "
        "shared graded pairs; prints one JSON object.",
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument("--encoder", default=E5_NAME, choices=ENCODER_NAMES, help="encoder (default e5)")
    parser.add_argument("--folds", type=int, default=5, help="outer folds, grouped by article (5)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache (SQLite); default ~/.cache/news-desk/embeddings.sqlite",
    )
    parser.add_argument(
        "--e5-runtime",
        default="native",
        choices=("native", "torch", "onnx-int8"),
        help="e5's runtime (default native: the engine the pair figures were measured with)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    data = args.data or corpus_dir()
    started, cpu = time.perf_counter(), time.process_time()
    encode = make_encode(args.encoder, args.cache, e5_runtime=args.e5_runtime)
    sets = [load_set(data, name, encode) for name in SETS]
    report: dict[str, Any] = {
        "data": str(data),
        "encoder": args.encoder,
        "e5_runtime": args.e5_runtime if args.encoder == E5_NAME else None,
        "folds": args.folds,
        "load_average_before": [round(x, 1) for x in os.getloadavg()],
    }
    report |= measure(sets, args.encoder, args.folds)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    report["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
