"""End to end on real data (AG News): a real uvicorn serves a bundle, articles are ingested, editors
correct 20 of them, a retrain learns the corrections, passes the gate and is promoted while clients
keep calling (none fails), stored articles are re-tagged (corrections untouched); then a challenger
trained on shuffled topics (held-out seeds keep the truth) is rejected with the reason and the
champion keeps serving."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import ROOT, corpus_path
from test_e2e_service import free_port, serving

from model.articles.seeds import read_seeds
from model.evaluation.split import EvalSplit

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = "e2e-retrain-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
SEEDS, INGESTED, CORRECTED = 320, 120, 20


def _read(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    title = re.search(r"^title: (.*)$", text, re.M).group(1).strip().strip("'\"")
    excerpt = re.search(r"^excerpt: (.*)$", text, re.M).group(1).strip().strip("'\"")
    topic = re.search(r"^topics:\n- (.*)$", text, re.M).group(1).strip()
    return {"title": title, "excerpt": excerpt}, topic


def _fit(seeds: Path, out: Path, cache: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--seeds", str(seeds), "--out", str(out),
         "--cache-dir", str(cache), "--no-onnx", "--no-progress", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


def _wait(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{job_id}", headers=AUTH).json()
        if job["finished_at"]:
            return job
        time.sleep(1)
    raise AssertionError(f"job still running after {timeout} s: {job}")


def _labels(client: httpx.Client, article: dict) -> list[str]:
    answer = client.post("/v1/classify", json=article, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return [t["label"] for t in answer.json()["topics"]]


def test_retrain_learns_corrections_is_promoted_without_failed_requests_and_a_worse_one_is_rejected(
    tmp_path,
):
    files = sorted(corpus_path("agnews").glob("*.md"))[: SEEDS + INGESTED]
    seeds, shuffled = tmp_path / "seeds", tmp_path / "shuffled"
    seeds.mkdir()
    shuffled.mkdir()
    for path in files[:SEEDS]:
        shutil.copy(path, seeds / path.name)
    # The worse challenger learns from shuffled topics; the held-out seeds (the fixed split) keep
    # their true topics, so the gate measures it against the truth.
    split = EvalSplit(0.2)
    train_files = [p for p in files[:SEEDS] if not split.held_out(read_seeds([p]).main_ids[0])]
    texts = [p.read_text(encoding="utf-8") for p in train_files]
    topics = [re.search(r"^topics:\n- (.*)$", t, re.M).group(1) for t in texts]
    random.Random(0).shuffle(topics)
    for path in files[:SEEDS]:
        shutil.copy(path, shuffled / path.name)
    for path, text, topic in zip(train_files, texts, topics, strict=True):
        (shuffled / path.name).write_text(re.sub(r"^topics:\n- .*$", f"topics:\n- {topic}", text, flags=re.M))
    bundles, cache = tmp_path / "bundles", tmp_path / "cache"
    _fit(seeds, bundles, cache)  # the champion: fixed 20% split held out

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "HF_HUB_OFFLINE": "1",
        "NEWSDESK_BUNDLE": str(bundles),
        "NEWSDESK_DATA_DIR": str(tmp_path / "data"),
        "NEWSDESK_ADMIN_TOKEN": ADMIN,
        "NEWSDESK_SEEDS": str(seeds),
        "NEWSDESK_RETRAIN_ONNX": "false",
        "NEWSDESK_RETRAIN_CACHE_DIR": str(cache),
        "NEWSDESK_RATE_LIMIT_PER_MINUTE": "0",
        "NEWSDESK_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    with serving(command, env, port, tmp_path / "service.log") as client:
        champion = client.get("/v1/admin/bundles", headers=AUTH).json()["live"]
        pool = [_read(path) for path in files[SEEDS:]]
        ingested = client.post("/v1/articles", json={"articles": [a for a, _ in pool]}, headers=AUTH)
        assert ingested.status_code == 200, ingested.text
        ids = [row["id"] for row in ingested.json()["results"]]
        # Correct 20 articles the champion got wrong first (then any), to their true topic.
        wrong = [i for i, (_, truth) in enumerate(pool) if _labels(client, pool[i][0]) != [truth]]
        chosen = (wrong + [i for i in range(len(pool)) if i not in wrong])[:CORRECTED]
        for i in chosen:
            answer = client.post(
                f"/v1/articles/{ids[i]}/corrections", json={"topics": [pool[i][1]]}, headers=AUTH
            )
            assert answer.status_code in (200, 201), answer.text
        before = sum(_labels(client, pool[i][0]) == [pool[i][1]] for i in chosen)

        # Clients keep reading and classifying through the retrain and the promotion.
        failures: list[str] = []
        calls = [0]
        stop = threading.Event()

        def hammer(n: int) -> None:
            with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
                while not stop.is_set():
                    i = (calls[0] + n) % len(ids)
                    for response in (
                        own.get(f"/v1/articles/{ids[i]}", headers=AUTH),
                        own.post("/v1/classify", json=pool[i][0], headers=AUTH),
                    ):
                        calls[0] += 1
                        if response.status_code != 200:
                            failures.append(f"{response.request.url}: {response.status_code}")

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            started = client.post("/v1/admin/retrain", headers=AUTH)
            assert started.status_code == 202, started.text
            assert client.post("/v1/admin/retrain", headers=AUTH).status_code == 409
            job = _wait(client, started.json()["id"])
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert job["state"] == "promoted", job
        assert not failures, failures[:5]
        assert calls[0] > 20
        challenger = job["challenger"]
        micro = job["comparison"]["metrics"]["topics.micro_f1"]
        assert micro["low"] <= micro["diff"] <= micro["high"] and micro["n"] > 0
        assert job["progress"]["done"] and job["progress"]["reclassified"] >= INGESTED

        # The challenger learnt the corrections.
        after = sum(_labels(client, pool[i][0]) == [pool[i][1]] for i in chosen)
        assert after >= 0.8 * CORRECTED and after > before, (before, after)
        differ = 0  # a label right on its threshold may flip with the micro-batch's padding
        for i in range(len(pool)):
            detail = client.get(f"/v1/articles/{ids[i]}", headers=AUTH).json()
            assert detail["classification"]["model_version"] == challenger
            if i in chosen:  # the correction stands, untouched
                assert detail["effective"]["labels"] == [pool[i][1]] and detail["effective"]["corrected"]
                assert len(detail["corrections"]) == 1
            else:  # re-computed by the promoted model
                now = [t["label"] for t in detail["classification"]["topics"]]
                differ += now != _labels(client, pool[i][0])
                assert detail["effective"]["labels"] == now
        assert differ <= 2, differ

    # A worse challenger (shuffled topics) is rejected with the reason; the champion keeps serving.
    env["NEWSDESK_SEEDS"] = str(shuffled)
    with serving(command, env, port, tmp_path / "service.log") as client:
        assert client.get("/v1/admin/bundles", headers=AUTH).json()["live"] == challenger
        job = _wait(client, client.post("/v1/admin/retrain", headers=AUTH).json()["id"])
        assert job["state"] == "rejected", job
        assert any("topics.micro_f1 drops significantly" in reason for reason in job["reasons"])
        listed = client.get("/v1/admin/bundles", headers=AUTH).json()
        assert listed["live"] == challenger != champion
        rejected = next(b for b in listed["bundles"] if b["version"] == job["challenger"])
        assert rejected["decision"] == "rejected" and "micro_f1" in rejected["reason"]
        assert (
            client.get(f"/v1/articles/{ids[0]}", headers=AUTH).json()["classification"]["model_version"]
            == challenger
        )
