"""Whether the stories of N seeds come out the same when decided twice (the graph path's repeatability).

Reads the "live bundle" that ``benchmarks.warm_retrain --stories --work W`` left in ``W/live-bundle``
(its pair scorer and stories) and decides the same seeds again with that scorer::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.warm_stories_repeat W \\
        > benchmarks/results/warm_stories_100000_repeat.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks.warm_retrain import partition_agreement
    from model.articles.seeds import read_seeds
    from model.bundle import load_part
    from model.coverage.story_links import cluster_stories
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder

    work = Path((argv or sys.argv[1:])[0])
    seeds = next(work.glob("seeds-*"))
    old = list(read_seeds([seeds], skip_invalid=False, progress=False).articles.values())
    encoder = make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(work / "cache-warm" / "embeddings.sqlite"))
    vectors = np.asarray(encoder.encode([a.text for a in old], show_progress_bar=False), dtype=np.float32)
    scorer = load_part(work / "live-bundle", "pairs.joblib")
    live = {}
    with (work / "live-bundle" / "index" / "articles.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            live[item["article"]["id"]] = item["story_id"]
    wall, cpu = time.perf_counter(), time.process_time()
    again = cluster_stories(old, vectors, scorer)
    result = {
        "articles": len(old),
        "seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "second_cold_run_against_the_first": partition_agreement([live[a.id] for a in old], again),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
