"""A Model2Vec static encoder distilled from the bundled MiniLM: a benchmark peer, not served.

Tens of times faster than MiniLM but much weaker and in its own space (256-d by default), so
`benchmarks/encoders.py` and `benchmarks/semhash_compare.py` measure it as a first-pass filter.
It lives here, not in `model/`, because nothing the service or training runs uses it; it needs
the ``bench`` extra (model2vec).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from model.encoders.base import bundled_model_path, l2_normalise
from model.encoders.onnx import is_cached_build, source_stamp, write_build_manifest
from model.errors import EmbeddingModelError
from model.files import atomic_folder

if TYPE_CHECKING:
    from model2vec import StaticModel

logger = logging.getLogger(__name__)

STATIC_DIM_DEFAULT = 256


def distill_model2vec(
    out_dir: str | Path,
    *,
    model_path: str | Path | None = None,
    pca_dims: int | None = STATIC_DIM_DEFAULT,
    force: bool = False,
) -> Path:
    """Distil a Model2Vec static model from the bundled MiniLM into ``out_dir`` (cached); return it.

    Distillation runs every vocabulary token through the MiniLM once (about a minute on 2 cores),
    then applies PCA to ``pca_dims`` and SIF weighting (model2vec's defaults). Needs `model2vec`.
    """
    source = Path(model_path) if model_path else bundled_model_path()
    out_dir = Path(out_dir)
    stamp = source_stamp(source)
    options = {"pca_dims": pca_dims}
    if not force and is_cached_build(out_dir, "model2vec", stamp, options):
        return out_dir
    try:
        from model2vec.distill import distill
    except ImportError:
        raise EmbeddingModelError(
            "distilling a static encoder needs model2vec; install it with: pip install model2vec"
        ) from None
    with atomic_folder(out_dir, replace=True) as tmp:
        # A local path makes model2vec skip its hub lookup of the model card.
        static = distill(str(source), pca_dims=pca_dims)
        static.save_pretrained(str(tmp))
        write_build_manifest(tmp, "model2vec", stamp, options)
    logger.info("distilled Model2Vec static model to %s", out_dir)
    return out_dir


class StaticEncoder:
    """Encode texts with a Model2Vec static model (token-embedding lookup + mean), L2-normalised.

    Its vectors live in their own space: compare them only with other `StaticEncoder` vectors.
    """

    def __init__(self, model_dir: str | Path, *, batch_size: int = 1024) -> None:
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self._model: StaticModel | None = None

    @property
    def model(self) -> StaticModel:
        if self._model is None:
            try:
                from model2vec import StaticModel
            except ImportError:
                raise EmbeddingModelError(
                    "the static encoder needs model2vec: pip install model2vec"
                ) from None
            self._model = StaticModel.from_pretrained(str(self.model_dir))
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.dim)

    @property
    def model_id(self) -> str:
        return f"model2vec-minilm@{self.model_dir.name}"

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as rows of an (n, dim) float32 array with unit L2 norm."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=batch_size or self.batch_size,
            show_progress_bar=bool(show_progress_bar),
            use_multiprocessing=False,  # the service machine is small; a pool costs more than it gives
        )
        return l2_normalise(np.asarray(vectors, dtype=np.float32))
