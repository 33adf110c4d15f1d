"""Retraining: the fixed split, the comparison and its gate, the ledger, the store's re-tagging, and
the admin endpoints (retrain -> compare -> promote, one job at a time, rollback)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from helpers import ROOT, ready_client, shared_embedder

from model.bundle import MANIFEST, resolve_bundle
from model.evaluation.comparison import Gate, HeldOut, PairOutputs, compare_held_out
from model.evaluation.split import EvalSplit
from model.feedback import Correction
from model.ledger import read_ledger, record_event
from model.store.base import StoredArticle
from model.store.sqlite import SqliteArticleStore

ADMIN = "retrain-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def test_eval_split_holds_out_the_same_ids_for_every_bundle_and_is_recorded():
    ids = [f"{i:016x}" for i in range(4000)]
    split = EvalSplit(0.2)
    _, held = split.partition(ids)
    assert 0.17 < len(held) / len(ids) < 0.23
    assert split.partition(reversed(ids))[1] == list(reversed(held))  # by id, not by order
    assert EvalSplit(0.3).partition(ids)[1][: len(held)] != []  # a larger fraction holds out a superset
    assert set(held) <= set(EvalSplit(0.3).partition(ids)[1])
    record = split.to_record()
    assert record["fraction"] == 0.2 and "sha256" in record["rule"]
    assert EvalSplit.from_record(record) == split


def _topics(n: int, wrong: int, rng: np.random.Generator) -> tuple[list[set[str]], list[set[str]]]:
    labels = ["a", "b", "c"]
    truth = [{labels[i % 3]} for i in range(n)]
    predicted = [set(t) for t in truth]
    for i in rng.choice(n, size=wrong, replace=False):
        predicted[i] = {labels[(labels.index(next(iter(truth[i]))) + 1) % 3]}
    return truth, predicted


def test_equal_models_are_promoted_and_a_much_worse_one_is_rejected_with_reasons():
    rng = np.random.default_rng(0)
    truth, good = _topics(300, 30, rng)
    _, bad = _topics(300, 150, rng)
    same = compare_held_out(HeldOut(topics_true=truth, topics=(good, good)), rounds=200)
    row = same["metrics"]["topics.micro_f1"]
    assert row["diff"] == 0 and row["low"] == 0 and row["high"] == 0
    assert Gate().decide(same)[0]

    worse = compare_held_out(HeldOut(topics_true=truth, topics=(good, bad)), rounds=200)
    row = worse["metrics"]["topics.micro_f1"]
    assert row["high"] < 0 < row["champion"] - row["challenger"]
    promote, reasons = Gate().decide(worse)
    assert not promote
    assert any("topics.micro_f1 drops significantly" in r for r in reasons)
    assert any(r.startswith("label 'a'") for r in reasons)  # 100 held-out examples, > 0.05 F1 lost
    assert worse["per_label"]["a"]["support"] == 100


def test_gate_reads_its_rules_from_a_mapping_and_checks_pairs_and_scores():
    rng = np.random.default_rng(1)
    overall = rng.choice([1.0, 4.0], size=120)
    same = overall <= 1.5
    good = PairOutputs(scores=-overall + rng.normal(0, 0.1, 120), same_story=same)
    bad = PairOutputs(scores=rng.normal(0, 1, 120), same_story=rng.random(120) < 0.5)
    true = rng.uniform(0, 100, 200)
    data = HeldOut(
        pairs_overall=overall,
        pairs=(good, bad),
        scores={"quality": (true, true + rng.normal(0, 5, 200), true + rng.normal(0, 5, 200))},
    )
    result = compare_held_out(data, rounds=200)
    assert {"pairs.same_story_f1", "pairs.abs_pearson", "quality.mae", "quality.spearman"} <= set(
        result["metrics"]
    )
    promote, reasons = Gate().decide(result)
    assert not promote and "pairs.same_story_f1 drops significantly" in reasons[0]
    lenient = Gate.from_mapping({"reject_if_significant_drop": ["topics.micro_f1"], "rounds": 200})
    assert lenient.decide(result)[0]
    with pytest.raises(ValueError, match="unknown gate setting"):
        Gate.from_mapping({"micro": 1})


def _fake_version(root, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / MANIFEST).write_text(json.dumps({"format_version": 2, "version": name}))


def test_the_ledger_names_the_live_version_so_a_rejected_newer_one_is_never_served(tmp_path):
    old, new = "20260101T000000000000Z-aaaaaaaa", "20260102T000000000000Z-bbbbbbbb"
    _fake_version(tmp_path, old)
    _fake_version(tmp_path, new)
    assert resolve_bundle(tmp_path).name == new  # no ledger: the newest, as before
    record_event(tmp_path, old, "promoted", "first")
    record_event(tmp_path, new, "rejected", "failed the gate: micro-F1 drops")
    assert resolve_bundle(tmp_path).name == old
    ledger = read_ledger(tmp_path)
    assert ledger["live"] == old and ledger["versions"][new]["decision"] == "rejected"
    record_event(tmp_path, new, "promoted", "by hand")
    assert resolve_bundle(tmp_path).name == new


def _stored(article_id: str, labels: list[str]) -> StoredArticle:
    return StoredArticle(
        id=article_id,
        record={"title": f"article {article_id}"},
        embedding=np.full(384, 384**-0.5, dtype=np.float32),
        story_id=f"s-{article_id}",
        classification={"topics": [{"label": label, "probability": 0.9} for label in labels]},
        model_version="v1",
    )


def check_set_classifications_keeps_corrections(store) -> None:
    store.put_many([_stored("a", ["Old"]), _stored("b", ["Old"])])
    store.add_correction(Correction(article_id="a", topics=("Edited",), created_at=datetime.now(UTC)))
    new = {"topics": [{"label": "New", "probability": 0.8}], "uncertainty": 0.1}
    assert store.set_classifications([("a", new, "v2"), ("b", new, "v2"), ("missing", new, "v2")]) == 2
    a, b = store.get("a"), store.get("b")
    assert (a.model_version, a.model_labels, a.effective_labels) == ("v2", ["New"], ["Edited"])
    assert (b.model_version, b.model_labels, b.effective_labels) == ("v2", ["New"], ["New"])
    assert [c.topics for c in store.corrections("a")] == [("Edited",)]


def test_sqlite_store_re_tags_articles_but_never_a_correction(tmp_path):
    store = SqliteArticleStore(tmp_path / "articles.sqlite3")
    try:
        check_set_classifications_keeps_corrections(store)
    finally:
        store.close()


def test_postgres_store_re_tags_articles_but_never_a_correction(pg_url):
    from model.store.postgres import PgArticleStore

    store = PgArticleStore(pg_url)
    try:
        check_set_classifications_keeps_corrections(store)
    finally:
        store.close()


def test_check_seeds_says_when_seeds_changed_since_the_live_bundle(small_bundle, small_seeds, tmp_path):
    def check(seeds) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "training", "check-seeds",
             "--seeds", str(seeds), "--bundle", str(small_bundle)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    same = check(small_seeds)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "matches the live bundle" in same.stdout
    changed = tmp_path / "seeds"
    shutil.copytree(small_seeds, changed)
    first = sorted(changed.glob("*.md"))[0]
    first.write_text(first.read_text().replace("title: ", "title: Updated ", 1))
    result = check(changed)
    assert result.returncode == 1 and "changed since the live bundle" in result.stdout


@pytest.fixture
def retrain_app(small_bundle, small_seeds, tmp_path):
    from service.config import Settings
    from service.main import create_app

    bundles = tmp_path / "bundles"
    shutil.copytree(small_bundle, bundles)
    settings = Settings(
        bundle=bundles,
        data_dir=tmp_path / "data",
        admin_token=ADMIN,
        seeds=[small_seeds],
        retrain_onnx=False,
        retrain_cache_dir=small_bundle.parent / "cache",  # the session bundle's embeddings
        log_format="text",
    )
    return create_app(settings, embedder=shared_embedder()), bundles


def _wait(client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/admin/jobs/{job_id}", headers=AUTH).json()
        if job["finished_at"]:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still running after {timeout} s: {job}")


def test_retrain_job_compares_promotes_and_rolls_back_one_job_at_a_time(retrain_app):
    app, bundles = retrain_app
    with ready_client(app) as client:
        first = client.get("/v1/admin/bundles", headers=AUTH).json()
        champion = first["live"]
        assert [b["version"] for b in first["bundles"]] == [champion]
        stored = client.post(
            "/v1/articles",
            json={"title": "NASA sends a probe to an asteroid", "webUrl": "https://e.example/probe"},
            headers=AUTH,
        ).json()

        started = client.post("/v1/admin/retrain", headers=AUTH)
        assert started.status_code == 202, started.text
        again = client.post("/v1/admin/retrain", headers=AUTH)
        assert again.status_code == 409 and "one job at a time" in again.json()["detail"]
        job = _wait(client, started.json()["id"])
        assert job["state"] == "promoted", job
        assert job["comparison"] is not None and job["comparison"]["verdict"] == "promote"
        assert job["progress"]["done"] and job["progress"]["reclassified"] >= 1
        challenger = job["challenger"]

        listed = client.get("/v1/admin/bundles", headers=AUTH).json()
        assert listed["live"] == challenger
        rows = {b["version"]: b for b in listed["bundles"]}
        assert rows[challenger]["decision"] == "promoted" and "passed the gate" in rows[challenger]["reason"]
        assert rows[challenger]["eval_split"]["fraction"] == 0.2
        detail = client.get(f"/v1/articles/{stored['id']}", headers=AUTH).json()
        assert detail["classification"]["model_version"] == challenger
        assert challenger in client.get("/inbox").text  # the editors' page shows the live version

        assert (
            client.post(
                "/v1/admin/promote", json={"version": "20990101T000000Z-00000000"}, headers=AUTH
            ).status_code
            == 404
        )
        assert client.get("/v1/admin/jobs/0123456789ab", headers=AUTH).status_code == 404
        back = client.post("/v1/admin/promote", json={"version": champion}, headers=AUTH)
        assert back.status_code == 202, back.text
        assert _wait(client, back.json()["id"])["state"] == "promoted"
        assert client.get("/v1/admin/bundles", headers=AUTH).json()["live"] == champion
        assert read_ledger(bundles)["versions"][champion]["decision"] == "rolled_back"
        assert (
            client.get(f"/v1/articles/{stored['id']}", headers=AUTH).json()["classification"]["model_version"]
            == champion
        )
    assert resolve_bundle(bundles).name == champion  # a restart serves the rolled-back version
