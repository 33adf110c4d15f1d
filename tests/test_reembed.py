"""`python -m training reembed`: a bundle on another encoder gets its vector generation filled in the
store offline, through the engine's embed batches; a run cut short resumes; the service loading the
bundle then has nothing left to embed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, corpus_path, ready_client, shared_embedder

from model.articles.article import article_from_record
from model.articles.seeds import read_seeds
from model.bundle import resolve_bundle
from model.encoders.registry import vectors_id
from model.errors import NewsDeskError
from model.news_model import NewsModel
from model.store import open_store
from model.store.base import GenerationStore, StoredArticle, StoreRows
from service.config import Settings
from service.main import create_app
from training.backfill import BackfillTarget, run_backfill
from training.reembed import reembed_store


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "training", *args, "--no-progress"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture
def backfilled(small_bundle, tmp_path) -> Path:
    """A data folder holding 20 storychains articles, backfilled with the MiniLM bundle."""
    files = sorted(corpus_path("storychains").glob("storychains_*.md"))[:20]
    archive = tmp_path / "archive.jsonl"
    records = [a.to_record() for a in read_seeds(files).articles.values()]
    archive.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    data = tmp_path / "data"
    done = _cli(
        "backfill", "--seeds", str(archive), "--data", str(data), "--bundle", str(small_bundle), "--no-cache"
    )
    assert done.returncode == 0, done.stderr
    return data


def test_reembed_fills_the_new_encoders_generation_beside_the_live_one(backfilled, small_bundle, e5_bundle):
    e5_folder = resolve_bundle(e5_bundle)
    e5 = NewsModel.load(e5_folder)
    mine = vectors_id(e5.embedder)
    # A run cut short: its first chunk committed (with how far it got), then the process died.
    store = open_store("sqlite", backfilled)
    assert isinstance(store, GenerationStore)
    live = store.live_generation()
    assert live is not None and live.vectors_id != mine
    generation = store.open_generation(mine)
    first = store.rows_missing(generation.id, 0, 5)
    vectors = e5.embedder.encode([_text(row) for row in first])
    store.put_generation_vectors(
        generation.id, list(zip([r.id for r in first], vectors, strict=True)), first[-1].seq
    )
    store.close()

    done = _cli("reembed", "--bundle", str(e5_folder), "--data", str(backfilled), "--no-cache")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["generation"], summary["vectors_id"], summary["state"]) == (
        generation.id,
        mine,
        "complete",
    )
    assert summary["embedded"] == 20 - 5  # resumed where the cut run stopped
    again = _cli("reembed", "--bundle", str(e5_folder), "--data", str(backfilled), "--no-cache")
    assert json.loads(again.stdout)["embedded"] == 0  # nothing left

    store = open_store("sqlite", backfilled)
    assert store.missing_count(generation.id) == 0
    assert store.live_generation().vectors_id == live.vectors_id  # the live one serves on, untouched
    rows = list(StoreRows(store, generation.id).rows_since(0, 100))
    assert len(rows) == 20
    expected = e5.embedder.encode([_text(row) for row in rows[-3:]])
    assert np.allclose(np.array([row.embedding for row in rows[-3:]]), expected, atol=1e-4)
    # The live encoder's own generation: nothing to fill.
    minilm = NewsModel.load(resolve_bundle(small_bundle)).embedder
    assert reembed_store(store, minilm).embedded == 0
    store.close()

    # A service started on the e5 bundle finds its generation complete and switches to it.
    with ready_client(create_app(Settings(bundle=e5_folder, data_dir=backfilled))) as client:
        assert client.app.state.news.model.version == e5.version
        assert client.get("/v1/articles/" + rows[0].id).status_code == 200
    store = open_store("sqlite", backfilled)
    switched = store.live_generation()
    assert (switched.id, switched.vectors_id) == (generation.id, mine)
    store.close()


def _text(row) -> str:
    return article_from_record(row.record, require_text=False).text


def test_refused_while_another_process_holds_the_lease_and_a_dead_ones_is_taken_over(tmp_path):
    store = open_store("sqlite", tmp_path)
    store.open_generation("another-encoder")  # the live vectors: not this encoder's
    store.put_many([_stored(n) for n in range(3)])
    assert store.take_reembed_lease("elsewhere:1:worker", 60)  # a service on another host
    with pytest.raises(NewsDeskError, match="elsewhere:1:worker is re-embedding this store"):
        reembed_store(store, shared_embedder())
    store.release_reembed_lease("elsewhere:1:worker")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = f"{socket.gethostname()}:{dead.stdout.strip()}:worker"  # a process of this host, gone
    assert store.take_reembed_lease(holder, 60)
    result = reembed_store(store, shared_embedder(), chunk=2)
    assert (result.embedded, result.state) == (3, "complete")
    assert store.reembed_lease_holder() is None  # released at the end
    store.close()


def _stored(n: int) -> StoredArticle:
    return StoredArticle(
        id=f"a{n}",
        record={"title": f"Title {n}", "excerpt": f"Excerpt {n}", "webUrl": f"https://x.example/{n}"},
        embedding=np.full(384, 1 / np.sqrt(384), dtype=np.float32),
        story_id=f"s{n}",
        classification={"topics": []},
    )


def test_reembed_on_postgres(small_bundle, e5_bundle, pg_url):
    files = sorted(corpus_path("storychains").glob("storychains_*.md"))[:12]
    articles = list(read_seeds(files).articles.values())
    run_backfill(NewsModel.load(resolve_bundle(small_bundle)), BackfillTarget(database_url=pg_url), articles)
    done = _cli("reembed", "--bundle", str(resolve_bundle(e5_bundle)), "--database-url", pg_url, "--no-cache")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["embedded"], summary["state"]) == (12, "complete")
    store = open_store("postgres", Path("."), pg_url)
    assert store.missing_count(summary["generation"]) == 0
    assert store.live_generation().vectors_id != summary["vectors_id"]  # the live one untouched
    store.close()
