"""`FineTunedEmbedder`: MiniLM whose body ``python -m training fit --fine-tune`` trained further.

It is an `Embedder` on the bundle's own weights folder (``encoder-torch/``, a sentence-transformers
folder; the int8 ONNX export in ``encoder/`` is made from it), and its vectors are another
generation: ``vectors_id`` is MiniLM's plus ``+ft:<digest of the weights>``
(`fine_tuned_vectors_id`), so no index, cache or store mixes them with the frozen MiniLM's.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.encoders.base import DEFAULT_MODEL_NAME
from model.encoders.cache import EmbeddingCache
from model.encoders.embedder import Embedder

TORCH_DIR = "encoder-torch"  # the fine-tuned weights in a bundle folder


def fine_tuned_vectors_id(base: str, digest: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2+ft:1a2b3c4d5e6f``."""
    return f"{base}+ft:{digest}"


class FineTunedEmbedder(Embedder):
    """MiniLM on fine-tuned weights: an `Embedder` whose model name is its vectors id.

    Parameters
    ----------
    model_path : the fine-tuned sentence-transformers folder.
    record : how it was trained (the manifest's ``embedding.fine_tune``); its ``vectors_id``
        names these vectors.
    The rest as `Embedder` (``backend="onnx-int8"`` with ``onnx_dir`` runs the bundle's export).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        record: Mapping[str, Any],
        cache: EmbeddingCache | None = None,
        backend: str = "torch",
        onnx_dir: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        # The model name carries the fine-tune's digest, so `model_id` (the cache key) and
        # `vectors_id` both differ from the frozen MiniLM's although the weights file is as large.
        super().__init__(
            model_path,
            model_name=str(record["vectors_id"]),
            cache=cache,
            backend=backend,
            onnx_dir=onnx_dir,
            device=device,
        )
        self.fine_tune = dict(record)

    @property
    def base_vectors_id(self) -> str:
        return str(self.fine_tune.get("base_vectors_id", DEFAULT_MODEL_NAME))

    def write_files(self, folder: Path) -> None:
        """Copy the fine-tuned weights into a bundle folder being written (`NewsModel.save`)."""
        assert self.model_path is not None
        shutil.copytree(self.model_path, folder / TORCH_DIR)
