"""Start to ready with 0, 10k and 100k stored articles: the embedded (SQLite + in-memory index) service.

For each size it fills a fresh SQLite store with that many articles (real-looking records; unit
vectors drawn around topic centres, as MiniLM vectors cluster), starts ``uvicorn service.main:app``
on it and measures, from process start:

* ``port_open_s``: the first ``/healthz`` 200 (the port opens before anything is loaded);
* ``ready_s``: the first ``/readyz`` 200 (bundle loaded, every stored article restored);
* ``rss_mb``: the service's resident memory once ready.

The first start of each size has no index snapshot (it restores every stored row); from 20,000
stored articles the service writes a snapshot (at shutdown, or once its ANN graph is built), and
the ``--repeats`` restarts after it load that instead: ``first_ready_s`` vs ``ready_s``. Past 50k
articles the first start is left running until its graph is built and snapshotted
(``graph_built_s``, and ``steady_rss_mb`` / ``peak_rss_mb`` then: the graph's codes become the only
copy of the vectors), so the restarts load the graph too and their ``rss_mb`` is the steady state.

Stored articles are restored from their stored vectors, stories and duplicate links (nothing is
re-embedded or re-scored) and parsed lazily; past 50k articles the ANN graph is built after ready.

Example::

    PYTHONPATH=. .venv/bin/python -m benchmarks.startup --sizes 0 10000 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from benchmarks.report import machine_info
from benchmarks.service_load import ROOT, base_env, free_port, train_bundle
from model.store import StoredArticle
from model.store.sqlite import SqliteArticleStore

TARGET_READY_S = 5.0
GRAPH_FIELDS = ("graph_built_s", "steady_rss_mb", "peak_rss_mb")  # the first start, past 50k


def fill_store(path: Path, n: int, seed: int = 0) -> float:
    """``n`` stored articles in a new SQLite store at ``path``; returns the seconds it took."""
    started = time.perf_counter()
    store = SqliteArticleStore(path)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, 384)).astype(np.float32)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    batch: list[StoredArticle] = []
    for i in range(n):
        vector = centres[i % 200] + 0.6 * rng.standard_normal(384).astype(np.float32)
        vector /= np.linalg.norm(vector)
        outlet = f"outlet{i % 300}.example"
        moment = base + timedelta(minutes=7 * i)
        record = {
            "id": f"{i:016x}",
            "title": f"Story {i // 3}: markets, rates and energy prices move again ({i})",
            "excerpt": "Traders weighed the central bank's outlook as energy prices rose for a third day. "
            * 2,
            "publishedDateTime": moment.isoformat().replace("+00:00", "Z"),
            "webUrl": f"https://{outlet}/news/{i}",
            "provider": {"name": outlet.split(".")[0].title(), "domain": outlet},
        }
        batch.append(
            StoredArticle(
                id=record["id"],
                record=record,
                embedding=vector,
                story_id=f"s_{i // 3:015x}",
                classification={"topics": [{"label": "Business", "probability": 0.8}], "scores": {}},
                canonical_url=f"{outlet}/news/{i}",
                published_at=moment,
                model_version="benchmark",
            )
        )
        if len(batch) == 5000:
            store.put_many(batch)
            batch = []
    if batch:
        store.put_many(batch)
    store.close()
    return time.perf_counter() - started


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _snapshot_has_graph(data_dir: Path) -> bool:
    try:
        meta = json.loads((data_dir / "index-snapshot" / "snapshot.json").read_text())
    except (OSError, ValueError):
        return False
    return int(meta.get("ann_rows", 0)) > 0


def time_start(bundle: Path, data_dir: Path, log: Path, *, wait_for_graph: bool = False) -> dict[str, float]:
    import subprocess
    import sys

    port = free_port()
    env = base_env() | {
        "NEWSDESK_BUNDLE": str(bundle),
        "NEWSDESK_DATA_DIR": str(data_dir),
        "NEWSDESK_LOG_LEVEL": "warning",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with log.open("ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    port_open = ready = None
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while time.perf_counter() - started < 600:
                if process.poll() is not None:
                    raise SystemExit(f"service exited:\n{log.read_text()[-3000:]}")
                try:
                    if port_open is None and client.get("/healthz").status_code == 200:
                        port_open = time.perf_counter() - started
                    if port_open is not None and client.get("/readyz").status_code == 200:
                        ready = time.perf_counter() - started
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
            rss = _rss_mb(process.pid)
        graph: dict[str, float] = {}
        if wait_for_graph and ready is not None:
            while not _snapshot_has_graph(data_dir) and time.perf_counter() - started < 1800:
                if process.poll() is not None:
                    raise SystemExit(f"service exited:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
            graph = {
                "graph_built_s": round(time.perf_counter() - started, 1),
                "steady_rss_mb": round(_rss_mb(process.pid)),
                "peak_rss_mb": round(_rss_mb(process.pid, "VmHWM")),
            }
    finally:
        process.terminate()
        process.wait(timeout=120)
    if ready is None or port_open is None:
        raise SystemExit(f"service not ready in 600 s:\n{log.read_text()[-3000:]}")
    return {"port_open_s": round(port_open, 2), "ready_s": round(ready, 2), "rss_mb": round(rss), **graph}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 100_000], help="stored articles")
    parser.add_argument("--repeats", type=int, default=2, help="starts timed per size (median reported)")
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: train one from seeds/)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        bundle = args.bundle or train_bundle([ROOT / "seeds"], work / "bundles", None)
        rows = []
        for size in args.sizes:
            data_dir = work / f"data-{size}"
            fill_s = fill_store(data_dir / "articles.sqlite3", size)
            first = time_start(bundle, data_dir, work / f"service-{size}.log", wait_for_graph=size > 50_000)
            runs = [time_start(bundle, data_dir, work / f"service-{size}.log") for _ in range(args.repeats)]
            row = {
                "stored_articles": size,
                "fill_s": round(fill_s, 1),
                "first_ready_s": first["ready_s"],
                "first_rss_mb": first["rss_mb"],
                **{key: first[key] for key in GRAPH_FIELDS if key in first},
                "snapshot": (data_dir / "index-snapshot" / "snapshot.json").is_file(),
                "port_open_s": float(np.median([r["port_open_s"] for r in runs])),
                "ready_s": float(np.median([r["ready_s"] for r in runs])),
                "rss_mb": float(np.median([r["rss_mb"] for r in runs])),
                "runs": runs,
                "target_ready_s": TARGET_READY_S,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        result = {
            "benchmark": "startup",
            "command": "PYTHONPATH=. .venv/bin/python -m benchmarks.startup --sizes "
            + " ".join(map(str, args.sizes)),
            "machine": machine_info(),
            "results": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
