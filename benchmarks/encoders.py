"""Encoder throughput and accuracy: sentence-transformers fp32 vs ONNX int8 vs Model2Vec static.

All paths run side by side in one process on the same real texts (title + excerpt of reuters and
agnews articles). Timing rounds are interleaved (fp32, int8, static, fp32, ...) and the median is
reported, because the benchmark machine is shared and its load drifts. Accuracy is measured against
the fp32 MiniLM: cosine per text (same space only), top-10 neighbour overlap within a reuters sample,
reuters multi-label topic micro-F1 (logistic regression on embeddings) and Pearson r with the human
SemEval-2022 similarity scores.

Example::

    PYTHONPATH=. .venv/bin/python benchmarks/encoders.py --n 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.common import corpus_dir
from model.articles.article import Article
from model.articles.seeds import read_seeds

DATA = corpus_dir()
CACHE = Path(".cache/fast_encoders")
Encode = Callable[[Sequence[str]], npt.NDArray[np.float32]]


def load_articles(*subdirs: str, data: Path = DATA) -> list[Article]:
    """Articles of the shared corpora (e.g. ``"reuters/test"``, ``"agnews"``), in file order."""
    corpus = read_seeds([data / sub for sub in subdirs])
    return [a for a in corpus.articles.values() if a.text]


def sample(items: Sequence[Any], n: int, seed: int) -> list[Any]:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]


def topk_neighbours(vectors: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """Exact top-k by cosine within the set, self excluded."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return top.astype(np.int64)


def neighbour_overlap(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], k: int = 10) -> float:
    ta, tb = topk_neighbours(a, k), topk_neighbours(b, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb, strict=True)]))


