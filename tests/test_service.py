"""The HTTP API through `TestClient` (lifespan included) against a real bundle trained on tmp_path."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import AI, FOOTBALL, SPACE, ready_client, shared_embedder

from service.config import Settings
from service.main import create_app

TOKEN = "test-admin-token"


def make_settings(tmp_path, bundle, **overrides) -> Settings:
    values = {
        "bundle": bundle,
        "data_dir": tmp_path / "store",
        "admin_token": TOKEN,
        "max_batch": 8,
        "max_body_bytes": 64_000,
        "max_k": 20,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="module")
def bundle_copy(small_bundle, tmp_path_factory, store_backend):
    """A private copy of the folder of versions (one per store backend), so a test may add a
    version to it."""
    target = tmp_path_factory.mktemp("service_bundle") / "bundles"
    shutil.copytree(small_bundle, target)
    return target


@pytest.fixture(scope="module")
def settings(bundle_copy, tmp_path_factory, store_backend) -> Settings:
    """The module's app settings, once on SQLite and once on PostgreSQL (`store_backend`)."""
    return make_settings(tmp_path_factory.mktemp("service"), bundle_copy, **store_backend)


@pytest.fixture(scope="module")
def client(settings):
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def no_bundle_client(tmp_path_factory):
    root = tmp_path_factory.mktemp("no_bundle")
    (root / "empty").mkdir()
    settings = make_settings(root, root / "empty", admin_token=None)
    with ready_client(create_app(settings)) as test_client:
        yield test_client


def ingest(client, article) -> dict:
    response = client.post("/v1/articles", json=article)
    assert response.status_code in (200, 201), response.text
    return response.json()


# --- health and model --------------------------------------------------------------------


def test_health_ready_and_model_describe_the_loaded_bundle(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["store"] == "ok"
    info = client.get("/v1/model").json()
    assert {"AI", "Space", "Football"} <= set(info["labels"])
    assert set(info["scores"]) == {"quality", "heat"}
    assert info["version"] == ready.json()["model_version"]
    assert isinstance(info["metrics"], dict) and info["embedding"]["dim"] == 384
    assert info["indexed_articles"] > 70


def test_openapi_documents_every_endpoint_with_its_shapes(client):
    spec = client.get("/openapi.json").json()
    paths = ["/v1/classify", "/v1/similar", "/v1/compare", "/v1/articles", "/v1/articles/{article_id}"]
    paths += ["/v1/stories/{story_id}", "/healthz", "/readyz", "/v1/model", "/v1/admin/reload"]
    for path in paths:
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert schemas["ArticleIn"]["properties"]["excerpt"]["description"]
    assert "examples" in schemas["ClassificationOut"]


# --- classify ------------------------------------------------------------------------------


def test_classify_one_article_gives_topics_scores_with_intervals_and_version(client):
    body = client.post("/v1/classify", json=AI).json()
    assert body["topics"][0]["label"] == "AI"
    assert 0.5 < body["topics"][0]["probability"] <= 1
    assert body["all_topics"] is None
    assert set(body["scores"]) == {"quality", "heat"}
    for score in body["scores"].values():
        assert score["low"] <= score["value"] <= score["high"] and 0 < score["coverage"] < 1
    assert body["model_version"] == client.get("/v1/model").json()["version"]


def test_classify_batch_keeps_order_and_returns_all_scores_on_request(client):
    response = client.post("/v1/classify", json={"articles": [AI, SPACE, FOOTBALL], "all_scores": True})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["topics"][0]["label"] for r in results] == ["AI", "Space", "Football"]
    labels = set(client.get("/v1/model").json()["labels"])
    assert all({t["label"] for t in r["all_topics"]} == labels for r in results)
    by_query = client.post("/v1/classify?all_scores=true", json=SPACE).json()
    assert by_query["all_topics"]
    # The int8 encoder quantises activations per batch, so a text encoded alone and in a batch
    # differ in the last digits; the labels and (to 1e-3) the probabilities agree.
    assert [t["label"] for t in by_query["topics"]] == [t["label"] for t in results[1]["topics"]]
    for alone, batched in zip(by_query["topics"], results[1]["topics"], strict=True):
        assert alone["probability"] == pytest.approx(batched["probability"], abs=1e-3)


