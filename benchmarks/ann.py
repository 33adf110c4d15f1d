"""ANN at scale: hnswlib vs usearch vs faiss (our `model.coverage.faiss_ann.AnnIndex`) on news-like vectors.

Vectors are synthetic but anchored in real data: real MiniLM embeddings of shared-corpus articles
(encoded once with the int8 ONNX MiniLM and cached), each synthetic vector a real one blended with a
second real one (topic mixing) plus gaussian noise, L2-normalised. So the set is clustered like news
and lives in the real embedding space. Every vector gets a day (0-729) and a provider (Zipf over 50)
for the filter checks. Recall@10 is against exact float32 search (with the same filter).

Libraries that are not importable are skipped. Example::

    PYTHONPATH=. .venv/bin/python benchmarks/ann.py --n 100000          # quick
    PYTHONPATH=. .venv/bin/python benchmarks/ann.py --n 1000000 --libs faiss
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CACHE = Path(".cache/ann")
K = 10
Search = Callable[[npt.NDArray[np.float32], npt.NDArray[np.bool_] | None], npt.NDArray[np.int64]]


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def base_vectors(n: int, cache: Path) -> npt.NDArray[np.float32]:
    """Real MiniLM embeddings of ``n`` shared-corpus articles (reuters, agnews, hn), cached."""
    path = cache / f"base_{n}.npy"
    if path.is_file():
        return np.load(path)
    from benchmarks.encoders import load_articles, sample
    from model.encoders.onnx import OnnxEncoder, export_onnx_int8

    articles = load_articles("reuters/train", "reuters/test", "agnews", "hn")
    texts = [a.text for a in sample(articles, n, 7)]
    encoder = OnnxEncoder(export_onnx_int8(Path(".cache/fast_encoders/minilm-onnx-int8")))
    vectors = encoder.encode(texts, show_progress_bar=False)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def synthetic(base: npt.NDArray[np.float32], n: int, seed: int) -> npt.NDArray[np.float16]:
    """``n`` news-like vectors around real ones, stored as float16 to halve the benchmark's memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float16)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        anchor = base[rng.integers(0, len(base), m)]
        other = base[rng.integers(0, len(base), m)]
        noise = rng.standard_normal((m, base.shape[1]), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        # Cosine to the anchor ~0.65-0.9: a story cluster, with some pull toward another topic.
        v = anchor + rng.uniform(0, 0.4, (m, 1)).astype(np.float32) * other
        v += (
            rng.uniform(0.4, 1.0, (m, 1)).astype(np.float32)
            * noise
            * np.linalg.norm(v, axis=1, keepdims=True)
        )
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out[start : start + m] = v
    return out


def exact_topk(
    data: npt.NDArray[np.float16], queries: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.int64]:
    """Exact top-K positions by inner product, optionally over ``mask`` only, in 100k-row chunks."""
    best_s = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), K), -1, dtype=np.int64)
    for start in range(0, len(data), 100_000):
        chunk = data[start : start + 100_000].astype(np.float32)
        sims = queries @ chunk.T
        if mask is not None:
            sims[:, ~mask[start : start + 100_000]] = -np.inf
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate(
            [best_i, np.arange(start, start + len(chunk))[None].repeat(len(queries), 0)], axis=1
        )
        top = np.argpartition(-s, K, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def recall(found: list[npt.NDArray[np.int64]], truth: npt.NDArray[np.int64]) -> float:
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)])
    )


# --- library adapters: build(data) -> search(query, mask) -> positions ---------------------------


