"""Tags across languages: do two reports of one story get the same top topic, in any language?

For each bundle given, every side of the shared graded pairs graded most similar (SemEval's
``overall`` <= 1.5, the same-story cut) is tagged, and the share of pairs whose two sides have the
same top topic (the most probable label, chosen or not) is counted: on the English SemEval pairs
(``semeval``) and on the multilingual ones (``semeval_ml``), overall, across languages and within
one language other than English, and per language pair. The aim: the multilingual share at least
the English one. A 95% interval (Wilson) stands beside each share, since the groups are small.

Fit the bundles on the same seeds, one per encoder, e.g.:

    python -m training fit --seeds ../shared/data/agnews --out /tmp/b_minilm --encoder minilm \\
        --holdout 0 --no-onnx -q
    python -m training fit --seeds ../shared/data/agnews --out /tmp/b_e5 --encoder e5-multilingual \\
        --holdout 0 --no-onnx -q
    nice -n 10 python -m benchmarks.pairs_tags --bundle minilm=/tmp/b_minilm --bundle e5=/tmp/b_e5 \\
        --out benchmarks/results/pairs_tags_agnews.json

Embeddings go through the shared embedding cache.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import EMBEDDING_CACHE, corpus_dir, emit
from model.coverage.pair_files import SAME_STORY_MAX_OVERALL, GradedPair, read_pairs_tsv
from model.coverage.pair_scorer import language_pair
from model.encoders.cache import EmbeddingCache
from model.encoders.registry import E5_NAME, make_encoder, manifest_encoder
from model.news_model import NewsModel

MIN_PAIRS = 8  # a language pair's own line needs this many most-similar pairs


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share ``hits / n``."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 3), round(centre + half, 3))


def top_topics(model: NewsModel, pairs: list[GradedPair]) -> tuple[list[str], list[str]]:
    """The most probable label of each pair's first and second article."""
    articles = [a for p in pairs for a in (p.a, p.b)]
    rows = model.classify(articles, all_scores=True)
    tops = [max(r.all_topics or [], key=lambda t: t.probability).label for r in rows]
    return tops[0::2], tops[1::2]


def share(agree: np.ndarray, rows: np.ndarray, left: list[str], right: list[str]) -> dict[str, Any]:
    """The agreement share of ``rows`` with its interval, and the share two independent draws from
    each side's label frequencies would reach (``chance``: a tagger that calls nearly everything
    "World" agrees often without reading the text) and Cohen's kappa against it."""
    hits, n = int(agree[rows].sum()), len(rows)
    if not n:
        return {"n": 0}
    one = np.array(left, dtype=object)[rows]
    two = np.array(right, dtype=object)[rows]
    labels = set(one.tolist()) | set(two.tolist())
    chance = float(sum((one == label).mean() * (two == label).mean() for label in labels))
    observed = hits / n
    kappa = (observed - chance) / (1 - chance) if chance < 1 else 0.0
    return {
        "n": n,
        "agree": round(observed, 3),
        "ci95": wilson(hits, n),
        "chance": round(chance, 3),
        "kappa": round(kappa, 3),
    }


def measure(model: NewsModel, data: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("semeval", "semeval_ml"):
        pairs = [p for p in read_pairs_tsv(data / name / "pairs.tsv") if p.overall <= SAME_STORY_MAX_OVERALL]
        left, right = top_topics(model, pairs)
        agree = np.array([a == b for a, b in zip(left, right, strict=True)])
        keys = np.array([language_pair(p.a.language, p.b.language) or "?" for p in pairs], dtype=object)
        cross = np.array([p.a.language != p.b.language for p in pairs])
        entry: dict[str, Any] = {"all": share(agree, np.arange(len(pairs)), left, right)}
        if name == "semeval_ml":
            entry["cross_language"] = share(agree, np.flatnonzero(cross), left, right)
            entry["one_language"] = share(agree, np.flatnonzero(~cross), left, right)
            entry["by_language"] = {
                str(k): share(agree, np.flatnonzero(keys == k), left, right)
                for k in sorted(set(keys.tolist()))
                if (keys == k).sum() >= MIN_PAIRS
            }
        labels, counts = np.unique(left + right, return_counts=True)
        entry["top_labels"] = {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pairs_tags",
        description="Top-topic agreement on the most similar graded pairs, English vs multilingual. "
        "Prints one JSON object.",
    )
    parser.add_argument(
        "--bundle", action="append", required=True, metavar="LABEL=DIR", help="a bundle folder to measure"
    )
    parser.add_argument("--data", type=Path, default=None, help="corpus folder ($NEWSDESK_CORPUS_DIR)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=EMBEDDING_CACHE,
        help="embedding cache",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    data = args.data or corpus_dir()
    report: dict[str, Any] = {"load_at_start": os.getloadavg()[0], "bundles": {}}
    started, cpu = time.perf_counter(), time.process_time()
    for item in args.bundle:
        label, _, folder = item.partition("=")
        manifest = json.loads(next(Path(folder).glob("**/manifest.json")).read_text(encoding="utf-8"))
        name, _ = manifest_encoder(manifest)
        # e5 on its engine runtime, as the bundles these figures came from were fitted
        runtime = "native" if name == E5_NAME else None
        encoder = make_encoder(name, cache=EmbeddingCache(args.cache), backend=runtime)
        model = NewsModel.load(folder, embedder=encoder)
        report["bundles"][label] = {
            "folder": folder,
            "encoder": name,
            "seeds": manifest.get("seeds", {}).get("paths")
            if isinstance(manifest.get("seeds"), dict)
            else None,
            "labels": model.labels,
            **measure(model, data),
        }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["cpu_seconds"] = round(time.process_time() - cpu, 1)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
