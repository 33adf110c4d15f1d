"""The training CLI end to end on small real data: fit, evaluate, reload, retrain."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, SAMPLE_SEED, corpus_path, shared_embedder

from model.articles.seeds import read_seeds
from model.bundle import FORMAT_VERSION, MANIFEST, resolve_bundle
from model.errors import BundleError
from model.news_model import NewsModel


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Path:
    """The user's sample seed, 120 AG News articles (topics) and 120 Hacker News stories (heat)."""
    folder = tmp_path_factory.mktemp("seeds")
    shutil.copy(SAMPLE_SEED, folder)
    for name in ("agnews", "hn"):
        for path in sorted(corpus_path(name).glob("*.md"))[:120]:
            shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def trained(seeds, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cache = root / "cache"
    result = run_cli(
        "fit",
        "--seeds",
        str(seeds),
        "--out",
        str(root / "bundles"),
        "--cache-dir",
        str(cache),
        "--no-progress",
        "--max-memory-gb",
        "4",
    )
    assert result.returncode == 0, result.stderr
    return root, cache, json.loads(result.stdout)


def test_fit_writes_a_complete_versioned_bundle(trained, seeds):
    root, _, summary = trained
    folder = resolve_bundle(root / "bundles")
    assert str(folder) == summary["bundle"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["embedding"] == {**manifest["embedding"], "dim": 384, "normalized": True}
    assert {"World", "Sports", "Business", "Sci/Tech", "AI"} <= set(manifest["labels"])
    assert set(manifest["thresholds"]) == set(manifest["labels"])
    assert manifest["scores"] == ["heat"]  # hn carries heat; too few quality values to train on
    assert manifest["seed_fingerprint"]["articles"] == len(read_seeds([seeds]))
    assert manifest["metrics"]["topics"]["n"] > 0
    assert "evaluated_on" in manifest["metrics"]
    # each step's peak resident memory sits beside its seconds
    assert set(manifest["training"]["peak_rss_mb"]) <= set(manifest["training"]["timings_s"])
    assert manifest["training"]["peak_rss_mb"]["topics"] > 0
    # Each fit step's CPU seconds beside its wall seconds.
    assert set(manifest["training"]["cpu_s"]) <= set(manifest["training"]["timings_s"])
    assert manifest["training"]["cpu_s"]["topics"] > 0
    for name in manifest["files"]:
        assert (folder / name).is_file()
    card = (folder / "README.md").read_text()
    assert manifest["version"] in card
    assert not list((root / "bundles").glob(".tmp-*")), "no staging folder may be left behind"


def test_loaded_bundle_classifies_with_topics_and_heat_intervals(trained):
    root, _, _ = trained
    model = NewsModel.load(root / "bundles", embedder=shared_embedder())
    [sport, tech] = model.classify(
        [
            {
                "title": "Yankees beat Red Sox 5-3",
                "excerpt": "A late home run sealed the win in the ninth inning.",
            },
            {"title": "Show HN: a faster JSON parser in Rust", "provider": {"domain": "github.com"}},
        ],
        all_scores=True,
    )
    assert sport.labels and sport.labels[0] == "Sports"
    assert len(sport.all_topics) == len(model.labels)
    heat = tech.scores["heat"]
    assert heat.low <= heat.value <= heat.high
    assert heat.low >= 0


def test_evaluate_prints_one_json_object_with_the_documented_keys(trained, seeds):
    root, cache, _ = trained
    result = run_cli(
        "evaluate",
        "--model",
        str(root / "bundles"),
        "--seeds",
        str(seeds),
        "--cache-dir",
        str(cache),
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    for key in ("micro_f1", "macro_f1", "accuracy", "n", "per_label"):
        assert key in metrics["topics"]
    assert 0.5 < metrics["topics"]["micro_f1"] <= 1.0  # seen data: must fit it well
    assert {"n", "mae", "spearman"} <= set(metrics["heat"])
    assert 100 <= metrics["heat"]["n"] <= 120
    assert {"recall_at_10", "mrr"} <= set(metrics["related"])


def test_retrain_on_unchanged_seeds_reuses_embeddings_and_fits(trained, seeds):
    root, cache, first = trained
    result = run_cli(
        "fit",
        "--seeds",
        str(seeds),
        "--out",
        str(root / "bundles"),
        "--cache-dir",
        str(cache),
        "--no-progress",
        "--holdout",
        "0.2",  # as the first fit: the same fixed split, so the same training data
        "--max-memory-gb",
        "4",  # and the same topic sample size
    )
    assert result.returncode == 0, result.stderr
    assert "reused the fit" in result.stderr
    second = json.loads(result.stdout)
    assert second["version"] != first["version"]
    assert resolve_bundle(root / "bundles").name == second["version"]  # newest wins


def test_tampered_bundle_is_refused_with_the_file_named(trained, tmp_path):
    root, _, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(resolve_bundle(root / "bundles"), copy)
    (copy / "pairs.joblib").write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"pairs\.joblib: sha256 differs"):
        NewsModel.load(copy, embedder=shared_embedder())


def test_other_format_version_is_refused(trained, tmp_path):
    root, _, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(resolve_bundle(root / "bundles"), copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["format_version"] = 99
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format 99"):
        NewsModel.load(copy, embedder=shared_embedder())


def test_missing_bundle_says_how_to_train_one(tmp_path):
    with pytest.raises(BundleError, match="python -m training fit"):
        resolve_bundle(tmp_path / "nothing")


def test_malformed_seed_fails_with_file_and_field(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("---\ntitle: Fine\nquality: 140\n---\n")
    result = run_cli("fit", "--seeds", str(bad), "--out", str(tmp_path / "b"), "--no-cache", "--no-progress")
    assert result.returncode == 2
    assert f"{bad}: quality: expected a number from 0 to 100, got 140" in result.stderr
    assert "Traceback" not in result.stderr


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2 and a single `error: ...` line naming what is wrong; never a traceback."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["fit", "evaluate", "dedup"])
def test_empty_seeds_folder_is_a_one_line_error(command, tmp_path, trained):
    empty = tmp_path / "empty"
    empty.mkdir()
    extra = {
        "fit": ["--out", str(tmp_path / "b")],
        "evaluate": ["--model", str(trained[0] / "bundles")],
        "dedup": ["--out", str(tmp_path / "report.jsonl")],
    }[command]
    result = run_cli(command, "--seeds", str(empty), *extra, "--no-cache", "--no-progress")
    _assert_one_line_error(result, str(empty), "seeds: no articles found")


def test_seeds_that_are_all_invalid_are_an_error_even_when_skipped(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("---\ntitle: Fine\nquality: 140\n---\n")
    result = run_cli(
        "fit", "--seeds", str(tmp_path), "--out", str(tmp_path / "b"), "--skip-invalid", "--no-cache"
    )
    assert f"skipped: {bad}: quality" in result.stderr
    _assert_one_line_error(result, "no articles found (1 files skipped as invalid)")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("a\tb\n1\t2\n", "missing columns"),
        ("id1\tid2\toverall\ttitle1\ttitle2\texcerpt1\texcerpt2\nx\ty\tlots\tA\tB\t\t\n", ":2: overall"),
        (None, "pairs file ([Errno 2] No such file"),
    ],
    ids=["missing-columns", "bad-number", "missing-file"],
)
def test_bad_pairs_file_is_a_one_line_error_before_any_fitting(content, needle, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    if content is not None:
        pairs.write_text(content)
    result = run_cli(
        "fit", "--seeds", str(SAMPLE_SEED), "--out", str(tmp_path / "b"), "--pairs", str(pairs), "--no-cache"
    )
    _assert_one_line_error(result, str(pairs), needle)
    assert not (tmp_path / "b").exists()


def test_corrupt_index_in_a_bundle_is_a_one_line_error(trained, tmp_path):
    root, _, _ = trained
    copy = tmp_path / "bundle"
    shutil.copytree(resolve_bundle(root / "bundles"), copy)
    damaged = copy / "index" / "vectors.npy"
    damaged.write_bytes(b"not a numpy file")
    # Re-sign the damaged file, so the manifest check passes and the index loader meets it.
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["files"]["index/vectors.npy"] = hashlib.sha256(damaged.read_bytes()).hexdigest()
    (copy / MANIFEST).write_text(json.dumps(manifest))
    result = run_cli("evaluate", "--model", str(copy), "--seeds", str(SAMPLE_SEED), "--no-progress")
    _assert_one_line_error(result, str(copy / "index"), "unreadable article index")


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("fit", "evaluate", "dedup"):
        assert command in result.stdout
    fit_help = run_cli("fit", "--help").stdout
    for option in ("--seeds", "--out", "--eval", "--pairs", "--skip-invalid", "--holdout"):
        assert option in fit_help


def test_dedup_reports_url_and_text_duplicates_with_evidence(tmp_path):
    folder = tmp_path / "import"
    folder.mkdir()
    shutil.copy(SAMPLE_SEED, folder)
    body = (
        "Amazon did not respond to questions about it. Civil rights groups have pushed the company to stop."
    )
    (folder / "amp_copy.md").write_text(
        "---\ntitle: Amazon suspends police use of facial recognition\n"
        "webUrl: https://www-courthousenews-com.cdn.ampproject.org/c/s/www.courthousenews.com/"
        "amazon-suspends-police-use-of-its-facial-recognition/amp/?utm_source=feed\n---\n"
    )
    (folder / "wire_a.md").write_text(f'---\ntitle: Wire copy\nexcerpt: "{body}"\n---\n')
    (folder / "wire_b.md").write_text(f'---\ntitle: Wire copy (updated)\nexcerpt: "{body}"\n---\n')
    report = tmp_path / "report.jsonl"
    result = run_cli("dedup", "--seeds", str(folder), "--out", str(report), "--no-cache", "--no-progress")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in report.read_text().splitlines()]
    assert records[0]["type"] == "summary"
    groups = [r for r in records if r["type"] == "duplicate_group"]
    # The AMP-cache copy merges with the sample at read time (one canonical URL, one id);
    # the two wire copies share an excerpt under different headlines.
    assert records[0]["articles"] == 6
    assert len(groups) == 1
    assert {"excerpt"} <= set(groups[0]["kinds"])
    assert len(groups[0]["article_ids"]) == 2
    assert any(r["type"] == "story" for r in records)


def test_bundle_ships_an_int8_encoder_that_agrees_with_fp32(trained):
    root, _, _ = trained
    folder = resolve_bundle(root / "bundles")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["embedding"]["serving_backends"] == ["torch", "onnx-int8"]
    assert any(name.startswith("encoder/") for name in manifest["files"])
    fast = NewsModel.load(folder)  # encoder="auto": the bundle's ONNX export
    assert fast.embedder.backend == "onnx-int8"
    texts = ["Yankees beat Red Sox 5-3 in the ninth", "Show HN: a faster JSON parser in Rust"]
    int8 = fast.embedder.encode(texts)
    fp32 = shared_embedder().encode(texts)
    assert (int8 * fp32).sum(axis=1).min() > 0.97
    assert NewsModel.load(folder, encoder="torch").embedder.backend == "torch"


def test_fit_measures_the_exported_encoder_it_serves_with(trained):
    root, _, _ = trained
    manifest = json.loads((resolve_bundle(root / "bundles") / MANIFEST).read_text())
    export = manifest["metrics"]["export"]
    assert export["encoder"].startswith("all-MiniLM-L6-v2-onnx-int8@")
    assert export["texts"] > 0 and "evaluation seeds" in export["texts_from"]
    assert 0.98 <= export["cosine_min"] <= export["cosine_mean"] < 1.0
    # The same heads on the same texts, fed each encoder's vectors; the trained figures are the bundle's.
    assert export["trained"]["topics"]["micro_f1"] == manifest["metrics"]["topics"]["micro_f1"]
    assert abs(export["exported"]["topics"]["micro_f1"] - export["trained"]["topics"]["micro_f1"]) < 0.1
    assert export["tolerance"] == {"max_drop": 0.02, "min_cosine": 0.98}


def test_fit_refuses_a_bundle_whose_export_drifts_beyond_the_tolerance(trained, seeds, tmp_path):
    _, cache, _ = trained
    out = tmp_path / "bundles"
    result = run_cli(
        "fit",
        "--seeds",
        str(seeds),
        "--out",
        str(out),
        "--cache-dir",
        str(cache),  # the first fit's embeddings and fits: only the check runs anew
        "--no-progress",
        "--export-tolerance",
        "-1",  # the int8 encoder would have to beat the trained one by a whole F1: nothing passes
    )
    _assert_one_line_error(result, "int8 ONNX encoder drifts", "micro_f1", "--export-tolerance")
    assert not out.exists() or not any(out.iterdir())  # no bundle, no ledger entry


def test_the_ledger_records_a_candidate_as_trained_and_a_hand_fit_as_live(tmp_path):
    from model.ledger import live_version, read_ledger
    from training.trainer import record_trained_bundle

    for version in ("v1", "v2", "v3"):
        (tmp_path / version).mkdir()
    record_trained_bundle(tmp_path, "v1", candidate=False)
    assert read_ledger(tmp_path)["events"] == []  # no ledger yet: the newest version is live anyway
    record_trained_bundle(tmp_path, "v2", candidate=True)
    assert live_version(tmp_path) is None  # a challenger never goes live by being trained
    record_trained_bundle(tmp_path, "v3", candidate=False)
    assert live_version(tmp_path) == "v3"  # with a ledger, a hand-run fit serves its bundle next
    assert [event["decision"] for event in read_ledger(tmp_path)["events"]] == ["trained", "promoted"]


def test_dedup_takes_the_encoder_by_the_names_fit_takes(tmp_path):
    folder = tmp_path / "import"
    folder.mkdir()
    (folder / "en.md").write_text(
        "---\ntitle: German government approves coal phase-out by 2038\n"
        "excerpt: The cabinet on Wednesday passed the law to end coal-fired power generation.\n---\n"
    )
    (folder / "de.md").write_text(
        "---\ntitle: Bundesregierung beschließt den Kohleausstieg bis 2038\n"
        "excerpt: Das Kabinett hat am Mittwoch das Gesetz zum Ausstieg aus der Kohleverstromung "
        "verabschiedet.\n---\n"
    )
    report = tmp_path / "report.jsonl"
    args = ("dedup", "--seeds", str(folder), "--out", str(report), "--no-cache", "--no-progress")
    result = run_cli(*args, "--encoder", "e5-multilingual")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["encoder"] == "e5-multilingual" and summary["articles"] == 2
    refused = run_cli(*args, "--encoder", "nope")
    assert refused.returncode == 2 and "e5-multilingual" in refused.stderr
