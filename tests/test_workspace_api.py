"""The editors' workspace API (TestClient, real bundle), its store migration, and the way back to training."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import FOOTBALL, SAMPLE_SEED, SPACE, ready_client, shared_embedder

from model.articles.seeds import read_seeds, write_seed
from model.coverage.pair_files import RELATED_MAX_OVERALL, SAME_STORY_MAX_OVERALL, read_pairs_tsv
from model.store.sqlite import SCHEMA_VERSION, SqliteArticleStore
from service.config import Settings
from service.main import create_app
from training.export import export_feedback

TOKEN = "workspace-admin-token-0123456789"
VAGUE = {
    "title": "Council publishes the minutes of Tuesday's meeting",
    "excerpt": "The minutes cover parking permits and the opening hours of the library.",
    "publishedDateTime": "2024-03-08T09:00:00Z",
    "webUrl": "https://towncrier.example/minutes",
    "provider": {"name": "Town Crier", "domain": "towncrier.example"},
}


def seed_record() -> dict:
    import yaml

    from model.articles.seeds import split_front_matter

    record = yaml.safe_load(split_front_matter(SAMPLE_SEED.read_text(encoding="utf-8"), SAMPLE_SEED))
    return json.loads(json.dumps(record, default=str))  # YAML times as text, as a client sends them


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("workspace") / "store"


@pytest.fixture(scope="module")
def client(small_bundle, data_dir):
    settings = Settings(bundle=small_bundle, data_dir=data_dir, admin_token=TOKEN, max_batch=8)
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def sample(client) -> dict:
    """The sample seed, posted as it is (with its three related items)."""
    response = client.post("/v1/articles", json=seed_record())
    assert response.status_code == 201, response.text
    for article in (SPACE, FOOTBALL, VAGUE):
        assert client.post("/v1/articles", json=article).status_code == 201
    return response.json()


def test_ingest_keeps_the_seeds_related_items_as_linked_articles(client, sample):
    detail = client.get(f"/v1/articles/{sample['id']}").json()
    assert len(detail["related_ids"]) == 3
    titles = {client.get(f"/v1/articles/{i}").json()["article"]["title"] for i in detail["related_ids"]}
    assert any("Celebrity spotting" in title for title in titles)
    assert detail["effective"] == {
        "labels": [t["label"] for t in detail["classification"]["topics"]],
        "quality": detail["classification"]["scores"]["quality"]["value"],
        "corrected": False,
    }
    assert detail["corrections"] == [] and detail["candidates"]


def test_list_articles_newest_first_with_filters_and_a_keyset_cursor(client, sample):
    everything = client.get("/v1/articles", params={"limit": 200}).json()
    assert everything["next_cursor"] is None
    ids = [row["id"] for row in everything["items"]]
    assert len(ids) == 7 and ids[0] == client.post("/v1/articles", json=VAGUE).json()["id"]
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/articles", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # no row skipped or repeated
    assert [
        r["id"] for r in client.get("/v1/articles", params={"provider": "SPACEDAILY.example"}).json()["items"]
    ] == [ids[2]]
    assert (
        client.get("/v1/articles", params={"q": "anfield"})
        .json()["items"][0]["title"]
        .startswith("Liverpool")
    )
    march = client.get("/v1/articles", params={"since": "2024-03-07T00:00:00Z", "until": "2024-03-31"}).json()
    assert {r["title"][:9] for r in march["items"]} == {"Liverpool", "Council p"}
    story = everything["items"][-1]["story_id"]
    in_story = client.get("/v1/articles", params={"story_id": story}).json()["items"]
    assert in_story and all(r["story_id"] == story for r in in_story)
    assert all(r["story_size"] == len(in_story) for r in in_story)
    label = sample["classification"]["topics"][0]["label"]
    assert sample["id"] in [
        r["id"] for r in client.get("/v1/articles", params={"topic": label}).json()["items"]
    ]


@pytest.mark.parametrize("cursor", ["nope", "c2VxOi0x", "!!!", "c2VxOmFiYw"])
def test_a_bad_cursor_is_a_422_naming_the_parameter(client, cursor):
    response = client.get("/v1/articles", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("cursor: expected the next_cursor of a previous page")
    assert client.get("/v1/stories", params={"cursor": cursor}).status_code == 422


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1000}, {"since": "yesterday"}])
def test_bad_listing_parameters_are_422(client, params):
    response = client.get("/v1/articles", params=params)
    assert response.status_code == 422 and response.json()["detail"]


def test_stories_are_listed_by_their_newest_article_and_paged(client, sample):
    first = client.get("/v1/stories", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = client.get("/v1/stories", params={"limit": 50, "cursor": first["next_cursor"]}).json()
    stories = first["items"] + rest["items"]
    assert len({s["id"] for s in stories}) == len(stories)
    assert sum(s["count"] for s in stories) == 7


def test_a_correction_is_kept_beside_the_model_and_wins(client, sample):
    article_id = sample["id"]
    model_labels = [t["label"] for t in sample["classification"]["topics"]]
    response = client.post(
        f"/v1/articles/{article_id}/corrections",
        json={"topics": ["AI", "Privacy"], "quality": 55, "note": "police use", "editor": "maria"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["editor"] == "maria" and response.json()["topics"] == ["AI", "Privacy"]
    detail = client.get(f"/v1/articles/{article_id}").json()
    assert detail["effective"] == {"labels": ["AI", "Privacy"], "quality": 55.0, "corrected": True}
    assert [t["label"] for t in detail["classification"]["topics"]] == model_labels  # never overwritten
    assert [c["note"] for c in detail["corrections"]] == ["police use"]
    # A later correction removes a label; the history keeps both.
    assert (
        client.post(f"/v1/articles/{article_id}/corrections", json={"topics": ["Privacy"]}).status_code == 201
    )
    detail = client.get(f"/v1/articles/{article_id}").json()
    assert detail["effective"]["labels"] == ["Privacy"] and len(detail["corrections"]) == 2
    assert detail["corrections"][1]["editor"] == "anonymous"
    row = next(r for r in client.get("/v1/articles").json()["items"] if r["id"] == article_id)
    assert row["labels"] == ["Privacy"] and row["corrected"] and row["model_labels"] == model_labels
    assert client.get("/v1/articles", params={"topic": "Privacy"}).json()["items"][0]["id"] == article_id


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topicz": ["AI"]}, "topicz"),
        ({"quality": 140}, "quality"),
        ({"topics": [""]}, "topics"),
        ({}, "body"),
        ({"topics": "AI"}, "topics"),
    ],
)
def test_a_bad_correction_is_a_422_naming_the_field(client, sample, body, field):
    response = client.post(f"/v1/articles/{sample['id']}/corrections", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_unknown_ids_are_404(client):
    assert client.get("/v1/articles/0000000000000000").status_code == 404
    assert client.post("/v1/articles/0000000000000000/corrections", json={"quality": 50}).status_code == 404
    body = {"a": "0000000000000000", "b": "1111111111111111", "verdict": "related"}
    assert client.post("/v1/pairs/feedback", json=body).status_code == 404
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.delete("/v1/articles/0000000000000000", headers=auth).status_code == 404


def test_pair_feedback_is_stored_and_bad_verdicts_are_422(client, sample):
    detail = client.get(f"/v1/articles/{sample['id']}").json()
    other = detail["related_ids"][0]
    response = client.post(
        "/v1/pairs/feedback", json={"a": sample["id"], "b": other, "verdict": "same_story", "editor": "maria"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["overall"] <= SAME_STORY_MAX_OVERALL
    assert client.get(f"/v1/articles/{sample['id']}").json()["pair_feedback"][0]["other"] == other
    bad_bodies = [
        {"a": sample["id"], "b": other, "verdict": "maybe"},
        {"a": sample["id"], "b": other, "verdict": "related", "score": 1},
    ]
    for bad in bad_bodies:
        assert client.post("/v1/pairs/feedback", json=bad).status_code == 422
    # Two valid ids that are the same article: a conflict, not a malformed body.
    same = client.post("/v1/pairs/feedback", json={"a": other, "b": other, "verdict": "related"})
    assert same.status_code == 409 and "another article" in same.json()["detail"]


def test_review_queue_puts_the_least_sure_uncorrected_article_first(client, sample):
    items = client.get("/v1/review", params={"limit": 50}).json()["items"]
    assert sample["id"] not in [i["id"] for i in items]  # corrected: answered already
    keys = [(bool(i["labels"]), i["uncertainty"] if i["uncertainty"] is not None else 9.0) for i in items]
    assert keys == sorted(keys) and len(items) == 6
    first = items[0]
    assert first["candidates"] and set(first["thresholds"]) <= {c["label"] for c in first["candidates"]}
    assert client.get("/v1/review", params={"limit": 0}).status_code == 422


def test_corrections_export_is_seed_json_lines(client, sample):
    response = client.get("/v1/corrections/export")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    [line] = response.text.splitlines()
    record = json.loads(line)
    assert record["topics"] == ["Privacy"] and record["quality"] == 55 and record["corrected_at"]
    assert "related" not in record


def test_correct_export_and_read_back_carries_the_corrected_labels(client, sample, data_dir, tmp_path):
    """The round trip: corrected over HTTP, exported by the training CLI's function, read by model."""
    summary = export_feedback(data_dir, tmp_path / "out")
    assert summary.articles == 1 and summary.pairs == 1
    original = read_seeds([SAMPLE_SEED]).articles[sample["id"]]
    assert "AWS AI" in original.topics
    for order in ([SAMPLE_SEED, tmp_path / "out"], [tmp_path / "out", SAMPLE_SEED]):
        article = read_seeds(order).articles[sample["id"]]
        assert article.topics == ("Privacy",), order  # the correction removed the seed's labels
        assert article.quality == 55
    [pair] = read_pairs_tsv(tmp_path / "out" / "pairs.tsv")
    assert pair.overall <= SAME_STORY_MAX_OVERALL and pair.a.title.startswith("Amazon Suspends")


