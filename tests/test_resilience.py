"""Durability and availability with a real uvicorn: kill -9 mid-ingest loses no acknowledged article,
and bundle reloads under concurrent load fail no request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import service_env
from test_e2e_service import free_port, serving

ADMIN = "resilience-admin-token-0123456789"


def _article(worker: int, n: int) -> dict[str, object]:
    return {
        "title": f"Regional grid operator {worker} reports outage number {n} after storm",
        "excerpt": f"Crews restored power to district {n} of region {worker} overnight, the operator said.",
        "webUrl": f"https://grid{worker}.example/outage/{n}",
        "publishedDateTime": f"2024-05-{1 + n % 27:02d}T{worker:02d}:00:00Z",
        "provider": {"name": f"Grid News {worker}", "domain": f"grid{worker}.example"},
    }


@pytest.mark.e2e
def test_kill_9_mid_ingest_loses_no_acknowledged_article(small_bundle, tmp_path):
    port = free_port()
    env = service_env(small_bundle, tmp_path / "store", port, admin_token=ADMIN)
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    acknowledged: dict[str, str] = {}  # id -> story id, for every 200/201 the clients saw
    lock = threading.Lock()
    stop = threading.Event()

    with serving(command, env, port, tmp_path / "first.log") as client:
        base = str(client.base_url)

        def ingest(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=30) as own:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        response = own.post("/v1/articles", json=_article(worker, n))
                    except httpx.TransportError:
                        return  # the server died mid-request: that one was never acknowledged
                    if response.status_code in (200, 201):
                        body = response.json()
                        with lock:
                            acknowledged[body["id"]] = body["story_id"]

        threads = [threading.Thread(target=ingest, args=(worker,)) for worker in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        # SIGKILL the server process itself: no shutdown, no flush, no goodbye.
        pid = int(subprocess.check_output(["pgrep", "-f", "--", f"--port {port}"], text=True).split()[0])
        os.kill(pid, signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join()
    assert len(acknowledged) >= 60

    with serving(command, env, port, tmp_path / "second.log") as again:
        missing, moved = [], []
        for article_id, story_id in acknowledged.items():
            got = again.get(f"/v1/articles/{article_id}")
            if got.status_code != 200:
                missing.append(article_id)
            elif got.json()["story_id"] != story_id:
                moved.append(article_id)
        assert missing == [] and moved == []


@pytest.mark.e2e
def test_reloads_under_load_fail_no_request(small_bundle, tmp_path):
    port = free_port()
    env = service_env(small_bundle, tmp_path / "store", port, admin_token=ADMIN)
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    with serving(command, env, port, tmp_path / "service.log") as client:
        base = str(client.base_url)
        stop = threading.Event()

        def load(worker: int) -> list[int]:
            codes = []
            with httpx.Client(base_url=base, timeout=60) as own:
                n = 0
                while not stop.is_set():
                    n += 1
                    if n % 3 == 0:
                        codes.append(own.post("/v1/articles", json=_article(worker, n)).status_code)
                    else:
                        codes.append(own.post("/v1/classify", json=_article(worker, n)).status_code)
            return codes

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(load, worker) for worker in range(6)]
            reloads = []
            for _ in range(3):
                time.sleep(1.0)
                reloads.append(
                    client.post(
                        "/v1/admin/reload",
                        params={"force": "true"},
                        headers={"Authorization": f"Bearer {ADMIN}"},
                        timeout=120,
                    )
                )
            time.sleep(0.5)
            stop.set()
            codes = [code for future in futures for code in future.result()]
    assert all(r.status_code == 200 and r.json()["changed"] for r in reloads)
    assert len(codes) > 30
    assert [code for code in codes if code not in (200, 201)] == []
