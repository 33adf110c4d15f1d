"""The benchmark runner renders its headline table from results JSON, and its CLI answers --help.

No benchmark runs here and nothing is timed: the inputs are minimal result documents shaped like
the scripts' output.
"""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT

from benchmarks.__main__ import BENCHMARKS, build_parser, command_for
from benchmarks.report import END_MARK, START_MARK, render_table, replace_between_markers, rows_for

MACHINE = {"cpu_model": "Test CPU", "cpus": 2, "load_avg_1m": 0.5}

SERVICE_RESULT = {
    "throughput": {
        "concurrency": 32,
        "raw_encoder_articles_per_s": 100.0,
        "service_articles_per_s": 95.0,
        "unbatched_articles_per_s": 40.0,
        "ratio_to_raw_median": 0.95,
    },
    "latency": {"batched": {"p50_ms": 12.0, "p99_ms": 40.0}, "unbatched": {"p50_ms": 10.0, "p99_ms": 30.0}},
    "startup": {"small": {"median_s": 4.0, "indexed_articles": 4}},
}
TRAINING_RESULT = {
    "articles": 10000,
    "runs": {
        "cold": {"seconds": 300.0},
        "warm": {"seconds": 10.0},
        "embeddings_warm_fits_cold": {"seconds": 60.0},
    },
}


def test_table_has_a_row_per_headline_figure_with_value_baseline_ratio_command_and_machine():
    rows = rows_for(
        "service_load", SERVICE_RESULT, command="python -m benchmarks.service_load", machine=MACHINE
    )
    rows += rows_for(
        "training_time", TRAINING_RESULT, command="python -m benchmarks.training_time", machine=MACHINE
    )
    table = render_table(rows)
    lines = table.splitlines()
    assert lines[0] == "| figure | value | baseline | ratio | command | machine |"
    assert len(lines) == 2 + len(rows)
    assert all(line.count(" | ") == 5 for line in lines[2:])  # six cells, no stray pipes
    throughput = next(r for r in rows if r.figure.startswith("service throughput"))
    assert throughput.value == "95"
    assert "0.95" in throughput.ratio
    warm = next(r for r in rows if "warm caches" in r.figure)
    assert warm.value == "10 s" and "30" in warm.ratio  # cold/warm = 300/10
    assert "Test CPU, 2 cores, load 0.5" in table
    assert "`python -m benchmarks.training_time`" in table


def test_missing_keys_give_fewer_rows_not_an_error():
    assert rows_for("service_load", {}, command="x", machine=None) == []
    assert rows_for("quality", {"reuters": {}}, command="x", machine=None) == []
    assert rows_for("not-a-benchmark", {"a": 1}, command="x", machine=None) == []


def test_readme_block_is_replaced_between_the_markers_only():
    text = f"# Title\n\nintro\n{START_MARK}\nold table\n{END_MARK}\nafter\n"
    updated = replace_between_markers(text, "| new |")
    assert updated == f"# Title\n\nintro\n{START_MARK}\n| new |\n{END_MARK}\nafter\n"
    assert replace_between_markers("# no markers here\n", "| new |") is None


def test_every_benchmark_has_a_command_writing_into_the_results_folder(tmp_path):
    for bench in BENCHMARKS:
        argv, out = command_for(bench, quick=True, results=tmp_path)
        assert argv[1:3] == ["-m", f"benchmarks.{bench.name}"]
        assert out.parent == tmp_path
    assert build_parser().parse_args(["--quick", "--only", "pairs"]).only == ["pairs"]


def test_runner_help_works():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "service_load" in done.stdout and "--quick" in done.stdout