def build_hnswlib(
    data: npt.NDArray[np.float16], args: argparse.Namespace
) -> tuple[Search, Callable[[], Any]]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=data.shape[1])  # float32 storage only
    index.init_index(max_elements=len(data), ef_construction=args.ef_construction, M=args.M)
    for start in range(0, len(data), 50_000):
        chunk = data[start : start + 50_000].astype(np.float32)
        index.add_items(chunk, np.arange(start, start + len(chunk)), num_threads=args.threads)
    state = {"ef": args.ef_search}

    def search(q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
        index.set_ef(state["ef"])
        if mask is None:
            labels, _ = index.knn_query(q, k=K, num_threads=1)
        else:  # a Python predicate per visited node: the only filter hnswlib offers
            labels, _ = index.knn_query(q, k=K, num_threads=1, filter=lambda i: bool(mask[i]))
        return labels[0].astype(np.int64)

    return search, lambda: (index, state)


def build_usearch(
    data: npt.NDArray[np.float16], args: argparse.Namespace
) -> tuple[Search, Callable[[], Any]]:
    from usearch.index import Index

    index = Index(
        ndim=data.shape[1],
        metric="ip",
        dtype=args.dtype,
        connectivity=args.M,
        expansion_add=args.ef_construction,
        expansion_search=args.ef_search,
    )
    for start in range(0, len(data), 50_000):
        chunk = data[start : start + 50_000]
        index.add(np.arange(start, start + len(chunk)), chunk, threads=args.threads)
    state = {"ef": args.ef_search}

    def search(q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
        index.expansion_search = state["ef"]
        if mask is None:
            return np.asarray(index.search(q, K, threads=1).keys, dtype=np.int64)
        # No filtered search in usearch's Python API: over-fetch by 1/fraction, then post-filter.
        fetch = int(min(len(mask), K / max(mask.mean(), 1e-6) * 2))
        index.expansion_search = max(state["ef"], fetch)
        keys = np.asarray(index.search(q, fetch, threads=1).keys, dtype=np.int64)
        return keys[mask[keys]][:K]

    return search, lambda: (index, state)


def build_faiss(data: npt.NDArray[np.float16], args: argparse.Namespace) -> tuple[Search, Callable[[], Any]]:
    import faiss

    from model.coverage.faiss_ann import AnnIndex

    faiss.omp_set_num_threads(args.threads)
    index = AnnIndex(
        data.shape[1],
        metric="ip",
        dtype=args.dtype,
        M=args.M,
        ef_construction=args.ef_construction,
        ef_search=args.ef_search,
    )
    index.add(np.arange(len(data), dtype=np.int64), data)
    state = {"ef": args.ef_search}

    def search(q: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
        keys, _ = index.search(q, K, allowed=mask, ef_search=state["ef"])
        return keys  # keys are positions here

    return search, lambda: (index, state)


BUILDERS = {"hnswlib": build_hnswlib, "usearch": build_usearch, "faiss": build_faiss}


def saved_mb(lib: str, index: Any) -> float:
    folder = Path(tempfile.mkdtemp(prefix="ann-bench-"))
    try:
        if lib == "faiss":
            index.save(folder / "ann")
        elif lib == "hnswlib":
            index.save_index(str(folder / "index.bin"))
        else:
            index.save(str(folder / "index.bin"))
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def time_queries(
    search: Search, queries: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_] | None
) -> tuple[list[npt.NDArray[np.int64]], dict[str, float]]:
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q, mask))
        times.append((time.perf_counter() - start) * 1000)
    return found, {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
    }


