"""What every benchmark script shares: where the shared corpora are, common options, JSON output."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """The shared corpora: ``$NEWSDESK_CORPUS_DIR``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get("NEWSDESK_CORPUS_DIR") or REPO.parent / "shared" / "data")


EMBEDDING_CACHE = Path.home() / ".cache" / "news-desk" / "embeddings.sqlite"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``, ``--cache``, ``--out`` and ``-v``: the options every corpus benchmark takes."""
    parser.add_argument(
        "--data-dir", type=Path, default=corpus_dir(), help="shared/data (default: $NEWSDESK_CORPUS_DIR)"
    )
    parser.add_argument("--cache", type=Path, default=EMBEDDING_CACHE, help="embedding cache file")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")


def emit(result: Any, out: Path | None) -> None:
    """Print the result as JSON, and write it to ``out`` too when given."""
    text = json.dumps(result, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
