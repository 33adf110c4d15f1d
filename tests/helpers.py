"""Shared test helpers: one real embedder per test run, and where the shared corpora live."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from model.encoders.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SEED = ROOT / "seeds" / "000_80b44f21389d41d0.txt"


@functools.cache
def shared_embedder() -> Embedder:
    """The real all-MiniLM-L6-v2, loaded once per test run (no fake encoders)."""
    return Embedder()


def data_dir() -> Path:
    return Path(os.environ.get("NEWSDESK_CORPUS_DIR") or ROOT.parent / "shared" / "data")


def corpus_path(name: str) -> Path:
    """A shared corpus folder, or skip the test with the reason."""
    path = data_dir() / name
    if not path.exists():
        pytest.skip(f"shared corpus {path} is absent (set NEWSDESK_CORPUS_DIR to the shared data folder)")
    return path
