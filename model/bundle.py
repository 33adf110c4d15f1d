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
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib

from model.encoders.embedder import Embedder
from model.errors import BundleError
from model.files import atomic_folder
from model.ledger import live_version

logger = logging.getLogger(__name__)

# 2: the library moved into packages (model.tagging, model.coverage, ...); format-1 pickles
# name modules that no longer exist, so they are refused with a retrain hint.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
ENCODER_DIR = "encoder"
ENCODERS = ("auto", "torch", "onnx-int8")
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


def new_version(fingerprint: str) -> str:
    """Sortable by time, unique per seed set: ``20261126T031800Z-1a2b3c4d``."""
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


def resolve_bundle(path: str | Path) -> Path:
    """A version folder as given, or inside a folder of versions the one its ledger names as live
    (`model.ledger`), else the newest."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    live = live_version(path) if path.is_dir() else None
    if live is not None and (path / live / MANIFEST).is_file():
        return path / live
    if not path.is_dir():
        raise BundleError(
            f"no model bundle at {path}: train one with `python -m training fit --seeds seeds --out {path}`"
        )
    versions = sorted(
        (
            child
            for child in path.iterdir()
            if (child / MANIFEST).is_file() and not child.name.startswith(".")
        ),
        key=lambda child: child.name,
    )
    if not versions:
        raise BundleError(
            f"{path} holds no model bundle (no */{MANIFEST}); train one with "
            f"`python -m training fit --seeds seeds --out {path}`"
        )
    return versions[-1]


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


def bundle_embedder(folder: Path, encoder: str = "auto") -> Embedder:
    """The encoder a bundle should serve with.

    ``auto`` takes the bundle's int8 ONNX export when it has one (faster, and no torch import),
    else sentence-transformers; ``torch`` and ``onnx-int8`` insist.
    """
    if encoder not in ENCODERS:
        raise BundleError(f"unknown encoder {encoder!r}, expected one of {', '.join(ENCODERS)}")
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
            return Embedder()
        return Embedder(backend="onnx-int8", onnx_dir=onnx_dir)
    return Embedder()


def verify_bundle(folder: Path) -> dict[str, Any]:
    """Read the manifest of a version folder and check every file against it; return the manifest."""
    manifest = read_manifest(folder)
    _check_files(folder, manifest)
    _check_libraries(manifest)
    return manifest


def check_embedder(folder: Path, manifest: Mapping[str, Any], embedder: Embedder) -> None:
    """Refuse an embedder other than the one the bundle was trained with."""
    expected = manifest.get("embedding", {})
    if expected.get("model") != embedder.model_name or int(expected.get("dim", -1)) != embedder.dim:
        raise BundleError(
            f"{folder / MANIFEST}: built with embedding model {expected.get('model')} "
            f"(dim {expected.get('dim')}), but the embedder is {embedder.model_name} (dim {embedder.dim}); "
            "retrain, or load the embedding model the bundle names"
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

- Embedding: {embedding.get("model")} (dim {embedding.get("dim")}, L2-normalised)
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
