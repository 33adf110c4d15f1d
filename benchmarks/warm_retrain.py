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

``--stories`` measures instead the stories step of a retrain cold against warm (`fit --warm-start`,
`training.warm_start`) in one process: a "live bundle" of the N cached seeds (its pair scorer and
stories decided cold), then the N + new seeds decided cold (the pair scorer refitted, every story
decided) and warm (the live scorer, the live stories kept for the unchanged prefix of the published
order), CPU and wall seconds side by side, and how far the two partitions lie apart (B-cubed and
pair agreement of warm against cold). The new seeds' vectors come from the static encoder too.
``--storychains`` runs the same on the storychains set (the newest 10% or a random 10% new),
scored against its gold chains.

Example::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.warm_retrain --n 100000 --new-percent 1 \\
        --engines local ray --out benchmarks/results/warm_retrain_100000.json
    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.warm_retrain --n 100000 --new-percent 1 \\
        --stories --work W --out benchmarks/results/warm_stories_100000.json
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

import numpy as np

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


def partition_agreement(reference: list[str], other: list[str]) -> dict[str, float]:
    """B-cubed precision / recall / F1 of ``other`` against ``reference`` and the share of article
    pairs grouped together by either that both group together (linear in the articles)."""
    ref = np.unique(np.asarray(reference, dtype=object), return_inverse=True)[1]
    oth = np.unique(np.asarray(other, dtype=object), return_inverse=True)[1]
    cells, both = np.unique(np.stack([ref, oth], axis=1), axis=0, return_counts=True)
    ref_size, oth_size = np.bincount(ref), np.bincount(oth)
    joint = both.astype(np.float64)
    # Each item of a (ref, other) cell of size c: c / |its other cluster|, c / |its ref cluster|.
    precision = float((joint * joint / oth_size[cells[:, 1]]).sum() / len(ref))
    recall = float((joint * joint / ref_size[cells[:, 0]]).sum() / len(ref))
    pairs_both = float((joint * (joint - 1) / 2).sum())
    pairs_ref = float((ref_size * (ref_size - 1) / 2).sum())
    pairs_oth = float((oth_size * (oth_size - 1) / 2).sum())
    union = pairs_ref + pairs_oth - pairs_both
    return {
        "bcubed_precision": round(precision, 6),
        "bcubed_recall": round(recall, 6),
        "bcubed_f1": round(2 * precision * recall / max(precision + recall, 1e-12), 6),
        "pair_agreement": round(pairs_both / union, 6) if union else 1.0,
        "articles_in_another_story": _moved(ref, oth),
    }


def _moved(ref: np.ndarray, oth: np.ndarray) -> int:
    """Articles not in their reference story's best-matching other story."""
    cells, both = np.unique(np.stack([ref, oth], axis=1), axis=0, return_counts=True)
    best = np.zeros(ref.max() + 1 if len(ref) else 0, dtype=np.int64)
    np.maximum.at(best, cells[:, 0], both)
    return int(len(ref) - best.sum())


def _live_bundle(
    folder: Path, articles: list[Any], vectors: Any, scorer: Any, stories: list[str], vid: str
) -> None:
    """The parts of a bundle a warm start reads: manifest, pair scorer, index (articles, stories, vectors)."""
    from model.bundle import FORMAT_VERSION, MANIFEST, save_part
    from model.coverage.article_index import ArticleIndex
    from model.coverage.story_rule import STORY_WINDOW_DAYS

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": "live",
        "embedding": {"name": "minilm", "vectors_id": vid},
        "training": {"story_window_days": STORY_WINDOW_DAYS, "pairs_sha256": None},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    save_part(scorer, folder / "pairs.joblib")
    index = ArticleIndex()
    index.add(articles, vectors, stories)
    index.save(folder / "index")


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(started: tuple[float, float]) -> dict[str, float]:
    return {
        "seconds": round(time.perf_counter() - started[0], 2),
        "cpu_seconds": round(time.process_time() - started[1], 2),
    }


def _newest(old: list[Any], added: list[Any]) -> list[Any]:
    """``added`` re-dated to follow the newest of ``old``, a minute apart in their own order: the
    usual retrain, whose new seeds are the newest articles (the synthesiser spreads its dates over
    the same years, so its new seeds would otherwise start near the archive's beginning)."""
    import dataclasses
    from datetime import timedelta

    last = max(a.published_at for a in old if a.published_at)
    ranked = sorted(added, key=_published_key)
    return [
        dataclasses.replace(a, published_at=last + timedelta(minutes=k + 1)) for k, a in enumerate(ranked)
    ]


