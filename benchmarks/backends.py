"""SQLite + in-process faiss against PostgreSQL + pgvector, side by side in one run.

``python -m benchmarks.backends --sizes 100000 --out benchmarks/results/backends.json``

Per size: the same synthetic corpus (clustered unit vectors, 384-d, like sentence embeddings:
``--centres`` topics plus noise; 50 providers; publication times over two years) goes into both
backends. Measured:

* ``/v1/similar``'s search step, p50/p99 and recall@10 against exact search, unfiltered, with a
  30-day date filter and with a one-provider filter (what `ArticleIndex.search` and
  `PgSearch.nearest` return; the pair-scorer re-rank after it is the same code on both).
* ingest articles/s with 1, 8 and 32 concurrent clients (one article per ingest call: neighbour
  query in the story window, story decision, durable write before it returns; vectors
  precomputed, so the encoder, which is the same on both, is left out), and for PostgreSQL 2
  replica processes vs 1. New articles are dated over the archive's two years with a 3-day
  window; `benchmarks.pg_replicas` measures a live feed.
* start to ready in a fresh process, and its RSS then. SQLite: the first start (every stored row
  read into the index, search exact until the graph is built in the background) and a restart
  from the index snapshot the service keeps beside the store (rows, stories and the faiss graph;
  the graph's float16 codes are the only copy of the vectors); PostgreSQL: migrations check +
  pool.
* bulk load and index build times, and PostgreSQL's table + index size.

PostgreSQL is the `pgserver` wheel (16.2, pgvector 0.6.2) on this machine, durable settings
(fsync on), default ``shared_buffers`` (128 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.common import REPO

DIM = 384
T0 = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_DAYS = 730
N_PROVIDERS = 50
WINDOW = timedelta(days=3)


# --- the corpus ---------------------------------------------------------------------------------


REAL_BASE: npt.NDArray[np.float32] | None = None  # real MiniLM embeddings to anchor on (--real-base)


def corpus(
    n: int, centres: int, seed: int
) -> tuple[npt.NDArray[np.float32], list[dict[str, Any]], list[datetime]]:
    """``n`` clustered unit vectors with real-looking records (title, provider, date, URL).

    With ``REAL_BASE`` set, the vectors are `benchmarks.ann.synthetic`'s: real MiniLM embeddings
    of shared-corpus articles blended and noised (news-like neighbourhoods); otherwise gaussian
    clusters around ``centres`` random centres (harder for HNSW: near-ties inside a cluster).
    """
    rng = np.random.default_rng(seed)
    which = rng.integers(0, centres, n)
    if REAL_BASE is not None:
        from benchmarks.ann import synthetic

        vectors = synthetic(REAL_BASE, n, seed).astype(np.float32)
    else:
        middle = rng.standard_normal((centres, DIM)).astype(np.float32)
        vectors = middle[which] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Skewed providers (a few big wires, a long tail), like real feeds.
    weights = 1 / np.arange(1, N_PROVIDERS + 1)
    providers = rng.choice(N_PROVIDERS, n, p=weights / weights.sum())
    seconds = rng.integers(0, SPAN_DAYS * 86400, n)
    records, dates = [], []
    for i in range(n):
        domain = f"outlet{providers[i]:02d}.example"
        published = T0 + timedelta(seconds=int(seconds[i]))
        dates.append(published)
        records.append(
            {
                "title": f"Topic {which[i]} report {i}: officials comment on the latest developments",
                "excerpt": f"A synthetic article about topic {which[i]} published by {domain}.",
                "webUrl": f"https://{domain}/news/{i}",
                "publishedDateTime": published.isoformat().replace("+00:00", "Z"),
                "provider": {"name": domain.split(".")[0].title(), "domain": domain},
            }
        )
    return vectors, records, dates


def stored(i: int, vector: npt.NDArray[np.float32], record: dict[str, Any], published: datetime) -> Any:
    from model.articles.article import article_from_record
    from model.store.base import StoredArticle

    return StoredArticle(
        id=article_from_record(record).id,  # the hash of the canonical URL, as the service does
        record=record,
        embedding=vector,
        story_id=f"s_{i:016x}",
        classification={"topics": [], "scores": {}},
        canonical_url=record["webUrl"],
        published_at=published,
        model_version="bench",
    )


# --- search quality and latency -----------------------------------------------------------------


def filter_cases(dates: Sequence[datetime]) -> dict[str, Any]:
    from model.results import SearchFilters

    since = T0 + timedelta(days=400)
    return {
        "unfiltered": SearchFilters(),
        "date_30d": SearchFilters(since=since, until=since + timedelta(days=30)),
        "provider": SearchFilters(providers=frozenset({"outlet05.example"})),
    }


def exact_top(
    vectors: npt.NDArray[np.float32],
    ids: Sequence[str],
    mask: npt.NDArray[np.bool_],
    query: npt.NDArray[np.float32],
    k: int,
) -> list[str]:
    rows = np.flatnonzero(mask)
    sims = vectors[rows] @ query
    return [ids[i] for i in rows[np.argsort(-sims, kind="stable")[:k]]]


def masks(dates: Sequence[datetime], records: Sequence[dict[str, Any]]) -> dict[str, npt.NDArray[np.bool_]]:
    stamps = np.array([d.timestamp() for d in dates])
    since = (T0 + timedelta(days=400)).timestamp()
    domains = np.array([r["provider"]["domain"] for r in records])
    return {
        "unfiltered": np.ones(len(dates), dtype=bool),
        "date_30d": (stamps >= since) & (stamps <= since + 30 * 86400),
        "provider": domains == "outlet05.example",
    }


def measure_search(
    search: Callable[[npt.NDArray[np.float32], Any], list[str]],
    queries: npt.NDArray[np.float32],
    cases: dict[str, Any],
    truth: dict[str, list[list[str]]],
) -> dict[str, Any]:
    out = {}
    for name, filters in cases.items():
        search(queries[0], filters)  # warm
        times, recalls = [], []
        for q, want in zip(queries, truth[name], strict=True):
            started = time.perf_counter()
            got = search(q, filters)
            times.append(time.perf_counter() - started)
            recalls.append(len(set(got) & set(want)) / max(1, len(want)))
        out[name] = {
            "p50_ms": round(1000 * float(np.percentile(times, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(times, 99)), 2),
            "recall_at_10": round(float(np.mean(recalls)), 4),
        }
    return out


def _status_mb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024)
    return 0


def rss_mb() -> int:
    """This process's resident memory now (VmRSS)."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    return _status_mb("VmHWM")