def test_the_training_cli_exports(client, sample, data_dir, tmp_path):
    from training.cli import main

    assert main(["export", "--data-dir", str(data_dir), "--out", str(tmp_path / "x"), "-q"]) == 0
    assert (tmp_path / "x" / f"{sample['id']}.md").is_file() and (tmp_path / "x" / "pairs.tsv").is_file()
    assert main(["export", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "y"), "-q"]) == 2


def test_delete_needs_admin_and_removes_from_store_index_and_story(client, sample):
    article_id = client.post("/v1/articles", json=FOOTBALL).json()["id"]
    story = client.get(f"/v1/articles/{article_id}").json()["story_id"]
    assert client.delete(f"/v1/articles/{article_id}").status_code == 401
    response = client.delete(f"/v1/articles/{article_id}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json() == {"id": article_id, "store": True, "index": True}
    assert client.get(f"/v1/articles/{article_id}").status_code == 404
    assert article_id not in [
        r["id"] for r in client.get("/v1/articles", params={"limit": 200}).json()["items"]
    ]
    left = client.get(f"/v1/stories/{story}")  # the bundle's own articles may share the story
    assert left.status_code == 404 or article_id not in [a["id"] for a in left.json()["articles"]]
    hits = client.post("/v1/similar", json={"article": FOOTBALL, "k": 5}).json()["hits"]
    assert article_id not in [h["id"] for h in hits]
    # Ingesting it again works (a takedown is not a ban).
    assert client.post("/v1/articles", json=FOOTBALL).status_code == 201


def test_every_workspace_endpoint_is_in_openapi_with_examples(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/articles", "get"),
        ("/v1/stories", "get"),
        ("/v1/articles/{article_id}/corrections", "post"),
        ("/v1/pairs/feedback", "post"),
        ("/v1/review", "get"),
        ("/v1/articles/{article_id}", "delete"),
        ("/v1/corrections/export", "get"),
    ]:
        assert method in paths[path], path
    assert paths["/v1/pairs/feedback"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert paths["/v1/articles/{article_id}/corrections"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    assert "/" not in paths and "/inbox" not in paths  # pages are not API


def test_pages_render_their_views_and_link_their_json_twins(client, sample):
    for path, twin in [
        ("/", "/v1/classify"),
        ("/inbox", "/v1/articles"),
        ("/review", "/v1/review"),
        (f"/article/{sample['id']}", f"/v1/articles/{sample['id']}"),
        (f"/story/{sample['story_id']}", f"/v1/stories/{sample['story_id']}"),
    ]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert twin in response.text and "/static/app.css" in response.text
    assert client.get("/inbox", params={"q": "zzzz-nothing"}).text.count("No article matches") == 1
    assert client.get("/article/0000000000000000").status_code == 404
    assert client.get("/story/s_nothing").status_code == 404
    assert client.get("/inbox", params={"since": "soon"}).status_code == 422
    assert client.get("/favicon.ico").status_code == 200
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "articles.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE articles (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            canonical_url TEXT, record TEXT NOT NULL, embedding BLOB NOT NULL, story_id TEXT NOT NULL,
            classification TEXT NOT NULL, duplicate_of TEXT, model_version TEXT, published_at TEXT,
            created_at TEXT NOT NULL);
        INSERT INTO articles (id, record, embedding, story_id, classification, created_at) VALUES
            ('a1', '{"title": "Old"}', x'0000803f', 's1',
             '{"topics": [{"label": "AI", "probability": 0.9}], "scores": {}}', '2024-01-01T00:00:00+00:00');
        """
    )
    db.commit()
    db.close()
    store = SqliteArticleStore(path)
    try:
        old = store.get("a1")
        assert old.effective_labels == ["AI"] and old.related_ids == () and old.uncertainty is None
        assert [a.id for a in store.review_queue(5)] == ["a1"]
    finally:
        store.close()
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION


def test_seed_writing_round_trips_and_the_latest_correction_wins(tmp_path):
    record = seed_record()
    write_seed(
        {**record, "topics": ["Privacy"], "corrected_at": "2026-01-01T00:00:00Z"}, tmp_path / "a" / "x.md"
    )
    write_seed(
        {**record, "topics": ["Space"], "corrected_at": "2026-02-01T00:00:00Z"}, tmp_path / "b" / "x.md"
    )
    corpus = read_seeds([tmp_path / "b", SAMPLE_SEED, tmp_path / "a"])
    [main_id] = corpus.main_ids
    assert corpus.articles[main_id].topics == ("Space",)
    assert len(corpus.links) == 3  # the related items survive the round trip
    assert SAME_STORY_MAX_OVERALL < 2.0 <= RELATED_MAX_OVERALL