def topic_micro_f1(
    train_x: npt.NDArray[np.float32],
    train_y: list[tuple[str, ...]],
    test_x: npt.NDArray[np.float32],
    test_y: list[tuple[str, ...]],
) -> float:
    """Reuters multi-label micro-F1 of one-vs-rest logistic regression on the embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    counts: dict[str, int] = {}
    for labels in train_y:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    keep = sorted(label for label, c in counts.items() if c >= 5)  # too-rare codes cannot be learned
    binarizer = MultiLabelBinarizer(classes=keep)
    ytr = binarizer.fit_transform([[t for t in y if t in keep] for y in train_y])
    yte = binarizer.transform([[t for t in y if t in keep] for y in test_y])
    head = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=1000), n_jobs=1).fit(train_x, ytr)
    return float(f1_score(yte, head.predict(test_x), average="micro", zero_division=0))


def semeval_pairs(data: Path = DATA) -> tuple[list[str], list[str], npt.NDArray[np.float64]]:
    left, right, scores = [], [], []
    with (data / "semeval" / "pairs.tsv").open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            left.append(Article("a", title=row["title1"], excerpt=row["excerpt1"]).text)
            right.append(Article("b", title=row["title2"], excerpt=row["excerpt2"]).text)
            scores.append(float(row["overall"]))
    return left, right, np.array(scores)


def build_encoders(
    cache: Path, batch_size: int, threads: int | None
) -> dict[str, tuple[Encode, dict[str, Any]]]:
    from benchmarks.static_encoder import StaticEncoder, distill_model2vec
    from model.encoders.embedder import Embedder
    from model.encoders.onnx import OnnxEncoder, export_onnx_int8

    encoders: dict[str, tuple[Encode, dict[str, Any]]] = {}
    fp32 = Embedder(batch_size=batch_size)
    encoders["st_fp32"] = (lambda t: fp32.encode(t, show_progress_bar=False), {"dim": fp32.dim})

    start = time.perf_counter()
    onnx_dir = export_onnx_int8(cache / "minilm-onnx-int8")
    build = time.perf_counter() - start
    onnx = OnnxEncoder(onnx_dir, batch_size=batch_size, num_threads=threads)
    size = (onnx_dir / "model_int8.onnx").stat().st_size
    encoders["onnx_int8"] = (
        lambda t: onnx.encode(t, show_progress_bar=False),
        {"dim": onnx.dim, "build_or_load_s": round(build, 1), "model_mb": round(size / 1e6, 1)},
    )

    start = time.perf_counter()
    static_dir = distill_model2vec(cache / "minilm-model2vec-256")
    build = time.perf_counter() - start
    static = StaticEncoder(static_dir)
    size = sum(f.stat().st_size for f in static_dir.iterdir() if f.is_file())
    encoders["model2vec"] = (
        lambda t: static.encode(t),
        {"dim": static.dim, "build_or_load_s": round(build, 1), "model_mb": round(size / 1e6, 1)},
    )
    return encoders


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    reuters_test = load_articles("reuters/test")
    reuters_train = load_articles("reuters/train")
    agnews = load_articles("agnews")
    # Throughput texts: an even mix of long-ish wire leads (reuters) and short AG descriptions.
    bench = [a.text for a in sample(reuters_test, args.n // 2, 1) + sample(agnews, args.n - args.n // 2, 2)]
    overlap_set = sample(reuters_test, args.overlap_n, 3)
    train_set = sample(reuters_train, args.train_n, 4)
    sem_left, sem_right, sem_scores = semeval_pairs()

    encoders = build_encoders(Path(args.cache), args.batch_size, args.threads)
    for encode, _ in encoders.values():
        encode(bench[:32])  # warm-up: lazy loads and first-call allocations stay out of the timings
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, (encode, _) in encoders.items():
            start = time.perf_counter()
            encode(bench)
            times[name].append(time.perf_counter() - start)

    results: dict[str, Any] = {}
    vectors: dict[str, npt.NDArray[np.float32]] = {}
    for name, (encode, info) in encoders.items():
        seconds = statistics.median(times[name])
        entry: dict[str, Any] = {
            **info,
            "articles_per_s": round(len(bench) / seconds, 1),
            "rounds_s": [round(t, 2) for t in times[name]],
        }
        vectors[name] = encode(bench)
        over = encode([a.text for a in overlap_set])
        vectors[f"{name}:overlap"] = over
        if not args.no_downstream:
            entry["reuters_topic_micro_f1"] = round(
                topic_micro_f1(
                    encode([a.text for a in train_set]),
                    [a.topics for a in train_set],
                    over,
                    [a.topics for a in overlap_set],
                ),
                4,
            )
            left, right = encode(sem_left), encode(sem_right)
            r = float(np.corrcoef((left * right).sum(1), sem_scores)[0, 1])
            entry["semeval_pearson_r"] = round(r, 4)  # negative: 1 = same story, 4 = unrelated
        results[name] = entry
    base = results["st_fp32"]["articles_per_s"]
    for name, entry in results.items():
        entry["speedup_vs_fp32"] = round(entry["articles_per_s"] / base, 2)
        if vectors[name].shape[1] == vectors["st_fp32"].shape[1]:
            cos = (vectors[name] * vectors["st_fp32"]).sum(1)
            entry["cosine_to_fp32"] = {
                "mean": round(float(cos.mean()), 4),
                "p5": round(float(np.percentile(cos, 5)), 4),
                "min": round(float(cos.min()), 4),
            }
        else:
            entry["cosine_to_fp32"] = None  # its own vector space: cosine to MiniLM means nothing
        entry["top10_overlap_with_fp32"] = round(
            neighbour_overlap(vectors[f"{name}:overlap"], vectors["st_fp32:overlap"], 10), 4
        )
    return {
        "benchmark": "encoders",
        "command": "PYTHONPATH=. .venv/bin/python " + " ".join(sys.argv),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "texts": {
            "throughput_n": len(bench),
            "mean_chars": round(statistics.mean(len(t) for t in bench), 1),
            "overlap_n": len(overlap_set),
            "topic_train_n": len(train_set),
            "semeval_pairs": len(sem_scores),
        },
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare encoder throughput (articles/s) and accuracy: sentence-transformers fp32, "
        "ONNX int8 (onnxruntime) and a Model2Vec static model distilled from the bundled MiniLM. "
        "Builds the ONNX and static models on first use under --cache (offline).",
    )
    parser.add_argument(
        "--n", type=int, default=1000, help="texts per timing round (half reuters, half agnews)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median counts")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (all paths)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch/onnxruntime threads (default: all cores)"
    )
    parser.add_argument(
        "--overlap-n", type=int, default=1000, help="reuters test texts for neighbour overlap + F1"
    )
    parser.add_argument("--train-n", type=int, default=2000, help="reuters train texts for the topic head")
    parser.add_argument("--no-downstream", action="store_true", help="skip topic F1 and SemEval Pearson")
    parser.add_argument("--cache", default=str(CACHE), help="folder for the built ONNX / Model2Vec models")
    parser.add_argument("--out", default="benchmarks/results/encoders.json", help="JSON output path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    report = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
