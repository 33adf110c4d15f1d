"""Bulk near-duplicate detection on ~120k article texts: our dedup vs SemHash, side by side.

Texts: the shared corpora (reuters, agnews, hn; ~32k articles) plus injected near-duplicate variants
of random originals until ``--n``: casing changes, wire re-posts with a prefix/suffix, truncated
excerpts, whitespace/punctuation noise, singly or combined. Because every variant knows its
original, the report also gives the recall of the injected duplicates (variant grouped with its
original) next to the number of groups each method finds.

Methods (same texts, one process):

* ``ours_minhash``: `model.coverage.dedup.dedup_corpus` (exact keys + MinHash LSH + shingle Jaccard >= 0.8).
* ``ours_embedding``: Model2Vec vectors (distilled locally from the bundled MiniLM), `AnnIndex`
  top-10 per text, cosine >= ``--threshold`` joined by union-find.
* ``semhash``: ``SemHash.from_records(..., model=<the same Model2Vec>).self_deduplicate(threshold)``;
  given the local model so it never reaches for its default hub model.

Example::

    PYTHONPATH=. .venv/bin/python benchmarks/semhash_compare.py --n 120000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.encoders import CACHE, load_articles
from model.articles.article import Article

WIRE_PREFIXES = ("(Reuters) - ", "WASHINGTON (AP) - ", "UPDATE 1-", "BREAKING: ")
WIRE_SUFFIXES = (" | Reuters", " - The Associated Press", " (AFP)", " - Yahoo News")


def make_variant(article: Article, rng: random.Random, index: int) -> Article:
    """One realistic near-duplicate of ``article`` under a new id."""
    title, excerpt = article.title, article.excerpt
    kinds = rng.sample(["case", "wire", "truncate", "noise"], rng.choice([1, 1, 2]))
    for kind in kinds:
        if kind == "case":
            title = (
                title.upper() if rng.random() < 0.5 else title.title() if title.isupper() else title.lower()
            )
        elif kind == "wire":
            if rng.random() < 0.5:
                title = rng.choice(WIRE_PREFIXES) + title
            else:
                title = title + rng.choice(WIRE_SUFFIXES)
        elif kind == "truncate" and len(excerpt) > 80:
            cut = int(len(excerpt) * rng.uniform(0.6, 0.9))
            excerpt = excerpt[:cut].rsplit(" ", 1)[0] + " ..."
        else:  # doubled spaces, a dropped final full stop, curly quotes
            title = re.sub(r" ", "  ", title, count=1).replace("'", "\u2019")
            excerpt = excerpt.rstrip(".")
    return replace(article, id=f"variant-{index}", title=title, excerpt=excerpt, urls={})


def build_corpus(n: int, seed: int) -> tuple[list[Article], dict[str, str]]:
    originals = load_articles("reuters/train", "reuters/test", "agnews", "hn")
    rng = random.Random(seed)
    articles = list(originals)
    variant_of: dict[str, str] = {}
    for i in range(max(0, n - len(originals))):
        source = originals[rng.randrange(len(originals))]
        variant = make_variant(source, rng, i)
        articles.append(variant)
        variant_of[variant.id] = source.id
    rng.shuffle(articles)
    return articles, variant_of


def injected_recall(groups: list[list[str]], variant_of: dict[str, str]) -> float:
    """Share of injected variants found in the same group as their original."""
    group_of = {member: g for g, members in enumerate(groups) for member in members}
    hits = sum(1 for v, o in variant_of.items() if v in group_of and group_of[v] == group_of.get(o, -1))
    return hits / max(len(variant_of), 1)


def summarise(
    groups: list[list[str]], seconds: float, variant_of: dict[str, str], **extra: Any
) -> dict[str, Any]:
    groups = [g for g in groups if len(g) > 1]
    return {
        "seconds": round(seconds, 1),
        "duplicate_groups": len(groups),
        "articles_in_groups": sum(len(g) for g in groups),
        "removed_if_deduplicated": sum(len(g) - 1 for g in groups),
        "injected_variant_recall": round(injected_recall(groups, variant_of), 4),
        **extra,
    }


def union_groups(n: int, pairs: npt.NDArray[np.int64]) -> list[list[int]]:
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return list(members.values())


def ours_embedding(vectors: npt.NDArray[np.float32], threshold: float) -> list[list[int]]:
    from model.coverage.faiss_ann import AnnIndex

    index = AnnIndex(vectors.shape[1], dtype="f16", M=16, ef_construction=64, ef_search=32)
    index.add(np.arange(len(vectors), dtype=np.int64), vectors)
    keys, scores = index.search_many(vectors, 10)
    rows = np.repeat(np.arange(len(vectors)), keys.shape[1])
    keep = (scores.reshape(-1) >= threshold) & (keys.reshape(-1) >= 0) & (keys.reshape(-1) != rows)
    pairs = np.stack([rows[keep], keys.reshape(-1)[keep]], axis=1)
    return union_groups(len(vectors), pairs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.static_encoder import StaticEncoder, distill_model2vec
    from model.coverage.dedup import dedup_corpus

    started = time.perf_counter()
    articles, variant_of = build_corpus(args.n, args.seed)
    texts = [a.text for a in articles]
    ids = [a.id for a in articles]
    prep_s = time.perf_counter() - started
    static = StaticEncoder(distill_model2vec(Path(args.cache) / "minilm-model2vec-256"))
    results: dict[str, Any] = {}

    start = time.perf_counter()
    report = dedup_corpus(articles, stories=False, keep_links=False)
    results["ours_minhash"] = summarise(
        [list(g.article_ids) for g in report.groups],
        time.perf_counter() - start,
        variant_of,
        method="model.coverage.dedup.dedup_corpus: exact keys + MinHash LSH, shingle Jaccard >= 0.8",
    )
    print(json.dumps({"ours_minhash": results["ours_minhash"]}), file=sys.stderr, flush=True)

    start = time.perf_counter()
    vectors = static.encode(texts)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    groups = ours_embedding(vectors, args.threshold)
    results["ours_embedding"] = summarise(
        [[ids[i] for i in g] for g in groups],
        encode_s + time.perf_counter() - start,
        variant_of,
        encode_seconds=round(encode_s, 1),
        method=f"Model2Vec vectors + AnnIndex top-10, cosine >= {args.threshold}, union-find",
    )
    print(json.dumps({"ours_embedding": results["ours_embedding"]}), file=sys.stderr, flush=True)

    try:
        from semhash import SemHash
    except ImportError as error:
        results["semhash"] = {"skipped": f"not importable: {error}"}
    else:
        start = time.perf_counter()
        records = [{"id": i, "text": t} for i, t in zip(ids, texts, strict=True)]
        semhash = SemHash.from_records(records, columns=["text"], model=static.model)
        result = semhash.self_deduplicate(threshold=args.threshold)
        seconds = time.perf_counter() - start
        # A group = a kept record and the records filtered as its duplicates.
        by_kept: dict[str, list[str]] = {}
        for dup in result.filtered:
            kept = dup.duplicate_of["id"] if dup.duplicate_of is not None else dup.record["id"]
            by_kept.setdefault(kept, [kept]).append(dup.record["id"])
        results["semhash"] = summarise(
            list(by_kept.values()),
            seconds,
            variant_of,
            method=f"SemHash.self_deduplicate(threshold={args.threshold}), same Model2Vec, usearch backend",
        )
    return {
        "benchmark": "semhash_compare",
        "command": "PYTHONPATH=. .venv/bin/python " + " ".join(sys.argv),
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "texts": len(texts),
        "injected_variants": len(variant_of),
        "prep_s": round(prep_s, 1),
        "threshold": args.threshold,
        "results": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Deduplicate ~120k news texts (shared corpora + injected near-duplicate variants) with "
        "our MinHash dedup, our embedding+AnnIndex grouping and SemHash; report wall time, duplicate "
        "groups and the recall of the injected duplicates. Runs offline (local Model2Vec for SemHash).",
    )
    parser.add_argument("--n", type=int, default=120_000, help="total texts (originals + variants)")
    parser.add_argument("--threshold", type=float, default=0.9, help="cosine threshold (embedding methods)")
    parser.add_argument("--seed", type=int, default=0, help="variant generator seed")
    parser.add_argument("--cache", default=str(CACHE), help="folder of the distilled Model2Vec")
    parser.add_argument("--out", default="benchmarks/results/semhash_compare.json", help="JSON output path")
    args = parser.parse_args(argv)
    report = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
