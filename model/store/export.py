"""The editors' answers as training data, read from any `ArticleStore` (written once, here).

Corrections become seed records with the corrections applied and stamped ``corrected_at``
(`model.feedback.corrected_record`), so reading seeds lets their topics win over an earlier seed
of the same article; graded pairs become the ``pairs.tsv`` that ``training fit --pairs`` reads.
The service's ``GET /v1/corrections/export``, its retrain and ``python -m training export`` /
``fit --corrections`` all call these.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.articles.seeds import write_seed
from model.coverage.pair_files import write_pairs_tsv
from model.feedback import Correction, PairFeedback, corrected_record
from model.files import atomic_file
from model.results import Classification
from model.store.base import ArticleStore

logger = logging.getLogger(__name__)

CHUNK = 500  # ids per get_many

CORRECTIONS_FILE = "corrections.jsonl"
PAIRS_FILE = "pairs.tsv"


@dataclass(frozen=True, slots=True)
class ExportSummary:
    articles: int
    pairs: int
    pairs_skipped: int  # graded pairs naming an article the store does not hold (e.g. a bundle one)
    seeds_dir: str
    pairs_file: str


def corrected_records(store: ArticleStore) -> Iterator[tuple[str, dict[str, Any]]]:
    """(article id, seed record with its corrections applied) for every corrected stored article,
    in the order of each article's first correction."""
    by_article: dict[str, list[Correction]] = {}
    for correction in store.corrections():
        by_article.setdefault(correction.article_id, []).append(correction)
    ids = list(by_article)
    for start in range(0, len(ids), CHUNK):
        found = store.get_many(ids[start : start + CHUNK])
        for article_id in ids[start : start + CHUNK]:
            stored = found.get(article_id)
            if stored is None:  # taken down since it was corrected
                continue
            classification = Classification.from_record(stored.classification, stored.id)
            yield article_id, corrected_record(stored.record, classification, by_article[article_id])


def export_lines(store: ArticleStore) -> Iterator[str]:
    """The corrected records as JSON lines (a ``.jsonl`` seed file)."""
    for _, record in corrected_records(store):
        yield json.dumps(record, ensure_ascii=False, default=str) + "\n"


def graded_pairs(
    store: ArticleStore,
) -> tuple[list[tuple[PairFeedback, dict[str, Any], dict[str, Any]]], int]:
    """(feedback, record a, record b) for each graded pair whose two articles are stored, and how
    many were left out because the store does not hold one of them."""
    feedback = store.pair_feedback()
    found = store.get_many(list(dict.fromkeys(i for f in feedback for i in (f.a, f.b))))
    rows = [(f, found[f.a].record, found[f.b].record) for f in feedback if f.a in found and f.b in found]
    skipped = len(feedback) - len(rows)
    if skipped:
        logger.warning("%d graded pairs name an article the store does not hold; left out", skipped)
    return rows, skipped


def write_feedback(store: ArticleStore, out: str | Path, *, one_file: bool = False) -> ExportSummary:
    """Write the corrected records into ``out`` (one ``<id>.md`` seed each, or with ``one_file``
    one ``corrections.jsonl``) and the graded pairs to ``out/pairs.tsv``; ``out`` is created."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    if one_file:
        with atomic_file(out / CORRECTIONS_FILE) as temp, temp.open("w", encoding="utf-8") as handle:
            for line in export_lines(store):
                handle.write(line)
                written += 1
    else:
        for article_id, record in corrected_records(store):
            write_seed(record, out / f"{article_id}.md")
            written += 1
    rows, skipped = graded_pairs(store)
    pairs = write_pairs_tsv(rows, out / PAIRS_FILE)
    return ExportSummary(written, pairs, skipped, str(out), str(out / PAIRS_FILE))
