"""PostgreSQL ingest with 1, 2, 4 … replica processes on one database: where do they stop scaling?

``python -m benchmarks.pg_replicas --articles 100000 --replicas 1,2,4``

The same measurement as `benchmarks.backends` (``replicas_ingest``: processes started together,
one article per transaction, the story decision under its window's advisory lock, a durable
commit; vectors precomputed and a cosine stand-in for the pair scorer), on a database already
holding ``--articles`` rows with their HNSW index, with the same total number of client threads
split over the replicas. Beside each rate: how busy the machine's CPUs were during it (replicas
and the PostgreSQL server together), so a flat curve can be read as "cores full" or "design".
Run it on machines with different core counts to see what bounds the 2-replica figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.backends import corpus, replicas_ingest, stored
from benchmarks.common import REPO, emit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000, help="rows in the database before ingest")
    parser.add_argument("--replicas", default="1,2,4", help="comma-separated replica counts")
    parser.add_argument("--per-replica", type=int, default=300, help="articles each replica ingests")
    parser.add_argument("--clients", type=int, default=16, help="client threads in all, split over replicas")
    parser.add_argument(
        "--no-hnsw", action="store_true", help="ingest without the HNSW index (is its insert the bound?)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pg_replicas.json")
    args = parser.parse_args(argv)
    import psycopg

    from service.store.pg_local import start_local_server
    from service.store.postgres import PgArticleStore

    with tempfile.TemporaryDirectory(prefix="pgrep-", dir="/tmp") as tmp:
        server = start_local_server(Path(tmp) / "pg")
        try:
            store = PgArticleStore(server.url)
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute("DROP INDEX articles_embedding_hnsw")  # bulk load first, then build once
            vectors, records, dates = corpus(args.articles, 2000, 0)
            started = time.perf_counter()
            for start in range(0, args.articles, 10_000):
                end = min(start + 10_000, args.articles)
                store.bulk_load([stored(i, vectors[i], records[i], dates[i]) for i in range(start, end)])
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
            runs = {}
            for i, replicas in enumerate(int(r) for r in args.replicas.split(",")):
                clients = max(1, args.clients // replicas)
                rate, busy = replicas_ingest(server.url, replicas, args.per_replica, clients, 1000 + 100 * i)
                runs[str(replicas)] = {
                    "articles_per_s": round(rate, 1),
                    "clients_each": clients,
                    "cpu_busy": round(busy, 3),
                }
                print(json.dumps({replicas: runs[str(replicas)]}), file=sys.stderr, flush=True)
        finally:
            server.stop()
    base = runs[min(runs, key=int)]["articles_per_s"]
    report = {
        "benchmark": "pg_replicas",
        "command": "python -m benchmarks.pg_replicas " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)},
        "postgres": "pgserver 0.1.4: PostgreSQL 16.2, pgvector 0.6.2, fsync on, shared_buffers 128MB",
        "articles_before": args.articles,
        "hnsw_index": not args.no_hnsw,
        "replicas": runs,
        "speedup_over_one": {r: round(run["articles_per_s"] / base, 2) for r, run in runs.items()},
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