# --- start to ready, in a fresh process -----------------------------------------------------------


def _ready_sqlite(folder: str, *, from_snapshot: bool) -> dict[str, Any]:
    """The embedded service's restore: every stored row, or the snapshot and the rows after it.
    (The service itself does this in `model.coverage.restore`, with a bundle and an encoder around it.)"""
    from model.articles.article import record_provider_key
    from model.coverage.article_index import ArticleIndex, StoredRecord
    from model.store.base import restore_rows
    from model.store.sqlite import SqliteArticleStore

    started = time.perf_counter()
    store = SqliteArticleStore(Path(folder) / "articles.sqlite3")
    index = ArticleIndex(DIM)
    since = 0
    if from_snapshot:
        snapshot = Path(folder) / "index-snapshot"
        index.load_snapshot(snapshot)
        since = int(index.read_snapshot_meta(snapshot)["last_seq"])  # type: ignore[index]
    batch: list[Any] = []

    def flush() -> None:  # as `model.coverage.restore.add_stored_rows`: records parsed lazily, on first use
        index.add(
            [StoredRecord(row.id, record_provider_key(row.record), row.published_at, None) for row in batch],
            np.stack([row.embedding for row in batch]),
            [row.story_id for row in batch],
            sync_ann=False,
        )
        batch.clear()

    for row in restore_rows(store, since):
        batch.append(row)
        if len(batch) >= 5000:
            flush()
    if batch:
        flush()
    ready = time.perf_counter() - started
    index.search(np.ones(DIM, dtype=np.float32) / DIM**0.5, 10)  # answers: exact, or through the graph
    return {
        "ready_s": round(ready, 2),
        "graph_loaded": index._ann is not None,
        "vectors_only_in_graph": index._buffer is None,
        "rss_mb": rss_mb(),
    }


def _ready_postgres(url: str) -> dict[str, Any]:
    from model.store.postgres import PgArticleStore

    started = time.perf_counter()
    store = PgArticleStore(url)
    store.count()
    return {"ready_s": round(time.perf_counter() - started, 2), "rss_mb": rss_mb()}