def bench_library(
    lib: str,
    data: npt.NDArray[np.float16],
    queries: npt.NDArray[np.float32],
    truth: dict[str, npt.NDArray[np.int64]],
    masks: dict[str, npt.NDArray[np.bool_] | None],
    args: argparse.Namespace,
) -> dict[str, Any]:
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    search, handle = BUILDERS[lib](data, args)
    build_s = time.perf_counter() - start
    gc.collect()
    index, state = handle()
    entry: dict[str, Any] = {
        "build_s": round(build_s, 1),
        "rss_delta_mb": round(rss_mb() - before, 1),
        "saved_mb": round(saved_mb(lib, index), 1),
        "by_ef_search": {},
    }
    if lib == "faiss":
        import faiss

        faiss.omp_set_num_threads(1)  # one query per request: no thread team to wake per search
    for ef in args.ef_sweep:
        state["ef"] = ef
        row: dict[str, Any] = {}
        for name, mask in masks.items():
            if lib == "hnswlib" and mask is not None and len(data) > 200_000 and not args.slow_filters:
                row[name] = "skipped (Python filter callback per node; --slow-filters to run)"
                continue
            found, latency = time_queries(search, queries, mask)
            row[name] = {"recall_at_10": round(recall(found, truth[name]), 4), **latency}
        entry["by_ef_search"][str(ef)] = row
    return entry


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = base_vectors(args.base_n, Path(args.cache))
    start = time.perf_counter()
    data = synthetic(base, args.n, seed=1)
    queries = synthetic(base, args.queries, seed=2).astype(np.float32)
    rng = np.random.default_rng(3)
    day = rng.integers(0, 730, args.n)
    provider = np.minimum(rng.zipf(1.3, args.n), 50) - 1
    masks: dict[str, npt.NDArray[np.bool_] | None] = {
        "unfiltered": None,
        "date_range": (day >= 200) & (day < 420),  # ~30%: a seven-month window
        "provider": np.isin(provider, [1, 3, 5]),  # ~10-15%: a few mid-sized outlets
    }
    fractions = {name: (1.0 if m is None else round(float(m.mean()), 3)) for name, m in masks.items()}
    truth = {name: exact_topk(data, queries, mask) for name, mask in masks.items()}
    prep_s = time.perf_counter() - start

    results: dict[str, Any] = {}
    for lib in args.libs:
        try:
            __import__({"faiss": "faiss", "hnswlib": "hnswlib", "usearch": "usearch.index"}[lib])
        except ImportError as error:
            results[lib] = {"skipped": f"not importable: {error}"}
            continue
        print(f"[ann] {lib} at n={args.n} ...", file=sys.stderr, flush=True)
        results[lib] = bench_library(lib, data, queries, truth, masks, args)
        print(json.dumps({lib: results[lib]}), file=sys.stderr, flush=True)
        gc.collect()
    return {
        "benchmark": "ann",
        "command": "PYTHONPATH=. .venv/bin/python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "n": args.n,
        "dim": int(data.shape[1]),
        "queries": args.queries,
        "k": K,
        "base_real_vectors": len(base),
        "prep_s": round(prep_s, 1),
        "filter_fraction": fractions,
        "params": {
            "M": args.M,
            "ef_construction": args.ef_construction,
            "dtype": args.dtype,
            "build_threads": args.threads,
            "query_threads": 1,
        },
        "targets": {"p50_ms": 5.0, "recall_at_10": 0.95, "rss_mb_at_1M": 1024},
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare hnswlib, usearch and faiss HNSW (model.coverage.faiss_ann.AnnIndex) on "
        "clustered news-like vectors: build time, memory, single-query p50/p99 latency and recall@10, "
        "unfiltered and with date-range / provider filters. Start with --n 100000.",
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=500, help="single queries timed (held out)")
    parser.add_argument("--base-n", type=int, default=4000, help="real article embeddings to anchor on")
    parser.add_argument("--libs", nargs="+", default=["faiss", "usearch", "hnswlib"], choices=list(BUILDERS))
    parser.add_argument("--M", type=int, default=32, help="HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=100, help="HNSW build beam width")
    parser.add_argument("--ef-search", type=int, default=64, help="default query beam width")
    parser.add_argument(
        "--ef-sweep", type=int, nargs="+", default=[32, 64, 128], help="query beam widths tried"
    )
    parser.add_argument(
        "--dtype", default="f16", choices=["f16", "i8"], help="stored vector type (not hnswlib)"
    )
    parser.add_argument("--threads", type=int, default=2, help="build threads")
    parser.add_argument("--slow-filters", action="store_true", help="run hnswlib's Python filter above 200k")
    parser.add_argument("--cache", default=str(CACHE), help="folder for cached real embeddings")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/ann_<n>.json)")
    args = parser.parse_args(argv)
    report = run(args)
    out = Path(args.out or f"benchmarks/results/ann_{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