def test_classify_stores_nothing(client):
    article = {**SPACE, "webUrl": "https://spacedaily.example/classified-only"}
    article_id = client.post("/v1/classify", json=article).json()["id"]
    assert client.get(f"/v1/articles/{article_id}").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"excerpt": "", "title": ""}, 422, "title: missing"),
        (
            {"title": "A title", "excerpt": ["a", "list"]},
            422,
            "excerpt: Input should be a valid string, got ['a', 'list']",
        ),
        ({"title": "A title", "webUrl": "not a url"}, 422, "webUrl: expected an absolute http(s) URL"),
        (
            {"title": "A title", "publishedDateTime": "yesterday"},
            422,
            "publishedDateTime: expected an ISO 8601",
        ),
        ({"title": "A title", "provider": ["x"]}, 422, "provider"),
        ({"articles": []}, 422, "articles: empty batch"),
        ({"articles": [AI, {"title": True}]}, 422, "articles[1].title: Input should be a valid string"),
        ({"articles": [AI, {"excerpt": "  "}]}, 422, "articles[1].title: missing"),
        ({"articles": [AI] * 9}, 413, "at most 8 articles"),
        ([AI], 422, "body: Input should be a valid dictionary"),
    ],
)
def test_classify_rejects_bad_requests_with_a_message(client, body, status, expected):
    response = client.post("/v1/classify", json=body)
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"]


def test_bodies_over_the_limit_or_not_json_are_refused_with_4xx(client):
    too_big = client.post("/v1/classify", json={"title": "x" * 70_000})
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["detail"]
    broken = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    missing = client.post("/v1/classify")
    assert missing.status_code == 422 and "body: missing" in missing.json()["detail"]


def test_concurrent_classify_requests_share_encoder_calls(client):
    batcher = client.app.state.news.batcher
    articles = [
        {**AI, "webUrl": f"https://techpaper.example/ai/{i}", "title": f"{AI['title']} {i}"}
        for i in range(16)
    ]
    calls_before = batcher.calls
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda a: client.post("/v1/classify", json=a), articles))
    assert all(r.status_code == 200 for r in responses)
    assert batcher.calls - calls_before < len(articles)
    alone = client.post("/v1/classify", json=articles[3]).json()
    assert responses[3].json()["topics"][0]["label"] == alone["topics"][0]["label"]
    assert responses[3].json()["topics"][0]["probability"] == pytest.approx(
        alone["topics"][0]["probability"], abs=1e-4
    )


# --- ingest, articles, stories -------------------------------------------------------------


def test_ingest_is_idempotent_on_the_canonical_url(client):
    first = client.post("/v1/articles", json=AI)
    assert first.status_code == 201 and first.json()["created"] is True
    variant = {**AI, "webUrl": "http://techpaper.example/ai/openai-code-model", "title": "Edited title"}
    again = client.post("/v1/articles", json=variant)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    assert again.json()["story_id"] == first.json()["story_id"]


def test_stored_article_comes_back_with_classification_and_story(client):
    done = ingest(client, SPACE)
    got = client.get(f"/v1/articles/{done['id']}").json()
    assert got["stored"] is True and got["story_id"] == done["story_id"]
    assert (
        got["article"]["title"] == SPACE["title"]
        and got["article"]["provider"]["domain"] == "spacedaily.example"
    )
    assert got["classification"]["topics"][0]["label"] == "Space"
    story = client.get(f"/v1/stories/{done['story_id']}").json()
    assert done["id"] in [a["id"] for a in story["articles"]]
    dates = [a["publishedDateTime"] for a in story["articles"] if a["publishedDateTime"]]
    assert dates == sorted(dates, reverse=True)


def test_batch_ingest_reports_each_article_and_flags_duplicates(client):
    original = {**FOOTBALL, "webUrl": "https://sportsdesk.example/derby-report"}
    copy = {
        **original,
        "webUrl": "https://copycat.example/derby",
        "provider": {"name": "Copycat", "domain": "copycat.example"},
    }
    response = client.post("/v1/articles", json={"articles": [original, original, copy]})
    assert response.status_code == 200
    first, repeat, duplicate = response.json()["results"]
    assert (first["created"], repeat["created"], duplicate["created"]) == (True, False, True)
    assert repeat["id"] == first["id"]
    assert duplicate["duplicate_of"] == first["id"]
    assert duplicate["story_id"] == first["story_id"]
    story = client.get(f"/v1/stories/{first['story_id']}").json()
    assert {first["id"], duplicate["id"]} <= {a["id"] for a in story["articles"]}


def test_bundle_articles_are_readable_but_not_stored(client):
    hit = client.post("/v1/similar", json={"article": SPACE, "k": 1}).json()["hits"][0]
    got = client.get(f"/v1/articles/{hit['id']}").json()
    assert got["stored"] is False and got["classification"]["id"] == hit["id"]


