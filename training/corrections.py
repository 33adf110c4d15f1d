"""``fit --corrections SRC``: the editors' corrections and graded pairs as training data.

SRC is one of

- a service data folder (or its ``articles.sqlite3``) or a PostgreSQL URL (``postgresql://...``):
  the service's store, opened read-only through `model.store` (`training.export`);
- a JSON-lines file as ``GET /v1/corrections/export`` or ``training export`` writes it.

Each is turned into seed files in a scratch folder (corrected records stamped ``corrected_at``,
so their topics override the seeds' for the same article id) and, when editors graded pairs, a
``pairs.tsv`` that joins ``--pairs``. Training never imports `service`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.articles.seeds import read_seeds
from model.errors import DataFileError
from model.store import is_database_url
from training.export import describe_source, read_feedback

logger = logging.getLogger(__name__)


@dataclass
class CorrectionData:
    """Corrections made ready for `fit`: seed paths, a pairs file (or None), and what they hold."""

    seeds: list[Path] = field(default_factory=list)
    pairs: Path | None = None
    corrected_ids: set[str] = field(default_factory=set)
    pair_count: int = 0
    source: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"source": self.source, "articles": len(self.corrected_ids), "pairs": self.pair_count}


def load_corrections(src: str, scratch: Path) -> CorrectionData:
    """Turn ``src`` into seeds (and pairs) under ``scratch``; see the module docstring."""
    data = CorrectionData(source=describe_source(src))
    path = Path(src)
    if not is_database_url(src):
        if path.is_file() and path.suffix.lower() in (".jsonl", ".ndjson"):
            target = scratch / "corrections" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            data.seeds = [target]
            data.corrected_ids = set(read_seeds(data.seeds, progress=False).articles)
            return data
        if not path.exists():
            raise DataFileError(
                f"{src}: no such corrections source; expected a service data folder, its "
                "articles.sqlite3, a postgresql:// URL or an exported .jsonl file"
            )
    out = scratch / "corrections"
    summary = read_feedback(src, out)
    if summary.articles:
        data.seeds = [out]
        data.corrected_ids = set(read_seeds(data.seeds, progress=False).articles)
    if summary.pairs:
        data.pairs = Path(summary.pairs_file)
        data.pair_count = summary.pairs
    logger.info(
        "corrections from %s: %d corrected articles, %d graded pairs",
        data.source,
        len(data.corrected_ids),
        data.pair_count,
    )
    return data
