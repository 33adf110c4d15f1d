"""Shared fixtures: a small hand-written seed set and one real bundle trained from it per run."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLE_SEED

# As the entry points do: the e5 encoder's OpenMP threads sleep between work instead of spinning,
# which on a shared 2-core machine costs 10-20x (docs/encoders.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Three topics, twelve stories each; every story has one same-story report from another outlet.
# Quality and heat are on every main article, so the bundle fits both score heads (>= 30 values).
_TOPICS = {
    "AI": [
        ("OpenAI", "releases a new language model that writes code"),
        ("Google DeepMind", "unveils an AI system that predicts protein structures"),
        ("Anthropic", "raises funding to train larger AI assistants"),
        ("Meta", "open-sources a large language model for researchers"),
        ("Microsoft", "adds an AI copilot to its office software"),
        ("Nvidia", "reports record sales of AI training chips"),
        ("The European Union", "agrees on rules for artificial intelligence"),
        ("IBM", "launches AI tools that summarise business documents"),
        ("Amazon", "trains a chatbot to help online shoppers"),
        ("Apple", "brings on-device machine learning to photo search"),
        ("Baidu", "shows a chatbot that answers questions in Chinese"),
        ("Stability AI", "releases an image generator that draws from text prompts"),
    ],
    "Space": [
        ("NASA", "launches a probe to study an asteroid"),
        ("SpaceX", "lands a reusable rocket after a satellite launch"),
        ("The European Space Agency", "sends an orbiter towards Jupiter's icy moons"),
        ("Astronomers", "find water vapour in the atmosphere of an exoplanet"),
        ("The James Webb telescope", "captures images of the earliest galaxies"),
        ("India's space agency", "lands a rover near the Moon's south pole"),
        ("Blue Origin", "flies tourists to the edge of space"),
        ("China", "docks a crew capsule with its space station"),
        ("A Mars rover", "collects rock samples from an ancient river delta"),
        ("Japan's space agency", "returns asteroid dust to Earth in a capsule"),
        ("Rocket Lab", "catches a falling booster with a helicopter"),
        ("Scientists", "detect gravitational waves from merging black holes"),
    ],
    "Football": [
        ("Manchester City", "win the Premier League title on the final day"),
        ("Lionel Messi", "scores twice as Argentina beat Brazil"),
        ("Real Madrid", "sign a young striker for a record fee"),
        ("Liverpool", "appoint a new manager after a poor season"),
        ("Bayern Munich", "thrash their rivals in the German cup"),
        ("England", "reach the final of the European Championship"),
        ("Barcelona", "sell their captain to pay club debts"),
        ("Juventus", "are fined for breaking financial fair play rules"),
        ("Arsenal", "beat Chelsea in a north London derby thriller"),
        ("Paris Saint-Germain", "knock Juventus out of the Champions League"),
        ("A Premier League referee", "is suspended after a controversial penalty"),
        ("The World Cup", "will expand to 48 teams, FIFA confirms"),
    ],
}
_OUTLETS = [("The Daily Wire Service", "dailywire.example"), ("Morning Ledger", "ledger.example")]


def _quote(text: str) -> str:
    return json.dumps(text)  # JSON strings are valid YAML double-quoted scalars


def write_seed_set(folder: Path) -> Path:
    """~36 small seed files (each a main article with one same-story report) plus the sample seed."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE_SEED, folder / SAMPLE_SEED.name)
    n = 0
    for topic, stories in _TOPICS.items():
        for subject, event in stories:
            n += 1
            slug = f"{topic.lower()}-story-{n:02d}"
            day = 1 + n % 27
            title = f"{subject} {event}"
            excerpt = f"{subject} {event}, the organisation said on Tuesday; {topic} watchers took note."
            related_title = f"Report: {subject} {event}"
            related_excerpt = f"According to people familiar with the matter, {subject} {event} this week."
            (folder / f"{n:03d}_{slug}.md").write_text(
                "\n".join(
                    [
                        "---",
                        f"title: {_quote(title)}",
                        f"excerpt: {_quote(excerpt)}",
                        f"publishedDateTime: 2024-03-{day:02d}T{8 + n % 10:02d}:00:00Z",
                        f'webUrl: "https://{_OUTLETS[0][1]}/{slug}"',
                        "type: article",
                        f"quality: {30 + (n * 7) % 60}",
                        f"heat: {5 + (n * 13) % 90}",
                        "provider:",
                        f"  name: {_OUTLETS[0][0]}",
                        f"  domain: {_OUTLETS[0][1]}",
                        f"topics: [{_quote(topic)}]",
                        "related:",
                        f"  - title: {_quote(related_title)}",
                        f"    excerpt: {_quote(related_excerpt)}",
                        f"    publishedDateTime: 2024-03-{day:02d}T{9 + n % 10:02d}:30:00Z",
                        f'    webUrl: "https://{_OUTLETS[1][1]}/news/{slug}"',
                        "    provider:",
                        f"      name: {_OUTLETS[1][0]}",
                        f"      domain: {_OUTLETS[1][1]}",
                        "---",
                        "",
                    ]
                ),
                encoding="utf-8",
            )
    return folder


