"""What the story-merge scan before a generation switch costs, and what it merges on its own.

A bundle's model ingests ``--articles`` dated storychains + AG News articles one at a time (the
one story rule, as the service does), then `model.coverage.story_merges.StoryMergeFinder` decides
every article again over the same index, as the service does over a filled generation before its
switch. With the *same* encoder the rule has nothing new to join, so any story it merges is the
scan's own false merge: deciding each article among those stored before it (the finder's way)
should merge none; deciding it among all its neighbours, later ones too (``earlier_only=False``,
measured beside it), shows what that restriction saves. The seconds are the scan's cost.

Example::

    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python benchmarks/story_merge_scan.py --bundle BUNDLE \\
        --articles 1000 --out benchmarks/results/story_merge_scan.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks.common import corpus_dir, emit
from benchmarks.report import machine_info


def _articles(count: int) -> list:
    """Storychains (real storylines, dated) then AG News title + excerpt (undated) articles."""
    from model.articles.seeds import read_seeds

    chains = sorted((corpus_dir() / "storychains").glob("storychains_*.md"))
    agnews = sorted((corpus_dir() / "agnews").glob("agnews_*.md"))[-count:]
    articles = list(read_seeds([*chains, *agnews]).articles.values())
    return articles[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from model.coverage.story_merges import StoryMergeFinder
    from model.news_model import NewsModel

    model = NewsModel.load(args.bundle)
    articles = _articles(args.articles)
    vectors = model.embed(articles)
    started = time.perf_counter()
    ingested = model.add(articles, vectors)
    ingest_s = time.perf_counter() - started
    stored = [(done.article_id, done.story_id) for done in ingested if done.is_new]
    scans = {}
    for earlier_only in (True, False):
        finder = StoryMergeFinder(model.pair_scorer, model.window_days, stored, earlier_only=earlier_only)
        wall, cpu = time.perf_counter(), time.process_time()
        merged = finder.scan(model.index, [article_id for article_id, _ in stored])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        scans["earlier_only" if earlier_only else "all_neighbours"] = {
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "ms_per_article": round(1000 * wall / max(1, finder.scanned), 2),
            "cpu_ms_per_article": round(1000 * cpu / max(1, finder.scanned), 2),
            "stories_merged_same_encoder": merged,
        }
    emit(
        {
            "benchmark": "story_merge_scan",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine_info(),
            "load_average": os.getloadavg()[0],
            "articles": len(articles),
            "stories": len({story for _, story in stored}),
            "ingest_seconds": round(ingest_s, 1),
            "scans": scans,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