def stories_run(
    base: Path, new: Path, cache: Path, static_dir: Path, work: Path, *, backdated: bool, exact_check: bool
) -> dict[str, Any]:
    """The stories step of a retrain of ``base`` + ``new``, cold and warm from a live bundle of ``base``
    (the new seeds re-dated to be the newest unless ``backdated``; ``exact_check``: also decide every
    story with the live scorer, which the warm partition must equal)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks.static_encoder import StaticEncoder, distill_model2vec
    from model.articles.seeds import read_seeds
    from model.coverage.story_links import cluster_stories
    from model.encoders.cache import EmbeddingCache
    from model.encoders.registry import DEFAULT_ENCODER, make_encoder, vectors_id
    from training.trainer import fit_pair_scorer
    from training.warm_start import prepare

    old = list(read_seeds([base], skip_invalid=False, progress=False).articles.values())
    added = list(read_seeds([new], skip_invalid=False, progress=False).articles.values())
    added = added if backdated else _newest(old, added)
    encoder = make_encoder(DEFAULT_ENCODER, cache=EmbeddingCache(cache / "embeddings.sqlite"))
    old_vectors = encoder.encode([a.text for a in old], show_progress_bar=False)  # every one cached
    static = StaticEncoder(distill_model2vec(static_dir, pca_dims=None))
    added_vectors = static.encode([a.text for a in added])
    articles, vectors = old + added, np.vstack([old_vectors, added_vectors]).astype(np.float32)

    def scorer_of(part: list[Any], part_vectors: Any) -> Any:
        return fit_pair_scorer(
            None,
            encoder,
            [a.text for a in part],
            corpus_vectors=part_vectors,
            corpus_languages=[a.language for a in part],
        )

    steps: dict[str, Any] = {}
    started = _clock()
    live_scorer = scorer_of(old, old_vectors)
    live = cluster_stories(old, old_vectors, live_scorer)
    steps["live_fit_pair_scorer_and_stories"] = _since(started)
    folder = work / "live-bundle"
    shutil.rmtree(folder, ignore_errors=True)
    _live_bundle(folder, old, old_vectors, live_scorer, live, vectors_id(encoder))

    started = _clock()
    cold = cluster_stories(articles, vectors, scorer_of(articles, vectors))
    steps["cold"] = _since(started)  # the pair scorer refitted and every story decided, as `fit` does
    started = _clock()
    warm_start, why = prepare(folder, articles, vectors, vectors_id=vectors_id(encoder), pairs=None,
                              window_days=30.0)  # fmt: skip
    if warm_start is None:
        raise SystemExit(f"no warm start: {why}")
    steps["warm.prepare"] = _since(started)
    decide = _clock()
    warm = cluster_stories(articles, vectors, warm_start.scorer, known=warm_start.known)
    steps["warm.decide"] = _since(decide)
    steps["warm"] = _since(started)
    kept = sum(warm[i] == live[i] for i in range(len(old)))
    exact: dict[str, Any] = {}
    if exact_check:
        started = _clock()
        same_scorer = cluster_stories(articles, vectors, live_scorer)
        exact = {
            "cold_with_the_live_scorer": _since(started),
            "warm_against_cold_with_the_live_scorer": partition_agreement(same_scorer, warm),
            "cold_with_the_live_scorer_against_cold": partition_agreement(cold, same_scorer),
        }
    return exact | {
        "new_seeds_dated": "as synthesised (spread over the archive)" if backdated else "newest",
        "articles": len(articles),
        "new": len(added),
        "reused": len(warm_start.known),
        "decided": len(articles) - len(warm_start.known),
        "live_story_ids_kept": kept,
        "steps": steps,
        "cpu_ratio_cold_to_warm": round(
            steps["cold"]["cpu_seconds"] / max(steps["warm"]["cpu_seconds"], 1e-9), 1
        ),
        "warm_against_cold": partition_agreement(cold, warm),
        "stories": {"cold": len(set(cold)), "warm": len(set(warm))},
    }


def _published_key(article: Any) -> tuple[bool, float, str]:
    """`cluster_stories`'s published order (undated last)."""
    when = article.published_at
    return when is None, when.timestamp() if when else 0.0, article.id


