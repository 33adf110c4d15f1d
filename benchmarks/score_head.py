"""How the heat score head's fit grows with the seeds, and what its penalty search costs.

Fits `ScoreHead("heat")` on the first N of 100,000 synthetic seeds (`benchmarks.training_scale`
synthesises them into ``--work`` when absent) and scores the last 10,000 (never fitted on): CPU
seconds, the chosen penalty, log-scale MAE and the interval's coverage. The embeddings are a fixed
random draw (the head's cost is the sparse ridge solves, not the vectors' values), or with
``--embedding-cache`` each text's vector from an embedding cache under MiniLM's key (the warm cache
`benchmarks.training_scale` fills with its static encoder): unit-length vectors as an encoder gives::

    PYTHONPATH=. .venv/bin/python -m benchmarks.score_head --sizes 10000 30000 90000 \\
        --out benchmarks/results/score_head.json

``--cv-max-samples 0`` runs the penalty search on every row (the code before the cap). Each run
records its CPU and wall seconds and the load average before and after it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import corpus_dir, emit
from benchmarks.report import machine_info
from benchmarks.training_scale import ROOT, cached_vectors, synthesise
from model.articles.seeds import read_seeds
from model.tagging.scores import ScoreHead, ScoreRegressor

HELD_OUT = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 90_000])
    parser.add_argument("--cv-max-samples", type=int, default=20_000, help="0: search on every row")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache/benchmarks/training_scale")
    parser.add_argument("--embedding-cache", type=Path, default=None, help="embeddings.sqlite to read")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    seeds = synthesise(100_000, args.work / "seeds-100000", corpus_dir())
    articles = list(read_seeds([seeds]).articles.values())
    vectors = (
        cached_vectors(articles, args.embedding_cache)
        if args.embedding_cache
        else np.random.default_rng(0).normal(size=(len(articles), 384)).astype(np.float32)
    )
    test, test_vectors = articles[-HELD_OUT:], vectors[-HELD_OUT:]
    truth = np.array([np.nan if a.heat is None else a.heat for a in test])
    known = ~np.isnan(truth)
    cap = args.cv_max_samples or None
    runs = []

    def share(mask: np.ndarray) -> float:
        return round(float(np.mean(mask[known])), 4)

    for n in args.sizes:
        head = ScoreHead(field="heat", log_scale=True, regressor=ScoreRegressor(cv_max_samples=cap))
        load = os.getloadavg()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        head.fit(articles[:n], vectors[:n])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        value, low, high = head.predict_values(test, test_vectors)
        runs.append(
            {
                "seeds": n,
                "rows_with_heat": head.report_["n_train"],
                "fit_cpu_s": round(cpu, 1),
                "fit_wall_s": round(wall, 1),
                "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                "alpha": head.regressor_.alpha_,
                "log_mae": round(float(np.mean(np.abs(np.log1p(value) - np.log1p(truth))[known])), 4),
                "coverage": share((truth >= low) & (truth <= high)),
            }
        )
    vectors_from = str(args.embedding_cache) if args.embedding_cache else "random normal"
    emit(
        {
            "machine": machine_info(),
            "cv_max_samples": cap,
            "held_out": HELD_OUT,
            "vectors": vectors_from,
            "runs": runs,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
