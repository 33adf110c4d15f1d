"""A warm-cache retrain with a few new seeds: what reading and embedding cost when 99% is cached.

An archive of N synthetic seeds (`benchmarks.training_scale.synthesise`, Parquet shards) whose
embeddings are cached (filled by the static Model2Vec encoder under MiniLM's cache key, labelled
``cache_filled_by: static``), plus ``--new-percent`` of N new synthetic seeds (another seed of the
synthesiser: new URLs and new text combinations) that the cache lacks. Each engine then runs, in
a fresh child process on its own copy of that cache, the steps of ``python -m training fit``
before the fits: the engine's start, reading every seed (``engine.read``), and embedding every
text through the cache (``engine.embedder``: only the missing texts reach MiniLM, on the actor
pool for ``ray``). ``--fit`` adds the fits (`training.trainer.fit_news_model`, fit cache off), whose
growth with N `benchmarks.training_scale` measures.

Example::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.warm_retrain --n 100000 --new-percent 1 \\
        --engines local ray --out benchmarks/results/warm_retrain_100000.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import load_avg_1m, machine_info
from benchmarks.training_scale import corpus_dir, fill_cache_static, move_engine_start, synthesise

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> int:
    """One engine's run: start, read, embed (and with ``--fit`` the fits); JSON on stdout."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder
    from training.engine import make_engine
    from training.trainer import TrainingOptions, embed_articles, fit_news_model, peak_rss_mb

    steps: dict[str, dict[str, float]] = {}

    def mark(name: str, wall: float, cpu: float) -> None:
        steps[name] = {
            "seconds": round(time.perf_counter() - wall, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    wall, cpu = time.perf_counter(), time.process_time()
    with make_engine(args.engine, workers=args.workers) as engine:
        mark("engine_start", wall, cpu)
        wall, cpu = time.perf_counter(), time.process_time()
        corpus = engine.read(args.seeds, skip_invalid=False, progress=False)
        mark("read", wall, cpu)
        move_engine_start(steps, "read", engine.start_seconds)
        cache = EmbeddingCache(args.cache / "embeddings.sqlite")
        embedder = engine.embedder(make_encoder(DEFAULT_ENCODER, cache=cache))
        articles = list(corpus.articles.values())
        wall, cpu, before = time.perf_counter(), time.process_time(), engine.start_seconds
        vectors = embed_articles(embedder, articles, progress=False)
        mark("embed", wall, cpu)
        move_engine_start(steps, "embed", engine.start_seconds - before)
        assert len(vectors) == len(articles)
        if args.fit:
            options = TrainingOptions(progress=False, fit_cache=None)
            wall, cpu = time.perf_counter(), time.process_time()
            fit_news_model(corpus, embedder, options)
            mark("fits", wall, cpu)
            for name, seconds in options.timings.items():
                steps[f"fit.{name}"] = {"seconds": seconds, "cpu_seconds": options.cpu_s.get(name, 0.0)}
    print(json.dumps({"articles": len(articles), "steps": steps}))
    return 0


def run_child(seeds: list[Path], cache: Path, engine: str, workers: int, fit: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.warm_retrain", "--child", "--seeds", *map(str, seeds),
               "--cache", str(cache), "--engine", engine, "--workers", str(workers)]  # fmt: skip
    command += ["--fit"] if fit else []
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    load, started = load_avg_1m(), time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{engine} run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return (
        {"engine": engine, "workers": workers if engine == "ray" else 1}
        | result
        | {
            "process_seconds": round(time.perf_counter() - started, 1),
            "load_avg_1m_before": load,
            "load_avg_1m_after": load_avg_1m(),
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="cached seeds (default 100,000)")
    parser.add_argument("--new-percent", type=float, default=1.0, help="new seeds, %% of N (default 1)")
    parser.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--workers", type=int, default=2, help="--engine ray's actors (default 2)")
    parser.add_argument("--fit", action="store_true", help="also run the fits")
    parser.add_argument("--work", type=Path, help="a folder to keep the seeds and cache in")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=Path, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-warm-retrain-"))
    try:
        base = synthesise(args.n, work / f"seeds-{args.n}", corpus_dir())
        new_n = max(1, round(args.n * args.new_percent / 100))
        new = synthesise(new_n, work / f"new-{new_n}", corpus_dir(), seed=1)
        warm = work / "cache-warm"
        filled = {"cache_filled_by": "static"}
        if not (warm / "embeddings.sqlite").is_file():
            filled |= fill_cache_static(base, warm, work / "static-384")
        runs = []
        for engine in args.engines:
            cache = work / f"cache-{engine}"  # each engine finds the same 1% missing
            shutil.rmtree(cache, ignore_errors=True)
            shutil.copytree(warm, cache)
            runs.append(run_child([base, new], cache, engine, args.workers, args.fit))
            shutil.rmtree(cache, ignore_errors=True)
        result = {
            "cached_seeds": args.n,
            "new_seeds": new_n,
            "cache": filled,
            "runs": runs,
            "machine": machine_info(),
        }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
