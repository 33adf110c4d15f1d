"""Every input the outside probe broke the service with answers a 4xx naming the field; one poisoned
request never fails another; keys, roles, rate limits, metrics, request ids and offline docs.

Real model and real uvicorn: the poison and connection tests need a real server and real sockets.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import ready_client, service_env, shared_embedder
from test_e2e_service import free_port, serving

from service.config import Settings
from service.main import create_app

GOOD = {"title": "NASA probe reaches an asteroid", "excerpt": "The spacecraft will map its surface."}


@pytest.fixture(scope="module")
def client(small_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    settings = Settings(bundle=small_bundle, data_dir=root / "store", rate_limit_per_minute=0)
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("field", "value", "status", "needle"),
    [
        ("webUrl", "http://a.com:abc/", 422, "webUrl: expected an absolute http(s) URL"),
        ("webUrl", "http://a.com:99999/", 422, "webUrl: expected an absolute http(s) URL"),
        ("webUrl", "http://[::1/", 422, "webUrl: expected an absolute http(s) URL"),
        ("publishedDateTime", "0001-01-01T00:00:00+01:00", 422, "publishedDateTime: expected a date-time"),
        ("publishedDateTime", "9999-12-31T23:59:59-01:00", 422, "publishedDateTime: expected a date-time"),
        ("publishedDateTime", 99999999999999, 422, "publishedDateTime: expected epoch seconds"),
        ("title", "bad \ud800", 422, "title: expected valid Unicode text"),
        ("title", "x" * 1001, 413, "title: expected at most 1,000 characters"),
        ("published", "yes", 422, "published"),
    ],
)
@pytest.mark.parametrize("endpoint", ["/v1/classify", "/v1/articles"])
def test_each_probe_input_is_a_4xx_naming_the_field(client, endpoint, field, value, status, needle):
    body = {**GOOD, "webUrl": "https://example.com/a", field: value}
    # json.dumps escapes a lone surrogate as \ud800: valid JSON text, as a client would send it.
    response = client.post(endpoint, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("field", ["since", "until"])
def test_similar_time_window_out_of_range_is_a_422(client, field, value):
    response = client.post("/v1/similar", json={"article": GOOD, field: value})
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"]


def test_lax_types_are_refused_where_seeds_refuse_them(client):
    assert client.post("/v1/similar", json={"article": GOOD, "k": "5"}).status_code == 422
    assert client.post("/v1/classify", json={**GOOD, "published": "yes"}).status_code == 422
    # ...and accepted where seeds accept them: one topic as a bare string.
    assert client.post("/v1/classify", json={**GOOD, "topics": "Business"}).status_code == 200


def test_error_locations_name_fields_not_union_branches(client):
    response = client.post(
        "/v1/classify", json={**GOOD, "images": [{"url": "https://e.com/i.jpg", "width": "wide"}]}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "images[0].width" in detail and "ImageIn" not in detail


def test_unknown_fields_are_kept_with_the_stored_record(client):
    created = client.post(
        "/v1/articles", json={**GOOD, "webUrl": "https://example.com/kept", "desk": "science"}
    )
    assert created.status_code == 201, created.text
    stored = client.get(f"/v1/articles/{created.json()['id']}").json()
    assert stored["article"]["desk"] == "science"


def test_no_response_shows_an_absolute_server_path(client, small_bundle):
    model = client.get("/v1/model").json()
    assert str(small_bundle) not in str(model) and not str(model.get("path") or "").startswith("/")


def test_openapi_documents_the_one_error_shape(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    classify = spec["paths"]["/v1/classify"]["post"]["responses"]
    for status in ("413", "422", "429"):
        assert classify[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }


def test_docs_pages_load_their_assets_from_the_app(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn." not in html and "googleapis" not in html
        assets = [part.split('"')[0] for part in html.split('src="')[1:]]
        assert assets and all(asset.startswith("/static/docs/") for asset in assets)
        for asset in assets:
            assert client.get(asset).status_code == 200


def test_metrics_count_requests_by_route_template_and_expose_the_state(client):
    client.post("/v1/classify", json=GOOD)
    client.get("/v1/articles/nope-not-an-id")
    text = client.get("/metrics").text
    assert 'newsdesk_http_requests_total{method="POST",route="/v1/classify",status="200"}' in text
    assert 'route="/v1/articles/{article_id}"' in text and "nope-not-an-id" not in text
    for name in (
        "newsdesk_encoder_batch_size",
        "newsdesk_encoder_queue_wait_seconds",
        "newsdesk_model_info",
        "newsdesk_index_articles",
        "newsdesk_articles_stored",
        "newsdesk_restore_progress_ratio",
    ):
        assert name in text


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    assert len(client.get("/healthz").headers["x-request-id"]) >= 8


# --- keys and roles ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(small_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("keyed")
    settings = Settings(
        bundle=small_bundle,
        data_dir=root / "store",
        api_keys="reader:reader-key-0123456789abc,ingest+reader:ingest-key-0123456789abc",
        admin_token="admin-key-0123456789abcdef",
        rate_limit_per_minute=30,
    )
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_roles_decide_what_each_key_may_do(keyed):
    article = {**GOOD, "webUrl": "https://example.com/keyed"}
    assert keyed.post("/v1/classify", json=GOOD).status_code == 401
    assert keyed.post("/v1/classify", json=GOOD, headers=_auth("wrong-key-0123456789")).status_code == 401
    assert keyed.post("/v1/classify", json=GOOD, headers=_auth("reader-key-0123456789abc")).status_code == 200
    assert (
        keyed.post("/v1/articles", json=article, headers=_auth("reader-key-0123456789abc")).status_code == 403
    )
    assert (
        keyed.post("/v1/articles", json=article, headers=_auth("ingest-key-0123456789abc")).status_code == 201
    )
    assert keyed.post("/v1/admin/reload", headers=_auth("ingest-key-0123456789abc")).status_code == 403
    assert keyed.post("/v1/admin/reload", headers=_auth("admin-key-0123456789abcdef")).status_code == 200


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(keyed):
    answers = [
        keyed.get("/v1/model", headers=_auth("reader-key-0123456789abc")).status_code for _ in range(40)
    ]
    assert 429 in answers
    limited = keyed.get("/v1/model", headers=_auth("reader-key-0123456789abc"))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_open_service_on_a_public_interface_refuses_to_start(small_bundle, tmp_path):
    settings = Settings(bundle=small_bundle, data_dir=tmp_path / "store", host="0.0.0.0")
    with pytest.raises(ValueError, match="without API keys"), ready_client(create_app(settings)):
        pass
    allowed = Settings(bundle=small_bundle, data_dir=tmp_path / "store", host="0.0.0.0", allow_open=True)
    with ready_client(create_app(allowed, embedder=shared_embedder())) as client:
        assert client.get("/healthz").status_code == 200


# --- one poisoned request, real server ----------------------------------------------------


@pytest.fixture(scope="module")
def live(small_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("poison")
    port = free_port()
    env = service_env(small_bundle, root / "store", port)
    command = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port)]
    with serving(command, env, port, root / "service.log") as client:
        yield client


def test_a_poisoned_request_fails_alone_and_others_all_succeed(live):
    base = str(live.base_url)
    stop = threading.Event()
    poison_answers: list[int] = []

    def poison() -> None:
        with httpx.Client(base_url=base, timeout=30) as poisoner:
            while not stop.is_set():
                body = b'{"title": "bad \\ud800", "webUrl": "https://poison.example/x"}'
                poison_answers.append(
                    poisoner.post(
                        "/v1/articles", content=body, headers={"content-type": "application/json"}
                    ).status_code
                )
                time.sleep(0.05)

    def worker(n: int) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as own:
            return [
                own.post(
                    "/v1/classify", json={**GOOD, "title": f"Probe {n}-{i} reaches an asteroid"}
                ).status_code
                for i in range(15)
            ]

    poisoner = threading.Thread(target=poison)
    poisoner.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = [code for codes in pool.map(worker, range(8)) for code in codes]
    finally:
        stop.set()
        poisoner.join()
    assert answers.count(200) == len(answers) == 120
    assert poison_answers and set(poison_answers) == {422}


def test_a_failed_request_keeps_the_connection(live):
    # One client, one connection: a 4xx must not make the server close it.
    with httpx.Client(base_url=str(live.base_url), timeout=30, limits=httpx.Limits(max_connections=1)) as one:
        ports = set()
        for body in ({"title": ""}, GOOD, {"title": "x", "webUrl": "http://a.com:abc/"}, GOOD):
            response = one.post("/v1/classify", json=body, extensions={})
            ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
        assert len(ports) == 1


def test_pages_ask_for_a_key_once_keys_exist_and_remember_it_in_a_cookie(keyed):
    html = {"accept": "text/html"}
    to_login = keyed.get("/inbox", headers=html, follow_redirects=False)
    assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=/inbox"
    assert "API key" in keyed.get("/login").text
    wrong = keyed.post(
        "/login", data={"key": "not-a-key-0123456789", "next": "/inbox"}, follow_redirects=False
    )
    assert wrong.status_code == 401 and "Unknown API key" in wrong.text
    signed = keyed.post(
        "/login",
        data={"key": "reader-key-0123456789abc", "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/"  # never off-site
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert keyed.get("/inbox", headers=html).status_code == 200  # the client keeps the cookie
    keyed.post("/logout")
    assert keyed.get("/inbox", headers=html, follow_redirects=False).status_code == 303
