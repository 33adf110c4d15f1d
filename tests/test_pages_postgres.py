"""The Tag and Article pages search related coverage as `/v1/similar` does, on PostgreSQL too.

With a shared store the in-memory index holds only the bundle's own corpus; the ingested articles
live in the database. The pages must find those, as their JSON twin does.
"""

from __future__ import annotations

import html
import re

import pytest
from helpers import SPACE, ready_client, shared_embedder

from service.config import Settings
from service.main import create_app

pytest.importorskip("psycopg", reason="psycopg is not installed")

# Two more reports of the story in SPACE, from other outlets: ingested ones and one only analysed.
SPACE_AGAIN = {
    "title": "NASA spacecraft arrives at an asteroid after six years in space",
    "excerpt": "The probe will map the asteroid's surface and bring samples back to Earth, NASA said.",
    "publishedDateTime": "2024-03-06T15:00:00Z",
    "webUrl": "https://orbitnews.example/nasa-spacecraft-asteroid",
    "provider": {"name": "Orbit News", "domain": "orbitnews.example"},
}
SPACE_FORM = {
    "title": "After a six-year trip, NASA's probe reaches its asteroid",
    "excerpt": "NASA said the spacecraft will map the asteroid and collect samples of its surface.",
    "date": "2024-03-06T18:00:00Z",
    "url": "https://skywatch.example/nasa-probe-reaches-asteroid",
    "outlet": "skywatch.example",
}


def _coverage(page: str) -> str:
    """The page's coverage list (the Tag page's ``#coverage`` list, the Article page's section)."""
    found = re.search(r'id="coverage".*?</(ol|section)>', page, flags=re.S)
    return html.unescape(found.group(0)) if found else ""


@pytest.fixture
def client(small_bundle, pg_url, tmp_path):
    settings = Settings(bundle=small_bundle, data_dir=tmp_path / "unused", database_url=pg_url)
    with ready_client(create_app(settings, embedder=shared_embedder())) as test_client:
        yield test_client


def test_the_tag_and_article_pages_find_stored_coverage_on_postgresql(client):
    first = client.post("/v1/articles", json=SPACE)
    second = client.post("/v1/articles", json=SPACE_AGAIN)
    assert first.status_code == 201 and second.status_code == 201, (first.text, second.text)
    first_id, second_id = first.json()["id"], second.json()["id"]
    model = client.app.state.news.model
    # Stored in the database only: not in the bundle's corpus, not in the in-memory index.
    assert model.known(first_id) is None and model.known(second_id) is None

    # Tag: an article not stored, whose coverage is the two stored reports.
    tag = client.post("/tag", data=SPACE_FORM)
    assert tag.status_code == 200, tag.text
    coverage = _coverage(tag.text)
    assert SPACE["title"] in coverage and SPACE_AGAIN["title"] in coverage

    # Article: a stored article's coverage is the other stored report, the hits /v1/similar gives.
    page = client.get(f"/article/{first_id}")
    assert page.status_code == 200, page.text
    coverage = _coverage(page.text)
    assert SPACE_AGAIN["title"] in coverage
    shown = re.findall(r'name="other" value="([^"]+)"', coverage)
    twin = client.post("/v1/similar", json={"id": first_id, "k": 10}).json()["hits"]
    assert second_id in shown and shown == [hit["id"] for hit in twin]
