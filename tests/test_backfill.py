"""`python -m training backfill`: an archive loaded into the service's store in batches, exactly as
posting it one article at a time in published order would have stored it, on SQLite and PostgreSQL;
idempotent, resumable, refused while a service writes the store; the service then starts from the
snapshot and serves every article."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from helpers import ROOT, corpus_path, ready_client, shared_embedder

from model.articles.seeds import read_seeds
from model.news_model import NewsModel
from model.store import StoreError, open_read_only
from model.store.writers import StoreBusyError, hold_writer
from service.config import Settings
from service.main import create_app
from training.backfill import BackfillTarget, published_order, run_backfill

COPIES = 4  # articles re-posted word for word by another outlet: duplicates of their original


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """24 storychains articles (real storylines, in file order, not published order) and word-for-word
    copies of four of them posted a day later by another outlet."""
    files = sorted(corpus_path("storychains").glob("storychains_*.md"))[:24]
    records = [article.to_record() for article in read_seeds(files).articles.values()]
    for record in records[:COPIES]:
        copy = {key: value for key, value in record.items() if key != "id"}
        when = datetime.fromisoformat(str(record["publishedDateTime"]).replace("Z", "+00:00"))
        copy["publishedDateTime"] = (when + timedelta(days=1)).isoformat()
        copy["webUrl"] = f"https://reposts.example/{record['id']}"
        copy["provider"] = {"name": "Reposts", "domain": "reposts.example"}
        records.append(copy)
    folder = tmp_path_factory.mktemp("archive")
    (folder / "archive.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return folder


def _backfill_cli(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-m", "training", "backfill", *args, "--no-progress", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _model(bundle: Path) -> NewsModel:
    return NewsModel.load(bundle, embedder=shared_embedder())


def _articles(archive: Path) -> list:
    return list(read_seeds([archive]).articles.values())


def test_backfill_then_the_service_starts_from_the_snapshot_and_serves_each_article_once(
    archive, small_bundle, tmp_path
):
    data, cache = tmp_path / "data", tmp_path / "cache"
    args = (
        "--seeds",
        str(archive),
        "--data",
        str(data),
        "--bundle",
        str(small_bundle),
        "--cache-dir",
        str(cache),
    )
    first = _backfill_cli(*args)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["read"] == summary["stored"] == 24 + COPIES
    assert (summary["already_stored"], summary["invalid"]) == (0, 0)
    assert set(summary) == {"read", "stored", "already_stored", "invalid", "seconds"}
    assert (data / "index-snapshot" / "snapshot.json").is_file()

    again = json.loads(_backfill_cli(*args).stdout)  # idempotent: a second run stores nothing
    assert (again["stored"], again["already_stored"]) == (0, 24 + COPIES)

    store = open_read_only(data)
    rows = list(store.iter_since(0))
    store.close()
    assert len(rows) == len({row.id for row in rows}) == 24 + COPIES
    copies = [row for row in rows if row.duplicate_of is not None]
    assert len(copies) == COPIES  # each copy found its original, and joined its story
    by_id = {row.id: row for row in rows}
    assert all(row.story_id == by_id[row.duplicate_of].story_id for row in copies)

    with ready_client(
        create_app(Settings(bundle=small_bundle, data_dir=data), embedder=shared_embedder())
    ) as client:
        assert client.app.state.news.snapshot_used  # restored from the backfill's snapshot
        for row in rows:
            got = client.get(f"/v1/articles/{row.id}")
            assert got.status_code == 200, got.text
            assert got.json()["story_id"] == row.story_id


def test_a_run_cut_short_resumes_and_stories_match_posting_one_by_one(archive, small_bundle, tmp_path):
    articles = _articles(archive)
    ordered = published_order(articles)
    target = BackfillTarget(data_dir=tmp_path / "data")
    # A run that committed its first batches and was killed: the store holds a prefix.
    cut = run_backfill(_model(small_bundle), target, ordered[:11], batch_size=4)
    assert cut.stored == 11
    rest = run_backfill(_model(small_bundle), target, articles, batch_size=5)
    assert (rest.stored, rest.already_stored) == (len(articles) - 11, 11)

    # The service's way: each article posted alone, in published order, to one model.
    posted = _model(small_bundle)
    expected = {a.id: posted.add([a])[0] for a in ordered}
    store = open_read_only(target.data_dir)
    rows = {row.id: row for row in store.iter_since(0)}
    store.close()
    assert set(rows) == set(expected)
    for article_id, done in expected.items():
        assert (rows[article_id].story_id, rows[article_id].duplicate_of) == (
            done.story_id,
            done.duplicate_of,
        )


def test_a_run_killed_mid_way_continues_where_it_stopped(archive, small_bundle, tmp_path):
    data = tmp_path / "data"
    args = ["--seeds", str(archive), "--data", str(data), "--bundle", str(small_bundle), "--no-cache"]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    command = [
        sys.executable,
        "-m",
        "training",
        "backfill",
        *args,
        "--batch-size",
        "1",
        "--no-progress",
        "-q",
    ]
    run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        try:
            store = open_read_only(data)
            committed = store.count()
            store.close()
        except StoreError:  # not created yet, or its tables not yet
            committed = 0
        if committed:
            run.send_signal(signal.SIGKILL)  # kill -9 after a batch committed
            break
        time.sleep(0.02)
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    rest = _backfill_cli(*args)
    assert rest.returncode == 0, rest.stderr
    summary = json.loads(rest.stdout)
    assert summary["already_stored"] >= 1 and summary["stored"] + summary["already_stored"] == 24 + COPIES
    store = open_read_only(data)
    ids = [row.id for row in store.iter_since(0)]
    store.close()
    assert len(ids) == len(set(ids)) == 24 + COPIES


def test_refused_while_a_service_writes_the_store_and_the_reverse(archive, small_bundle, tmp_path):
    data = tmp_path / "data"
    settings = Settings(bundle=small_bundle, data_dir=data)
    with ready_client(create_app(settings, embedder=shared_embedder())):
        refused = _backfill_cli(
            "--seeds", str(archive), "--data", str(data), "--bundle", str(small_bundle), "--no-cache"
        )
        assert refused.returncode == 2
        message = refused.stderr.strip().splitlines()
        assert len(message) == 1 and "being written by a running service" in message[0], refused.stderr
    # While a backfill holds the store, a service starts without it and says why.
    with (
        hold_writer("sqlite", data, exclusive=True),
        ready_client(create_app(settings, embedder=shared_embedder())) as client,
    ):
        assert "being loaded by a backfill" in str(client.app.state.news.store_error)
    with hold_writer("sqlite", data, exclusive=True):  # released by both: free again
        pass


def test_invalid_seeds_stop_the_run_or_are_counted(archive, small_bundle, tmp_path):
    bad = tmp_path / "seeds"
    bad.mkdir()
    lines = (archive / "archive.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    lines.insert(1, json.dumps({"title": "A quality in words", "quality": "high"}))
    (bad / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = (
        "--seeds",
        str(bad),
        "--data",
        str(tmp_path / "data"),
        "--bundle",
        str(small_bundle),
        "--no-cache",
    )
    stopped = _backfill_cli(*args)
    assert stopped.returncode == 2
    assert f"{bad / 'bad.jsonl'}:2: quality: expected a number" in stopped.stderr
    skipped = _backfill_cli(*args, "--skip-invalid")
    assert skipped.returncode == 0, skipped.stderr
    summary = json.loads(skipped.stdout)
    assert (summary["read"], summary["stored"], summary["invalid"]) == (3, 3, 1)


def test_backfill_on_postgres_with_replicas_sharing_the_writer_lock(archive, small_bundle, pg_url):
    articles = _articles(archive)
    # Replicas each hold the lock shared; a backfill wants it alone and is refused until they stop.
    replicas = [hold_writer("postgres", Path("."), pg_url, exclusive=False) for _ in range(2)]
    with pytest.raises(StoreBusyError, match="being written by a running service"):
        run_backfill(_model(small_bundle), BackfillTarget(database_url=pg_url), articles)
    for replica in replicas:
        replica.release()

    target = BackfillTarget(database_url=pg_url)
    first = run_backfill(_model(small_bundle), target, articles, batch_size=8)
    assert (first.stored, first.snapshot_rows) == (len(articles), 0)  # the database searches: no snapshot
    assert run_backfill(_model(small_bundle), target, articles).stored == 0

    posted = _model(small_bundle)
    expected = {a.id: posted.add([a])[0] for a in published_order(articles)}
    settings = Settings(bundle=small_bundle, database_url=pg_url)
    with (
        ready_client(create_app(settings, embedder=shared_embedder())) as one,
        ready_client(create_app(settings, embedder=shared_embedder())) as two,  # replicas both start
    ):
        for article_id, done in expected.items():
            got = one.get(f"/v1/articles/{article_id}").json()
            assert (got["story_id"], got["duplicate_of"]) == (done.story_id, done.duplicate_of)
        assert two.get(f"/v1/articles/{articles[0].id}").status_code == 200
        with pytest.raises(StoreBusyError):
            hold_writer("postgres", Path("."), pg_url, exclusive=True)


def test_the_archive_the_bundle_was_trained_on_restarts_from_the_snapshot_too(
    small_seeds, small_bundle, tmp_path
):
    # Its articles are the bundle's own rows already: they are stored, yet add no row to the index.
    articles = _articles(small_seeds)
    target = BackfillTarget(data_dir=tmp_path / "data")
    assert run_backfill(_model(small_bundle), target, articles).stored == len(articles)
    settings = Settings(bundle=small_bundle, data_dir=target.data_dir)
    with ready_client(create_app(settings, embedder=shared_embedder())) as client:
        assert client.app.state.news.snapshot_used
        assert all(client.get(f"/v1/articles/{a.id}").status_code == 200 for a in articles)


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install -e '.[ray]'; make install and CI install it)",
)
def test_a_ray_backfill_stores_what_a_local_one_stores(archive, small_bundle, tmp_path):
    # 80 more articles than the archive, so the uncached texts go to the actor pool (not the driver).
    extra = tmp_path / "seeds"
    extra.mkdir()
    lines = [
        json.dumps(article.to_record())
        for article in read_seeds(sorted(corpus_path("agnews").glob("*.md"))[:80]).articles.values()
    ]
    (extra / "agnews.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    seeds = ("--seeds", str(archive), str(extra), "--bundle", str(small_bundle), "--no-cache")
    local = _backfill_cli(*seeds, "--data", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray = subprocess.run(
        [sys.executable, "-m", "training", "backfill", *seeds, "--data", str(tmp_path / "ray"),
         "--engine", "ray", "--workers", "2", "--no-progress"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    assert "texts on 2 actors" in ray.stderr  # embedded by the actor pool
    assert json.loads(ray.stdout)["stored"] == json.loads(local.stdout)["stored"] == 24 + COPIES + 80

    def stored(folder: Path) -> dict[str, tuple]:
        store = open_read_only(folder)
        rows = {
            row.id: (row.story_id, row.duplicate_of, row.classification["topics"])
            for row in store.iter_since(0)
        }
        store.close()
        return rows

    assert stored(tmp_path / "ray") == stored(tmp_path / "local")
    assert (tmp_path / "ray" / "index-snapshot" / "snapshot.json").is_file()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_re_embedded_store_is_backfilled_into_its_live_generation(
    backend, archive, small_bundle, tmp_path, request
):
    """After an encoder swap the live generation is not 0: a backfill writes its vectors there,
    and is refused (one line) only while a re-embedding holds the store's lease."""
    from model.encoders.registry import vectors_id
    from model.store import open_store
    from model.store.base import StoreRows

    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    target = BackfillTarget(data_dir=tmp_path / "data", database_url=url)
    model = _model(small_bundle)
    store = open_store(target.backend, tmp_path / "data", url)
    try:
        # The store started on another encoder (generation 0), then switched to MiniLM's (1).
        assert store.open_generation("an-earlier-encoder").id == 0
        generation = store.open_generation(vectors_id(model.embedder)).id
        store.mark_generation_filled(generation)
        store.switch_generation(generation, None)
        assert generation == 1

        store.take_reembed_lease("elsewhere:1:reembed", 60)  # a re-embedding under way
        articles = _articles(archive)
        with pytest.raises(StoreError, match="is re-embedding this store") as refused:
            run_backfill(_model(small_bundle), target, articles)
        assert "\n" not in str(refused.value)
        store.release_reembed_lease("elsewhere:1:reembed")

        done = run_backfill(_model(small_bundle), target, articles, batch_size=8)
        assert done.stored == len(articles) == store.count()
        assert store.missing_count(1) == 0 and store.missing_count(0) == len(articles)
        assert store.reembed_lease_holder() is None  # released
        rows = {row.id: row.embedding for row in StoreRows(store).rows_since(0, 100)}
        first = published_order(articles)[0]
        assert abs(float(rows[first.id] @ model.embed([first])[0]) - 1.0) < 1e-4
        # The stories are those posting one by one gives, as on generation 0.
        posted = _model(small_bundle)
        expected = {a.id: posted.add([a])[0].story_id for a in published_order(articles)}
        assert {a.id: store.get(a.id).story_id for a in articles} == expected
    finally:
        store.close()
