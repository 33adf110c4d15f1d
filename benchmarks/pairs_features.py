"""Pair-scorer features that could mean something across scripts, chosen out of set.

`benchmarks.pairs_out_of_set` chose the scorer's features among the text-overlap ones the evidence
already has (TF-IDF, character n-grams, word overlap, script, language profile); between a German
text and its English report those say almost nothing. This study adds candidates that could carry
across languages and tries each the same way, forward from the encoder cosine alone:

- ``centred_cosine``: the encoder cosine after each text's language mean vector is taken away
  (`centred_cosines`: means learnt from other pairs' texts, no grades);
- ``numbers``: Dice overlap of the numbers in the two texts (digits read alike in most scripts);
- ``names``: Dice overlap of Latin-script capitalised words (names keep their spelling across Latin
  languages and are often left in Latin in the others);
- ``links``: Dice overlap of the URLs and domain names written in the texts;
- ``title_cosine``, ``excerpt_cosine``: the encoder cosine of the two titles, of the two excerpts;
- ``part_max``, ``part_min``: the largest and smallest cosine among title-title, title-excerpt,
  excerpt-title, excerpt-excerpt (the texts' parts as windows);
- ``other_cosine``: the other encoder's cosine (MiniLM beside e5, e5 beside MiniLM), as a bundle
  with both encoders could have it;
- ``adapter_cosine``: the cosine after the e5 adapter (`training.fine_tune.fine_tune_adapter`, a
  residual linear map learnt with CoSENT from graded pairs) learnt *without the pair's own group*:
  each semeval_ml language pair's from an adapter learnt on the other language pairs and English
  SemEval, English SemEval's from one learnt on semeval_ml, the 0/1 sets' from one learnt on both.

Publication-date distance cannot be tried out of set: only storychains is dated (SemEval's shared
copies have no dates), so a held-out set never shows whether it helps.

Two protocols, each fitting `PairScorer` on same-story labels (``overall`` <= 1.5) of the rest and
scoring the held-out part: leave one shared pair set out (semeval, semeval_ml, storychains, tgpairs;
|Spearman| with the grade on graded sets, ROC AUC on 0/1 sets), and leave one semeval_ml language
pair out (the scorer fitted on every other pair of every set). A candidate joins when it beats the
chosen features on more than half of the held-out parts of *each* protocol and loses on none by more
than the paired-bootstrap noise (`benchmarks.pairs_out_of_set._bootstrap_noise`).

    nice -n 10 python -m benchmarks.pairs_features --encoder e5-multilingual \\
        --out benchmarks/results/pairs_features_e5.json

Embeddings (whole texts, titles, excerpts; both encoders) come from the shared embedding cache.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

from benchmarks.common import EMBEDDING_CACHE, corpus_dir, emit
from benchmarks.pairs_out_of_set import SETS
from model.coverage.pair_evidence import FEATURE_INDEX, HashedIdf, pair_feature_matrix
from model.coverage.pair_files import GradedPair, graded_pair_evidence, pair_texts, read_pairs_tsv
from model.coverage.pair_scorer import language_pair
from model.encoders.cache import EmbeddingCache
from model.encoders.registry import E5_NAME, ENCODER_NAMES, make_encoder

logger = logging.getLogger("benchmarks.pairs_features")

GRADED = frozenset({"semeval", "semeval_ml"})
MIN_LANGUAGE_PAIRS = 20

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# A capitalised Latin-script word of 3+ letters ("Guentzel", "Pittsburgh", "NATO").
_NAME = re.compile(r"\b[A-Z][A-Za-z\u00C0-\u024F'’-]{2,}")
_LINK = re.compile(
    r"(?:https?://)?(?:www\.)?((?:[a-z0-9-]+\.)+(?:com|org|net|de|fr|es|it|pl|ru|tr|cn|uk|eu|io|gov|edu|info))\b",
    re.I,
)


def _dice(a: set[str], b: set[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def numbers(text: str) -> set[str]:
    """Numbers written in the text, separators dropped ("1,500" and "1.500" read alike)."""
    return {re.sub(r"[.,]", "", m) for m in _NUMBER.findall(text)}


def names(text: str) -> set[str]:
    """Capitalised Latin-script words, lower-cased."""
    return {m.lower().strip("'’-") for m in _NAME.findall(text)}


def links(text: str) -> set[str]:
    """Domain names written in the text (with or without a scheme)."""
    return {m.lower() for m in _LINK.findall(text)}


@dataclass
class PairSet:
    name: str
    pairs: list[GradedPair]
    X: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]
    overall: npt.NDArray[np.float64]
    keys: npt.NDArray[np.object_]
    extra: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    # (pairs, 2, dim) whole-text vectors of the primary encoder, for the adapter.
    vectors: npt.NDArray[np.float32] | None = None

    @property
    def graded(self) -> bool:
        return self.name in GRADED


def _pair_cosines(va: npt.NDArray[np.float32], vb: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return np.einsum("ij,ij->i", va, vb).astype(np.float64)


def load(data: Path, name: str, encoders: dict[str, Any], primary: str, *, parts: bool = True) -> PairSet:
    """A set's feature rows (primary encoder), and every candidate column (``parts``: also the
    title and excerpt cosines, which embed each part on its own)."""
    pairs = read_pairs_tsv(data / name / "pairs.tsv")
    texts = pair_texts(pairs)
    vectors = np.asarray(encoders[primary].encode(texts), dtype=np.float32)
    idf = HashedIdf().fit(list(dict.fromkeys(texts)))
    X = pair_feature_matrix(graded_pair_evidence(pairs, vectors, idf))
    s = PairSet(
        name,
        pairs,
        X,
        np.array([p.same_story for p in pairs]),
        np.array([p.overall for p in pairs], dtype=np.float64),
        np.array([language_pair(p.a.language, p.b.language) for p in pairs], dtype=object),
        vectors=vectors.reshape(len(pairs), 2, -1),
    )
    s.extra["numbers"] = np.array([_dice(numbers(p.a.text), numbers(p.b.text)) for p in pairs])
    s.extra["names"] = np.array([_dice(names(p.a.text), names(p.b.text)) for p in pairs])
    s.extra["links"] = np.array([_dice(links(p.a.text), links(p.b.text)) for p in pairs])
    s.extra["cosine"] = X[:, FEATURE_INDEX["cosine"]]
    others = [n for n in encoders if n != primary]
    if others:
        ov = np.asarray(encoders[others[0]].encode(texts), dtype=np.float32)
        s.extra["other_cosine"] = _pair_cosines(ov[0::2], ov[1::2])
    if parts:
        _part_cosines(s, encoders[primary], vectors)
    return s


def _part_cosines(s: PairSet, encoder: Any, vectors: npt.NDArray[np.float32]) -> None:
    pairs = s.pairs
    parts: dict[str, npt.NDArray[np.float32]] = {}
    for part in ("title", "excerpt"):
        side_texts = [getattr(a, part) or "" for p in pairs for a in (p.a, p.b)]
        present = [t for t in dict.fromkeys(side_texts) if t]
        table = dict(zip(present, np.asarray(encoder.encode(present), dtype=np.float32), strict=True))
        # A missing part reads as the whole text, so its cosine falls back to the whole one.
        rows = [table.get(t) if t else None for t in side_texts]
        full = vectors
        parts[part] = np.stack([r if r is not None else full[k] for k, r in enumerate(rows)])
    ta, tb = parts["title"][0::2], parts["title"][1::2]
    ea, eb = parts["excerpt"][0::2], parts["excerpt"][1::2]
    s.extra["title_cosine"] = _pair_cosines(ta, tb)
    s.extra["excerpt_cosine"] = _pair_cosines(ea, eb)
    combos = np.column_stack(
        [_pair_cosines(ta, tb), _pair_cosines(ta, eb), _pair_cosines(ea, tb), _pair_cosines(ea, eb)]
    )
    s.extra["part_max"] = combos.max(axis=1)
    s.extra["part_min"] = combos.min(axis=1)


class _Cached:
    """The vectors already made, as an `Encoder` for `training.fine_tune.fine_tune_adapter`."""

    def __init__(self, table: dict[str, npt.NDArray[np.float32]], dim: int) -> None:
        self.table, self.dim, self.model_id = table, dim, "cached"

    def encode(self, texts: Sequence[str], **_: Any) -> npt.NDArray[np.float32]:
        return np.stack([self.table[t] for t in texts])


CENTRE_FOLDS = 5


def centred_cosines(sets: list[PairSet]) -> None:
    """Fill ``extra["centred_cosine"]``: the cosine after each text's language mean vector is taken
    away (and the rest renormalised), the means learnt without the pair's own texts.

    An encoder's cosine has a level per language pair (e5: about 0.86 for two unrelated German
    texts, 0.75 for a German and an English one), so pooled over languages it mixes scales; taking
    away each language's mean direction removes most of that level. No grade is used: the means
    come from the texts of the pairs in the other folds (5 folds by pair over every set), as a
    deployment would take them from its own archive. A text whose language has no mean there takes
    the mean of every other text.
    """
    rng = np.random.default_rng(0)
    rows = []  # (set index, pair index, fold)
    for k, s in enumerate(sets):
        folds = rng.permutation(len(s.pairs)) % CENTRE_FOLDS
        rows.extend((k, i, int(folds[i])) for i in range(len(s.pairs)))
    fold_of = {(k, i): f for k, i, f in rows}
    for fold in range(CENTRE_FOLDS):
        sums: dict[str, npt.NDArray[np.float64]] = {}
        counts: dict[str, int] = {}
        for k, i, f in rows:
            if f == fold:
                continue
            s = sets[k]
            assert s.vectors is not None
            for side, article in enumerate((s.pairs[i].a, s.pairs[i].b)):
                for key in (article.language or "", "*"):
                    sums[key] = sums.get(key, 0.0) + s.vectors[i, side]
                    counts[key] = counts.get(key, 0) + 1
        means = {key: sums[key] / counts[key] for key in sums if key}
        for k, s in enumerate(sets):
            assert s.vectors is not None
            if "centred_cosine" not in s.extra:
                s.extra["centred_cosine"] = np.zeros(len(s.pairs))
            picked = [i for i in range(len(s.pairs)) if fold_of[(k, i)] == fold]
            for i in picked:
                sides = []
                for side, article in enumerate((s.pairs[i].a, s.pairs[i].b)):
                    mean = means.get(article.language or "", means["*"])
                    v = s.vectors[i, side] - mean
                    sides.append(v / max(float(np.linalg.norm(v)), 1e-12))
                s.extra["centred_cosine"][i] = float(sides[0] @ sides[1])


def centring_by_sample(
    sets: list[PairSet], sizes: Sequence[int] = (5, 10, 25, 50, 100), draws: int = 5
) -> dict[str, dict[str, float]]:
    """How many texts a language's mean needs: semeval_ml's pooled |Pearson| of the centred cosine
    when each language's mean comes from only ``size`` texts of the other folds' pairs (``draws``
    random draws, mean and spread), beside the raw cosine and all the other folds' texts."""
    ml = next(s for s in sets if s.name == "semeval_ml")
    assert ml.vectors is not None
    rng = np.random.default_rng(1)
    folds = np.random.default_rng(0).permutation(len(ml.pairs)) % CENTRE_FOLDS
    languages = np.array([[p.a.language or "", p.b.language or ""] for p in ml.pairs], dtype=object)

    def pooled(size: int | None) -> float:
        centred = np.zeros(len(ml.pairs))
        for fold in range(CENTRE_FOLDS):
            train, test = folds != fold, np.flatnonzero(folds == fold)
            texts = ml.vectors[train].reshape(-1, ml.vectors.shape[-1])
            langs = languages[train].ravel()
            means = {}
            for lang in set(langs.tolist()):
                rows = np.flatnonzero(langs == lang)
                if size is not None:
                    rows = rng.choice(rows, min(size, len(rows)), replace=False)
                means[lang] = texts[rows].mean(axis=0)
            for i in test:
                sides = [ml.vectors[i, k] - means[languages[i, k]] for k in (0, 1)]
                sides = [v / max(float(np.linalg.norm(v)), 1e-12) for v in sides]
                centred[i] = float(sides[0] @ sides[1])
        return abs(float(pearsonr(centred, ml.overall)[0]))

    out: dict[str, dict[str, float]] = {
        "raw_cosine": {"abs_pearson": round(abs(float(pearsonr(ml.extra["cosine"], ml.overall)[0])), 4)},
        "all_other_folds": {"abs_pearson": round(pooled(None), 4)},
    }
    for size in sizes:
        values = [pooled(size) for _ in range(draws)]
        out[f"{size}_texts"] = {
            "abs_pearson": round(float(np.mean(values)), 4),
            "std": round(float(np.std(values)), 4),
        }
    return out


