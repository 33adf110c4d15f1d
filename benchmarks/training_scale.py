"""How each fit step grows with the seeds: 10k, 100k (and 1M) articles, `local` vs `ray`.

Seeds are synthesised from the shared corpora, written as Parquet shards (100k rows each, so 1M
articles are 1M rows): each synthetic article keeps a real article's title, topics, provider and
heat and joins the first sentence of its excerpt to a sentence of another article on the same
topic (Hacker News items, which have no excerpt: another item's title), published about a
minute apart, so every text is new and a day holds ~1,500 articles as an aggregator's would.

Each run is a fresh child process (its peak RSS is its own) that reads the shards through the
engine, embeds through the embedding cache, and fits every part of the bundle with the fit
cache off (`training.trainer.fit_news_model`), then writes the bundle; it reports wall and CPU
seconds and the peak RSS after each step. The embedding cache is either:

- ``cold``: empty, so MiniLM embeds every text (only up to ``--cold-max`` articles: on 2 cores
  a cold MiniLM pass over 100k texts takes hours);
- ``warm``: filled beforehand. Up to ``--cold-max`` by the cold run's MiniLM vectors; above it by
  a static Model2Vec encoder distilled from MiniLM (`benchmarks.static_encoder`, 384-d, stored
  under MiniLM's cache key), labelled ``cache_filled_by: static``: the fits then see vectors of
  another (weaker) encoder, which changes what they learn a little and what they cost not at all.

Example::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.training_scale --sizes 10000 100000
    PYTHONPATH=. .venv/bin/python -m benchmarks.training_scale --sizes 2000 --engines local  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.report import machine_info

ROOT = Path(__file__).resolve().parents[1]
SHARD_ROWS = 100_000
SOURCES = ("reuters/train", "agnews", "hn")
START = datetime(2020, 1, 1, tzinfo=UTC)
SPACING_S = 57.6  # 1,500 articles a day


def corpus_dir() -> Path:
    env = os.environ.get("NEWSDESK_CORPUS_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0] if text else ""


def synthesise(n: int, folder: Path, corpora: Path, seed: int = 0) -> Path:
    """``n`` synthetic seeds as Parquet shards in ``folder`` (kept: a rerun reuses them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.articles.seeds import read_seeds

    done = folder / "DONE"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for source in SOURCES:
        pool += list(read_seeds([corpora / source], skip_invalid=True, progress=False).articles.values())
    by_topic: dict[str, list[int]] = {}
    for k, article in enumerate(pool):
        by_topic.setdefault(article.topics[0] if article.topics else "", []).append(k)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    shard = 0

    def flush() -> None:
        nonlocal rows, shard
        if rows:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"seeds-{shard:05d}.parquet")
            shard += 1
            rows = []

    for i in range(n):
        base = pool[rng.randrange(len(pool))]
        donor = pool[rng.choice(by_topic[base.topics[0] if base.topics else ""])]
        second = _first_sentence(donor.excerpt or "") or donor.title
        excerpt = " ".join(part for part in (_first_sentence(base.excerpt or ""), second) if part)
        published = START + timedelta(seconds=i * SPACING_S + rng.uniform(0, SPACING_S))
        rows.append(
            {
                "title": base.title,
                "excerpt": excerpt,
                "publishedDateTime": published.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "webUrl": f"https://synthetic.example/{seed}/{i}",
                "type": "article",
                "provider": {"name": base.provider_key or "synthetic", "domain": base.provider_key or ""},
                "topics": list(base.topics) or None,
                "heat": base.heat,
            }
        )
        if len(rows) >= SHARD_ROWS:
            flush()
    flush()
    done.write_text(str(n))
    return folder


def fill_cache_static(seeds: Path, cache: Path, static_dir: Path) -> dict[str, Any]:
    """Store the static encoder's vectors of every seed text under MiniLM's cache key."""
    from benchmarks.static_encoder import StaticEncoder, distill_model2vec
    from model.articles.seeds import read_seeds
    from model.encoders.cache import EmbeddingCache, text_key
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder

    started = time.perf_counter()
    static = StaticEncoder(distill_model2vec(static_dir, pca_dims=None))
    minilm = make_encoder(DEFAULT_ENCODER)
    if static.dim != minilm.dim:
        raise SystemExit(
            f"static encoder is {static.dim}-d, MiniLM {minilm.dim}-d: distil with pca_dims=None"
        )
    texts = [a.text for a in read_seeds([seeds], skip_invalid=False, progress=False).articles.values()]
    store = EmbeddingCache(cache / "embeddings.sqlite")
    model_id = minilm.model_id
    for start in range(0, len(texts), 20_000):
        chunk = texts[start : start + 20_000]
        store.put_many([(text_key(model_id, t), v) for t, v in zip(chunk, static.encode(chunk), strict=True)])
    store.close()
    return {"texts": len(texts), "seconds": round(time.perf_counter() - started, 1)}


def cached_vectors(articles: list[Any], cache_path: Path) -> Any:
    """Each article's text vector from an embedding cache under MiniLM's key (a warm cache this
    benchmark filled, e.g. by its static encoder); every text must be there."""
    import numpy as np

    from model.encoders.cache import EmbeddingCache, text_key
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder

    encoder = make_encoder(DEFAULT_ENCODER)
    keys = [text_key(encoder.model_id, article.text) for article in articles]
    cache = EmbeddingCache(cache_path)
    found = cache.get_many(list(dict.fromkeys(keys)), encoder.dim)
    cache.close()
    missing = sum(key not in found for key in keys)
    if missing:
        raise SystemExit(f"{missing} of {len(keys)} texts are not in {cache_path}")
    return np.stack([found[key] for key in keys])


