"""Same-story pair scoring on every labelled pair set, against TF-IDF and MiniLM cosine, in one run.

Sets (under ``$NEWSDESK_CORPUS_DIR``, default ``../shared/data``): ``storychains`` (4,950 pairs,
88 same story chain; CC BY-NC 4.0), ``semeval`` (161 en-en SemEval-2022 Task 8 pairs, same story
= ``overall`` ≤ 1.5) and ``tgpairs`` (35 pairs, 18 same thread).

Scores compared on the same folds:

- ``tfidf_cosine``: TF-IDF cosine (sublinear tf, English stop words, fitted on the set's texts);
- ``minilm_cosine``: all-MiniLM-L6-v2 cosine of title + excerpt;
- ``pair_scorer``: `PairScorer` with its default features (MiniLM cosine, the square root of the
  hashed character TF-IDF cosine and the word TF-IDF cosine, with the set's own IDF; chosen out of
  set by `benchmarks.pairs_out_of_set`), fitted on the training pairs of all sets.

Protocol: grouped cross-validation, ``--folds`` folds repeated ``--repeats`` times. Groups
(storychains chains, connected components of the pair graph elsewhere) are dealt to folds per
set; a pair is tested in the fold of one of its articles, and a fold trains only on pairs with
*neither* article in it. ROC AUC is over the pooled out-of-fold scores of a set; F1 is at the
best-F1 cut on the same set's *training* pairs (for the baselines too). Mean ± std over repeats.

    .venv/bin/python -m benchmarks.pairs                 # prints JSON
    .venv/bin/python -m benchmarks.pairs --variants      # also the feature variants tried
    .venv/bin/python -m benchmarks.pairs --fit-default   # also PairScorer.default's constants
    .venv/bin/python -m benchmarks.pairs --loco          # also leave-one-set-out

``--loco`` fits on two sets and tests on the third (AUC, and F1 at the best-F1 cut of the two
training sets' pairs), a check that the ranking transfers to labels defined another way.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

from benchmarks.common import EMBEDDING_CACHE, corpus_dir
from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.coverage.pair_evidence import FEATURE_NAMES, HashedIdf, indexed_pair_evidence, pair_feature_matrix
from model.coverage.pair_files import read_pairs_tsv
from model.coverage.pair_scorer import DEFAULT_FEATURES, PairScorer
from model.encoders.embedder import Embedder, EmbeddingCache
from model.evaluation.thresholds import best_f1_threshold

logger = logging.getLogger("benchmarks.pairs")

SETS = ("storychains", "semeval", "tgpairs")


@dataclass
class PairSet:
    """The articles of one set and its pairs as index arrays into them."""

    name: str
    articles: list[Article]
    i: npt.NDArray[np.intp]
    j: npt.NDArray[np.intp]
    y: npt.NDArray[np.int_]
    groups: npt.NDArray[np.intp]  # per article: chain or connected component


def _components(n: int, i: npt.NDArray[np.intp], j: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def load_set(data: Path, name: str) -> PairSet:
    """A set with 0/1 labels and seed files (storychains, tgpairs) or SemEval's graded TSV."""
    if name == "semeval":
        pairs = read_pairs_tsv(data / name / "pairs.tsv")
        by_id: dict[str, Article] = {}
        for p in pairs:
            for a in (p.a, p.b):
                if a.id not in by_id or len(a.text) > len(by_id[a.id].text):
                    by_id[a.id] = a
        ids = sorted(by_id)
        index = {a: k for k, a in enumerate(ids)}
        i = np.array([index[p.a.id] for p in pairs])
        j = np.array([index[p.b.id] for p in pairs])
        y = np.array([int(p.same_story) for p in pairs])
        return PairSet(name, [by_id[a] for a in ids], i, j, y, _components(len(ids), i, j))
    corpus = read_seeds([data / name])
    by_file = {Path(a.source or "").name: a for a in corpus.articles.values()}
    files = sorted(by_file)
    index = {f: k for k, f in enumerate(files)}
    rows = list(csv.DictReader((data / name / "pairs.tsv").open(encoding="utf-8"), delimiter="\t"))
    i = np.array([index[r["file1"]] for r in rows])
    j = np.array([index[r["file2"]] for r in rows])
    y = np.array([int(r["label"]) for r in rows])
    groups = _components(len(files), i, j)
    chains = data / name / "chains.tsv"
    if chains.is_file():
        chain = {r["file"]: int(r["chain"]) for r in csv.DictReader(chains.open(), delimiter="\t")}
        groups = np.array([chain[f] for f in files])
    return PairSet(name, [by_file[f] for f in files], i, j, y, groups)


@dataclass
class Pooled:
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int_]
    set_id: npt.NDArray[np.intp]
    ia: npt.NDArray[np.intp]
    ib: npt.NDArray[np.intp]
    art_set: npt.NDArray[np.intp]
    art_group: npt.NDArray[np.intp]
    baselines: dict[str, npt.NDArray[np.float64]]