def adapter_cosines(sets: list[PairSet], epochs: float) -> float:
    """Fill ``extra["adapter_cosine"]`` of every set from adapters that never saw the pair's group.

    Returns the seconds spent learning."""
    from training.fine_tune import FineTuneOptions, fine_tune_adapter, training_pairs

    started = time.perf_counter()
    table: dict[str, npt.NDArray[np.float32]] = {}
    for s in sets:
        assert s.vectors is not None
        for k, p in enumerate(s.pairs):
            table[p.a.text], table[p.b.text] = s.vectors[k, 0], s.vectors[k, 1]
    dim = next(iter(table.values())).shape[0]
    encoder = _Cached(table, dim)
    options = FineTuneOptions(adapter_epochs=epochs, time_budget_min=10.0)
    graded = {s.name: s for s in sets if s.graded}

    def learnt(train: list[GradedPair]) -> Any:
        return fine_tune_adapter(encoder, training_pairs([], train, seed=0), options, seeds=0)

    def cosines(adapted: Any, s: PairSet, rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        assert s.vectors is not None
        return _pair_cosines(adapted.adapt(s.vectors[rows, 0]), adapted.adapt(s.vectors[rows, 1]))

    for s in sets:
        s.extra["adapter_cosine"] = np.zeros(len(s.pairs))
    ml = graded["semeval_ml"]
    for key in sorted({k for k in ml.keys if k}):
        held = ml.keys == key
        train = [p for p, h in zip(ml.pairs, held, strict=True) if not h] + graded["semeval"].pairs
        rows = np.flatnonzero(held)
        ml.extra["adapter_cosine"][rows] = cosines(learnt(train), ml, rows)
    unkeyed = np.flatnonzero(np.array([not k for k in ml.keys]))
    if len(unkeyed):
        train = [p for p, k in zip(ml.pairs, ml.keys, strict=True) if k] + graded["semeval"].pairs
        ml.extra["adapter_cosine"][unkeyed] = cosines(learnt(train), ml, unkeyed)
    en = graded["semeval"]
    en.extra["adapter_cosine"] = cosines(learnt(ml.pairs), en, np.arange(len(en.pairs)))
    both = learnt(ml.pairs + en.pairs)
    for s in sets:
        if not s.graded:
            s.extra["adapter_cosine"] = cosines(both, s, np.arange(len(s.pairs)))
    return time.perf_counter() - started


CANDIDATES = (
    "centred_cosine",
    "numbers",
    "names",
    "links",
    "title_cosine",
    "excerpt_cosine",
    "part_max",
    "part_min",
    "other_cosine",
    "adapter_cosine",
    "sqrt_char_tfidf",
    "tfidf",
    "same_language",
    "language_profile",
)


def design(
    s: PairSet, features: Sequence[str], rows: npt.NDArray[np.intp] | None = None
) -> npt.NDArray[np.float64]:
    """Columns for a plain logistic regression: extra columns and `PairScorer`'s own."""
    rows = np.arange(len(s.pairs)) if rows is None else rows
    cols = []
    for name in features:
        if name in s.extra:
            cols.append(s.extra[name][rows])
        elif name == "sqrt_char_tfidf":
            cols.append(np.sqrt(np.maximum(s.X[rows, FEATURE_INDEX["char_tfidf"]], 0.0)))
        else:
            cols.append(s.X[rows, FEATURE_INDEX[name]])
    return np.column_stack(cols)


def _fit_score(
    train: list[tuple[PairSet, npt.NDArray[np.intp]]],
    held: PairSet,
    rows: npt.NDArray[np.intp],
    features: Sequence[str],
) -> npt.NDArray[np.float64]:
    """A `PairScorer`-like fit (standardised L2 logistic regression, C=1) on ``train``; the held
    rows' log-odds. The extra columns are not `pair_feature_matrix` columns, so the regression is
    fitted directly, as `PairScorer._fit_linear` does."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.vstack([design(s, features, r) for s, r in train])
    y = np.concatenate([s.same[r] for s, r in train]).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(X, y)
    return np.asarray(model.decision_function(design(held, features, rows)), dtype=np.float64)


def _metric(
    s: PairSet,
    score: npt.NDArray[np.float64],
    rows: npt.NDArray[np.intp],
    sub: npt.NDArray[np.intp] | None = None,
) -> float:
    picked = rows if sub is None else rows[sub]
    local = score if sub is None else score[sub]
    if s.graded:
        return abs(float(spearmanr(local, s.overall[picked])[0])) if np.ptp(local) > 0 else 0.0
    return float(roc_auc_score(s.same[picked], local))


def _noise(
    s: PairSet, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], rows: npt.NDArray[np.intp], boot: int
) -> float:
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(boot):
        sub = rng.integers(0, len(rows), len(rows))
        if not s.graded and (s.same[rows[sub]].all() or not s.same[rows[sub]].any()):
            continue
        diffs.append(_metric(s, a, rows, sub) - _metric(s, b, rows, sub))
    return float(np.std(diffs)) if diffs else 0.0


def parts(sets: list[PairSet]) -> dict[str, list[tuple[str, PairSet, npt.NDArray[np.intp]]]]:
    """The held-out parts of each protocol: (label, set, rows)."""
    lopo = [(s.name, s, np.arange(len(s.pairs))) for s in sets]
    ml = next(s for s in sets if s.name == "semeval_ml")
    lolp = []
    for key in sorted({k for k in ml.keys if k}):
        rows = np.flatnonzero(ml.keys == key)
        if len(rows) >= MIN_LANGUAGE_PAIRS:
            lolp.append((str(key), ml, rows))
    return {"leave_one_set_out": lopo, "leave_one_language_pair_out": lolp}


def held_out(
    sets: list[PairSet], protocol: list[tuple[str, PairSet, npt.NDArray[np.intp]]], features: Sequence[str]
) -> dict[str, npt.NDArray[np.float64]]:
    out = {}
    for label, held, rows in protocol:
        train = []
        for s in sets:
            if s is not held:
                train.append((s, np.arange(len(s.pairs))))
            else:
                rest = np.setdiff1d(np.arange(len(s.pairs)), rows)
                if len(rest):
                    train.append((s, rest))
        out[label] = _fit_score(train, held, rows, features)
    return out


def figures(
    protocol: list[tuple[str, PairSet, npt.NDArray[np.intp]]], scores: dict[str, npt.NDArray[np.float64]]
) -> dict[str, float]:
    return {label: round(_metric(s, scores[label], rows), 4) for label, s, rows in protocol}


def select(sets: list[PairSet], boot: int, candidates: Sequence[str]) -> dict[str, Any]:
    protocols = parts(sets)
    chosen: list[str] = ["cosine"]
    current = {name: held_out(sets, p, chosen) for name, p in protocols.items()}
    report: dict[str, Any] = {
        "cosine_only": {name: figures(protocols[name], current[name]) for name in protocols},
        "centred_cosine_only": {
            name: figures(protocols[name], held_out(sets, protocols[name], ["centred_cosine"]))
            for name in protocols
        },
        "steps": [],
    }
    remaining = [
        c
        for c in candidates
        if all(c in s.extra or c in FEATURE_INDEX or c == "sqrt_char_tfidf" for s in sets)
    ]
    while remaining:
        trials = []
        for name in remaining:
            features = [*chosen, name]
            entry: dict[str, Any] = {"feature": name, "qualifies": True, "mean_gain": 0.0}
            gains_all = []
            for pname, protocol in protocols.items():
                scores = held_out(sets, protocol, features)
                gains, noise = {}, {}
                for label, s, rows in protocol:
                    gains[label] = _metric(s, scores[label], rows) - _metric(s, current[pname][label], rows)
                    noise[label] = _noise(s, scores[label], current[pname][label], rows, boot)
                wins = sum(g > 0 for g in gains.values())
                worst = min(gains[k] + noise[k] for k in gains)
                ok = wins > len(gains) / 2 and worst >= 0
                entry[pname] = {
                    "gain": {k: round(v, 4) for k, v in gains.items()},
                    "noise": {k: round(v, 4) for k, v in noise.items()},
                    "wins": wins,
                    "of": len(gains),
                    "qualifies": ok,
                }
                entry["qualifies"] = entry["qualifies"] and ok
                entry["_scores_" + pname] = scores
                gains_all.extend(gains.values())
            entry["mean_gain"] = round(float(np.mean(gains_all)), 4)
            trials.append(entry)
            logger.info(
                "%s + %s: mean gain %.4f qualifies %s", chosen, name, entry["mean_gain"], entry["qualifies"]
            )
        report["steps"].append(
            {
                "chosen_before": list(chosen),
                "trials": [{k: v for k, v in t.items() if not k.startswith("_")} for t in trials],
            }
        )
        qualified = [t for t in trials if t["qualifies"]]
        if not qualified:
            break
        best = max(qualified, key=lambda t: t["mean_gain"])
        chosen.append(best["feature"])
        remaining.remove(best["feature"])
        current = {name: best["_scores_" + name] for name in protocols}
        report["steps"][-1]["added"] = best["feature"]
    report["chosen"] = chosen
    report["chosen_figures"] = {name: figures(protocols[name], current[name]) for name in protocols}
    return report


def single_features(sets: list[PairSet]) -> dict[str, Any]:
    """Each candidate column alone, as a score: |Spearman| / |Pearson| with the grade per graded
    set and per semeval_ml language pair (no fitting: what the column itself says)."""
    out: dict[str, Any] = {}
    ml = next(s for s in sets if s.name == "semeval_ml")
    for name in ("cosine", *CANDIDATES):
        if not all(name in s.extra or name in FEATURE_INDEX or name == "sqrt_char_tfidf" for s in sets):
            continue
        entry = {}
        for s in sets:
            if not s.graded:
                continue
            col = design(s, [name])[:, 0]
            entry[s.name] = round(abs(float(pearsonr(col, s.overall)[0])), 4) if np.ptp(col) > 0 else 0.0
        for key in sorted({k for k in ml.keys if k}):
            rows = np.flatnonzero(ml.keys == key)
            col = design(ml, [name], rows)[:, 0]
            if len(rows) >= MIN_LANGUAGE_PAIRS and np.ptp(col) > 0:
                entry[str(key)] = round(abs(float(pearsonr(col, ml.overall[rows])[0])), 4)
        out[name] = entry
    return out


def levels(sets: list[PairSet]) -> dict[str, dict[str, float]]:
    """Per semeval_ml language pair: the mean encoder cosine and centred cosine of its pairs, and
    their mean grade (the cosine's level per language pair is what pooling mixes)."""
    ml = next(s for s in sets if s.name == "semeval_ml")
    out = {}
    for key in sorted({k for k in ml.keys if k}):
        rows = np.flatnonzero(ml.keys == key)
        out[str(key)] = {
            "n": len(rows),
            "mean_cosine": round(float(ml.extra["cosine"][rows].mean()), 3),
            "mean_centred_cosine": round(float(ml.extra["centred_cosine"][rows].mean()), 3),
            "mean_overall": round(float(ml.overall[rows].mean()), 2),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_features",
        description="Cross-script pair features chosen out of set (leave one set out, leave one "
        "semeval_ml language pair out). Prints one JSON object.",
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument("--encoder", default="e5-multilingual", choices=ENCODER_NAMES)
    parser.add_argument("--no-other", action="store_true", help="skip the other encoder's cosine")
    parser.add_argument("--adapter-epochs", type=float, default=20.0, help="adapter passes (20)")
    parser.add_argument("--no-adapter", action="store_true", help="skip the adapter's cosine")
    parser.add_argument("--no-parts", action="store_true", help="skip the title and excerpt cosines")
    parser.add_argument("--no-select", action="store_true", help="skip the forward selection")
    parser.add_argument("--boot", type=int, default=100, help="bootstrap resamples for the noise (100)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    data = args.data or corpus_dir()
    started, cpu = time.perf_counter(), time.process_time()
    cache = EmbeddingCache(args.cache)

    # e5 on its engine runtime: the runtime these figures (and the built-in scorer) were measured on.
    def build(name: str) -> Any:
        return make_encoder(name, cache=cache, backend="native" if name == E5_NAME else None)

    encoders = {args.encoder: build(args.encoder)}
    if not args.no_other:
        other = next(n for n in ENCODER_NAMES if n != args.encoder)
        encoders[other] = build(other)
    sets = [load(data, name, encoders, args.encoder, parts=not args.no_parts) for name in SETS]
    report: dict[str, Any] = {"encoder": args.encoder, "load_at_start": os.getloadavg()[0]}
    centred_cosines(sets)
    if args.encoder != "minilm" and not args.no_adapter:
        report["adapter_seconds"] = round(adapter_cosines(sets, args.adapter_epochs), 1)
        report["adapter_epochs"] = args.adapter_epochs
    report["single_columns_abs_pearson"] = single_features(sets)
    report["levels"] = levels(sets)
    report["centring_by_texts_per_language"] = centring_by_sample(sets)
    if not args.no_select:
        report["selection"] = select(sets, args.boot, CANDIDATES)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    report["load_at_end"] = os.getloadavg()[0]
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
