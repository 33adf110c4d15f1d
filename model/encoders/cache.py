"""`EmbeddingCache`: vectors on disk keyed by (model id, text hash), so a retrain embeds only new text."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt


def text_key(model_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{model_id}\0{text}".encode()).digest()[:20]


def encode_through_cache(
    cache: EmbeddingCache | None,
    model_id: str,
    texts: Sequence[str],
    dim: int,
    encode_uncached: Callable[[list[str]], npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]:
    """Rows for ``texts``: those ``cache`` holds under ``model_id`` read from it, the rest encoded
    once per distinct text by ``encode_uncached`` and stored. Every encoder's cached path."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    keys = [text_key(model_id, text) for text in texts] if cache is not None else []
    found = cache.get_many(list(dict.fromkeys(keys)), dim) if cache is not None else {}
    for i, key in enumerate(keys):
        if key in found:
            out[i] = found[key]
    missing = [i for i in range(len(texts)) if not keys or keys[i] not in found]
    if missing:
        unique = list(dict.fromkeys(texts[i] for i in missing))
        by_text = dict(zip(unique, encode_uncached(unique), strict=True))
        for i in missing:
            out[i] = by_text[texts[i]]
        if cache is not None:
            cache.put_many([(text_key(model_id, text), by_text[text]) for text in unique])
    return out


class EmbeddingCache:
    """Vectors on disk in SQLite, keyed by (model id, text); safe to share between processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[bytes], dim: int) -> dict[bytes, npt.NDArray[np.float32]]:
        found: dict[bytes, npt.NDArray[np.float32]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk)
                for key, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape[0] == dim:
                        found[key] = vector
        return found

    def put_many(self, items: Sequence[tuple[bytes, npt.NDArray[np.float32]]]) -> None:
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)",
                [(key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items],
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
