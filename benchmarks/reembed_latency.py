"""Ingest and search latency while a pending bundle's vector generation fills, beside the same
service with nothing in the background.

One in-process service (FastAPI's TestClient, SQLite store) on a MiniLM bundle: ``--stored`` AG
News title + excerpt articles are ingested, then ``--requests`` sequential ``POST /v1/similar`` and
``POST /v1/articles`` (one new article each) are timed; an e5-multilingual bundle fitted on the same
seeds is then reloaded (pending: its generation fills in the background at ``--duty``) and the same
requests are timed again while the re-embedding runs. The figures are the p50 ratios of the two
phases (same process, same client overhead); the load average is recorded beside them because the
machine is shared.

Example::

    PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE python benchmarks/reembed_latency.py --seeds 200 --stored 300 \\
        --requests 40 --out benchmarks/results/reembed_latency.json
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
        "requests": len(similar),
        "measured_while_pending": while_pending,
        "server_errors": sum(status >= 500 for status in statuses),
        "load_average": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="AG News seed files both bundles fit on")
    parser.add_argument("--stored", type=int, default=300, help="articles stored before the reload")
    parser.add_argument("--requests", type=int, default=40, help="timed request pairs per phase")
    parser.add_argument("--duty", type=float, default=0.5, help="NEWSDESK_REEMBED_DUTY")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from service.config import Settings
    from service.main import create_app

    with tempfile.TemporaryDirectory(prefix="reembed-latency-") as tmp:
        work = Path(tmp)
        seeds = work / "seeds"
        seed_subset([corpus_dir() / "agnews"], args.seeds, seeds)
        started = time.perf_counter()
        minilm = _fit(seeds, work / "bundles", work / "cache", "minilm")
        e5 = _fit(seeds, work / "e5", work / "cache-e5", "e5-multilingual")
        fit_s = time.perf_counter() - started
        pool = _articles(args.seeds, args.stored + 2 * args.requests)
        stored, before, during = (
            pool[: args.stored],
            pool[args.stored : args.stored + args.requests],
            pool[args.stored + args.requests :],
        )
        queries = [{"title": b["title"], "excerpt": b["excerpt"]} for b in stored[: args.requests]]
        settings = Settings(
            bundle=work / "bundles", data_dir=work / "data", admin_token=TOKEN, reembed_duty=args.duty
        )
        with TestClient(create_app(settings)) as client:
            state = client.app.state.news
            if not state.settled.wait(600):
                raise SystemExit("the service did not start")
            for start in range(0, len(stored), 32):
                client.post("/v1/articles", json={"articles": stored[start : start + 32]})
            idle = _phase(client, before, queries, lambda: False)
            shutil.move(str(e5), str(work / "bundles" / e5.name))
            reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            busy = _phase(client, during, queries, lambda: state.pending is not None)
            deadline = time.monotonic() + 1800
            while state.pending is not None and time.monotonic() < deadline:
                time.sleep(0.5)
            switched = state.model.version == e5.name
        result = {
            "benchmark": "reembed_latency",
            "args": vars(args) | {"out": str(args.out) if args.out else None},
            "machine": machine_info(),
            "fit_seconds": round(fit_s, 1),
            "bundles": {"minilm": minilm.name, "e5": e5.name},
            "pending_at_reload": reload.get("pending"),
            "idle": idle,
            "during_reembedding": busy,
            "ratio": {
                "similar_p50": round(busy["similar_p50_ms"] / idle["similar_p50_ms"], 2),
                "ingest_p50": round(busy["ingest_p50_ms"] / idle["ingest_p50_ms"], 2),
            },
            "switched": switched,
        }
        emit(result, args.out)


if __name__ == "__main__":
    main()
