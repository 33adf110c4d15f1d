"""AG News learning curve: the shipped `TopicTagger` with k examples per class beside plain baselines.

A fixed stratified split (seed 0) holds out ``--test`` articles (default 1,000) that nothing is
tuned on; the rest is the pool. A further ``--validation`` articles of the pool (default 1,000)
are the pool's own check, on which the switch to prototype scores was verified; draws come from
what is left. For each k in ``--ks`` (0 = label names only) and each of ``--draws`` random draws
(nested: draw d at k=8 extends draw d at k=4), every method is fitted on the same k examples per
class and scored on both parts. Cells are accuracy mean ± sd over the draws.

Methods:

* ``tagger``: `TopicTagger()` as `training fit` builds it (fit, then ``fit_label_gate`` with the
  encoder): the tag it emits (an abstention counts as wrong; ``tagger_abstains`` is their share)
  and, as ``tagger_top1``, its first-ranked label whether or not it clears the gate. With fewer
  than ``gate_support`` (16) examples per label every label is gated and scored by its prototype
  (label name counted as 2 examples + the examples), ranked by cosine.
* ``tagger_classifier``: the same fitted tagger with ``prototype_scores=False`` (the classifier's
  probability, only capped by the gate): the behaviour before the prototype path, top-1.
* ``names_prototype``: argmax cosine to normalise(2·name vector + Σ examples) (the research's best
  few-shot method; at k = 0 the names alone).
* ``embedding_lr``: logistic regression (C=1) on the MiniLM embeddings.
* ``tfidf_lr``: word 1-2-gram TF-IDF + logistic regression.

SetFit's published few-shot AG News figures are not compared: no verified figure here.

    PYTHONPATH=. .venv/bin/python -m benchmarks.learning_curve --out benchmarks/results/learning_curve.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit
from sklearn.preprocessing import normalize

from benchmarks.common import add_common_arguments, emit
from model.articles.article import Article
from model.articles.seeds import read_seeds
from model.encoders.embedder import Embedder, EmbeddingCache
from model.tagging.label_gate import label_texts
from model.tagging.topic_tagger import TopicTagger

logger = logging.getLogger("benchmarks.learning_curve")
SEED = 0
Encode = Callable[[list[str]], npt.NDArray[np.float32]]


def _name_vectors(labels: list[str], encode: Encode) -> npt.NDArray[np.float32]:
    """Unit mean embedding of each label's `label_texts` (what the tagger's gate uses)."""
    out = []
    for label in labels:
        mean = np.asarray(encode(label_texts(label)), dtype=np.float32).mean(axis=0)
        out.append(mean / np.linalg.norm(mean))
    return np.array(out)


def _draw(pool_by_class: dict[str, npt.NDArray[np.intp]], k: int, draw: int) -> npt.NDArray[np.intp]:
    """k pool rows per class; nested in k for a given draw."""
    rng = np.random.default_rng(1000 + draw)
    perms = {label: rng.permutation(rows) for label, rows in sorted(pool_by_class.items())}
    return np.concatenate([perms[label][:k] for label in sorted(perms)]) if k else np.array([], int)


def _score_methods(
    articles: list[Article],
    emb: npt.NDArray[np.float32],
    labels: npt.NDArray[np.str_],
    classes: list[str],
    names: npt.NDArray[np.float32],
    train: npt.NDArray[np.intp],
    parts: dict[str, npt.NDArray[np.intp]],
    encode: Encode,
) -> dict[str, dict[str, float]]:
    """{method: {part: accuracy}} (plus the tagger's abstention rate) for one draw."""
    out: dict[str, dict[str, float]] = {}
    # names (weight 2) + examples prototype, argmax cosine
    protos = 2.0 * names
    for j, label in enumerate(classes):
        protos[j] += emb[train][labels[train] == label].sum(axis=0)
    protos = normalize(protos)
    out["names_prototype"] = {
        part: float(np.mean(np.array(classes)[(emb[rows] @ protos.T).argmax(1)] == labels[rows]))
        for part, rows in parts.items()
    }
    if not len(train):
        return out
    tagger = TopicTagger().fit([articles[i] for i in train], emb[train])
    tagger.fit_label_gate(encode)
    out["tagger"], out["tagger_top1"], out["tagger_classifier"], out["tagger_abstains"] = {}, {}, {}, {}
    for part, rows in parts.items():
        arts = [articles[i] for i in rows]
        raw = tagger.classifier_.predict_proba(tagger._features(arts, emb[rows]))
        truth = labels[rows]
        tagger_labels = np.array(tagger.labels_)
        prob = tagger._gate(raw, emb[rows])
        chosen = tagger.choose(prob, emb[rows])
        emitted = np.where(chosen.any(1), tagger_labels[np.argmax(np.where(chosen, prob, -1), axis=1)], "")
        out["tagger"][part] = float(np.mean(emitted == truth))
        out["tagger_abstains"][part] = float(np.mean(~chosen.any(1)))
        ranking = prob
        if tagger.uses_prototype_scores():  # the tagger's own order: closest prototype first
            ranking = normalize(emb[rows]) @ np.stack([tagger.gate_[label][0] for label in tagger.labels_]).T
        out["tagger_top1"][part] = float(np.mean(tagger_labels[ranking.argmax(1)] == truth))
        mode = tagger.prototype_scores
        tagger.prototype_scores = False
        before = tagger._gate(raw, emb[rows])
        tagger.prototype_scores = mode
        out["tagger_classifier"][part] = float(np.mean(tagger_labels[before.argmax(1)] == truth))
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(emb[train], labels[train])
    out["embedding_lr"] = {
        part: float(np.mean(lr.predict(emb[rows]) == labels[rows])) for part, rows in parts.items()
    }
    texts = [a.text for a in articles]
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    X = vectorizer.fit_transform([texts[i] for i in train])
    tf = LogisticRegression(C=10.0, max_iter=2000).fit(X, labels[train])
    out["tfidf_lr"] = {
        part: float(np.mean(tf.predict(vectorizer.transform([texts[i] for i in rows])) == labels[rows]))
        for part, rows in parts.items()
    }
    return out


def run(
    data_dir: Path,
    embedder: Embedder,
    *,
    ks: list[int],
    draws: int,
    test_size: int,
    validation_size: int,
    limit: int | None = None,
) -> dict:
    folder = data_dir / "agnews"
    if not folder.is_dir():
        raise SystemExit(f"no corpus at {folder}: pass --data-dir pointing at shared/data")
    articles = sorted((a for a in read_seeds([folder]).articles.values() if a.topics), key=lambda a: a.id)
    if limit:
        articles = articles[:limit]
    emb = embedder.encode([a.text for a in articles])
    labels = np.array([a.topics[0] for a in articles])
    classes = sorted(set(labels))
    pool, test = next(StratifiedShuffleSplit(1, test_size=test_size, random_state=SEED).split(emb, labels))
    draw_rows, validation = next(
        StratifiedShuffleSplit(1, test_size=validation_size, random_state=SEED).split(pool, labels[pool])
    )
    validation = pool[validation]
    draw_pool = pool[draw_rows]
    pool_by_class = {label: draw_pool[labels[draw_pool] == label] for label in classes}
    names = _name_vectors(classes, embedder.encode)
    parts = {"test": test, "pool_validation": validation}
    cells: dict[str, dict[str, dict[int, list[float]]]] = {}
    start = time.perf_counter()
    for k in ks:
        for d in range(1 if k == 0 else draws):
            train = _draw(pool_by_class, k, d)
            scores = _score_methods(articles, emb, labels, classes, names, train, parts, embedder.encode)
            for method, by_part in scores.items():
                for part, value in by_part.items():
                    cells.setdefault(part, {}).setdefault(method, {}).setdefault(k, []).append(value)
        logger.info("k=%d done after %.0fs", k, time.perf_counter() - start)
    table = {
        part: {
            method: {
                str(k): {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4), "n": len(v)}
                for k, v in by_k.items()
            }
            for method, by_k in methods.items()
        }
        for part, methods in cells.items()
    }
    return {
        "data": "agnews (title + excerpt)",
        "split": f"StratifiedShuffleSplit seed {SEED}: {len(test)} test, pool {len(pool)} "
        f"({len(validation)} pool validation, {len(draw_pool)} to draw from)",
        "labels": classes,
        "ks": ks,
        "draws": draws,
        "seconds": round(time.perf_counter() - start, 1),
        "setfit": "not compared: no verified figure here",
        "accuracy": table,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.learning_curve",
        description="AG News accuracy with k examples per class (0 = label names only): the shipped "
        "TopicTagger beside plain baselines, mean ± sd over random draws; prints JSON.",
    )
    parser.add_argument(
        "--ks", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 64], help="examples per class"
    )
    parser.add_argument("--draws", type=int, default=5, help="random draws per k (default 5)")
    parser.add_argument("--test", type=int, default=1000, help="held-out test articles (default 1000)")
    parser.add_argument(
        "--validation", type=int, default=1000, help="pool validation articles (default 1000)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N articles (smoke runs)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    embedder = Embedder(cache=EmbeddingCache(args.cache))
    result = run(
        args.data_dir,
        embedder,
        ks=args.ks,
        draws=args.draws,
        test_size=args.test,
        validation_size=args.validation,
        limit=args.limit,
    )
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