def pool(sets: list[PairSet], embedder: Embedder) -> Pooled:
    Xs, ys, sids, ias, ibs, arts, groups = [], [], [], [], [], [], []
    tfidf, minilm = [], []
    offset = gbase = 0
    for s, ps in enumerate(sets):
        texts = [a.text for a in ps.articles]
        vectors = embedder.encode(texts)
        idf = HashedIdf().fit(texts)  # the set's own articles, as a bundle fits on its own
        X = pair_feature_matrix(indexed_pair_evidence(ps.articles, vectors, ps.i, ps.j, idf))
        Xs.append(X)
        ys.append(ps.y)
        sids.append(np.full(len(ps.y), s))
        ias.append(ps.i + offset)
        ibs.append(ps.j + offset)
        arts.append(np.full(len(ps.articles), s))
        groups.append(ps.groups + gbase)
        offset += len(ps.articles)
        gbase += int(ps.groups.max()) + 1
        m = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(texts)
        tfidf.append(np.asarray(m[ps.i].multiply(m[ps.j]).sum(axis=1)).ravel())
        minilm.append(X[:, FEATURE_NAMES.index("cosine")])
    return Pooled(
        np.vstack(Xs),
        np.concatenate(ys),
        np.concatenate(sids),
        np.concatenate(ias),
        np.concatenate(ibs),
        np.concatenate(arts),
        np.concatenate(groups),
        {"tfidf_cosine": np.concatenate(tfidf), "minilm_cosine": np.concatenate(minilm)},
    )


