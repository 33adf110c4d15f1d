"""The int8 ONNX MiniLM stays close to the fp32 sentence-transformers model on real news text."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import shared_embedder

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnx onnxruntime)")
pytest.importorskip("onnx", reason="onnx is not installed: the export needs it (pip install onnx)")

from model.encoders.onnx import OnnxEncoder, export_onnx_int8

TEXTS = [
    "ASIAN EXPORTERS FEAR DAMAGE FROM U.S.-JAPAN RIFT. Mounting trade friction between the U.S. And Japan "
    "has raised fears among many of Asia's exporting nations that the row could inflict far-reaching damage.",
    "Fed raises interest rates by a quarter point to fight inflation",
    "Apple unveils a new iPhone with a faster chip and a better camera",
    "Penguins rout Senators but lose Guentzel to injury. Evgeni Malkin scored twice and added an assist.",
    "Show HN: A tiny static site generator written in Rust",
    "Oil prices surge after OPEC agrees to cut output",
    "x",
]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return export_onnx_int8(tmp_path_factory.mktemp("onnx") / "minilm-int8")


def test_onnx_int8_is_close_to_fp32_on_real_texts(onnx_dir):
    fast = OnnxEncoder(onnx_dir).encode(TEXTS, batch_size=3)  # batches of 3: padding must not leak
    reference = shared_embedder().encode(TEXTS)
    assert fast.shape == reference.shape == (len(TEXTS), 384)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cosines = (fast * reference).sum(axis=1)
    assert cosines.min() >= 0.97, cosines


def test_onnx_encoder_keeps_input_order_and_handles_empty_input(onnx_dir):
    encoder = OnnxEncoder(onnx_dir)
    forward = encoder.encode(TEXTS, batch_size=2)
    backward = encoder.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-4)
    assert encoder.encode([]).shape == (0, 384)


def test_export_is_cached_and_reused(onnx_dir):
    stamp = (onnx_dir / "model_int8.onnx").stat().st_mtime_ns
    assert export_onnx_int8(onnx_dir) == onnx_dir
    assert (onnx_dir / "model_int8.onnx").stat().st_mtime_ns == stamp
