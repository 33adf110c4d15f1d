"""Backfill vs posting: the same N articles into an empty store, through ``python -m training backfill``
and through ``POST /v1/articles`` to a running service.

For N articles of a shared corpus (default: the first 5,000 Hacker News seeds) it measures:

* ``backfill_cold_s``: ``python -m training backfill`` into an empty data folder with an empty
  embedding cache (the whole command: start, bundle load, embedding, stories, store, snapshot);
* ``backfill_warm_s``: the same into another empty data folder with the cache that run filled
  (the archive's embeddings already computed, e.g. by a ``fit`` or ``dedup`` on it);
* ``post_s``: a service (uvicorn, the same bundle and encoder) on an empty data folder, sent the
  same articles in published order as ``POST /v1/articles`` batches of ``--post-batch`` by one
  client, from the first request to the last 201 (the service has no embedding cache);
* ``ready_s``: a service started on the warm backfill's folder, from process start to ``/readyz``
  200 (restored from the backfill's index snapshot), and that every article is stored once.

``--no-post`` skips the posting (how a backfill alone grows with N); ``--cache-dir`` keeps one
embedding cache across runs, so the "cold" run of a later, larger N embeds only what is new.

``--synthetic N --post-tail K`` measures at archive scale, where posting all N would take hours:
N synthetic articles (`benchmarks.training_scale.synthesise`), the embedding cache filled for
every text by the static Model2Vec encoder under the bundle encoder's cache key (labelled
``cache_filled_by: static``: a cold MiniLM pass over 100k texts takes hours here), the first
N - K backfilled into an empty store (``backfill_head_s``), then the last K both backfilled onto
that store (``backfill_tail_s``) and posted to a service on a copy of it (``post_tail_s``): the
same K articles onto the same store size; ``ready_s`` is a start on the full store. With ``--work W``
the bundle, the synthetic seeds and the filled cache are kept in W and reused by the next run (the
stores are made anew); ``--prepare-only`` makes them and stops.

Example::

    PYTHONPATH=. .venv/bin/python -m benchmarks.backfill --n 10000 \\
        --out benchmarks/results/backfill_hn_10000.json
    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.backfill --synthetic 100000 --post-tail 2000 \\
        --out benchmarks/results/backfill_synthetic_100000.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import corpus_dir, emit
from benchmarks.report import load_avg_1m, machine_info
from benchmarks.service_load import ROOT, base_env, serving, train_bundle
from benchmarks.startup import time_start
from model.articles.seeds import read_seeds
from model.store import open_read_only
from training.backfill import published_order


def run_backfill(archive: Path, data: Path, bundle: Path, cache: Path) -> tuple[float, dict[str, object]]:
    command = [sys.executable, "-m", "training", "backfill", "--seeds", str(archive), "--data", str(data),
               "--bundle", str(bundle), "--cache-dir", str(cache), "--no-progress", "-q"]  # fmt: skip
    started, cpu = time.perf_counter(), _children_cpu()
    result = subprocess.run(command, cwd=ROOT, env=base_env(), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"backfill failed:\n{result.stderr[-3000:]}")
    return seconds, json.loads(result.stdout) | {"cpu_s": round(_children_cpu() - cpu, 1)}


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def post_all(
    bundle: Path, work: Path, records: list[dict[str, object]], batch: int, data_dir: Path | None = None
) -> float:
    """Seconds to post ``records`` to a service on ``data_dir`` (default: an empty store)."""
    env = {"NEWSDESK_DATA_DIR": str(data_dir)} if data_dir is not None else None
    with (
        serving(bundle, work, "post", env) as server,
        httpx.Client(base_url=server.url, timeout=300) as client,
    ):
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            response = client.post("/v1/articles", json={"articles": records[start : start + batch]})
            if response.status_code not in (200, 201):
                raise SystemExit(f"POST /v1/articles: {response.status_code} {response.text[:500]}")
        return time.perf_counter() - started


def fill_cache_static(bundle: Path, texts: list[str], cache: Path, static_dir: Path) -> dict[str, object]:
    """The static encoder's vectors of ``texts`` stored under the bundle encoder's cache key."""
    from benchmarks.static_encoder import StaticEncoder, distill_model2vec
    from model.bundle import bundle_embedder, resolve_bundle
    from model.encoders.cache import EmbeddingCache, text_key

    started = time.perf_counter()
    static = StaticEncoder(distill_model2vec(static_dir, pca_dims=None))
    model_id = bundle_embedder(resolve_bundle(bundle), "auto").model_id
    store = EmbeddingCache(cache / "embeddings.sqlite")
    for start in range(0, len(texts), 20_000):
        chunk = texts[start : start + 20_000]
        store.put_many([(text_key(model_id, t), v) for t, v in zip(chunk, static.encode(chunk), strict=True)])
    store.close()
    return {
        "cache_filled_by": "static",
        "texts": len(texts),
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_jsonl(records: list[dict[str, object]], path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


def at_scale(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """``--synthetic N --post-tail K``: the last K articles backfilled vs posted onto N - K stored."""
    from benchmarks.training_scale import synthesise

    bundle = (
        args.bundle
        or _kept_bundle(work)
        or train_bundle([ROOT / "seeds"], work / "bundles", work / "fit-cache")
    )
    shards = synthesise(args.synthetic, work / f"seeds-{args.synthetic}", corpus_dir())
    articles = published_order(list(read_seeds([shards]).articles.values()))
    records = [article.to_record() for article in articles]
    head, tail = records[: -args.post_tail], records[-args.post_tail :]
    cache = args.cache_dir or work / "cache"
    filled_file = cache / "filled-static.json"  # a kept --work reuses the filled cache
    if filled_file.is_file():
        filled = json.loads(filled_file.read_text(encoding="utf-8")) | {"reused": True}
    else:
        filled = fill_cache_static(bundle, [a.text for a in articles], cache, work / "static-384")
        filled_file.write_text(json.dumps(filled), encoding="utf-8")
    if args.prepare_only:
        return {"prepared": str(work), "bundle": str(bundle), "cache": filled}
    for stale in ("data", "data-post"):  # the stores are remade on every run; seeds, bundle, cache kept
        shutil.rmtree(work / stale, ignore_errors=True)
    head_s, head_summary = run_backfill(write_jsonl(head, work / "head.jsonl"), work / "data", bundle, cache)
    shutil.copytree(work / "data", work / "data-post")
    tail_file = write_jsonl(tail, work / "tail.jsonl")
    tail_s, tail_summary = run_backfill(tail_file, work / "data", bundle, cache)
    start = time_start(bundle, work / "data", work / "start.log")
    store = open_read_only(work / "data")
    stored, unique = store.count(), len({row.id for row in store.iter_since(0)})
    store.close()
    cpu = _children_cpu()
    post_s = post_all(bundle, work, tail, args.post_batch, data_dir=work / "data-post")
    post_cpu = _children_cpu() - cpu  # the service's whole life: its start and the posts
    return {
        "articles": len(records),
        "seeds": f"synthetic {args.synthetic} (benchmarks.training_scale.synthesise)",
        "bundle": "trained on seeds/" if args.bundle is None else str(args.bundle),
        "cache": filled,
        "post_batch": args.post_batch,
        "stored_before_tail": len(head),
        "tail": len(tail),
        "backfill_head_s": round(head_s, 1),
        "backfill_head_summary": head_summary,
        "backfill_tail_s": round(tail_s, 1),
        "backfill_tail_summary": tail_summary,
        "post_tail_s": round(post_s, 1),
        "post_service_cpu_s_with_start": round(post_cpu, 1),
        # Per article: the whole archive's backfill against posting at the full store's size.
        "backfill_per_article_ms": round(1000 * (head_s + tail_s) / len(records), 2),
        "post_per_article_ms": round(1000 * post_s / len(tail), 2),
        "speedup_warm_vs_post": round((post_s / len(tail)) / ((head_s + tail_s) / len(records)), 1),
        "speedup_tail_vs_post": round(post_s / tail_s, 1),
        "ready_s": start["ready_s"],
        "stored_after_backfill": stored,
        "stored_once": stored == unique == len(records),
    }


def _kept_bundle(work: Path) -> Path | None:
    """The bundle a kept ``--work`` folder already trained (None on a first run)."""
    manifests = sorted((work / "bundles").glob("**/manifest.json"))
    return manifests[-1].parent if manifests else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, default=corpus_dir() / "hn", help="a folder of seed files")
    parser.add_argument("--n", type=int, default=5000, help="articles to load (the first N files)")
    parser.add_argument("--bundle", type=Path, help="bundle folder (default: one trained on seeds/)")
    parser.add_argument("--post-batch", type=int, default=64, help="articles per POST (default 64)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--cache-dir", type=Path, help="embedding cache to use and keep (default: a fresh one, removed after)"
    )
    parser.add_argument(
        "--no-post",
        action="store_true",
        help="only the backfills (how a backfill grows with N, not vs posting)",
    )
    parser.add_argument(
        "--synthetic", type=int, help="N synthetic articles instead of --seeds (with --post-tail)"
    )
    parser.add_argument("--post-tail", type=int, default=2000, help="--synthetic: the last K articles posted")
    parser.add_argument(
        "--work", type=Path, help="--synthetic: a work folder to keep (default: a temporary one)"
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="--synthetic --work: only train the bundle, synthesise and fill the cache (kept for reruns)",
    )
    args = parser.parse_args(argv)

    load_at_start = load_avg_1m()
    if args.synthetic:
        work = args.work or Path(tempfile.mkdtemp(prefix="bench-backfill-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            result = at_scale(args, work)
        finally:
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
        result |= {"load_avg_1m_at_start": load_at_start, "machine": machine_info()}
        emit(result, args.out)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        bundle = args.bundle or train_bundle([ROOT / "seeds"], work / "bundles", work / "fit-cache")
        files = sorted(p for p in args.seeds.iterdir() if p.suffix == ".md")[: args.n]
        articles = published_order(list(read_seeds(files).articles.values()))
        records = [article.to_record() for article in articles]
        archive = work / "archive.jsonl"
        archive.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
        cache = args.cache_dir or work / "cache"
        cold_s, cold = run_backfill(archive, work / "data-cold", bundle, cache)
        warm_s, warm = run_backfill(archive, work / "data", bundle, cache)
        start = time_start(bundle, work / "data", work / "start.log")
        store = open_read_only(work / "data")
        stored, unique = store.count(), len({row.id for row in store.iter_since(0)})
        store.close()
        post_s = None if args.no_post else post_all(bundle, work, records, args.post_batch)
        result = {
            "articles": len(records),
            "seeds": str(args.seeds.name),
            "bundle": "trained on seeds/" if args.bundle is None else str(args.bundle),
            "post_batch": args.post_batch,
            "backfill_cold_s": round(cold_s, 1),
            "backfill_warm_s": round(warm_s, 1),
            "backfill_warm_summary": warm,
            "backfill_cold_summary": cold,
            "post_s": round(post_s, 1) if post_s is not None else None,
            "speedup_warm_vs_post": round(post_s / warm_s, 1) if post_s is not None else None,
            "speedup_cold_vs_post": round(post_s / cold_s, 1) if post_s is not None else None,
            "ready_s": start["ready_s"],
            "stored_after_backfill": stored,
            "stored_once": stored == unique == len(records),
            "load_avg_1m_at_start": load_at_start,
            "machine": machine_info(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
