"""``python -m benchmarks``: run every benchmark, collect its JSON, put the headline figures in docs.

Each benchmark script runs as its own subprocess (a crash or a memory spike stays there) with sizes
that fit this 2-core machine; its JSON lands in ``benchmarks/results/`` and the runner records, per
benchmark, the exact command, the machine and the load average in ``benchmarks/results/runs.json``.
The headline table goes into docs/benchmarks.md between ``<!-- benchmarks:start -->`` and
``<!-- benchmarks:end -->``; without those markers it is printed instead.

Expensive benchmarks (ANN, SemHash, encoders, quality) are not rerun by default when a result is
already there: its figures are reused and marked so. ``--only NAME`` or ``--rerun`` runs them.
``--quick`` runs everything at smoke-test sizes into ``benchmarks/results/quick/`` and leaves the
table file alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.report import (
    END_MARK,
    START_MARK,
    Row,
    machine_info,
    render_table,
    replace_between_markers,
    rows_for,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Where the headline table lives, between the markers (README links to it).
TABLE_NAME = "docs/benchmarks.md"
TABLE_FILE = ROOT / TABLE_NAME
LARGE_BUNDLE = ".cache/benchmarks/bundle_10k"  # training_time keeps its bundle here for service_load


@dataclass(frozen=True)
class Bench:
    """How to run one benchmark script and where its JSON goes."""

    name: str
    default_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    result: str  # file name under the results folder
    takes_out: bool = True  # writes its JSON to --out; otherwise the runner saves its stdout
    expensive: bool = False  # reuse an existing result unless asked to rerun
    about: str = ""


BENCHMARKS: tuple[Bench, ...] = (
    Bench("encoders", ("--n", "500", "--rounds", "3", "--overlap-n", "1000", "--train-n", "1500"),
          ("--n", "32", "--rounds", "1", "--no-downstream"), "encoders.json", expensive=True,
          about="sentence-transformers fp32 vs ONNX int8 vs Model2Vec: articles/s and accuracy"),
    Bench("ann", ("--n", "100000", "--queries", "300"),
          ("--n", "5000", "--queries", "50", "--libs", "faiss", "hnswlib", "--ef-sweep", "64"),
          "ann_{n}.json", expensive=True,
          about="faiss AnnIndex vs hnswlib vs usearch: build, memory, p50/p99, recall@10 (1M: run by hand)"),
    Bench("semhash_compare", ("--n", "120000",), ("--n", "3000",), "semhash_compare.json", expensive=True,
          about="bulk dedup: our MinHash and embedding grouping vs SemHash"),
    Bench("pairs", ("--folds", "10", "--repeats", "5"), ("--folds", "3", "--repeats", "1"), "pairs.json",
          takes_out=False, about="SemEval pair scoring vs TF-IDF and MiniLM cosine"),
    Bench("quality", ("all",), ("agnews",), "quality.json", takes_out=False, expensive=True,
          about="topic tagger (reuters, agnews) and heat head (hn) vs plain baselines"),
    Bench("training_time", ("--n", "10000", "--keep-bundle", LARGE_BUNDLE), ("--n", "200",),
          "training_time.json", about="retrain on ~10k seeds: cold vs warm caches"),
    Bench("service_load", ("--texts", "256", "--rounds", "3", "--latency-requests", "200"),
          ("--texts", "48", "--rounds", "1", "--latency-requests", "20", "--warmup", "5",
           "--startup-repeats", "1"),
          "service_load.json", about="real uvicorn: throughput vs raw encoder, latency, start-up"),
)  # fmt: skip
BY_NAME = {bench.name: bench for bench in BENCHMARKS}


def _arg(args: Sequence[str], flag: str, default: str) -> str:
    return args[args.index(flag) + 1] if flag in args else default


def command_for(bench: Bench, quick: bool, results: Path) -> tuple[list[str], Path]:
    """The argv to run ``bench`` and the JSON file it produces."""
    args = list(bench.quick_args if quick else bench.default_args)
    out = results / bench.result.format(n=_arg(args, "--n", "x"))
    if bench.name == "service_load" and not quick and (ROOT / LARGE_BUNDLE / "manifest.json").is_file():
        args += ["--large-bundle", LARGE_BUNDLE]  # the ~10k bundle training_time left: start-up at scale
    if bench.takes_out:
        args += ["--out", os.path.relpath(out, ROOT)]
    return [sys.executable, "-m", f"benchmarks.{bench.name}", *args], out


def display(argv: Sequence[str]) -> str:
    """The command as a person would type it from the repository root."""
    python = os.path.relpath(argv[0], ROOT) if argv[0].startswith(str(ROOT)) else "python"
    return "PYTHONPATH=. " + shlex.join([python, *argv[1:]])


def run_one(bench: Bench, quick: bool, results: Path, timeout: float) -> dict[str, Any]:
    """Run ``bench`` as a subprocess; returns its run record (command, machine, seconds, status)."""
    argv, out = command_for(bench, quick, results)
    record: dict[str, Any] = {
        "command": display(argv),
        "machine": machine_info(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "result_file": os.path.relpath(out, ROOT),
        "reused": False,
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    print(f"== {bench.name}: {record['command']}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        # stderr passes through (progress); stdout is the JSON for the scripts without --out.
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        record["returncode"] = done.returncode
        if done.returncode == 0 and not bench.takes_out:
            json.loads(done.stdout)  # only valid JSON replaces a previous result
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(done.stdout)
    except subprocess.TimeoutExpired:
        record["returncode"] = "timeout"
    except json.JSONDecodeError:
        record["returncode"] = "no JSON on stdout"
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["machine"]["load_avg_1m_at_end"] = machine_info()["load_avg_1m"]
    print(f"== {bench.name}: {record['returncode']} in {record['seconds']} s", file=sys.stderr, flush=True)
    return record


def existing_result(bench: Bench, results: Path) -> Path | None:
    """The result a previous run left; for ANN the largest n (the headline is the biggest index)."""
    if bench.name != "ann":
        path = results / bench.result
        return path if path.is_file() else None

    def size(path: Path) -> tuple[int, float]:
        # The biggest index, then the newest run (it reflects the current AnnIndex).
        return int(json.loads(path.read_text()).get("n", 0)), path.stat().st_mtime

    candidates = sorted(results.glob("ann_*.json"), key=size)
    return candidates[-1] if candidates else None


def reused_record(bench: Bench, path: Path, previous: dict[str, Any] | None) -> dict[str, Any]:
    """A run record for a result not rerun: the runner's earlier record, else what the JSON says."""
    if previous and previous.get("result_file") == os.path.relpath(path, ROOT):
        return previous | {"reused": True}
    data = json.loads(path.read_text())
    return {
        "command": data.get("command", f"(unknown: see {path.name})"),
        "machine": data.get("machine"),
        "result_file": os.path.relpath(path, ROOT),
        "reused": True,
    }


