"""PostgreSQL ingest with 1, 2, 4 … replica processes on one database: where do they stop scaling?

``python -m benchmarks.pg_replicas --articles 100000 --replicas 1,2,4``

The same measurement as `benchmarks.backends` (``replicas_ingest``: processes started together,
one article per call of `PgArticleStore.ingest_linked`, a durable commit; vectors precomputed and
a cosine stand-in for the pair scorer), on a database already holding ``--articles`` rows with
their HNSW index, written in publication order as a live feed lays them down (``--layout``). The
replicas split ``--clients`` threads (a fixed load: do more processes serve it faster?) or each
runs ``--clients-per-replica`` (the load grows with the replicas: with one each on 2 cores, one
replica leaves a core idle for a second, the case where the CPU allows 2x). By default the new
articles are a live feed (all published within one day, so every story window overlaps, as in
production) and the story window is the service's 30 days.

Each replica count runs with both ingest designs (``--designs``): ``optimistic``, the store's
(decide without a lock, then one short locked statement checks the window and records a claim),
and ``locked``, the first design (the window's locks held from search to commit). Beside each
rate: how busy the machine's CPUs were (replicas and the PostgreSQL server together), what the
database's backends were doing (sampled from ``pg_stat_activity``: on CPU, queued on the ingest
locks, waiting for their replica, for a commit's flush) and how the store stored the articles,
so a flat curve can be read as "cores full" or "design". Each cell runs ``--repeat`` times, the
cells interleaved, and reports its median run with every run's rate. First, each design ingests
``--serial`` articles with one client alone: the time per article in statements that hold the
window's locks is then the serial part of an ingest, and its inverse a ceiling no replica count
passes (that pass runs once: compare rates from the cells). Run it on machines with different core
counts to see what bounds the 2-replica figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.backends import corpus, fresh_articles, ingest_postgres, replicas_ingest, stored
from benchmarks.common import REPO, emit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000, help="rows in the database before ingest")
    parser.add_argument("--replicas", default="1,2,4", help="comma-separated replica counts")
    parser.add_argument("--per-replica", type=int, default=300, help="articles each replica ingests")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--clients", type=int, default=16, help="client threads in all, split over replicas")
    load.add_argument(
        "--clients-per-replica",
        type=int,
        help="client threads for each replica instead: the offered load grows with the replicas, as "
        "traffic does behind a load balancer (with few, one replica leaves cores idle for a second)",
    )
    parser.add_argument(
        "--layout",
        choices=("dated", "random"),
        default="dated",
        help="the archive's rows written in publication order, as a live feed lays them down (a "
        "story window is then a few contiguous pages), or in random date order (an unsorted bulk "
        "import: the window's rows scattered over the table)",
    )
    parser.add_argument(
        "--dates",
        choices=("live", "spread"),
        default="live",
        help="new articles dated within one day (a live feed: every story window overlaps, as in "
        "production) or spread over the archive's two years (windows rarely overlap)",
    )
    parser.add_argument(
        "--window-days", type=float, default=30.0, help="story window (the service's default: 30 days)"
    )
    parser.add_argument(
        "--designs",
        default="optimistic,locked",
        help="comma-separated: optimistic (the store's ingest) and/or locked (the first design: the "
        "window's locks from search to commit), each run on the same database, one after the other",
    )
    parser.add_argument(
        "--serial", type=int, default=200, help="articles ingested by one client alone, per design"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each (replicas, design) cell, interleaved; the median is reported",
    )
    parser.add_argument(
        "--no-hnsw", action="store_true", help="ingest without the HNSW index (is its insert the bound?)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pg_replicas.json")
    args = parser.parse_args(argv)
    import psycopg

    from model.store.postgres import PgArticleStore
    from service.pg_local import start_local_server

    with tempfile.TemporaryDirectory(prefix="pgrep-", dir="/tmp") as tmp:
        server = start_local_server(Path(tmp) / "pg")
        try:
            store = PgArticleStore(server.url)
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute("DROP INDEX articles_embedding_hnsw")  # bulk load first, then build once
            vectors, records, dates = corpus(args.articles, 2000, 0)
            order = sorted(range(args.articles), key=dates.__getitem__) if args.layout == "dated" else None
            started = time.perf_counter()
            for start in range(0, args.articles, 10_000):
                rows = (order or range(args.articles))[start : start + 10_000]
                store.bulk_load([stored(i, vectors[i], records[i], dates[i]) for i in rows])
            store.close()
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute("SET maintenance_work_mem = '2GB'")
                if not args.no_hnsw:
                    conn.execute(
                        "CREATE INDEX articles_embedding_hnsw ON articles"
                        " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
                    )
                conn.execute("VACUUM ANALYZE articles")
            loaded_s = time.perf_counter() - started
            print(f"loaded {args.articles} rows in {loaded_s:.0f} s", file=sys.stderr, flush=True)
            with psycopg.connect(server.url, autocommit=True) as conn:
                loaded_seq = conn.execute("SELECT max(seq) FROM articles").fetchone()[0]
            designs = args.designs.split(",")
            window = timedelta(days=args.window_days)
            # The serial part of an ingest: one client alone, so the time in statements holding
            # the window's locks is all holding, no waiting. Its inverse bounds any replica count.
            serial: dict[str, dict[str, Any]] = {}
            live = args.dates == "live"
            # A warm-up on the same days: the window's pages cached for whichever design runs first.
            ingest_postgres(server.url, fresh_articles(args.serial, 800, 80_000_000, live), 1, window=window)
            _forget_ingested(server.url, loaded_seq)
            for design in designs:
                alone = ingest_postgres(
                    server.url,
                    fresh_articles(args.serial, 900, 90_000_000, live),
                    1,
                    window=window,
                    locked=design == "locked",
                )
                alone["ceiling_articles_per_s"] = round(1000 / max(alone["lock_ms_per_article"], 1e-3))
                serial[design] = alone
                print(json.dumps({"serial": {design: alone}}), file=sys.stderr, flush=True)
                _forget_ingested(server.url, loaded_seq)
            # Every (replica count, design) cell runs --repeat times, the cells interleaved, and
            # reports its median run: rates on this shared VM swing up to 20% from run to run, which
            # one run per cell would read as a difference between designs or replica counts.
            # Each run starts on the loaded archive alone (the previous run's rows deleted), so
            # no run sees a fuller window.
            cells: dict[str, dict[str, list[dict[str, Any]]]] = {design: {} for design in designs}
            for repeat in range(args.repeat):
                for i, replicas in enumerate(int(r) for r in args.replicas.split(",")):
                    for design in designs:
                        run = replicas_ingest(
                            server.url,
                            replicas,
                            args.per_replica,
                            args.clients_per_replica or max(1, args.clients // replicas),
                            1000 + 100 * i,
                            live=live,
                            window=window,
                            locked=design == "locked",
                        )
                        cells[design].setdefault(str(replicas), []).append(run)
                        print(
                            json.dumps({design: {replicas: run}, "repeat": repeat}),
                            file=sys.stderr,
                            flush=True,
                        )
                        _forget_ingested(server.url, loaded_seq)
            runs = {
                design: {r: _median_run(tries) for r, tries in by.items()} for design, by in cells.items()
            }
        finally:
            server.stop()
    report = {
        "benchmark": "pg_replicas",
        "command": "python -m benchmarks.pg_replicas " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)},
        "postgres": "pgserver 0.1.4: PostgreSQL 16.2, pgvector 0.6.2, fsync on, shared_buffers 128MB",
        "articles_before": args.articles,
        "layout": args.layout,
        "hnsw_index": not args.no_hnsw,
        "dates": args.dates,
        "window_days": args.window_days,
        "repeat": args.repeat,
        "serial": serial,
        "designs": runs,
        "speedup_over_one": {
            design: {
                r: round(run["articles_per_s"] / by[min(by, key=int)]["articles_per_s"], 2)
                for r, run in by.items()
            }
            for design, by in runs.items()
        },
        "optimistic_over_locked": {
            r: round(runs["optimistic"][r]["articles_per_s"] / runs["locked"][r]["articles_per_s"], 2)
            for r in runs.get("optimistic", {})
            if r in runs.get("locked", {})
        },
    }
    emit(report, args.out)
    return 0


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even count), with every run's rate."""
    ranked = sorted(runs, key=lambda run: run["articles_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "runs_articles_per_s": [run["articles_per_s"] for run in runs]}


def _forget_ingested(url: str, loaded_seq: int) -> None:
    """Back to the loaded archive, so the next run's windows hold what this one's did; then a
    checkpoint, so every run starts with no dirty pages and pays the same full-page writes."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM articles WHERE seq > %s", (loaded_seq,))
        conn.execute("VACUUM articles, story_claims")
        conn.execute("CHECKPOINT")


if __name__ == "__main__":
    raise SystemExit(main())
