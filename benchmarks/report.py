"""Headline figures of the benchmark results, as a Markdown table for docs/benchmarks.md.

Each benchmark's JSON is reduced to a few `Row`s (figure, value, baseline, ratio, command, machine)
by one extractor per benchmark. Extractors read only keys the scripts write and skip a row whose
keys are missing, so a result from an older script version renders what it can instead of failing.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_MARK = "<!-- benchmarks:start -->"
END_MARK = "<!-- benchmarks:end -->"


@dataclass(frozen=True)
class Row:
    figure: str
    value: str
    baseline: str
    ratio: str
    command: str
    machine: str


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (what the figures were measured on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg_1m() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def machine_info() -> dict[str, Any]:
    """The machine facts every result records: the CPU, cores and the load when measured."""
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": load_avg_1m(),
    }


def machine_text(machine: Mapping[str, Any] | None) -> str:
    """``AMD EPYC, 2 cores, load 1.2`` from a result's (or the runner's) machine record."""
    if not machine:
        return "not recorded"
    parts = [str(machine.get("cpu_model") or "CPU model not recorded")]
    if machine.get("cpus"):
        parts.append(f"{machine['cpus']} cores")
    for key in ("load_avg_1m", "load_avg_1m_at_start", "load_avg_1m_at_end"):
        if isinstance(machine.get(key), int | float):
            parts.append(f"load {machine[key]:.1f}")
            break
    return ", ".join(parts)


def _num(value: Any, unit: str = "", digits: int = 3) -> str:
    if not isinstance(value, int | float):
        return "–"
    text = f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return f"{text} {unit}".strip()


def _ratio(value: Any, baseline: Any, label: str) -> str:
    if not isinstance(value, int | float) or not isinstance(baseline, int | float) or baseline == 0:
        return "–"
    return f"{value / baseline:.2f}x ({label})"


def _get(data: Mapping[str, Any], path: str) -> Any:
    """``a.b.c`` lookup; None when any step is missing."""
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


# --- one extractor per benchmark: (result JSON) -> [(figure, value, baseline, ratio)] ---------------

Cells = tuple[str, str, str, str]


def _encoders(data: Mapping[str, Any]) -> list[Cells]:
    fp32 = _get(data, "results.st_fp32.articles_per_s")
    rows: list[Cells] = []
    n = _get(data, "texts.throughput_n")
    for name, label in (("onnx_int8", "ONNX int8 MiniLM"), ("model2vec", "Model2Vec static")):
        speed = _get(data, f"results.{name}.articles_per_s")
        if speed is not None:
            rows.append(
                (
                    f"encoder throughput, {label} (n={n}), articles/s",
                    _num(speed),
                    f"{_num(fp32)} (sentence-transformers fp32)",
                    _ratio(speed, fp32, "speed-up"),
                )
            )
    f1, f1_base = (_get(data, f"results.{k}.reuters_topic_micro_f1") for k in ("onnx_int8", "st_fp32"))
    if f1 is not None:
        rows.append(("reuters topic micro-F1 on ONNX int8 vectors", _num(f1), _num(f1_base), "–"))
    return rows


def _ann_ef(by_ef: Mapping[str, Any], target: float) -> str:
    """The smallest measured beam width whose unfiltered recall meets the target (else the widest):
    the setting a deployment would pick, and the one model/index.py uses at scale."""
    widths = sorted(by_ef, key=int)
    for ef in widths:
        if (by_ef[ef].get("unfiltered", {}).get("recall_at_10") or 0) >= target:
            return ef
    return widths[-1] if widths else "64"


def _ann(data: Mapping[str, Any]) -> list[Cells]:
    rows: list[Cells] = []
    n = data.get("n")
    results = data.get("results", {})
    ef = _ann_ef(results.get("faiss", {}).get("by_ef_search", {}), _get(data, "targets.recall_at_10") or 0.95)
    base = results.get("hnswlib", {}).get("by_ef_search", {}).get(ef, {}).get("unfiltered", {})
    ours = results.get("faiss", {}).get("by_ef_search", {}).get(ef, {}).get("unfiltered", {})
    if ours:
        base_p50 = base.get("p50_ms")
        rows.append(
            (
                f"ANN single-query p50, faiss AnnIndex, n={n}, ef={ef}, unfiltered",
                _num(ours.get("p50_ms"), "ms"),
                f"{_num(base_p50, 'ms')} (hnswlib)" if base else "–",
                _ratio(ours.get("p50_ms"), base_p50, "faiss/hnswlib time"),
            )
        )
        rows.append(
            (
                f"ANN recall@10, faiss AnnIndex, n={n}, ef={ef}",
                _num(ours.get("recall_at_10"), digits=4),
                f"{_num(base.get('recall_at_10'), digits=4)} (hnswlib)" if base else "–",
                "–",
            )
        )
    rss = results.get("faiss", {}).get("rss_delta_mb")
    if rss is not None:
        rows.append(
            (
                f"ANN index memory (RSS growth), faiss float16 HNSW, n={n}",
                _num(rss, "MB"),
                f"{_num(results.get('hnswlib', {}).get('rss_delta_mb'), 'MB')} (hnswlib)"
                if "hnswlib" in results
                else f"target ≤ {_num(_get(data, 'targets.rss_mb_at_1M'), 'MB')} at 1M",
                "–",
            )
        )
    provider = results.get("faiss", {}).get("by_ef_search", {}).get(ef, {}).get("provider", {})
    if provider:
        rows.append(
            (
                f"ANN p50 with a provider filter, faiss, n={n}",
                _num(provider.get("p50_ms"), "ms"),
                f"target ≤ {_num(_get(data, 'targets.p50_ms'), 'ms')}",
                "–",
            )
        )
    return rows


def _semhash(data: Mapping[str, Any]) -> list[Cells]:
    ours, theirs = _get(data, "results.ours_embedding"), _get(data, "results.semhash")
    if not ours or not theirs:
        return []
    n = data.get("texts")
    return [
        (
            f"dedup wall time, {n} texts, embedding + AnnIndex",
            _num(ours.get("seconds"), "s"),
            f"{_num(theirs.get('seconds'), 's')} (SemHash)",
            _ratio(theirs.get("seconds"), ours.get("seconds"), "SemHash/ours time"),
        ),
        (
            "dedup recall of injected near-duplicates",
            _num(ours.get("injected_variant_recall"), digits=4),
            f"{_num(theirs.get('injected_variant_recall'), digits=4)} (SemHash)",
            "–",
        ),
    ]


def _pairs(data: Mapping[str, Any]) -> list[Cells]:
    ours, tfidf = data.get("pair_scorer_cv"), data.get("tfidf_cosine")
    if not ours or not tfidf:
        return []
    return [
        (
            f"SemEval pairs |Pearson r|, PairScorer ({data.get('cv', 'CV')})",
            _num(ours.get("abs_pearson"), digits=3),
            f"{_num(tfidf.get('abs_pearson'), digits=3)} (TF-IDF cosine)",
            _ratio(ours.get("abs_pearson"), tfidf.get("abs_pearson"), "ours/baseline"),
        ),
        (
            "SemEval same-story F1, PairScorer",
            _num(ours.get("same_story_f1"), digits=3),
            f"{_num(tfidf.get('same_story_f1'), digits=3)} (TF-IDF cosine)",
            _ratio(ours.get("same_story_f1"), tfidf.get("same_story_f1"), "ours/baseline"),
        ),
    ]


def _quality(data: Mapping[str, Any]) -> list[Cells]:
    rows: list[Cells] = []
    specs = (
        (
            "reuters test micro-F1, TopicTagger",
            "reuters.tagger.micro_f1",
            "reuters.baseline_tfidf_linearsvc.micro_f1",
            "TF-IDF + LinearSVC",
        ),
        (
            "reuters test macro-F1, TopicTagger",
            "reuters.tagger.macro_f1",
            "reuters.baseline_tfidf_linearsvc.macro_f1",
            "TF-IDF + LinearSVC",
        ),
        (
            "agnews 5-fold accuracy, TopicTagger",
            "agnews.tagger_accuracy",
            "agnews.baseline_tfidf_logreg_accuracy",
            "TF-IDF + logreg",
        ),
        (
            "hn heat Spearman, ScoreHead",
            "hn.score_head.spearman",
            "hn.baseline_provider_mean.spearman",
            "provider mean",
        ),
    )
    for figure, ours_key, base_key, base_name in specs:
        ours, base = _get(data, ours_key), _get(data, base_key)
        if ours is not None:
            rows.append(
                (figure, _num(ours), f"{_num(base)} ({base_name})", _ratio(ours, base, "ours/baseline"))
            )
    return rows


def _service(data: Mapping[str, Any]) -> list[Cells]:
    rows: list[Cells] = []
    tp = data.get("throughput", {})
    raw, batched = tp.get("raw_encoder_articles_per_s"), tp.get("service_articles_per_s")
    if batched is not None:
        rows.append(
            (
                f"service throughput, {tp.get('concurrency')} clients x 1-article /v1/classify, art/s",
                _num(batched),
                f"{_num(raw)} (raw encoder in-process)",
                f"{_num(tp.get('ratio_to_raw_median'))}x (service/raw; the Python client takes ~15% of CPU)",
            )
        )
    wrk = tp.get("wrk_articles_per_s")
    if wrk is not None:
        rows.append(
            (
                f"service throughput, {tp.get('concurrency')} wrk connections x 1-article /v1/classify, a/s",
                _num(wrk),
                f"{_num(raw)} (raw encoder in-process)",
                f"{_num(tp.get('ratio_wrk_to_raw_median'))}x (service/raw, target ≥ 0.9)",
            )
        )
    unbatched = tp.get("unbatched_articles_per_s")
    if unbatched is not None and batched is not None:
        rows.append(
            (
                "service throughput without micro-batching (BATCH_MAX_SIZE=1), articles/s",
                _num(unbatched),
                f"{_num(batched)} (micro-batched)",
                _ratio(unbatched, batched, "unbatched/batched"),
            )
        )
    lat = data.get("latency", {}).get("batched", {})
    lat_unbatched = data.get("latency", {}).get("unbatched", {})
    for pct, target in (("p50_ms", 15), ("p99_ms", 50)):
        if lat.get(pct) is not None:
            rows.append(
                (
                    f"single-request /v1/classify latency {pct[:3]} (target ≤ {target} ms)",
                    _num(lat[pct], "ms"),
                    f"{_num(lat_unbatched.get(pct), 'ms')} (no micro-batching)" if lat_unbatched else "–",
                    _ratio(lat[pct], target, "of target"),
                )
            )
    for name, entry in data.get("startup", {}).items():
        if isinstance(entry, Mapping) and entry.get("median_s") is not None:
            rows.append(
                (
                    f"service start → /readyz 200, {name} bundle ({entry.get('indexed_articles')} indexed)",
                    _num(entry["median_s"], "s"),
                    "target ≤ 5 s",
                    _ratio(entry["median_s"], 5.0, "of target"),
                )
            )
    return rows


def _training(data: Mapping[str, Any]) -> list[Cells]:
    runs = data.get("runs", {})
    cold = _get(runs, "cold.seconds")
    if cold is None:
        return []
    n = data.get("articles")
    rows: list[Cells] = []
    warm = _get(runs, "warm.seconds")
    if warm is not None:
        rows.append(
            (
                f"retrain time, {n} seeds, warm caches (embeddings + fits)",
                _num(warm, "s"),
                f"{_num(cold, 's')} (cold: empty cache)",
                f"{_num(cold / warm if warm else None)}x (cold/warm, target ≥ 10)",
            )
        )
    embed_only = _get(runs, "embeddings_warm_fits_cold.seconds")
    if embed_only is not None:
        rows.append(
            (
                f"retrain time, {n} seeds, embedding cache only (fit cache cleared)",
                _num(embed_only, "s"),
                f"{_num(cold, 's')} (cold)",
                f"{_num(cold / embed_only if embed_only else None)}x (cold/this)",
            )
        )
    return rows


EXTRACTORS: dict[str, Callable[[Mapping[str, Any]], list[Cells]]] = {
    "encoders": _encoders,
    "ann": _ann,
    "semhash_compare": _semhash,
    "pairs": _pairs,
    "quality": _quality,
    "service_load": _service,
    "training_time": _training,
}


def rows_for(
    name: str, data: Mapping[str, Any], *, command: str, machine: Mapping[str, Any] | None
) -> list[Row]:
    """The headline rows of benchmark ``name``'s result ``data`` (unknown names give none)."""
    extractor = EXTRACTORS.get(name)
    if extractor is None:
        return []
    return [Row(*cells, command=command, machine=machine_text(machine)) for cells in extractor(data)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(rows: list[Row]) -> str:
    """A Markdown table, one line per row; commands in backticks so they copy cleanly."""
    lines = [
        "| figure | value | baseline | ratio | command | machine |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        command = f"`{_cell(row.command)}`" if row.command else "–"
        cells = [_cell(c) for c in (row.figure, row.value, row.baseline, row.ratio)]
        lines.append("| " + " | ".join([*cells, command, _cell(row.machine)]) + " |")
    return "\n".join(lines)


def replace_between_markers(text: str, block: str) -> str | None:
    """``text`` with everything between the benchmark markers replaced by ``block``; None if no markers."""
    pattern = re.compile(re.escape(START_MARK) + r".*?" + re.escape(END_MARK), re.DOTALL)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda _: f"{START_MARK}\n{block}\n{END_MARK}", text, count=1)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None
