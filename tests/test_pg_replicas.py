"""Two real uvicorn replicas on one PostgreSQL.

Concurrent ingest agrees on ids and stories, both answer reads identically, and a kill -9 of one
loses no acknowledged article.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import new_pg_database
from helpers import ROOT

pytestmark = pytest.mark.e2e

_TEXT = (
    "harbour council budget vote railway strike museum reopening drought farmers vaccine trial "
    "satellite launch bridge collapse election recount startup funding wildfire evacuation river "
    "flooding opera premiere chess championship airline merger glacier melting factory closure "
    "teachers union bank rates robot surgery coral reef marathon record pipeline leak copper mine "
    "film festival ferry delay tax reform diamond auction volcano eruption hospital expansion"
)
_WORDS = _TEXT.split()
_PROVIDERS = [f"outlet{i}.example" for i in range(8)]


def _story_text(rng: random.Random, n: int) -> tuple[str, str]:
    words = rng.sample(_WORDS, 6)
    title = f"Story {n}: {words[0]} {words[1]} {words[2]} in town {n}"
    excerpt = f"Officials said the {words[3]} {words[4]} and {words[5]} affected town {n} on day {n % 28}."
    return title, excerpt


def _article(title: str, excerpt: str, url: str, provider: str, day: int) -> dict[str, object]:
    return {
        "title": title,
        "excerpt": excerpt,
        "publishedDateTime": f"2024-05-{day:02d}T{8 + day % 10:02d}:00:00Z",
        "webUrl": url,
        "provider": {"name": provider, "domain": provider},
    }


def _workload(seed: int = 7) -> tuple[list[list[dict]], list[list[dict]], list[list[dict]]]:
    """(same-story pairs, URL-variant groups, singles): 100 x 2 + 50 x 3 + 50 = 400 posts."""
    rng = random.Random(seed)
    pairs, variants, singles = [], [], []
    n = 0
    for _ in range(100):
        n += 1
        title, excerpt = _story_text(rng, n)
        day = 1 + n % 28
        first = _article(title, excerpt, f"https://{_PROVIDERS[0]}/s/{n}", _PROVIDERS[0], day)
        # A second outlet's copy of the wire text: the pair scorer calls it a duplicate, so it
        # must land in the first one's story whichever replica answers first.
        second = _article(f"{title} - wire", excerpt, f"https://{_PROVIDERS[1]}/w/{n}", _PROVIDERS[1], day)
        pairs.append([first, second])
    for _ in range(50):
        n += 1
        title, excerpt = _story_text(rng, n)
        provider = _PROVIDERS[2 + n % 6]
        base = f"{provider}/v/{n}"
        urls = [f"https://{base}", f"http://www.{base}/?utm_source=feed", f"https://{base}/#top"]
        variants.append([_article(title, excerpt, url, provider, 1 + n % 28) for url in urls])
    for _ in range(50):
        n += 1
        title, excerpt = _story_text(rng, n)
        provider = _PROVIDERS[n % 8]
        singles.append([_article(title, excerpt, f"https://{provider}/one/{n}", provider, 1 + n % 28)])
    return pairs, variants, singles


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    """One `uvicorn service.main:app` process on the shared database."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"replica exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"replica not ready in time:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.25)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def replicas(small_bundle, pg_server_url, tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NEWSDESK_BUNDLE": str(small_bundle),
        "NEWSDESK_DATABASE_URL": new_pg_database(pg_server_url),
        "NEWSDESK_DATA_DIR": str(tmp_path / "unused"),
        "NEWSDESK_LOG_LEVEL": "warning",
        "NEWSDESK_RATE_LIMIT_PER_MINUTE": "0",
    }
    # Started together: both run the migrations, one under the lock, the other then finds them done.
    started = [Replica(env, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        deadline = time.monotonic() + 180
        for replica in started:
            replica.wait_ready(deadline)
        yield started
    finally:
        for replica in started:
            replica.stop()


def _post_together(targets: list[Replica], articles: list[dict]) -> list[dict]:
    """Post each article to its replica at the same moment (one thread each, a barrier)."""
    barrier = threading.Barrier(len(articles))
    results: list[dict | None] = [None] * len(articles)

    def post(i: int) -> None:
        barrier.wait()
        response = targets[i].client.post("/v1/articles", json=articles[i])
        assert response.status_code in (200, 201), response.text
        results[i] = response.json()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(articles))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is not None for result in results), "a post failed (see the assertion above)"
    return [r for r in results if r is not None]


def test_two_replicas_agree_under_concurrent_ingest_and_survive_a_kill(replicas):
    a, b = replicas
    pairs, variants, singles = _workload()
    groups = pairs + variants + singles
    random.Random(1).shuffle(groups)
    started = time.perf_counter()
    # Concurrent clients; within a group the members go to alternating replicas at one moment.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda g: _post_together([(a, b)[i % 2] for i in range(len(g))], g), groups))
    seconds = time.perf_counter() - started
    by_group = dict(zip(map(id, groups), answers, strict=True))

    for group in variants:
        got = by_group[id(group)]
        assert len({r["id"] for r in got}) == 1, got
        assert sum(r["created"] for r in got) == 1, "exactly one variant creates the article"
    for group in pairs:
        got = by_group[id(group)]
        assert got[0]["id"] != got[1]["id"]
        assert got[0]["story_id"] == got[1]["story_id"], got
    stored = {r["id"] for answer in answers for r in answer}
    assert len(stored) == 100 * 2 + 50 + 50
    assert a.client.get("/v1/model").json()["stored_articles"] == len(stored)

    # Both replicas answer reads identically: articles, stories and related coverage.
    sample = sorted(stored)[:: max(1, len(stored) // 40)]
    for article_id in sample:
        got_a, got_b = a.client.get(f"/v1/articles/{article_id}"), b.client.get(f"/v1/articles/{article_id}")
        assert got_a.status_code == got_b.status_code == 200
        assert got_a.json() == got_b.json()
        story = got_a.json()["story_id"]
        assert a.client.get(f"/v1/stories/{story}").json() == b.client.get(f"/v1/stories/{story}").json()
        query = {"id": article_id, "k": 5, "since": "2024-05-01T00:00:00Z"}
        sim_a, sim_b = a.client.post("/v1/similar", json=query), b.client.post("/v1/similar", json=query)
        assert sim_a.status_code == sim_b.status_code == 200
        assert sim_a.json() == sim_b.json()

    # kill -9 one replica mid-stream: every article either acknowledged is on the survivor.
    rng = random.Random(3)
    acknowledged: list[str] = []
    lock = threading.Lock()

    def post_one(i: int) -> None:
        title, excerpt = _story_text(rng, 10_000 + i)
        article = _article(title, excerpt, f"https://late.example/{i}", "late.example", 1 + i % 28)
        target = (a, b)[i % 2]
        try:
            response = target.client.post("/v1/articles", json=article)
        except httpx.TransportError:
            return  # the killed replica: not acknowledged, may or may not be stored
        if response.status_code in (200, 201):
            with lock:
                acknowledged.append(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post_one, i) for i in range(80)]
        while len(acknowledged) < 20:
            time.sleep(0.01)
        b.process.send_signal(signal.SIGKILL)
        for future in futures:
            future.result()
    b.process.wait(timeout=10)
    assert len(acknowledged) >= 40  # the survivor kept answering its half
    for article_id in acknowledged:
        assert a.client.get(f"/v1/articles/{article_id}").status_code == 200, article_id
    print(f"400 posts through 2 replicas in {seconds:.1f} s; {len(acknowledged)} acknowledged around a kill")