def ready_in_child(kind: str, where: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.backends", "_ready", kind, where],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- ingest throughput --------------------------------------------------------------------------


def fresh_articles(n: int, seed: int, offset: int, live: bool = False) -> list[Any]:
    """``n`` new articles dated anywhere in the archive's two years or, ``live``, all within the
    day after it (a live feed: every article's story window is the same few days)."""
    vectors, records, dates = corpus(n, 500, seed)
    if live:
        rng = np.random.default_rng(seed)
        end = T0 + timedelta(days=SPAN_DAYS)
        dates = [end + timedelta(seconds=int(s)) for s in rng.integers(0, 86400, n)]
    for i, record in enumerate(records):
        record["webUrl"] = f"https://ingest.example/{seed}/{i}"
        record["publishedDateTime"] = dates[i].isoformat().replace("+00:00", "Z")
    return [stored(offset + i, vectors[i], records[i], dates[i]) for i in range(n)]


def cosine_link(
    article: Any, candidates: Sequence[Any], nearest: Sequence[Any] = ()
) -> tuple[str, str | None]:
    """A stand-in for the pair scorer (the same cost on both backends): join at cosine >= 0.8."""
    best = max(candidates, key=lambda c: float(c.vector @ article.embedding), default=None)
    if best is not None and float(best.vector @ article.embedding) >= 0.8:
        return best.story_id or article.story_id, None
    return article.story_id, None


def ingest_postgres(
    url: str,
    articles: Sequence[Any],
    clients: int,
    start_at: float = 0.0,
    window: timedelta = WINDOW,
    locked: bool = False,
) -> dict[str, Any]:
    """``articles_per_s`` through ``clients`` threads, timed from ``start_at`` (epoch seconds; now
    if past) with every pooled connection already open, each article linked within ``window``;
    how the store ``stored`` them (first claim, a later claim, under the locks); and
    ``lock_ms_per_article``, the time in statements holding the window's locks (waits included:
    with one client, the serial part of each ingest). ``locked``: the first design, the window's
    locks held from search to commit for every article."""
    from model.store.postgres import PgArticleStore

    store = PgArticleStore(url, min_size=clients, max_size=max(2, clients))
    if locked:
        store.OPTIMISTIC_TRIES = 0
    try:
        store.pool.wait(timeout=120)
        time.sleep(max(0.0, start_at - time.time()))
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda a: store.ingest_linked([a], cosine_link, window), articles))
        elapsed = time.perf_counter() - started
        return {
            "articles_per_s": round(len(articles) / elapsed, 1),
            "stored": dict(store.ingest_outcomes),
            "lock_ms_per_article": round(1000 * store.lock_seconds / len(articles), 2),
        }
    finally:
        store.close()


def ingest_sqlite(store: Any, index: Any, articles: Sequence[Any], clients: int) -> float:
    """The embedded path: under the process's write lock, neighbours from the in-memory index,
    decide, add to the index, write the store (synchronous=FULL) before answering."""
    from model.articles.article import article_from_record
    from model.results import SearchFilters

    lock = threading.Lock()

    def one(a: Any) -> None:
        article = article_from_record(a.record)
        with lock:
            t = a.published_at
            near = index.search(a.embedding, 10, SearchFilters(since=t - WINDOW, until=t + WINDOW))
            story = a.story_id
            if near and near[0][1] >= 0.8:
                story = index.story_of(near[0][0]) or story
            index.add([article], a.embedding[None, :], [story])
            store.put_many([a])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, articles))
    return len(articles) / (time.perf_counter() - started)


def _ingest_child(
    url: str, seed: int, n: int, clients: int, start_at: float, live: bool, window: timedelta, locked: bool
) -> dict[str, Any]:
    articles = fresh_articles(n, seed, 10_000_000 * seed, live)
    # All replicas begin together, warmed up.
    return {**ingest_postgres(url, articles, clients, start_at, window, locked), "finished_at": time.time()}


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class WaitSampler:
    """What the database's client backends are doing, sampled every ``every`` seconds from
    ``pg_stat_activity`` while the block runs: the share of backend-samples per state.

    ``CPU`` is a backend running a statement; ``Lock:advisory`` one queued for an ingest lock;
    ``Client:ClientRead`` one idle inside a transaction, waiting for its replica's next statement;
    ``IO:WALSync`` / ``LWLock:WALWrite`` one waiting for a durable commit. Idle connections
    between transactions are not counted.
    """

    QUERY = (
        "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()"
    )

    def __init__(self, url: str, every: float = 0.01) -> None:
        self.url, self.every = url, every
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(self.every):
                for (state,) in conn.execute(self.QUERY).fetchall():
                    self.counts[state] = self.counts.get(state, 0) + 1

    def shares(self, top: int = 6) -> dict[str, float]:
        total = sum(self.counts.values()) or 1
        ranked = sorted(self.counts.items(), key=lambda item: -item[1])[:top]
        return {state: round(count / total, 3) for state, count in ranked}


