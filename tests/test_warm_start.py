"""A retrain keeps the live bundle's stories for the unchanged start of the published order
(`fit --warm-start`) and decides only the rest, as a run deciding everything with that scorer does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import ROOT, shared_embedder
from test_story_rule import FOLLOW_UP, QUAKE, TRANSFER, WINDOW_DAYS, _repost, _scorer

from model import bundle
from model.articles.seeds import read_seeds
from model.coverage.story_links import cluster_stories
from model.encoders.cache import EmbeddingCache
from model.encoders.registry import DEFAULT_ENCODER, make_encoder


def _articles() -> list:
    return [
        QUAKE,
        FOLLOW_UP,
        TRANSFER,
        _repost(QUAKE, 90),
        _repost(TRANSFER, 200),
        _repost(QUAKE, 1, "b"),
        _repost(FOLLOW_UP, 2, "c"),
    ]


def test_known_stories_of_the_prefix_give_the_partition_of_deciding_everything():
    """Exact and through the HNSW graphs, the prefix cut inside a block and on a block's edge."""
    articles = _articles()
    scorer = _scorer(articles)
    vectors = np.asarray(shared_embedder().encode([a.text for a in articles]))
    published = sorted(range(len(articles)), key=lambda i: (articles[i].published_at, articles[i].id))
    for options in ({}, {"ann_threshold": 0, "block": 2}):
        cold = cluster_stories(articles, vectors, scorer, window_days=WINDOW_DAYS, **options)
        for prefix in range(len(articles) + 1):
            # The prefix's stories under other names: kept as given, and what the tail joins.
            known = {articles[i].id: "live-" + cold[i] for i in published[:prefix]}
            warm = cluster_stories(articles, vectors, scorer, window_days=WINDOW_DAYS, known=known, **options)
            assert all(warm[i] == known[articles[i].id] for i in published[:prefix])
            assert _same_partition(cold, warm)


def test_known_stories_must_be_a_prefix_of_the_published_order():
    articles = _articles()
    vectors = np.asarray(shared_embedder().encode([a.text for a in articles]))
    try:
        cluster_stories(articles, vectors, _scorer(articles), known={TRANSFER.id: "s"})
    except ValueError as error:
        assert "prefix" in str(error)
    else:
        raise AssertionError("a known story after an undecided article was accepted")


def _same_partition(a: list[str], b: list[str]) -> bool:
    """Whether two labellings group the same items together (names aside)."""
    pairs = set(zip(a, b, strict=True))
    return len(pairs) == len(set(a)) == len(set(b))


def _fit(seeds: Path, out: Path, cache: Path, *extra: str) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-m", "training", "fit", "--seeds", str(seeds), "--out", str(out),
         "--cache-dir", str(cache), "--holdout", "0", "--no-onnx", "--no-progress", "-q", *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def _stories(version: Path) -> dict[str, str]:
    lines = (version / "index" / "articles.jsonl").read_text(encoding="utf-8").splitlines()
    return {item["article"]["id"]: item["story_id"] for item in map(json.loads, lines)}


def _seed(folder: Path, name: str, title: str, when: str) -> None:
    (folder / name).write_text(
        f'---\ntitle: "{title}"\nexcerpt: "{title}, officials said on Tuesday."\n'
        f'publishedDateTime: {when}\nwebUrl: "https://late.example/{name}"\ntopics: [Economy]\n---\n',
        encoding="utf-8",
    )


def test_a_retrain_with_new_and_backdated_seeds_keeps_the_live_stories(small_seeds, tmp_path):
    cache = tmp_path / "cache"
    live_root = tmp_path / "bundles"
    live = Path(_fit(small_seeds, live_root, cache)["bundle"])
    live_stories = _stories(live)
    scorer = bundle.load_part(live, "pairs.joblib")
    encoder = make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(cache / "embeddings.sqlite"))

    newest = tmp_path / "newest"
    shutil.copytree(small_seeds, newest)
    _seed(newest, "zz_1.md", "The central bank raises interest rates by half a point", "2024-04-20T08:00:00Z")
    _seed(newest, "zz_2.md", "Central bank lifts rates by 50 basis points", "2024-04-20T11:00:00Z")
    backdated = tmp_path / "backdated"
    shutil.copytree(newest, backdated)
    _seed(backdated, "aa_0.md", "A late report filed for early March", "2024-03-02T06:00:00Z")

    for seeds, out in ((newest, tmp_path / "warm-newest"), (backdated, tmp_path / "warm-backdated")):
        summary = _fit(seeds, out, cache, "--warm-start", str(live_root))
        version = Path(summary["bundle"])
        record = bundle.read_manifest(version)["training"]["warm_start"]
        warm = _stories(version)
        articles = list(read_seeds([seeds]).articles.values())
        assert record["used"] and record["from_version"] == live.name
        assert record["reused"] + record["decided"] == len(articles)
        # Every reused article keeps the live bundle's story id (editors' links stay valid).
        assert record["reused"] > 0
        kept = [a for a in warm if a in live_stories and warm[a] == live_stories[a]]
        assert len(kept) >= record["reused"]
        # The partition is the one deciding every article with the live bundle's scorer gives.
        vectors = encoder.encode([a.text for a in articles])
        cold = cluster_stories(articles, vectors, scorer)
        assert _same_partition(cold, [warm[a.id] for a in articles])
        if seeds == newest:
            assert record["decided"] == 2
        else:
            assert record["decided"] > 2  # everything from the backdated seed on

    # Nothing changed in the pair files or the encoder is required: another encoder decides everything.
    manifest = bundle.read_manifest(live)
    assert manifest["training"]["pairs_sha256"] is None