def test_unknown_article_and_story_are_404(client):
    assert client.get("/v1/articles/0000000000000000").status_code == 404
    response = client.get("/v1/stories/no-such-story")
    assert response.status_code == 404 and "no-such-story" in response.json()["detail"]


# --- similar and compare -------------------------------------------------------------------


def test_similar_by_body_finds_same_story_coverage_with_verdicts_and_stories(client):
    query = {
        "title": "NASA launches a probe to study an asteroid",
        "excerpt": "NASA launches a probe to study an asteroid, the agency said.",
        "publishedDateTime": "2024-03-14T09:00:00Z",
    }
    body = client.post("/v1/similar", json={"article": query, "k": 5}).json()
    hits = body["hits"]
    assert 0 < len(hits) <= 5
    assert "NASA" in hits[0]["title"] and hits[0]["verdict"] in ("duplicate", "same_story")
    assert all(h["verdict"] in ("duplicate", "same_story", "related") for h in hits)
    assert all(h["story_id"] and h["url"] and h["provider"] for h in hits[:2])
    # Ranked by the same-story probability, so a copy or same-story hit never follows a related one.
    rank = {"duplicate": 0, "same_story": 0, "related": 1}
    assert [rank[h["verdict"]] for h in hits] == sorted(rank[h["verdict"]] for h in hits)


def test_similar_by_id_and_filters(client):
    stored = ingest(client, {**AI, "webUrl": "https://techpaper.example/ai/second"})
    by_id = client.post("/v1/similar", json={"id": stored["id"], "k": 10}).json()
    assert by_id["query_id"] == stored["id"] and stored["id"] not in [h["id"] for h in by_id["hits"]]
    assert by_id["hits"], "the ingested copy of the same text should be found"
    other = client.post("/v1/similar", json={"id": stored["id"], "exclude_same_provider": True}).json()
    assert all(h["provider"]["domain"] != "techpaper.example" for h in other["hits"] if h["provider"])
    only = client.post("/v1/similar", json={"id": stored["id"], "providers": ["WWW.Ledger.example"]}).json()
    assert only["hits"] and all(h["provider"]["domain"] == "ledger.example" for h in only["hits"])
    window = {"id": stored["id"], "since": "2024-03-01T00:00:00Z", "until": "2024-03-03T00:00:00"}
    for hit in client.post("/v1/similar", json=window).json()["hits"]:
        assert "2024-03-01" <= hit["publishedDateTime"][:10] <= "2024-03-03"


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ({"id": "0000000000000000"}, 404, "no article with id"),
        ({}, 422, "exactly one of"),
        ({"id": "x", "article": AI}, 422, "exactly one of"),
        ({"article": AI, "k": 21}, 422, "k: at most 20"),
        ({"article": AI, "k": 0}, 422, "k: Input should be greater than or equal to 1"),
        ({"article": {"excerpt": {"a": 1}}}, 422, "article.excerpt"),
        ({"article": AI, "colour": "red"}, 422, "colour"),
    ],
)
def test_similar_rejects_bad_requests_with_a_message(client, body, status, expected):
    response = client.post("/v1/similar", json=body)
    assert response.status_code == status, response.text
    assert expected in response.json()["detail"]


def test_a_window_that_ends_before_it_starts_finds_nothing(client):
    body = {"article": AI, "since": "2024-03-05T00:00:00Z", "until": "2024-03-01T00:00:00Z"}
    response = client.post("/v1/similar", json=body)
    assert response.status_code == 200 and response.json()["hits"] == []


def test_compare_grades_pairs_and_shows_evidence(client):
    same = client.post("/v1/compare", json={"a": AI, "b": {**AI, "webUrl": "https://other.example/x"}}).json()
    assert same["verdict"] == "duplicate" and same["evidence"]["cosine"] > 0.99
    apart = client.post("/v1/compare", json={"a": AI, "b": FOOTBALL}).json()
    assert apart["score"] < same["score"] and apart["verdict"] in ("unrelated", "related")
    assert set(apart["evidence"]) >= {
        "cosine",
        "lexical",
        "near_duplicate",
        "time_gap_hours",
        "same_provider",
    }
    missing = client.post("/v1/compare", json={"a": AI})
    assert missing.status_code == 422 and "b: required field is missing" in missing.json()["detail"]
    bad = client.post("/v1/compare", json={"a": AI, "b": {"title": ""}})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("b.title")


# --- admin reload --------------------------------------------------------------------------


