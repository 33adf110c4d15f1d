"""``--engine ray`` beside ``--engine local``: the same ``python -m training fit`` on the same seeds.

Runs alternate (local, ray, ray, local, ...) so a load that changes during the run weighs on both
engines alike. Each run is a fresh ``python -m training fit`` process with the fit cache off; its
embedding cache is empty (``--cache cold``: every text embedded, on the actor pool for ``ray``) or
one shared cache filled by a first, unmeasured local run (``--cache warm``: the engine's cost
where it has nothing to embed). It records the wall seconds of the whole command, the CPU seconds
of the processes it waited for (Ray's workers are the raylet's children and are counted only when
it reaps them), the steps the bundle's manifest times (``engine_start``, ``read``, ``embed``, the
fits) and the topic micro-F1, so the two engines are seen to build the same bundle.

Example::

    PYTHONPATH=. nice -n 10 .venv/bin/python -m benchmarks.engines --seeds ../shared/data/agnews \\
        --n 2000 --cache cold --out benchmarks/results/engines_agnews_2000_cold.json
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
from statistics import median
from typing import Any

from benchmarks.common import emit
from benchmarks.report import load_avg_1m, machine_info
from benchmarks.service_load import ROOT, base_env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fit(
    seeds: list[Path], eval_seeds: list[Path], out: Path, cache: Path, engine: str, workers: int
) -> dict[str, Any]:
    command = [sys.executable, "-m", "training", "fit", "--seeds", *map(str, seeds), "--out", str(out),
               "--cache-dir", str(cache), "--no-onnx", "--no-progress", "-q", "--engine", engine]  # fmt: skip
    command += ["--eval", *map(str, eval_seeds)] if eval_seeds else []
    command += ["--workers", str(workers)] if engine == "ray" else []
    # Fits are measured, not reused: the fit cache lives in the embedding cache's folder.
    shutil.rmtree(cache / "fits", ignore_errors=True)
    load, started, cpu = load_avg_1m(), time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=ROOT, env=base_env(), capture_output=True, text=True, check=False)
    seconds, cpu_s = time.perf_counter() - started, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"fit --engine {engine} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    manifest = json.loads((Path(summary["bundle"]) / "manifest.json").read_text())
    return {
        "engine": engine,
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu_s, 1),
        "steps_s": manifest["training"]["timings_s"],
        "steps_cpu_s": manifest["training"].get("cpu_s", {}),
        "topics_micro_f1": summary["metrics"].get("topics", {}).get("micro_f1"),
        "load_avg_1m_before": load,
        "load_avg_1m_after": load_avg_1m(),
    }


def _first_files(folders: list[Path], n: int | None, work: Path) -> list[Path]:
    """``folders`` as they are, or (``n``) a folder of links to the first ``n`` files of each."""
    if not n:
        return folders
    out = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file())[:n] if folder.is_dir() else [folder]
        target = work / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            (target / path.name).symlink_to(path.resolve())
        out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=Path, nargs="+", required=True, help="seed folders or files")
    parser.add_argument("--eval", type=Path, nargs="*", default=[], help="held-out seeds (fit --eval)")
    parser.add_argument("--n", type=int, help="only the first N seed files of each folder (--eval's too)")
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold")
    parser.add_argument(
        "--cache-from", type=Path, help="--cache warm: an embeddings.sqlite to start from (no filling run)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="local/ray pairs, alternating (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="--engine ray's actors (default 2)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        seeds = _first_files(args.seeds, args.n, work / "seeds")
        eval_seeds = _first_files(args.eval, args.n, work / "eval")
        warm = work / "warm-cache"
        if args.cache == "warm" and args.cache_from:
            warm.mkdir()
            shutil.copy(args.cache_from, warm / "embeddings.sqlite")
        elif args.cache == "warm":  # one unmeasured run fills the shared cache
            fit(seeds, eval_seeds, work / "out-fill", warm, "local", 1)
        order = [
            e for k in range(args.rounds) for e in (("local", "ray") if k % 2 == 0 else ("ray", "local"))
        ]
        runs = []
        for k, engine in enumerate(order):
            cache = warm if args.cache == "warm" else work / f"cache-{k}"
            runs.append(fit(seeds, eval_seeds, work / f"out-{k}", cache, engine, args.workers))
        by_engine = {e: [r["seconds"] for r in runs if r["engine"] == e] for e in ("local", "ray")}
        result = {
            "seeds": [str(p) for p in args.seeds],
            "eval": [str(p) for p in args.eval],
            "n_per_folder": args.n,
            "cache": args.cache,
            "workers": args.workers,
            "runs": runs,
            "median_seconds": {e: median(s) for e, s in by_engine.items()},
            # >= 1: ray as fast as local; the aim is >= 0.9 where ray cannot add cores.
            "local_over_ray": round(median(by_engine["local"]) / median(by_engine["ray"]), 3),
            "machine": machine_info(),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