def grouped_folds(d: Pooled, folds: int, seed: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(fold of each article, test fold of each pair); see the module docstring."""
    rng = np.random.default_rng(seed)
    art_fold = np.empty(len(d.art_group), dtype=int)
    for s in np.unique(d.art_set):
        members = np.flatnonzero(d.art_set == s)
        gs = np.unique(d.art_group[members])
        perm = rng.permutation(len(gs))
        fold_of = {g: perm[k] % folds for k, g in enumerate(gs)}
        art_fold[members] = [fold_of[g] for g in d.art_group[members]]
    fa, fb = art_fold[d.ia], art_fold[d.ib]
    return art_fold, np.where(rng.random(len(fa)) < 0.5, fa, fb)


def _f1(called: npt.NDArray[np.bool_], y: npt.NDArray[np.int_]) -> float:
    tp = int((called & (y == 1)).sum())
    return 2 * tp / max(int(called.sum()) + int((y == 1).sum()), 1)


Fitter = Callable[
    [npt.NDArray[np.float64], npt.NDArray[np.int_]],
    Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]],
]


def scorer_fitter(**params: object) -> Fitter:
    def fit(X: npt.NDArray[np.float64], y: npt.NDArray[np.int_]) -> Callable[..., npt.NDArray[np.float64]]:
        return PairScorer(**params).fit(X, y).decision  # type: ignore[arg-type]

    return fit


def evaluate(d: Pooled, score: npt.NDArray[np.float64] | Fitter, folds: int, repeats: int) -> dict:
    """Per set: pooled out-of-fold AUC and F1 at the set's training-pair cut, mean ± std."""
    runs: dict[str, dict[str, list[float]]] = {name: {"auc": [], "f1": []} for name in SETS}
    for r in range(repeats):
        art_fold, pair_fold = grouped_folds(d, folds, r)
        oof = np.zeros(len(d.y))
        called = np.zeros(len(d.y), dtype=bool)
        for k in range(folds):
            te = pair_fold == k
            tr = (art_fold[d.ia] != k) & (art_fold[d.ib] != k)
            if isinstance(score, np.ndarray):
                s_tr, s_te = score[tr], score[te]
            else:
                predict = score(d.X[tr], d.y[tr])
                s_tr, s_te = predict(d.X[tr]), predict(d.X[te])
            oof[te] = s_te
            for s in range(len(SETS)):
                mtr, mte = d.set_id[tr] == s, d.set_id[te] == s
                cut = best_f1_threshold(s_tr[mtr], d.y[tr][mtr] == 1)
                called[np.flatnonzero(te)[mte]] = s_te[mte] >= cut
        for s, name in enumerate(SETS):
            m = d.set_id == s
            runs[name]["auc"].append(roc_auc_score(d.y[m], oof[m]))
            runs[name]["f1"].append(_f1(called[m], d.y[m]))
    return {
        name: {f"{metric}": round(float(np.mean(values)), 4) for metric, values in per.items()}
        | {f"{metric}_std": round(float(np.std(values)), 4) for metric, values in per.items()}
        for name, per in runs.items()
    }


VARIANTS: dict[str, dict[str, object]] = {
    # the earlier default: the character cosine as it is rather than its square root
    "raw_char_tfidf": {"features": ("cosine", "tfidf", "char_tfidf", "has_time_gap", "log_time_gap")},
    "raw_char_tfidf_no_word_tfidf": {"features": ("cosine", "char_tfidf", "has_time_gap", "log_time_gap")},
    "no_word_tfidf": {"features": ("cosine", "sqrt_char_tfidf", "has_time_gap", "log_time_gap")},
    "no_time_gap": {"features": ("cosine", "tfidf", "sqrt_char_tfidf")},
    "plus_lexical_dice": {"features": (*DEFAULT_FEATURES, "lexical")},
    "plus_near_duplicate": {"features": (*DEFAULT_FEATURES, "near_duplicate")},
    "plus_provider": {"features": (*DEFAULT_FEATURES, "same_provider", "has_provider")},
    "C=0.1": {"C": 0.1},
    "undated_terms": {"undated_terms": True},
    "undated_terms_C=0.1": {"undated_terms": True, "C": 0.1},
    "undated_terms_no_word_tfidf": {
        "undated_terms": True,
        "features": ("cosine", "sqrt_char_tfidf", "has_time_gap", "log_time_gap"),
    },
    "undated_terms_plus_lexical": {"undated_terms": True, "features": (*DEFAULT_FEATURES, "lexical")},
    "C=10": {"C": 10.0},
}


def leave_one_set_out(d: Pooled) -> dict:
    """Per held-out set: AUC, and F1 at the best-F1 cut of the other two sets' pairs, per score."""
    scores: dict[str, npt.NDArray[np.float64] | Fitter] = {**d.baselines, "pair_scorer": scorer_fitter()}
    out: dict[str, dict] = {}
    for s, name in enumerate(SETS):
        tr, te = d.set_id != s, d.set_id == s
        out[name] = {}
        for label, score in scores.items():
            if isinstance(score, np.ndarray):
                s_tr, s_te = score[tr], score[te]
            else:
                predict = score(d.X[tr], d.y[tr])
                s_tr, s_te = predict(d.X[tr]), predict(d.X[te])
            cut = best_f1_threshold(s_tr, d.y[tr] == 1)
            out[name][label] = {
                "auc": round(float(roc_auc_score(d.y[te], s_te)), 4),
                "f1": round(_f1(s_te >= cut, d.y[te]), 4),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs",
        description="Cross-validated same-story ROC AUC and F1 of PairScorer vs TF-IDF and MiniLM cosine "
        "on storychains, SemEval-2022 and tgpairs, in one run; prints one JSON object.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="corpus folder (default $NEWSDESK_CORPUS_DIR or ../shared/data)",
    )
    parser.add_argument("--folds", type=int, default=5, help="CV folds (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="CV repeats with reshuffled folds (default 5)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache (SQLite); default ~/.cache/news-desk/embeddings.sqlite",
    )
    parser.add_argument("--variants", action="store_true", help="also score the feature variants tried")
    parser.add_argument(
        "--fit-default", action="store_true", help="also print PairScorer constants fitted on all pairs"
    )
    parser.add_argument(
        "--loco", action="store_true", help="also fit on two sets and test on the third, for each set"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    data = args.data or corpus_dir()
    missing = [name for name in SETS if not (data / name / "pairs.tsv").is_file()]
    if missing:
        parser.error(f"no pairs.tsv for {missing} under {data}; pass --data or set NEWSDESK_CORPUS_DIR")
    sets = [load_set(data, name) for name in SETS]
    d = pool(sets, Embedder(cache=EmbeddingCache(args.cache)))
    report: dict = {
        "data": str(data),
        "pairs": {ps.name: {"n": len(ps.y), "positive": int(ps.y.sum())} for ps in sets},
        "cv": f"grouped {args.folds}-fold x {args.repeats} repeats, fitted on the union of the sets",
        "f1_cut": "best-F1 cut on the same set's training pairs",
        "tfidf_cosine": evaluate(d, d.baselines["tfidf_cosine"], args.folds, args.repeats),
        "minilm_cosine": evaluate(d, d.baselines["minilm_cosine"], args.folds, args.repeats),
        "pair_scorer": evaluate(d, scorer_fitter(), args.folds, args.repeats),
    }
    if args.variants:
        report["variants"] = {
            name: evaluate(d, scorer_fitter(**params), args.folds, args.repeats)
            for name, params in VARIANTS.items()
        }
    if args.loco:
        report["leave_one_set_out"] = leave_one_set_out(d)
    if args.fit_default:
        fitted = PairScorer().fit(d.X, d.y)
        report["fitted_on_all"] = {
            "features": list(fitted.feature_names_),
            "mean": [round(float(v), 5) for v in fitted.mean_],
            "scale": [round(float(v), 5) for v in fitted.scale_],
            "coef": [round(float(v), 5) for v in fitted.coef_],
            "intercept": round(fitted.intercept_, 5),
            "same_story_threshold": round(fitted.same_story_threshold_, 5),
        }
    json.dump(report, sys.stdout, indent=2, default=float)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