def table_rows(records: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for name, record in records.items():
        path = ROOT / record.get("result_file", "")
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        command = record.get("command", "")
        if record.get("reused"):
            command += "  (earlier result, not rerun)"
        rows.extend(rows_for(name, data, command=command, machine=_machine_for(record, data)))
    return rows


def _machine_for(record: dict[str, Any], data: dict[str, Any]) -> dict[str, Any] | None:
    """The runner's machine record, with the CPU model from the result when the runner lacks one."""
    machine = dict(record.get("machine") or data.get("machine") or {})
    if isinstance(data.get("machine"), dict):
        machine = data["machine"] | machine
    return machine or None


def table_block(rows: list[Row]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    return (
        f"Headline figures, collected by `python -m benchmarks` on {when}. Each row's command reproduces "
        "it; results JSON in `benchmarks/results/`. Absolute times drift on this shared machine: compare "
        "ratios.\n\n" + render_table(rows)
    )


def write_table(block: str, target: Path) -> bool:
    """Replace the block between the markers; False when the file has none (nothing written)."""
    if not target.is_file():
        return False
    updated = replace_between_markers(target.read_text(), block)
    if updated is None:
        return False
    target.write_text(updated)
    return True


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(b.name for b in BENCHMARKS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmark scripts as subprocesses, collect their JSON in benchmarks/results/ "
        "and write a table of headline figures (value, baseline, ratio, command, machine) into "
        f"{TABLE_NAME} between {START_MARK} and {END_MARK}. Benchmarks: {names}.",
        epilog="\n".join(f"  {b.name:16} {b.about}" for b in BENCHMARKS)
        + "\n\nExpensive ones (encoders, ann, semhash_compare, quality) reuse an existing result "
        "unless named in --only or --rerun is given.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes; results to results/quick/")
    parser.add_argument("--only", nargs="+", choices=list(BY_NAME), metavar="NAME", help="run only these")
    parser.add_argument("--rerun", action="store_true", help="rerun expensive benchmarks too")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark (default 3600)")
    parser.add_argument(
        "--no-write", "--no-readme", action="store_true", help="print the table; leave the table file alone"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="run nothing: render the table from the results there"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = RESULTS / "quick" if args.quick else RESULTS
    runs_file = results / "runs.json"
    previous: dict[str, Any] = json.loads(runs_file.read_text()) if runs_file.is_file() else {}
    chosen = [BY_NAME[name] for name in args.only] if args.only else list(BENCHMARKS)
    records: dict[str, dict[str, Any]] = {}
    failed = []
    for bench in BENCHMARKS:
        existing = existing_result(bench, results)
        runs = bench in chosen and not args.table_only
        if runs and bench.expensive and not (args.only or args.rerun or args.quick) and existing is not None:
            runs = False  # expensive and already measured: reuse, say so in the table
        if runs:
            records[bench.name] = run_one(bench, args.quick, results, args.timeout)
            if records[bench.name]["returncode"] != 0:
                failed.append(bench.name)
        elif existing is not None:
            records[bench.name] = reused_record(bench, existing, previous.get(bench.name))
    results.mkdir(parents=True, exist_ok=True)
    runs_file.write_text(json.dumps(previous | records, indent=2) + "\n")

    block = table_block(table_rows(records))
    if args.quick or args.no_write:
        print(block)
    elif write_table(block, TABLE_FILE):
        print(f"{TABLE_NAME}: benchmark table updated ({len(records)} benchmarks)", file=sys.stderr)
    else:
        print(block)
        print(
            f"{TABLE_NAME} has no {START_MARK} ... {END_MARK} markers: add them where the table belongs, "
            "then rerun with --table-only.",
            file=sys.stderr,
        )
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