def storychains_run(data_dir: Path, cache: Path) -> dict[str, Any]:
    """Warm against cold on storychains (its scorer fitted as `benchmarks.stories` fits it), 10% of
    it new: the newest tenth, or a random tenth (the prefix then ends at the earliest of them)."""
    from benchmarks.pairs import SETS, load_set, pool
    from benchmarks.stories import _gold, bcubed
    from model.coverage.pair_evidence import HashedIdf
    from model.coverage.pair_scorer import PairScorer
    from model.coverage.story_links import cluster_stories
    from model.encoders.cache import EmbeddingCache
    from model.encoders.embedder import Embedder

    sets = {name: load_set(data_dir, name) for name in SETS}
    chains = sets["storychains"]
    embedder = Embedder(cache=EmbeddingCache(cache))
    pooled = pool([sets[o] for o in SETS if o != "storychains"], embedder)
    articles = list(chains.articles)
    vectors = np.asarray(embedder.encode([a.text for a in articles]), dtype=np.float32)
    gold, n = _gold(chains), len(articles)

    def scorer_of(rows: list[int]) -> PairScorer:  # the IDF of the bundle's own articles
        return PairScorer(idf=HashedIdf().fit([articles[i].text for i in rows])).fit(pooled.X, pooled.y)

    cold = cluster_stories(articles, vectors, scorer_of(list(range(n))))
    published = sorted(range(n), key=lambda i: _published_key(articles[i]))
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"articles": n, "cold": bcubed(cold, gold)}
    for label, new in (
        ("newest_10pct", set(published[-(n // 10) :])),
        ("random_10pct", {int(i) for i in rng.choice(n, n // 10, replace=False)}),
    ):
        rows = [i for i in range(n) if i not in new]
        live_scorer = scorer_of(rows)
        live = cluster_stories([articles[i] for i in rows], vectors[rows], live_scorer)
        live_of = {articles[i].id: story for i, story in zip(rows, live, strict=True)}
        first_new = min(published.index(i) for i in new)
        known = {articles[i].id: live_of[articles[i].id] for i in published[:first_new]}
        warm = cluster_stories(articles, vectors, live_scorer, known=known)
        out[label] = {
            "reused": len(known),
            "decided": n - len(known),
            "warm": bcubed(warm, gold),
            "warm_against_cold": partition_agreement(cold, warm),
        }
    return out


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
    parser.add_argument("--stories", action="store_true", help="the stories step cold against warm")
    parser.add_argument(
        "--backdated", action="store_true", help="--stories: new seeds keep their dates (not the newest)"
    )
    parser.add_argument(
        "--exact-check", action="store_true", help="--stories: also decide all with the live scorer"
    )
    parser.add_argument(
        "--storychains", action="store_true", help="warm against cold on storychains' gold chains"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=Path, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.storychains:
        from benchmarks.common import EMBEDDING_CACHE

        result = {"storychains": storychains_run(corpus_dir(), EMBEDDING_CACHE), "machine": machine_info()}
        return _write(result, args.out)

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-warm-retrain-"))
    try:
        base = synthesise(args.n, work / f"seeds-{args.n}", corpus_dir())
        new_n = max(1, round(args.n * args.new_percent / 100))
        new = synthesise(new_n, work / f"new-{new_n}", corpus_dir(), seed=1)
        warm = work / "cache-warm"
        filled = {"cache_filled_by": "static"}
        if not (warm / "embeddings.sqlite").is_file():
            filled |= fill_cache_static(base, warm, work / "static-384")
        if args.stories:
            result = {
                "cached_seeds": args.n,
                "new_seeds": new_n,
                "cache": filled,
                "load_avg_1m_before": load_avg_1m(),
                "stories": stories_run(
                    base,
                    new,
                    warm,
                    work / "static-384",
                    work,
                    backdated=args.backdated,
                    exact_check=args.exact_check,
                ),
                "load_avg_1m_after": load_avg_1m(),
                "machine": machine_info(),
            }
            return _write(result, args.out)
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
    return _write(result, args.out)


def _write(result: dict[str, Any], out: Path | None) -> int:
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
