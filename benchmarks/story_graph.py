"""How `cluster_stories` grows with the articles on its graph path (HNSW candidates).

Decides the stories of the first N of 100,000 synthetic seeds (`benchmarks.training_scale`
synthesises them into ``--work`` when absent) with the vectors of an embedding cache under
MiniLM's key (the warm cache `training_scale` fills with its static encoder) and the default
pair scorer (its IDF from the same N texts), as `fit` does: CPU and wall seconds, CPU ms an
article, the load average around each run, the number of stories and a hash of the partition
(two trees that print the same hash decided every article alike)::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.story_graph --sizes 20000 50000 100000 \\
        --ann-threshold 0 --embedding-cache CACHE/embeddings.sqlite --out benchmarks/results/story_graph.json

``--ann-threshold 0`` takes the graph path at every size (by default it starts past
`model.coverage.story_links.ANN_THRESHOLD` articles). On the graph path each run also records the
CPU ms an article of every 10,000 articles in published order (``segments``: the graph-adding
step after each block is timed from the outside), which tells a cost that grows with the articles
from one that settles once the graphs hold a window.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

from benchmarks.common import corpus_dir, emit
from benchmarks.report import machine_info
from benchmarks.training_scale import ROOT, cached_vectors, synthesise
from model.articles.seeds import read_seeds
from model.coverage import story_links
from model.coverage.pair_evidence import HashedIdf
from model.coverage.pair_scorer import PairScorer
from model.coverage.story_links import ANN_THRESHOLD, cluster_stories
from model.encoders.registry import DEFAULT_ENCODER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 100_000])
    parser.add_argument("--ann-threshold", type=int, default=ANN_THRESHOLD)
    parser.add_argument("--embedding-cache", type=Path, required=True, help="embeddings.sqlite to read")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache/benchmarks/training_scale")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    seeds = synthesise(100_000, args.work / "seeds-100000", corpus_dir())
    articles = list(read_seeds([seeds], progress=False).articles.values())
    vectors = cached_vectors(articles, args.embedding_cache)
    runs = []
    marks: list[tuple[int, float]] = []
    add = story_links._Graphs.add

    def timed_add(self: story_links._Graphs, rows: object) -> None:
        add(self, rows)  # type: ignore[arg-type]
        marks.append((len(self.every), time.process_time()))

    story_links._Graphs.add = timed_add  # type: ignore[method-assign]
    for n in args.sizes:
        marks.clear()
        texts = [article.text for article in articles[:n]]
        scorer = PairScorer.default(idf=HashedIdf().fit(texts), encoder=DEFAULT_ENCODER)
        load = os.getloadavg()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        story_ids = cluster_stories(articles[:n], vectors[:n], scorer, ann_threshold=args.ann_threshold)
        segments, last_count, last_cpu = [], 0, cpu
        for count, at in marks:
            if count // 10_000 > last_count // 10_000 or count == n:
                segments.append(round(1000 * (at - last_cpu) / (count - last_count), 2))
                last_count, last_cpu = count, at
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        runs.append(
            {
                "articles": n,
                "cpu_s": round(cpu, 1),
                "wall_s": round(wall, 1),
                "cpu_ms_per_article": round(1000 * cpu / n, 2),
                "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
                "stories": len(set(story_ids)),
                "partition_sha256": hashlib.sha256(json.dumps(story_ids).encode()).hexdigest()[:16],
                "segments_cpu_ms_per_article": segments,
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    emit({"machine": machine_info(), "ann_threshold": args.ann_threshold, "runs": runs}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