def replicas_ingest(
    url: str,
    replicas: int,
    per_replica: int,
    clients: int,
    seed: int,
    live: bool = False,
    window: timedelta = WINDOW,
    locked: bool = False,
) -> dict[str, Any]:
    """``replicas`` processes ingesting at once (started together, after their imports): total
    ``articles_per_s`` from the common start to the last one's end, the machine's ``cpu_busy``
    share then (replicas and PostgreSQL together: near 1.0 means the cores, not the design, bound
    it), what the database's backends were waiting on (`WaitSampler`) and the store's outcomes."""
    start_at = time.time() + 20  # after every child has imported and built its articles
    command = [sys.executable, "-m", "benchmarks.backends", "_ingest", url]
    options = [str(int(live)), str(window.total_seconds()), str(int(locked))]
    children = [
        subprocess.Popen(
            [*command, str(seed + r), str(per_replica), str(clients), str(start_at), *options],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for r in range(replicas)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    busy0, total0 = cpu_times()
    with WaitSampler(url) as waits:
        outputs = [child.communicate(timeout=1800)[0] for child in children]
    busy1, total1 = cpu_times()
    reports = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    return {
        "articles_per_s": round(
            replicas * per_replica / (max(r["finished_at"] for r in reports) - start_at), 1
        ),
        "clients_each": clients,
        "cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 3),
        "database_backends": waits.shares(),
        "stored": dict(sum((Counter(report["stored"]) for report in reports), Counter())),
    }


# --- one size -------------------------------------------------------------------------------------


def run_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import psycopg

    from model.articles.article import article_from_record
    from model.coverage.article_index import ArticleIndex
    from model.store.postgres import PgArticleStore
    from model.store.sqlite import SqliteArticleStore
    from service.pg_local import start_local_server

    print(f"[{n}] corpus", file=sys.stderr)
    vectors, records, dates = corpus(n, args.centres, args.seed)
    articles = [stored(i, vectors[i], records[i], dates[i]) for i in range(n)]
    rng = np.random.default_rng(args.seed + 1)
    # Queries: corpus vectors moved by a small random step (noise of norm 0.3, cosine ~0.95 to
    # the original), like a new report of a known event; not near-random points, where every
    # neighbour is a tie and no index could find "the" top 10.
    noise = rng.standard_normal((args.queries, DIM)).astype(np.float32)
    noise *= 0.3 / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, n, args.queries)] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cases, case_masks = filter_cases(dates), masks(dates, records)
    ids = [a.id for a in articles]
    truth = {name: [exact_top(vectors, ids, case_masks[name], q, 10) for q in queries] for name in cases}
    result: dict[str, Any] = {
        "n": n,
        "selectivity": {name: round(float(m.mean()), 4) for name, m in case_masks.items()},
    }

    # SQLite + faiss
    print(f"[{n}] sqlite: write", file=sys.stderr)
    folder = work / f"sqlite_{n}"
    store = SqliteArticleStore(folder / "articles.sqlite3")
    started = time.perf_counter()
    for start in range(0, n, 5000):
        store.put_many(articles[start : start + 5000])
    sqlite: dict[str, Any] = {"write_s": round(time.perf_counter() - started, 1)}
    print(f"[{n}] sqlite: index", file=sys.stderr)
    index = ArticleIndex(DIM)
    started = time.perf_counter()
    index.add(
        [article_from_record(r) for r in records], vectors, [a.story_id for a in articles], sync_ann=False
    )
    index.build_ann()
    sqlite["index_build_s"] = round(time.perf_counter() - started, 1)
    sqlite["search"] = measure_search(
        lambda q, f: [i for i, _ in index.search(q, 10, f)], queries, cases, truth
    )
    sqlite["ingest_articles_per_s"] = {}
    for c in (1, 8, 32):
        batch = fresh_articles(args.ingest, 100 + c, 20_000_000 + c * 100_000)
        sqlite["ingest_articles_per_s"][str(c)] = round(ingest_sqlite(store, index, batch, c), 1)
    # What the service writes beside its store once the graph is built (and at every stop).
    index.write_snapshot(folder / "index-snapshot", from_row=0, meta={"last_seq": store.last_seq()})
    store.close()
    index = None  # free the in-memory index before the PostgreSQL half
    print(f"[{n}] sqlite: ready", file=sys.stderr)
    sqlite["start"] = {
        "first": ready_in_child("sqlite_first", str(folder)),
        "restart": ready_in_child("sqlite_restart", str(folder)),
    }
    result["sqlite_faiss"] = sqlite

    # PostgreSQL + pgvector
    print(f"[{n}] postgres: load", file=sys.stderr)
    server = start_local_server(work / f"pg_{n}")
    try:
        url = server.url
        pg = PgArticleStore(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP INDEX articles_embedding_hnsw")  # bulk load first, then build once
        started = time.perf_counter()
        for start in range(0, n, 10_000):
            pg.bulk_load(articles[start : start + 10_000])
        postgres: dict[str, Any] = {"copy_load_s": round(time.perf_counter() - started, 1)}
        print(f"[{n}] postgres: hnsw", file=sys.stderr)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            # The graph fits in memory (2 GB at 1M): pgvector builds it there, with one parallel worker.
            conn.execute("SET maintenance_work_mem = '3GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")
            conn.execute(
                "CREATE INDEX articles_embedding_hnsw ON articles USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 64)"
            )
            conn.execute("VACUUM ANALYZE articles")
            sizes = conn.execute(
                "SELECT pg_total_relation_size('articles'), pg_relation_size('articles_embedding_hnsw')"
            ).fetchone()
        postgres["hnsw_build_s"] = round(time.perf_counter() - started, 1)
        postgres["table_with_indexes_mb"] = round(sizes[0] / 2**20) if sizes else None
        postgres["hnsw_index_mb"] = round(sizes[1] / 2**20) if sizes else None
        postgres["search"] = measure_search(
            lambda q, f: [i for i, _ in pg.search().nearest(q, 10, f)], queries, cases, truth
        )
        shipped = pg.EF_SEARCH
        for ef in (100, 200):  # narrower unfiltered beams than the shipped one: recall vs latency
            pg.EF_SEARCH = ef
            narrower = measure_search(
                lambda q, f: [i for i, _ in pg.search().nearest(q, 10, f)],
                queries,
                {"unfiltered": cases["unfiltered"]},
                truth,
            )
            postgres["search"][f"unfiltered_ef{ef}"] = narrower["unfiltered"]
        pg.EF_SEARCH = shipped
        postgres["ef_search"] = shipped
        pg.close()
        print(f"[{n}] postgres: ingest", file=sys.stderr)
        postgres["ingest_articles_per_s"] = {}
        for c in (1, 8, 32):
            batch = fresh_articles(args.ingest, 200 + c, 30_000_000 + c * 100_000)
            postgres["ingest_articles_per_s"][str(c)] = ingest_postgres(url, batch, c)["articles_per_s"]
        per = args.ingest
        one, two = replicas_ingest(url, 1, per, 16, 300), replicas_ingest(url, 2, per, 8, 400)
        postgres["replicas_ingest_articles_per_s"] = {"1": one["articles_per_s"], "2": two["articles_per_s"]}
        postgres["replicas_cpu_busy"] = {"1": one["cpu_busy"], "2": two["cpu_busy"]}
        postgres["start"] = ready_in_child("postgres", url)
    finally:
        server.stop()
    result["postgres_pgvector"] = postgres
    return result


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_ready":  # child: start to ready + peak RSS
        kind, where = argv[1], argv[2]
        if kind == "postgres":
            out = _ready_postgres(where)
        else:
            out = _ready_sqlite(where, from_snapshot=kind == "sqlite_restart")
        out["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(out))
        return
    if argv and argv[0] == "_ingest":  # child: one replica's ingest load
        child = _ingest_child(
            argv[1],
            int(argv[2]),
            int(argv[3]),
            int(argv[4]),
            float(argv[5]),
            argv[6] == "1",
            timedelta(seconds=float(argv[7])),
            argv[8] == "1",
        )
        print(json.dumps(child))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="100000", help="comma-separated corpus sizes (measured: 100000,1000000)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=200, help="articles per ingest measurement")
    parser.add_argument("--centres", type=int, default=2000, help="topic clusters in the synthetic corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--real-base",
        type=int,
        default=0,
        help="anchor the vectors on this many real MiniLM embeddings (benchmarks/ann.py, cached in "
        ".cache/ann); 0: gaussian clusters",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "backends.json")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    global REAL_BASE
    if args.real_base:
        from benchmarks.ann import base_vectors

        REAL_BASE = base_vectors(args.real_base, REPO / ".cache" / "ann")
    results = []
    with tempfile.TemporaryDirectory(prefix="bk-", dir="/tmp") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            results.append(run_size(n, args, Path(tmp)))
    report = {
        "benchmark": "backends",
        "command": "python -m benchmarks.backends " + " ".join(argv),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 1)},
        "postgres": "pgserver 0.1.4: PostgreSQL 16.2, pgvector 0.6.2, fsync on, shared_buffers 128MB",
        "vectors": f"real-anchored ({args.real_base} MiniLM embeddings)"
        if args.real_base
        else f"gaussian clusters ({args.centres} centres)",
        "sizes": results,
        "note": "ingest excludes encoding (vectors precomputed) and uses a cosine stand-in for the pair "
        "scorer on both backends; one article per ingest call",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
