"""Backfill vs posting: the same N articles into an empty store, through ``python -m training backfill``
and through ``POST /v1/articles`` to a running service.

For N articles of a shared corpus (default: the first 5,000 Hacker News seeds) it measures:

* ``backfill_cold_s``: ``python -m training backfill`` into an empty data folder with an empty
  embedding cache (the whole command: start, bundle load, embedding, stories, store, snapshot);
* ``backfill_warm_s``: the same into another empty data folder with the cache that run filled
  (the archive's embeddings already computed, e.g. by a ``fit`` or ``dedup`` on it);
* ``post_s``: a service (uvicorn, the same bundle and encoder) on an empty data folder, sent the
  same articles in published order as ``POST /v1/articles`` batches of ``--post-batch`` by one
  client, from the first request to the last 201 (the service has no embedding cache);
* ``ready_s``: a service started on the warm backfill's folder, from process start to ``/readyz``
  200 (restored from the backfill's index snapshot), and that every article is stored once.

``--no-post`` skips the posting (how a backfill alone grows with N); ``--cache-dir`` keeps one
embedding cache across runs, so the "cold" run of a later, larger N embeds only what is new.

Example::

    PYTHONPATH=. .venv/bin/python -m benchmarks.backfill --n 10000 \\
        --out benchmarks/results/backfill_hn_10000.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import corpus_dir, emit
from benchmarks.report import load_avg_1m, machine_info
from benchmarks.service_load import ROOT, base_env, serving, train_bundle
from benchmarks.startup import time_start
from model.articles.seeds import read_seeds
from model.store import open_read_only
from training.backfill import published_order


def run_backfill(archive: Path, data: Path, bundle: Path, cache: Path) -> tuple[float, dict[str, object]]:
    command = [sys.executable, "-m", "training", "backfill", "--seeds", str(archive), "--data", str(data),
               "--bundle", str(bundle), "--cache-dir", str(cache), "--no-progress", "-q"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=base_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"backfill failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout)


def post_all(bundle: Path, work: Path, records: list[dict[str, object]], batch: int) -> float:
    with serving(bundle, work, "post") as server, httpx.Client(base_url=server.url, timeout=300) as client:
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            response = client.post("/v1/articles", json={"articles": records[start : start + batch]})
            if response.status_code not in (200, 201):
                raise SystemExit(f"POST /v1/articles: {response.status_code} {response.text[:500]}")
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, default=corpus_dir() / "hn", help="a folder of seed files")
    parser.add_argument("--n", type=int, default=5000, help="articles to load (the first N files)")
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: one trained on seeds/)")
    parser.add_argument("--post-batch", type=int, default=64, help="articles per POST (default 64)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--cache-dir", type=Path, help="embedding cache to use and keep (default: a fresh one, removed after)"
    )
    parser.add_argument(
        "--no-post",
        action="store_true",
        help="only the backfills (how a backfill grows with N, not vs posting)",
    )
    args = parser.parse_args(argv)

    load_at_start = load_avg_1m()
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        bundle = args.bundle or train_bundle([ROOT / "seeds"], work / "bundles", work / "fit-cache")
        files = sorted(p for p in args.seeds.iterdir() if p.suffix == ".md")[: args.n]
        articles = published_order(list(read_seeds(files).articles.values()))
        records = [article.to_record() for article in articles]
        archive = work / "archive.jsonl"
        archive.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
        cache = args.cache_dir or work / "cache"
        cold_s, cold = run_backfill(archive, work / "data-cold", bundle, cache)
        warm_s, warm = run_backfill(archive, work / "data", bundle, cache)
        start = time_start(bundle, work / "data", work / "start.log")
        store = open_read_only(work / "data")
        stored, unique = store.count(), len({row.id for row in store.iter_since(0)})
        store.close()
        post_s = None if args.no_post else post_all(bundle, work, records, args.post_batch)
        result = {
            "articles": len(records),
            "seeds": str(args.seeds.name),
            "bundle": "trained on seeds/" if args.bundle is None else str(args.bundle),
            "post_batch": args.post_batch,
            "backfill_cold_s": round(cold_s, 1),
            "backfill_warm_s": round(warm_s, 1),
            "backfill_warm_summary": warm,
            "backfill_cold_summary": cold,
            "post_s": round(post_s, 1) if post_s is not None else None,
            "speedup_warm_vs_post": round(post_s / warm_s, 1) if post_s is not None else None,
            "speedup_cold_vs_post": round(post_s / cold_s, 1) if post_s is not None else None,
            "ready_s": start["ready_s"],
            "stored_after_backfill": stored,
            "stored_once": stored == unique == len(records),
            "load_avg_1m_at_start": load_at_start,
            "machine": machine_info(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
