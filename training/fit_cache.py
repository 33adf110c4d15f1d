"""Reuse fitted heads when nothing they learn from has changed.

A retrain on unchanged seeds should cost seconds, not minutes: embeddings come from the
embedding cache, and each head is keyed by everything its fit depends on (its class, the
source of its module, its parameters, and a digest of the training data). Any change in
those, code included, misses the cache and fits afresh.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import joblib
import numpy as np

from model.files import atomic_file

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _source_digest(obj: Any) -> str:
    """The sources of the estimator's package folder: a head's fit runs code of its neighbours
    (the topic tagger's classifier and featurizer), and a change there must miss too."""
    try:
        source = inspect.getsourcefile(type(obj))
        if source is None:
            return "unknown"
        folder = Path(source).parent
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except (OSError, TypeError):
        return "unknown"
    return digest.hexdigest()


def data_digest(parts: Iterable[Any]) -> str:
    """A digest over arrays (their bytes) and JSON-able values, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype.str)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, default=str, sort_keys=True).encode())
    return digest.hexdigest()


class FitCache:
    """Fitted estimators on disk under ``folder``, keyed by what their fit depends on."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    def key(self, estimator: Any, data: str) -> str:
        params = estimator.get_params() if hasattr(estimator, "get_params") else vars(estimator)
        spec = [
            type(estimator).__module__,
            type(estimator).__qualname__,
            _source_digest(estimator),
            repr(params),
            data,
        ]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]

    def fit(self, estimator: T, data: str, fit: Callable[[T], T]) -> T:
        """Return ``fit(estimator)``, or the stored result of the same fit on the same data."""
        path = self.folder / f"{type(estimator).__name__}-{self.key(estimator, data)}.joblib"
        if path.is_file():
            try:
                fitted = joblib.load(path)
                self.hits += 1
                logger.info("%s: reused the fit from %s", type(estimator).__name__, path.name)
                return fitted
            except Exception as error:  # a damaged entry is refitted, never trusted
                logger.warning("fit cache entry %s unreadable (%s); refitting", path, error)
        fitted = fit(estimator)
        self.misses += 1
        with atomic_file(path) as temp:
            joblib.dump(fitted, temp)
        return fitted