def move_engine_start(steps: dict[str, dict[str, float]], step: str, seconds: float) -> None:
    """Ray starts when a batch first needs it: the ``seconds`` it took within ``step`` (the
    engine's ``start_seconds`` after the step less before it) move from that step to ``engine_start``."""
    if seconds:
        steps["engine_start"]["seconds"] = round(steps["engine_start"]["seconds"] + seconds, 2)
        steps[step]["seconds"] = round(steps[step]["seconds"] - seconds, 2)


def child(args: argparse.Namespace) -> int:
    """One run: read, embed, fit every step, save; JSON on stdout."""
    import tempfile

    # As `python -m training` does: OpenMP threads (torch, faiss) sleep rather than spin between
    # work, which on a loaded machine turns each small faiss call into milliseconds of spinning.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder
    from training.engine import make_engine
    from training.fingerprint import seed_fingerprint
    from training.trainer import TrainingOptions, embed_articles, fit_news_model, fit_topic_head, peak_rss_mb

    steps: dict[str, dict[str, float]] = {}

    def mark(name: str, wall: float, cpu: float) -> None:
        steps[name] = {
            "seconds": round(time.perf_counter() - wall, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "peak_rss_mb": peak_rss_mb(),
        }

    wall, cpu = time.perf_counter(), time.process_time()
    with make_engine(args.engine, workers=args.workers) as engine:
        mark("engine_start", wall, cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        corpus = engine.read([args.seeds], skip_invalid=False, progress=False)
        mark("read", wall, cpu)
        move_engine_start(steps, "read", engine.start_seconds)
        embedder = engine.embedder(
            make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(args.cache / "embeddings.sqlite"))
        )
        options = TrainingOptions(progress=False, fit_cache=None)
        wall, cpu = time.perf_counter(), time.process_time()
        if args.topics_only:  # the topic head alone, as `fit` fits it
            articles = list(corpus.articles.values())
            vectors = embed_articles(embedder, articles, progress=False)
            fit_topic_head(articles, vectors, embedder, options)
            model = None
        else:
            model = fit_news_model(corpus, embedder, options)
        fit_cpu = time.process_time() - cpu
    for name, seconds in options.timings.items():
        steps[name] = {
            "seconds": seconds,
            "cpu_seconds": options.cpu_s.get(name, 0.0),
            "peak_rss_mb": options.peak_rss_mb.get(name, 0.0),
        }
    steps["fit_cpu_seconds"] = {"seconds": round(fit_cpu, 2)}
    if model is None:
        print(json.dumps({"articles": len(corpus.articles), "steps": steps}))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        path = model.save(Path(tmp) / "bundles", seed_fingerprint=seed_fingerprint(corpus))
        mark("save", wall, cpu)
        steps["save"]["bundle_mb"] = round(
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1
        )
    print(json.dumps({"articles": len(corpus.articles), "steps": steps}))
    return 0


def run_child(
    seeds: Path, cache: Path, engine: str, workers: int, topics_only: bool = False
) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.training_scale", "--child", "--seeds", str(seeds)]
    command += ["--cache", str(cache), "--engine", engine, "--workers", str(workers)]
    command += ["--topics-only"] if topics_only else []
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"run failed ({process.returncode}):\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"process_seconds": round(wall, 1), "load_avg_1m_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--workers", type=int, default=2, help="ray encoder actors (default 2)")
    parser.add_argument("--cold-max", type=int, default=10_000, help="largest size embedded cold by MiniLM")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache/benchmarks/training_scale")
    parser.add_argument("--corpus-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/training_scale.json")
    parser.add_argument(
        "--topics-only", action="store_true", help="fit the topic head alone (read, embed, topics)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    corpora = args.corpus_dir or corpus_dir()
    load_start = round(os.getloadavg()[0], 2)
    results: list[dict[str, Any]] = []
    for n in args.sizes:
        seeds = synthesise(n, args.work / f"seeds-{n}", corpora)
        cache = args.work / f"cache-{n}"
        filled: dict[str, Any] = {"cache_filled_by": "minilm (the cold run)"}
        if n <= args.cold_max:
            if (cache / "embeddings.sqlite").exists():
                (cache / "embeddings.sqlite").unlink()
            results.append(
                {"size": n, "cache": "cold", "engine": "local"} | run_child(seeds, cache, "local", 1)
            )
            print(json.dumps(results[-1]), file=sys.stderr)
        elif not (cache / "STATIC").is_file():
            filled = {"cache_filled_by": "static"} | fill_cache_static(seeds, cache, args.work / "static-384")
            (cache / "STATIC").write_text(json.dumps(filled))
        else:
            filled = json.loads((cache / "STATIC").read_text())
        for engine in args.engines:
            workers = 1 if engine == "local" else args.workers
            run = {"size": n, "cache": "warm", "engine": engine, "workers": workers} | filled
            results.append(run | run_child(seeds, cache, engine, workers, args.topics_only))
            print(json.dumps(results[-1]), file=sys.stderr)
    report = {
        "benchmark": "training_scale",
        "command": "PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.training_scale "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info()
        | {"load_avg_1m_at_start": load_start, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "notes": "seconds are wall seconds on a shared, loaded machine (load average beside each run); "
        "fit_cpu_seconds is the fit's CPU time (all threads), steady under load",
        "runs": results,
    }
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
