"""Ingest and search latency while a pending bundle's vector generation fills, beside the same
service with nothing in the background.

One in-process service (FastAPI's TestClient; SQLite store, or with ``--postgres`` a local
PostgreSQL server started for the run, a fresh database per duty) on a MiniLM bundle: ``--stored`` AG
News title + excerpt articles are ingested, then ``--requests`` sequential ``POST /v1/similar`` and
``POST /v1/articles`` (one new article each) are timed; an e5-multilingual bundle fitted on the same
seeds is then reloaded (pending: its generation fills in the background) and the same requests are
timed again while the re-embedding runs, once per ``--duty`` (a fresh store each). The figures are
the p50 and p95 ratios of the two phases (same process, same client overhead); the load average
is recorded beside them because the machine is shared.

Example::

    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python benchmarks/reembed_latency.py --seeds 120 --stored 200 \\
        --requests 30 --duty 0.25 0.5 --out benchmarks/results/reembed_latency.json
    # the same on PostgreSQL (pgserver, as benchmarks/pg_replicas.py)
    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python benchmarks/reembed_latency.py --postgres ... \
        --out benchmarks/results/reembed_latency_pg.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import corpus_dir, emit
from benchmarks.report import machine_info
from benchmarks.training_time import seed_subset

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "reembed-latency-admin-token"


def _fit(seeds: Path, out: Path, cache: Path, encoder: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "training", "fit", "--seeds", str(seeds), "--out", str(out), "--cache-dir",
         str(cache), "--holdout", "0", "--no-progress", "-q", "--no-onnx", "--encoder", encoder],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    return max(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def _articles(first: int, count: int) -> list[dict[str, Any]]:
    """AG News title + excerpt as ingest bodies (files after the seeds, so nothing is a seed)."""
    from model.articles.seeds import records_in_file

    files = sorted((corpus_dir() / "agnews").glob("*.md"))[first : first + count]
    bodies = []
    for i, path in enumerate(files):
        for _, record in records_in_file(path):
            url = f"https://agnews.example/{first + i}"
            bodies.append({"title": record["title"], "excerpt": record.get("excerpt", ""), "webUrl": url})
    return bodies


def _timed(client: Any, method: str, path: str, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    status = client.request(method, path, json=body).status_code
    return time.perf_counter() - started, status


def _phase(client: Any, fresh: list[dict[str, Any]], queries: list[dict[str, Any]], pending: Any) -> dict:
    similar, ingest, statuses, while_pending = [], [], [], 0
    for body, query in zip(fresh, queries, strict=True):
        still = pending()
        seconds, status = _timed(client, "POST", "/v1/similar", {"article": query, "k": 5})
        similar.append(seconds)
        statuses.append(status)
        seconds, status = _timed(client, "POST", "/v1/articles", body)
        ingest.append(seconds)
        statuses.append(status)
        while_pending += int(still and pending())
    return {
        "similar_p50_ms": round(1000 * statistics.median(similar), 1),
        "ingest_p50_ms": round(1000 * statistics.median(ingest), 1),
        "similar_p95_ms": round(1000 * statistics.quantiles(similar, n=20)[-1], 1),
        "ingest_p95_ms": round(1000 * statistics.quantiles(ingest, n=20)[-1], 1),
        "requests": len(similar),
        "measured_while_pending": while_pending,
        "server_errors": sum(status >= 500 for status in statuses),
        "load_average": os.getloadavg()[0],
    }


def _new_database(server_url: str, name: str) -> str:
    """A fresh database on the run's PostgreSQL server (pgvector installed), as a URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(**{**conninfo_to_dict(server_url), "dbname": name})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def _one_duty(
    work: Path,
    duty: float,
    args: argparse.Namespace,
    e5: Path,
    pool: list[dict[str, Any]],
    server_url: str | None = None,
) -> dict:
    """A fresh store on the MiniLM bundle: ingest, time idle, reload the e5 bundle, time again."""
    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    bundles = work / f"bundles-{duty:g}"
    shutil.copytree(work / "bundles", bundles)
    stored, before, during = (
        pool[: args.stored],
        pool[args.stored : args.stored + args.requests],
        pool[args.stored + args.requests :],
    )
    queries = [{"title": b["title"], "excerpt": b["excerpt"]} for b in stored[: args.requests]]
    database = _new_database(server_url, f"reembed_{int(duty * 1000)}") if server_url else None
    settings = Settings(
        bundle=bundles, data_dir=work / f"data-{duty:g}", admin_token=TOKEN, reembed_duty=duty,
        reembed_chunk=args.chunk, database_url=database,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        state = client.app.state.news
        if not state.settled.wait(600):
            raise SystemExit("the service did not start")
        for start in range(0, len(stored), 32):
            client.post("/v1/articles", json={"articles": stored[start : start + 32]})
        idle = _phase(client, before, queries, lambda: False)
        shutil.copytree(e5, bundles / e5.name)
        reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        busy = _phase(client, during, queries, lambda: state.pending is not None)
        progress = state.pending.as_dict() if state.pending is not None else None
    # The fill is left unfinished (the shutdown stops it; a restart would resume it).
    return {
        "duty": duty,
        "store": "postgres" if server_url else "sqlite",
        "pending_at_reload": reload.get("pending"),
        "pending_at_end": progress,
        "idle": idle,
        "during_reembedding": busy,
        "ratio": {
            key: round(busy[f"{key}_ms"] / idle[f"{key}_ms"], 2)
            for key in ("similar_p50", "ingest_p50", "similar_p95", "ingest_p95")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="AG News seed files both bundles fit on")
    parser.add_argument("--stored", type=int, default=300, help="articles stored before the reload")
    parser.add_argument("--requests", type=int, default=40, help="timed request pairs per phase")
    parser.add_argument(
        "--duty", type=float, nargs="+", default=[0.25, 0.5], help="NEWSDESK_REEMBED_DUTY values"
    )
    parser.add_argument("--chunk", type=int, default=16, help="NEWSDESK_REEMBED_CHUNK")
    parser.add_argument("--work", type=Path, help="keep the fitted bundles here (reused when present)")
    parser.add_argument(
        "--postgres", action="store_true", help="a local PostgreSQL store (pgserver) instead of SQLite"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reembed-latency-") as tmp:
        work = Path(tmp)
        kept = args.work
        started = time.perf_counter()
        if kept is not None and (kept / "bundles").is_dir() and (kept / "e5").is_dir():
            shutil.copytree(kept / "bundles", work / "bundles")
            e5 = max(p for p in (kept / "e5").iterdir() if p.is_dir() and not p.name.startswith("."))
            minilm = max(p for p in (work / "bundles").iterdir() if p.is_dir() and not p.name.startswith("."))
        else:
            seeds = work / "seeds"
            seed_subset([corpus_dir() / "agnews"], args.seeds, seeds)
            minilm = _fit(seeds, work / "bundles", work / "cache", "minilm")
            e5 = _fit(seeds, work / "e5", work / "cache-e5", "e5-multilingual")
            if kept is not None:
                shutil.copytree(work / "bundles", kept / "bundles", dirs_exist_ok=True)
                shutil.copytree(work / "e5", kept / "e5", dirs_exist_ok=True)
        fit_s = time.perf_counter() - started
        pool = _articles(args.seeds, args.stored + 2 * args.requests)
        if args.postgres:
            from service.pg_local import start_local_server

            server = start_local_server(work / "pg")
            try:
                runs = [_one_duty(work, duty, args, e5, pool, server.url) for duty in args.duty]
            finally:
                server.stop()
        else:
            runs = [_one_duty(work, duty, args, e5, pool) for duty in args.duty]
        result = {
            "benchmark": "reembed_latency",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": machine_info(),
            "fit_seconds": round(fit_s, 1),
            "bundles": {"minilm": minilm.name, "e5": e5.name},
            "runs": runs,
        }
        emit(result, args.out)


if __name__ == "__main__":
    main()
