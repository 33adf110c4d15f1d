"""What every benchmark script shares: where the shared corpora are."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """The shared corpora: ``$NEWSDESK_CORPUS_DIR``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get("NEWSDESK_CORPUS_DIR") or REPO.parent / "shared" / "data")
