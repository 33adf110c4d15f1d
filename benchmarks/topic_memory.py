"""What one labelled article adds to the topic head fit's peak memory (`BYTES_PER_TOPIC_EXAMPLE`).

Fits `TopicTagger` on the first N labelled Reuters training seeds (embeddings from the cache) in
a fresh process per size and reports the fit's rise in peak RSS; the slope between two sizes is
the bytes per example that ``fit --max-memory-gb`` divides its budget by::

    PYTHONPATH=. .venv/bin/python -m benchmarks.topic_memory --sizes 3000 7772
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import machine_info
from benchmarks.training_scale import ROOT, corpus_dir


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(n: int) -> dict[str, float]:
    from model.articles.seeds import read_seeds
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder
    from model.tagging.topic_tagger import TopicTagger
    from training.cli import default_cache_dir

    articles = [a for a in read_seeds([corpus_dir() / "reuters/train"], progress=False).articles.values()]
    articles = [a for a in articles if a.topics][:n]
    encoder = make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(default_cache_dir() / "embeddings.sqlite"))
    vectors = encoder.encode([a.text for a in articles])
    before, cpu = _peak_mb(), time.process_time()
    tagger = TopicTagger().fit(articles, vectors)
    rows = tagger.featurizer_.transform(articles[:500], vectors[:500])
    return {
        "n": len(articles),
        "peak_before_fit_mb": round(before),
        "peak_after_fit_mb": round(_peak_mb()),
        "nnz_per_row": round(rows.nnz / rows.shape[0]),
        "fit_cpu_s": round(time.process_time() - cpu, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 7772])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/topic_memory.json")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    runs = []
    for n in args.sizes:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.topic_memory", "--child", str(n)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]), flush=True)
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        rise = (b["peak_after_fit_mb"] - b["peak_before_fit_mb"]) - (
            a["peak_after_fit_mb"] - a["peak_before_fit_mb"]
        )
        print(json.dumps({"bytes_per_example": round(rise * 2**20 / (b["n"] - a["n"]))}))
    report = {
        "benchmark": "topic_memory",
        "command": "PYTHONPATH=. .venv/bin/python -m benchmarks.topic_memory "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "runs": runs,
    }
    if len(runs) >= 2:
        report["bytes_per_example"] = round(rise * 2**20 / (b["n"] - a["n"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