def test_reload_needs_the_right_bearer_token(client):
    assert client.post("/v1/admin/reload").status_code == 401
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    same = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert same.status_code == 200 and same.json()["changed"] is False


def test_reload_swaps_in_the_newest_version_without_failing_requests_or_losing_articles(client, bundle_copy):
    stored = ingest(client, {**SPACE, "webUrl": "https://spacedaily.example/before-reload"})
    current = next(p for p in bundle_copy.iterdir() if (p / "manifest.json").is_file())
    newer = bundle_copy / (
        "99999999T000000Z-" + current.name.split("-")[-1]
    )  # sorts after every real version
    shutil.copytree(current, newer)

    def classify(i: int) -> int:
        return client.post("/v1/classify", json={**AI, "title": f"{AI['title']} #{i}"}).status_code

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(classify, i) for i in range(12)]
        reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        statuses = [f.result() for f in pending]
    assert statuses == [200] * 12
    assert reload.status_code == 200, reload.text
    result = reload.json()
    assert result["changed"] is True and result["restored_articles"] >= 1
    assert client.app.state.news.model.path == newer
    got = client.get(f"/v1/articles/{stored['id']}").json()
    assert got["story_id"] == stored["story_id"]
    hits = client.post("/v1/similar", json={"article": {**SPACE, "webUrl": "https://x.example/q"}}).json()[
        "hits"
    ]
    assert stored["id"] in [h["id"] for h in hits]
    assert client.post("/v1/similar", json={"id": stored["id"]}).status_code == 200


# --- restart and no-bundle -----------------------------------------------------------------


def test_a_new_app_on_the_same_store_rebuilds_the_index_without_reembedding(client, settings):
    stored = ingest(client, {**FOOTBALL, "webUrl": "https://sportsdesk.example/restart"})
    with ready_client(create_app(settings, embedder=shared_embedder())) as again:
        got = again.get(f"/v1/articles/{stored['id']}").json()
        assert got["story_id"] == stored["story_id"]
        assert again.post("/v1/similar", json={"id": stored["id"]}).status_code == 200
        assert again.app.state.news.batcher.calls == 0  # stored vectors, nothing encoded


def test_without_a_bundle_health_answers_and_model_endpoints_say_503_and_why(no_bundle_client):
    assert no_bundle_client.get("/healthz").status_code == 200
    ready = no_bundle_client.get("/readyz")
    assert ready.status_code == 503 and "no model loaded" in ready.json()["reasons"][0]
    for method, path, body in [
        ("post", "/v1/classify", AI),
        ("post", "/v1/similar", {"article": AI}),
        ("post", "/v1/compare", {"a": AI, "b": SPACE}),
        ("post", "/v1/articles", AI),
        ("get", "/v1/model", None),
    ]:
        response = no_bundle_client.request(method, path, json=body)
        assert response.status_code == 503, path
        assert "no model loaded" in response.json()["detail"] and "training fit" in response.json()["detail"]


def test_admin_endpoints_are_disabled_without_a_token(no_bundle_client):
    response = no_bundle_client.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403 and "NEWSDESK_ADMIN_TOKEN" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(client):
    def chunks():
        yield b'{"title": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "over the limit" in response.json()["detail"]


def test_a_broken_newer_bundle_fails_the_reload_and_the_old_model_keeps_serving(client, bundle_copy):
    serving = client.app.state.news.model.version
    broken = bundle_copy / "99999999T999999Z-broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"format_version": 999}')
    try:
        response = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 503 and "format" in response.json()["detail"]
        assert client.post("/v1/classify", json=AI).json()["model_version"] == serving
    finally:
        shutil.rmtree(broken)


def test_concurrent_posts_of_one_new_article_store_it_once(client):
    article = {**SPACE, "webUrl": "https://spacedaily.example/race", "title": "Race to store one article"}
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.post("/v1/articles", json=article), range(6)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.json()["created"] for r in responses) == 1


def test_an_unreachable_store_fails_readiness_and_ingest_but_not_classify(small_bundle, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store folder should be")
    settings = make_settings(tmp_path, small_bundle, data_dir=blocker)
    with ready_client(create_app(settings, embedder=shared_embedder())) as broken:
        ready = broken.get("/readyz")
        assert ready.status_code == 503 and "article store" in ready.json()["reasons"][0]
        ingest_response = broken.post("/v1/articles", json=AI)
        assert (
            ingest_response.status_code == 503
            and "cannot open the article store" in ingest_response.json()["detail"]
        )
        assert broken.post("/v1/classify", json=AI).status_code == 200
