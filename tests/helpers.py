"""Shared test helpers: one real embedder per test run, and where the shared corpora live."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model.encoders.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SEED = ROOT / "seeds" / "000_80b44f21389d41d0.txt"


# Articles the service tests post: one topic each, from three outlets, a day apart.
AI = {
    "title": "OpenAI unveils a language model that writes computer code",
    "excerpt": "The new AI system turns plain English requests into working software, OpenAI said.",
    "publishedDateTime": "2024-03-05T10:00:00Z",
    "webUrl": "https://www.techpaper.example/ai/openai-code-model/?utm_source=twitter",
    "provider": {"name": "Tech Paper", "domain": "techpaper.example"},
}
SPACE = {
    "title": "NASA probe reaches an asteroid after a six-year journey",
    "excerpt": "The spacecraft will map the asteroid's surface and collect samples, NASA said.",
    "publishedDateTime": "2024-03-06T12:00:00Z",
    "webUrl": "https://spacedaily.example/nasa-probe-asteroid",
    "provider": {"name": "Space Daily", "domain": "spacedaily.example"},
}
FOOTBALL = {
    "title": "Liverpool beat Arsenal in a dramatic Premier League match",
    "excerpt": "A late goal settled the football match at Anfield on Sunday.",
    "publishedDateTime": "2024-03-07T18:00:00Z",
    "webUrl": "https://sportsdesk.example/liverpool-arsenal",
    "provider": {"name": "Sports Desk", "domain": "sportsdesk.example"},
}


@functools.cache
def shared_embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once per test run (no fake encoders)."""
    return Embedder()


@contextlib.contextmanager
def ready_client(app: Any, timeout: float = 120.0) -> Iterator[TestClient]:
    """A `TestClient` whose lifespan ran and whose background start-up has settled.

    The service opens its port at once and loads the bundle and stored articles in the
    background (/readyz says 503 meanwhile); tests that want the model wait here.
    """
    with TestClient(app) as client:
        if not client.app.state.news.settled.wait(timeout):
            raise TimeoutError(f"service not settled after {timeout} s: {client.get('/readyz').json()}")
        yield client


def service_env(bundle: Path, data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a real uvicorn under test: this checkout, offline, quiet, no rate limit.

    ``settings`` are more ``NEWSDESK_*`` variables by their lower-case name (``admin_token=...``).
    """
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "HF_HUB_OFFLINE": "1",
        "NEWSDESK_BUNDLE": str(bundle),
        "NEWSDESK_DATA_DIR": str(data_dir),
        "NEWSDESK_PORT": str(port),
        "NEWSDESK_LOG_LEVEL": "warning",
        "NEWSDESK_RATE_LIMIT_PER_MINUTE": "0",  # a test's clients are fast on purpose, not abusers
        **{f"NEWSDESK_{name.upper()}": value for name, value in settings.items()},
    }


def data_dir() -> Path:
    return Path(os.environ.get("NEWSDESK_CORPUS_DIR") or ROOT.parent / "shared" / "data")


def corpus_path(name: str) -> Path:
    """A shared corpus folder, or skip the test with the reason."""
    path = data_dir() / name
    if not path.exists():
        pytest.skip(f"shared corpus {path} is absent (set NEWSDESK_CORPUS_DIR to the shared data folder)")
    return path
