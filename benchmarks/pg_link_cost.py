"""What the PostgreSQL ingest costs one client: articles/s and time under the window's locks.

``python -m benchmarks.pg_link_cost --rows 20000 --articles 300 --runs 3``

A local PostgreSQL (the `pgserver` wheel, durability off: this measures the decision, not the
disk) gets ``--rows`` synthetic archived rows (`benchmarks.backends.corpus`: clustered 384-d unit
vectors over two years) with the HNSW index built once; then one client ingests ``--articles`` new
articles one call each, dated over the archive (``archive``) or all within the day after it
(``live``: every story window overlaps), with `benchmarks.backends.cosine_link` standing in for
the pair scorer. ``--runs`` fresh sets of articles per mode; each run's rate and lock
milliseconds per article are listed. Written to compare two trees on one machine (the story
decision's reads: window candidates, nearest at any age), so run both back to back.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import backends
from benchmarks.common import emit


def run(rows: int, articles: int, runs: int) -> dict[str, Any]:
    import psycopg

    from model.store.postgres import PgArticleStore
    from service.pg_local import start_local_server

    vectors, records, dates = backends.corpus(rows, 500, 0)
    archive = [backends.stored(i, vectors[i], records[i], dates[i]) for i in range(rows)]
    work = Path(tempfile.mkdtemp(prefix="pglink-", dir="/tmp"))  # short: the socket lives here
    server = start_local_server(work / "pg", fast_unsafe=True)
    out: dict[str, Any] = {"rows": rows, "articles": articles}
    try:
        store = PgArticleStore(server.url)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("DROP INDEX articles_embedding_hnsw")  # load first, then build once
        for start in range(0, rows, 10_000):
            store.bulk_load(archive[start : start + 10_000])
        store.close()
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(
                "CREATE INDEX articles_embedding_hnsw ON articles USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)"
            )
            conn.execute("VACUUM ANALYZE articles")
        for mode in ("archive", "live"):
            results = []
            for r in range(runs):
                seed = 100 * (mode == "live") + r + 1
                fresh = backends.fresh_articles(articles, seed, rows + 1000 * seed, live=mode == "live")
                results.append(backends.ingest_postgres(server.url, fresh, 1))
            out[mode] = {
                "articles_per_s": [x["articles_per_s"] for x in results],
                "lock_ms_per_article": [x["lock_ms_per_article"] for x in results],
            }
    finally:
        server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pg_link_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=20_000, help="archived rows stored first")
    parser.add_argument("--articles", type=int, default=300, help="new articles per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (archive, live)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    emit(run(args.rows, args.articles, args.runs), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
