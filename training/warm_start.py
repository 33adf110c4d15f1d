"""A retrain that keeps the live bundle's story decisions for the unchanged start of the published order.

The story rule (`model.coverage.story_rule`) takes articles in published order and decides each from
the earlier ones, their vectors and the pair scorer alone. So when a retrain embeds with the same
encoder (the manifest's ``embedding.vectors_id``) and scores pairs with the same scorer, every
article published before the earliest new, changed or removed one gets exactly the story the live
bundle gave it, and only the tail from there on has to be decided again
(`model.coverage.story_links.cluster_stories` with ``known``).

The pair scorer a fit makes is not quite the live one even on the same pair files: its hashed IDF
is fitted on the bundle's own articles, so 1% new articles move it a little, and with it a few
decisions near the cut. The rule: a warm retrain *reuses the live bundle's pair scorer* (the one
the prefix was decided with) when the pair files' contents (``training.pairs_sha256``), the
encoder's vectors and the story window are unchanged; otherwise the fit decides everything as a
cold fit does. docs/scale.md ("A warm retrain keeps the live bundle's stories") measures how far a
warm retrain's partition lies from a cold one's on the same seeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model import bundle
from model.articles.article import URL_FIELDS, Article, record_provider_key
from model.coverage.pair_scorer import PairScorer
from model.coverage.story_links import ANN_THRESHOLD, published_order_key
from model.encoders.registry import manifest_encoder

logger = logging.getLogger(__name__)

_PAIRS = "pairs.joblib"
_INDEX = "index"
# Rows compared at once when checking the prefix's vectors against the live bundle's.
_CHUNK = 65_536


@dataclass
class WarmStart:
    """What a retrain reuses from the live bundle: its pair scorer and the prefix's stories."""

    version: str
    scorer: PairScorer
    known: dict[str, str]  # article id -> story id, the unchanged prefix of the published order

    def record(self, decided: int) -> dict[str, Any]:
        """The manifest's ``training.warm_start``."""
        return {
            "from_version": self.version,
            "used": True,
            "reused": len(self.known),
            "decided": decided,
            "pair_scorer": "the live bundle's",
        }


def pairs_sha256(paths: Sequence[Path] | Path | None) -> str | None:
    """One hash of the labelled pair files' contents, in order (None without pair files): whether a
    retrain's pair scorer would be fitted on the same pairs as the live bundle's."""
    files = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths or []]
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _published(record: dict[str, Any]) -> str | None:
    return record.get("publishedDateTime")


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What the story rule reads of an article (id, title, excerpt, time, URLs, outlet, language),
    from its record: a change in any of them may change a pair's evidence, so it ends the prefix."""
    return (
        record["id"],
        record.get("title", ""),
        record.get("excerpt", ""),
        _published(record),
        tuple(record.get(name) for name in URL_FIELDS),
        record_provider_key(record),
        record.get("language"),
    )


def _article_key(article: Article) -> tuple[Any, ...]:
    published = article.published_at.isoformat().replace("+00:00", "Z") if article.published_at else None
    return (
        article.id,
        article.title,
        article.excerpt,
        published,
        tuple(article.urls.get(name) for name in URL_FIELDS),
        article.provider_key,
        article.language,
    )


def _order_key(record: dict[str, Any]) -> tuple[bool, float, str]:
    """`cluster_stories`'s published order (undated last) from a record."""
    published = _published(record)
    when = datetime.fromisoformat(published.replace("Z", "+00:00")) if published else None
    return published_order_key(when, record["id"])


def prepare(
    folder: Path,
    articles: Sequence[Article],
    vectors: npt.NDArray[np.float32],
    *,
    vectors_id: str,
    pairs: Sequence[Path] | Path | None,
    window_days: float,
) -> tuple[WarmStart | None, dict[str, Any]]:
    """The warm start from the bundle ``folder`` for a fit of ``articles`` (with ``vectors``), or
    None and the manifest's record of why not."""
    manifest = bundle.read_manifest(folder)
    version = str(manifest.get("version", folder.name))
    training = manifest.get("training", {}) or {}

    def cold(reason: str) -> tuple[None, dict[str, Any]]:
        logger.info("warm start from %s not used: %s", version, reason)
        return None, {"from_version": version, "used": False, "reason": reason}

    if manifest_encoder(manifest)[1] != vectors_id:
        return cold("the encoder's vectors differ")
    if training.get("story_window_days") != window_days:
        return cold("the story window differs")
    if training.get("pairs_sha256") != pairs_sha256(pairs):
        return cold("the labelled pair files differ")
    records, stories = [], []
    with (folder / _INDEX / "articles.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            records.append(item["article"])
            stories.append(item["story_id"])
    if (len(records) > ANN_THRESHOLD) != (len(articles) > ANN_THRESHOLD):
        # One side found candidates exactly, the other in HNSW graphs.
        return cold("the live bundle's stories were found with the other candidate search")
    live_order = sorted(range(len(records)), key=lambda r: _order_key(records[r]))
    new_order = sorted(
        range(len(articles)), key=lambda i: published_order_key(articles[i].published_at, articles[i].id)
    )
    prefix = 0
    for r, i in zip(live_order, new_order, strict=False):
        if _key(records[r]) != _article_key(articles[i]):
            break
        prefix += 1
    # The same encoder gives the same vectors; checked, since a stale cache would not.
    live_vectors = np.load(folder / _INDEX / "vectors.npy", mmap_mode="r")
    rows_live = np.array(live_order[:prefix], dtype=np.int64)
    rows_new = np.array(new_order[:prefix], dtype=np.int64)
    for start in range(0, prefix, _CHUNK):
        part = slice(start, start + _CHUNK)
        same = np.all(live_vectors[rows_live[part]] == vectors[rows_new[part]].astype(np.float16), axis=1)
        if not same.all():
            prefix = start + int(np.argmin(same))
            break
    if prefix == 0:
        return cold("no unchanged prefix of the published order")
    known = {records[r]["id"]: stories[r] for r in live_order[:prefix]}
    scorer = bundle.load_part(folder, _PAIRS)
    return WarmStart(version, scorer, known), {}
