"""End to end: a real uvicorn process ingests, is restarted, and still knows what it stored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import ROOT

pytestmark = pytest.mark.e2e

ARTICLE = {
    "title": "SpaceX lands a reusable rocket after launching a weather satellite",
    "excerpt": "The booster touched down on a drone ship minutes after lift-off, SpaceX said.",
    "publishedDateTime": "2024-03-09T15:00:00Z",
    "webUrl": "https://orbitnews.example/spacex-landing",
    "provider": {"name": "Orbit News", "domain": "orbitnews.example"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[httpx.Client]:
    """Start the service, wait for /healthz then /readyz, yield a client; stop it with SIGTERM."""
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service did not answer /healthz in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        # The port opens before the bundle is loaded; the model endpoints wait for readiness.
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"service not ready in 120 s: {client.get('/readyz').text}")
            time.sleep(0.25)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_ingested_article_survives_a_restart_then_classify_and_similar_work(small_bundle, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NEWSDESK_BUNDLE": str(small_bundle),
        "NEWSDESK_DATA_DIR": str(tmp_path / "store"),
        "NEWSDESK_HOST": "127.0.0.1",
        "NEWSDESK_PORT": str(port),
        "NEWSDESK_LOG_LEVEL": "warning",
    }
    log = tmp_path / "service.log"

    # First life: `python -m service` (host and port from the settings).
    with serving([sys.executable, "-m", "service"], env, port, log) as client:
        assert client.get("/readyz").status_code == 200
        created = client.post("/v1/articles", json=ARTICLE)
        assert created.status_code == 201, created.text
        stored = created.json()

    # Second life: plain uvicorn on the same store; nothing but the store remembers the article.
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "service.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving(command, env, port, log) as client:
        got = client.get(f"/v1/articles/{stored['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["story_id"] == stored["story_id"]
        assert got.json()["article"]["title"] == ARTICLE["title"]
        again = client.post(
            "/v1/articles", json={**ARTICLE, "webUrl": "https://www.orbitnews.example/spacex-landing/"}
        )
        assert again.status_code == 200 and again.json()["id"] == stored["id"]

        classified = client.post("/v1/classify", json=ARTICLE).json()
        assert classified["topics"][0]["label"] == "Space" and "quality" in classified["scores"]

        query = {**ARTICLE, "webUrl": "https://elsewhere.example/rocket", "provider": {"name": "Elsewhere"}}
        hits = client.post("/v1/similar", json={"article": query, "k": 5}).json()["hits"]
        assert hits and hits[0]["id"] == stored["id"] and hits[0]["verdict"] == "duplicate"
        by_id = client.post("/v1/similar", json={"id": stored["id"], "k": 5}).json()
        assert by_id["hits"] and all(h["id"] != stored["id"] for h in by_id["hits"])