def train_bundle(seeds: Path, out: Path, cache: Path) -> Path:
    """Train with the real CLI (as an operator would) and return the folder of versions."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--seeds", str(seeds), "--out", str(out),
         "--cache-dir", str(cache), "--holdout", "0", "--no-progress", "-q"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"training failed:\n{result.stderr[-3000:]}"
    return out


@pytest.fixture(scope="session")
def small_seeds(tmp_path_factory) -> Path:
    return write_seed_set(tmp_path_factory.mktemp("small_seeds"))


@pytest.fixture(scope="session")
def small_bundle(small_seeds, tmp_path_factory) -> Path:
    """A folder of bundle versions (one version) trained on `small_seeds`; treat as read-only."""
    root = tmp_path_factory.mktemp("small_bundle")
    return train_bundle(small_seeds, root / "bundles", root / "cache")


@pytest.fixture(scope="session")
def e5_bundle(small_seeds, small_bundle, tmp_path_factory) -> Path:
    """A bundle fitted on the small seed set with ``--encoder e5-multilingual`` (the real CLI).

    Fitted after `small_bundle` whichever test asks first, so its version is the newer one (the
    encoder-swap tests put both in one folder and reload onto the newest)."""
    root = tmp_path_factory.mktemp("e5_bundle")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--seeds", str(small_seeds), "--out", str(root / "bundles"),
         "--cache-dir", str(root / "cache"), "--holdout", "0", "--no-progress", "-q",
         "--encoder", "e5-multilingual"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"training failed:\n{result.stderr[-3000:]}"
    return root / "bundles"


# --- PostgreSQL: one local server per session, a fresh database per app ---------------------------

_PG_TEMPLATE = "newsdesk_template"
_pg_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> Iterator[str]:
    """A PostgreSQL 16 + pgvector server (the `pgserver` wheel) for the whole session; skips, with
    the reason, when pgserver or psycopg is not installed."""
    pytest.importorskip("pgserver", reason="pgserver is not installed (pip install -e '.[dev]')")
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e .)")
    from service.pg_local import start_local_server

    # Short path: the unix socket lives in the data folder and must fit in 107 bytes.
    base = Path(tempfile.mkdtemp(prefix="pgt-", dir="/tmp"))
    # Installed but failing to start is an error, not a skip: CI must not go green without it.
    server = start_local_server(base / "data", fast_unsafe=True)  # durability off: tests only
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {_PG_TEMPLATE}")
        with psycopg.connect(pg_database_url(server.url, _PG_TEMPLATE), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")  # superuser-only: once, in the template
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def pg_database_url(server_url: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(server_url)
    params["dbname"] = name
    return make_conninfo(**params)


def new_pg_database(server_url: str) -> str:
    """A fresh, empty database (pgvector installed, no tables) on the session's server."""
    import psycopg

    name = f"newsdesk_{next(_pg_databases)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_PG_TEMPLATE}")
    return pg_database_url(server_url, name)


@pytest.fixture
def pg_url(pg_server_url) -> str:
    return new_pg_database(pg_server_url)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_backend(request) -> dict[str, object]:
    """Settings overrides that put an app on each store backend: the service tests run on both.
    PostgreSQL gets a fresh database per module (the module's apps share it, as replicas would)."""
    if request.param == "sqlite":
        return {}
    url = new_pg_database(request.getfixturevalue("pg_server_url"))
    return {"database_url": url}
