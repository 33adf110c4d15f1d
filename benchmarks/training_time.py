"""Retrain time, cold vs warm: what the embedding cache and the fit cache each save.

Runs ``python -m training fit --holdout 0`` as a subprocess (as a user would) on the same ~10k seeds
(default: reuters/train, then agnews until ``--n`` files), four times against one cache folder:

1. ``cold``: empty cache folder: every text is embedded and every head fitted;
2. ``warm``: the same folder again: embeddings and fitted heads come from the caches;
3. ``embeddings_warm_fits_cold``: ``<cache>/fits`` deleted first: embeddings cached, heads refitted;
4. ``warm_again``: both caches warm again (a second warm sample, to show the spread).

Reports wall seconds per run (process start to exit: imports and seed parsing included, which is
what an operator waits for), the CLI's own ``seconds`` and the bundle's per-step timings, and the
cold/warm ratio (target ≥ 10x). Writes ``benchmarks/results/training_time.json``.

Example::

    PYTHONPATH=. .venv/bin/python benchmarks/training_time.py --n 10000
    PYTHONPATH=. .venv/bin/python benchmarks/training_time.py --n 300      # smoke run
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

from benchmarks.report import machine_info

ROOT = Path(__file__).resolve().parents[1]
SEED_SUFFIXES = (".md", ".txt", ".yaml", ".yml", ".jsonl")
TARGET_RATIO = 10.0


def corpus_dir() -> Path:
    """The shared corpora: $NEWSDESK_CORPUS_DIR, else ../shared/data beside the repository."""
    env = os.environ.get("NEWSDESK_CORPUS_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def seed_subset(sources: list[Path], n: int, folder: Path) -> int:
    """Symlink the first ``n`` seed files of ``sources`` (in order, sorted within each) into ``folder``.

    Symlinks, not copies: the seeds stay the real files, and `read_seeds` reads a folder recursively.
    Returns how many files were linked.
    """
    folder.mkdir(parents=True, exist_ok=True)
    linked = 0
    for source in sources:
        if not source.is_dir():
            raise SystemExit(f"no seed folder at {source}: set NEWSDESK_CORPUS_DIR or pass --corpus-dir")
        for path in sorted(source.rglob("*")):
            if linked >= n:
                return linked
            if path.suffix in SEED_SUFFIXES and path.is_file():
                # The source folder's name keeps file names unique across corpora.
                (folder / f"{source.name}__{path.name}").symlink_to(path.resolve())
                linked += 1
    return linked


def fit(seeds: Path, out: Path, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    """One ``training fit`` run: wall seconds, the CLI's summary and the bundle's step timings."""
    command = [
        sys.executable,
        "-m",
        "training",
        "fit",
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--holdout",
        "0",
        "--no-progress",
        "-q",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    manifest = json.loads((Path(summary["bundle"]) / "manifest.json").read_text())
    return {
        "seconds": round(wall, 2),
        "cli_seconds": summary.get("seconds"),
        "steps_s": manifest.get("training", {}).get("timings_s", {}),
        "bundle": summary["bundle"],
        "seed_fingerprint": manifest.get("seed_fingerprint"),
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time `python -m training fit` on the same seeds cold (empty cache folder), warm "
        "(embedding + fit caches hit) and with only the embedding cache warm; print JSON with the "
        "seconds of each and the cold/warm ratio.",
    )
    parser.add_argument("--n", type=int, default=10_000, help="seed files to train on (default 10000)")
    parser.add_argument(
        "--sources",
        nargs="+",
        default=["reuters/train", "agnews"],
        help="corpus folders under --corpus-dir, read in order up to --n files "
        "(default: reuters/train, agnews)",
    )
    parser.add_argument(
        "--corpus-dir",
        type=Path,
        default=None,
        help="shared corpora folder (default: $NEWSDESK_CORPUS_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--keep-bundle",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy the trained bundle version here (e.g. for service_load.py --large-bundle)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/training_time.json", help="JSON output path"
    )
    args = parser.parse_args(argv)
    data = args.corpus_dir or corpus_dir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)

    load_start = _load()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        files = seed_subset([data / s for s in args.sources], args.n, work / "seeds")
        cache, out = work / "cache", work / "bundles"  # a fresh cache folder: the cold run is really cold
        runs: dict[str, dict[str, Any]] = {}
        for name in ("cold", "warm", "embeddings_warm_fits_cold", "warm_again"):
            if name == "embeddings_warm_fits_cold":
                shutil.rmtree(cache / "fits", ignore_errors=True)
            runs[name] = fit(work / "seeds", out, cache, env) | {"load_avg_1m_after": _load()}
            print(f"{name}: {runs[name]['seconds']} s", file=sys.stderr)
        if args.keep_bundle:
            shutil.rmtree(args.keep_bundle, ignore_errors=True)
            shutil.copytree(runs["warm_again"]["bundle"], args.keep_bundle)
        for run in runs.values():
            run["bundle"] = str(args.keep_bundle) if args.keep_bundle else "(temporary)"

    cold, warm = runs["cold"]["seconds"], runs["warm"]["seconds"]
    embed_only = runs["embeddings_warm_fits_cold"]["seconds"]
    fingerprint = runs["cold"].get("seed_fingerprint") or {}
    report = {
        "benchmark": "training_time",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/training_time.py "
        + " ".join(argv or sys.argv[1:]),
        "machine": machine_info() | {"load_avg_1m_at_start": load_start, "load_avg_1m_at_end": _load()},
        "seed_files": files,
        "articles": fingerprint.get("articles", files),
        "sources": args.sources,
        "fit_command": "python -m training fit --seeds <seeds> --out <tmp> --cache-dir <cache> --holdout 0",
        "runs": runs,
        "ratios": {
            "cold_over_warm": round(cold / warm, 2),
            "cold_over_warm_again": round(cold / runs["warm_again"]["seconds"], 2),
            "cold_over_embeddings_only": round(cold / embed_only, 2),
            "embeddings_only_over_warm": round(embed_only / warm, 2),
        },
        "target_cold_over_warm": TARGET_RATIO,
        "meets_target": cold / warm >= TARGET_RATIO,
    }
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
