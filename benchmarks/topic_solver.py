"""The topic head's solvers side by side: CPU seconds of the fit and the fixed splits' F1.

Fits `TopicTagger` (its label gate included, as ``fit`` does) with ``TopicClassifier(solver=...)``
on Reuters train (evaluated on Reuters test) and on AG News outside the fixed 20% split (evaluated
on it), embeddings from the cache, one fresh process per fit so CPU seconds are the fit's own.
"old" is the path before working sets: every model on all of its rows, the fold models at the
final models' tolerance::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.topic_solver \\
        --out benchmarks/results/topic_solver.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import add_common_arguments, emit
from benchmarks.report import load_avg_1m, machine_info

SOLVERS: dict[str, dict[str, Any]] = {
    "old": {"solver": "full", "cv_tol": None},
    "working-set": {},
}


def _split(data_dir: Path, corpus: str) -> tuple[list[Any], list[Any]]:
    from model.articles.seeds import read_seeds
    from training.trainer import split_holdout

    if corpus == "reuters":
        train = read_seeds([data_dir / "reuters/train"], progress=False)
        test = read_seeds([data_dir / "reuters/test"], progress=False)
    else:
        train, test = split_holdout(read_seeds([data_dir / "agnews"], progress=False), 0.2)
    return (
        [a for a in train.articles.values() if a.topics],
        [a for a in test.articles.values() if a.topics],
    )


def child(data_dir: Path, cache: Path, corpus: str, solver: str) -> dict[str, Any]:
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder
    from model.evaluation.tagging import topic_metrics
    from model.tagging.topic_classifier import TopicClassifier
    from model.tagging.topic_tagger import TopicTagger

    encoder = make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(cache))
    train, test = _split(data_dir, corpus)
    train_vectors = encoder.encode([a.text for a in train])
    load, cpu, wall = load_avg_1m(), time.process_time(), time.perf_counter()
    tagger = TopicTagger(classifier=TopicClassifier(n_jobs=-1, **SOLVERS[solver])).fit(train, train_vectors)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tagger.fit_label_gate(encoder.encode)
    metrics = topic_metrics(
        [a.topics for a in test], tagger.predict_labels(test, encoder.encode([a.text for a in test]))
    )
    return {
        "corpus": corpus,
        "solver": solver,
        "train": len(train),
        "test": len(test),
        "load_1m": load,
        "fit_cpu_s": round(cpu, 1),
        "fit_wall_s": round(wall, 1),
        "micro_f1": round(metrics["micro_f1"], 4),
        "macro_f1": round(metrics["macro_f1"], 4),
        "cv": {k: round(v, 4) for k, v in tagger.classifier_.cv_scores_.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--corpora", nargs="+", default=["reuters", "agnews"], choices=["reuters", "agnews"])
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    parser.add_argument("--child", nargs=2, metavar=("CORPUS", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.data_dir, args.cache, *args.child)))
        return 0
    runs = []
    for corpus in args.corpora:
        for solver in args.solvers:
            command = [sys.executable, "-m", "benchmarks.topic_solver", "--child", corpus, solver]
            command += ["--data-dir", str(args.data_dir), "--cache", str(args.cache)]
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=os.environ).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    report = {
        "benchmark": "topic_solver",
        "command": "PYTHONPATH=. .venv/bin/python -m benchmarks.topic_solver "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "runs": runs,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
