"""The embedded store's index snapshot: a restart loads it and replays only the rows stored after it,
and falls back to a full restore when the store lost rows (a takedown) since it was taken."""

from __future__ import annotations

import pytest
from helpers import ready_client, shared_embedder

from service.config import Settings
from service.main import create_app

ADMIN = "snapshot-admin-token-0123456789"


def _article(n: int) -> dict[str, object]:
    return {
        "title": f"Wind farm {n} starts feeding the grid off the northern coast",
        "excerpt": f"Turbine array {n} delivered its first power on Tuesday, the operator said.",
        "webUrl": f"https://energy{n % 3}.example/wind/{n}",
        "publishedDateTime": f"2024-06-{1 + n:02d}T08:00:00Z",
        "provider": {"name": f"Energy {n % 3}", "domain": f"energy{n % 3}.example"},
    }


@pytest.fixture
def settings(small_bundle, tmp_path) -> Settings:
    # Snapshot from the first stored article, so the small test store exercises the real path.
    return Settings(
        bundle=small_bundle, data_dir=tmp_path / "store", snapshot_min_articles=0, admin_token=ADMIN
    )


def _start(settings: Settings):
    return ready_client(create_app(settings, embedder=shared_embedder()))


def test_a_restart_restores_from_the_snapshot_and_replays_what_came_after(settings):
    with _start(settings) as first:
        ids = [first.post("/v1/articles", json=_article(n)).json() for n in range(5)]
    assert (settings.data_dir / "index-snapshot" / "snapshot.json").is_file()

    with _start(settings) as second:
        state = second.app.state.news
        assert state.snapshot_used
        for created in ids:
            got = second.get(f"/v1/articles/{created['id']}").json()
            assert got["story_id"] == created["story_id"]
        hits = second.post("/v1/similar", json={"id": ids[0]["id"], "k": 10}).json()["hits"]
        assert hits and all(hit["story_id"] for hit in hits)
        assert second.app.state.news.batcher.calls == 0  # nothing re-embedded
        # Rows stored after the snapshot: written at this shutdown, or replayed at the next start.
        later = [second.post("/v1/articles", json=_article(n)).json() for n in range(5, 7)]

    with _start(settings) as third:
        state = third.app.state.news
        assert state.snapshot_used
        indexed = state.model.index
        for created in [*ids, *later]:
            known = indexed.known(created["id"])
            assert known is not None and known.story_id == created["story_id"]
            assert known.article.title  # the record comes from the store on first use


def test_a_takedown_since_the_snapshot_means_a_full_restore(settings):
    with _start(settings) as first:
        ids = [first.post("/v1/articles", json=_article(n)).json()["id"] for n in range(4)]
    with _start(settings) as second:
        gone = second.delete(f"/v1/articles/{ids[0]}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert gone.status_code == 200, gone.text
        # Take the snapshot away from this process's shutdown: the one on disk predates the delete.
        second.app.state.news.settings.snapshot_min_articles = 10**9
    with _start(settings) as third:
        state = third.app.state.news
        assert not state.snapshot_used
        assert state.model.index.known(ids[0]) is None
        assert all(state.model.index.known(article_id) is not None for article_id in ids[1:])
