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
a bundle where a loader could find it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib

from model.embedding import Embedder
from model.errors import BundleError
from model.index import ArticleIndex

if TYPE_CHECKING:
    from model.news_model import NewsModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
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


def save_bundle(
    model: NewsModel,
    root: str | Path,
    *,
    seed_fingerprint: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    encoder_dir: str | Path | None = None,
) -> Path:
    """Write ``model`` as a new version under ``root`` and return the version folder.

    ``encoder_dir``: an int8 ONNX export of the embedding model (`export_onnx_int8`) to ship in
    the bundle as ``encoder/``, so a server can embed without torch.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = new_version(str(seed_fingerprint.get("sha256", "0" * 8)))
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=root))
    try:
        if model.topics is not None:
            joblib.dump(model.topics, staging / "topics.joblib")
        for name, head in model.scores.items():
            joblib.dump(head, staging / f"score_{name}.joblib")
        joblib.dump(model.pair_scorer, staging / "pairs.joblib")
        joblib.dump(model.stories, staging / "stories.joblib")
        model.index.save(staging / "index")
        if encoder_dir is not None:
            shutil.copytree(encoder_dir, staging / ENCODER_DIR)
        topics = model.topics
        manifest = {
            "format_version": FORMAT_VERSION,
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embedding": {
                "model": model.embedder.model_name,
                "model_id": model.embedder.model_id,
                "dim": model.embedder.dim,
                "normalized": True,
                "serving_backends": ["torch", *(["onnx-int8"] if encoder_dir is not None else [])],
            },
            "labels": list(topics.labels_) if topics is not None else [],
            "thresholds": dict(topics.thresholds_) if topics is not None else {},
            "rare_labels": list(getattr(topics, "rare_labels_", []) or []) if topics is not None else [],
            "scores": sorted(model.scores),
            "seed_fingerprint": dict(seed_fingerprint),
            "metrics": dict(metrics or {}),
            "training": dict(training or {}),
            "libraries": library_versions(),
        }
        (staging / "README.md").write_text(model_card(manifest), encoding="utf-8")
        manifest["files"] = {str(p.relative_to(staging)): _sha256(p) for p in _files(staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        final = root / version
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    model.manifest = manifest
    model.path = final
    logger.info("wrote bundle %s", final)
    return final


def resolve_bundle(path: str | Path) -> Path:
    """A version folder as given, or the newest version folder inside a folder of versions."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
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


def load_bundle(path: str | Path, *, embedder: Embedder | None = None, encoder: str = "auto") -> NewsModel:
    """Load and verify a bundle (see `resolve_bundle` for what ``path`` may be).

    Without ``embedder``, one is built as `bundle_embedder` says for ``encoder``.
    """
    from model.news_model import NewsModel
    from model.pairs import PairScorer
    from model.stories import StoryClusterer

    folder = resolve_bundle(path)
    manifest = read_manifest(folder)
    _check_files(folder, manifest)
    _check_libraries(manifest)
    embedder = embedder or bundle_embedder(folder, encoder)
    expected = manifest.get("embedding", {})
    if expected.get("model") != embedder.model_name or int(expected.get("dim", -1)) != embedder.dim:
        raise BundleError(
            f"{folder / MANIFEST}: built with embedding model {expected.get('model')} "
            f"(dim {expected.get('dim')}), but the embedder is {embedder.model_name} (dim {embedder.dim}); "
            "retrain, or load the embedding model the bundle names"
        )

    def part(name: str) -> Any:
        try:
            return joblib.load(folder / name)
        except Exception as error:  # a bundle part that cannot be unpickled is a bundle error
            raise BundleError(
                f"{folder / name}: cannot be loaded ({type(error).__name__}: {error})"
            ) from None

    topics = part("topics.joblib") if (folder / "topics.joblib").is_file() else None
    scores = {name: part(f"score_{name}.joblib") for name in manifest.get("scores", [])}
    pair_scorer: PairScorer = part("pairs.joblib")
    stories: StoryClusterer = part("stories.joblib")
    index = ArticleIndex.load(folder / "index")
    logger.info(
        "loaded bundle %s (%d labels, %d indexed articles)",
        manifest["version"],
        len(manifest.get("labels", [])),
        len(index),
    )
    return NewsModel(
        embedder=embedder,
        topics=topics,
        scores=scores,
        pair_scorer=pair_scorer,
        index=index,
        stories=stories,
        manifest=manifest,
        path=folder,
    )


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
    return f"""# news-desk model {manifest.get("version")}

Created {manifest.get("created")} by `python -m training fit`.

- Embedding: {embedding.get("model")} (dim {embedding.get("dim")}, L2-normalised)
- Seeds: {fingerprint.get("articles")} articles from {fingerprint.get("files")} files
  (sha256 {str(fingerprint.get("sha256", ""))[:16]})
- Topic labels ({len(labels)}): {shown or "none"}
- Labels too rare to learn on their own (prototype path): {", ".join(rare) or "none"}
- Score models: {", ".join(manifest.get("scores", [])) or "none"}
- Training: {json.dumps(training, default=str)}

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
