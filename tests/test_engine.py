"""Seeds as Parquet shards, and `--engine ray` against `--engine local` on the same seeds.

The Ray tests start a real local Ray (seconds each) and run only where `ray` is importable:
`make install` (and so CI) installs the `ray` extra, so there they run.
"""

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, corpus_path, shared_embedder
from test_training_cli import run_cli

from model.articles.seeds import read_seeds, split_front_matter
from model.bundle import MANIFEST
from model.errors import SeedFormatError

pa = pytest.importorskip("pyarrow", reason="Parquet seeds need pyarrow (the `ray` extra installs it)")
pq = pytest.importorskip("pyarrow.parquet")

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install -e '.[ray]'; make install and CI install it)",
)

RECORDS = [
    {
        "title": "Central bank raises rates by half a point",
        "excerpt": "The move was expected by most economists.",
        "publishedDateTime": "2024-03-05T10:00:00Z",
        "webUrl": "https://money.example/rates",
        "topics": ["economy"],
        "quality": 70,
        "related": [{"title": "Markets shrug at the rate rise", "webUrl": "https://wire.example/markets"}],
    },
    {"title": "Striker signs a four-year contract", "topics": ["sport"], "heat": 12.5},
    {"title": "A third article with no optional fields"},
]


def _as_jsonable(value):
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {key: _as_jsonable(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_as_jsonable(inner) for inner in value]
    return value


def _table(rows: list[dict]):
    """Rows as a table whose columns are the union of their fields (absent: null)."""
    columns = dict.fromkeys(key for row in rows for key in row)
    return pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows])


def write_shards(records: list[dict], folder: Path, per_shard: int) -> Path:
    """``records`` as Parquet shards of ``per_shard`` rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(records), per_shard)):
        pq.write_table(_table(records[start : start + per_shard]), folder / f"{number:03d}.parquet")
    return folder


def _without_source(corpus):
    return {
        key: (a.title, a.excerpt, a.published_at, a.topics, a.quality, a.heat, a.related_ids, dict(a.urls))
        for key, a in corpus.articles.items()
    }


def test_parquet_seeds_read_like_the_same_jsonl(tmp_path):
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    shards = write_shards(RECORDS, tmp_path / "shards", per_shard=2)
    expected = read_seeds([jsonl])
    for paths in ([shards], [shards / "000.parquet", shards / "001.parquet"], [str(shards / "*.parquet")]):
        corpus = read_seeds(paths)
        assert _without_source(corpus) == _without_source(expected)
        assert corpus.main_ids == expected.main_ids
        assert corpus.links == expected.links
        assert corpus.files == 2


def _bad_shard(tmp_path: Path) -> Path:
    rows = [*RECORDS[:2], {"title": "Fine", "quality": 140}, RECORDS[2]]
    path = tmp_path / "shards" / "bad.parquet"
    path.parent.mkdir()
    pq.write_table(_table(rows), path)
    return path


def test_a_bad_parquet_row_names_the_file_and_row(tmp_path):
    path = _bad_shard(tmp_path)
    with pytest.raises(SeedFormatError) as error:
        read_seeds([path])
    assert str(error.value) == f"{path}:3: quality: expected a number from 0 to 100, got 140"
    corpus = read_seeds([path], skip_invalid=True)
    assert len(corpus.errors) == 1
    assert len(corpus.main_ids) == 3


def test_a_glob_that_matches_nothing_is_an_error(tmp_path):
    with pytest.raises(SeedFormatError, match="matches no file"):
        read_seeds([str(tmp_path / "*.parquet")])


@needs_ray
def test_parquet_read_as_a_ray_dataset_matches_the_local_reader_and_names_a_bad_row(tmp_path):
    from training.engine import RayEngine

    shards = write_shards(RECORDS, tmp_path / "shards", per_shard=2)
    (tmp_path / "bad").mkdir()
    bad = _bad_shard(tmp_path / "bad")
    expected = read_seeds([shards])
    with RayEngine(1, read_on_ray=True) as engine:
        corpus = engine.read([shards], skip_invalid=False, progress=False)
        with pytest.raises(SeedFormatError) as error:
            engine.read([bad], skip_invalid=False, progress=False)
        skipped = engine.read([bad], skip_invalid=True, progress=False)
    assert engine.start_seconds > 0  # read on Ray, which started for it
    assert _without_source(corpus) == _without_source(expected)
    assert corpus.main_ids == expected.main_ids and corpus.links == expected.links
    assert str(error.value) == f"{bad}:3: quality: expected a number from 0 to 100, got 140"
    assert len(skipped.errors) == 1 and len(skipped.main_ids) == 3


@needs_ray
def test_a_ray_of_its_own_reads_parquet_here_without_starting(tmp_path, monkeypatch):
    """Every row comes to the driver for the seed rules: on a Ray it starts on this machine the
    engine reads the shards itself, and Ray starts only for a batch that needs it."""
    from training.engine import RayEngine

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    shards = write_shards(RECORDS, tmp_path / "shards", per_shard=2)
    with RayEngine(2) as engine:
        corpus = engine.read([shards], skip_invalid=False, progress=False)
    assert not engine.reads_on_ray() and engine.start_seconds == 0
    assert _without_source(corpus) == _without_source(read_seeds([shards]))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # joining a cluster: the read goes to it
    assert RayEngine(2).reads_on_ray()


def _seed_records(paths: list[Path]) -> list[dict]:
    return [_as_jsonable(yaml.safe_load(split_front_matter(p.read_text(encoding="utf-8"), p))) for p in paths]


@pytest.fixture(scope="module")
def small_seeds(tmp_path_factory):
    """80 AG News (topics) and 10 Hacker News (heat) seeds: as files, and as two Parquet shards
    (about 72 to train on after the held-out split: enough that the ray engine starts its pool)."""
    root = tmp_path_factory.mktemp("engine")
    files = [*sorted(corpus_path("agnews").glob("*.md"))[:80], *sorted(corpus_path("hn").glob("*.md"))[:10]]
    folder = root / "files"
    folder.mkdir()
    for path in files:
        shutil.copy(path, folder / path.name)
    shards = write_shards(_seed_records(sorted(folder.iterdir())), root / "shards", per_shard=50)
    return root, folder, shards


def _fit(root: Path, name: str, seeds: str, *extra: str) -> tuple[dict, dict, str]:
    out = root / name
    result = run_cli(
        "fit", "--seeds", seeds, "--out", str(out), "--no-onnx", "--no-progress",
        "--cache-dir", str(root / f"cache-{name}"), *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = json.loads((Path(summary["bundle"]) / MANIFEST).read_text())
    return summary, manifest, result.stderr


@needs_ray
def test_a_ray_fit_on_parquet_shards_matches_a_local_fit_on_the_files(small_seeds):
    root, folder, shards = small_seeds
    local, local_manifest, local_log = _fit(root, "local", str(folder))
    ray, ray_manifest, log = _fit(root, "ray", str(shards / "*.parquet"), "--engine", "ray", "--workers", "2")
    assert (
        local_manifest["seed_fingerprint"]["articles"] == ray_manifest["seed_fingerprint"]["articles"] == 90
    )
    assert ray["metrics"]["topics"]["micro_f1"] == pytest.approx(
        local["metrics"]["topics"]["micro_f1"], abs=0.005
    )
    assert ray["metrics"]["topics"]["n"] == local["metrics"]["topics"]["n"] > 0
    assert local_manifest["training"]["engine"] == {"name": "local", "workers": 1}
    assert ray_manifest["training"]["engine"] == {"name": "ray", "workers": 2}
    assert ray["engine"] == "ray"
    assert "texts on 2 actors" in log  # the seeds went through the actor pool, not the driver
    # The label gate's texts too: the driver never loads the encoder.
    assert "loading embedding model" not in log and "loading embedding model" in local_log
    # The engine's own costs are timed beside the fit steps: a local Ray's start, the reads.
    assert ray_manifest["training"]["timings_s"]["engine_start"] > 0
    assert (
        local_manifest["training"]["timings_s"]["engine_start"]
        < ray_manifest["training"]["timings_s"]["engine_start"]
    )
    assert {"read", "embed", "embed_all", "topics"} <= set(ray_manifest["training"]["timings_s"])


@needs_ray
def test_a_ray_fit_with_nothing_for_ray_to_do_never_starts_it(small_seeds):
    """Seed files and every vector cached: no batch needs Ray, so none starts (a local Ray's start
    is seconds), and the bundle is the one the local fit made."""
    root, folder, _ = small_seeds
    if not (root / "local").exists():
        _fit(root, "local", str(folder))
    shutil.copytree(root / "cache-local", root / "cache-ray-warm", ignore=shutil.ignore_patterns("fits"))
    local = json.loads((sorted((root / "local").glob("*/" + MANIFEST))[-1]).read_text())
    _, manifest, log = _fit(root, "ray-warm", str(folder), "--engine", "ray", "--workers", "2")
    assert manifest["training"]["engine"] == {"name": "ray", "workers": 2}
    assert manifest["training"]["timings_s"]["engine_start"] == 0
    assert "ray: a local cluster" not in log and "actors" not in log
    assert manifest["metrics"]["topics"]["micro_f1"] == local["metrics"]["topics"]["micro_f1"]


@needs_ray
def test_ray_evaluate_counts_and_lists_a_bad_row_with_skip_invalid(small_seeds, tmp_path):
    root, folder, _ = small_seeds
    if not (root / "local").exists():
        _fit(root, "local", str(folder))
    path = _bad_shard(tmp_path)
    result = run_cli(
        "evaluate", "--model", str(root / "local"), "--seeds", str(path.parent), "--engine", "ray",
        "--workers", "2", "--skip-invalid", "--no-cache", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"skipped: {path}:3: quality: expected a number from 0 to 100, got 140" in result.stderr
    assert "skipped 1 invalid seed files or rows" in result.stderr
    assert json.loads(result.stdout)["topics"]["n"] == 2


@needs_ray
def test_ray_classify_batches_give_the_predictions_local_gives(small_seeds, monkeypatch, caplog):
    from model.news_model import NewsModel
    from training import engine as engines

    root, folder, _ = small_seeds
    if not (root / "local").exists():
        _fit(root, "local", str(folder))
    model = NewsModel.load(root / "local", embedder=shared_embedder())
    articles = list(read_seeds([folder]).articles.values())
    vectors = model.embedder.encode([a.text for a in articles], show_progress_bar=False)
    # Batches of 16, all on the actor pool: six of them over two actors.
    monkeypatch.setattr(engines, "CLASSIFY_BATCH", 16)
    monkeypatch.setattr(engines, "RAY_MIN_CLASSIFY", 0)
    local = engines.LocalEngine().classify(model.heads, articles, vectors, all_scores=True)
    with caplog.at_level("INFO", logger="training.engine"), engines.RayEngine(2) as ray_engine:
        # Actors load the heads from the bundle folder, or (a model not saved yet) the object store.
        from_folder = ray_engine.classify(model.heads, articles, vectors, all_scores=True, bundle=model.path)
        from_store = ray_engine.classify(model.heads, articles, vectors, all_scores=True)
    assert caplog.text.count(f"classified {len(articles)} articles on 2 actors") == 2
    assert [c.to_record() for c in from_folder] == [c.to_record() for c in local]
    assert [c.to_record() for c in from_store] == [c.to_record() for c in local]
    assert [c.to_record() for c in local] == [
        c.to_record() for c in model.classify(articles, all_scores=True)
    ]
    assert len(local) == len(articles) == 90


@needs_ray
def test_ray_dedup_stops_at_a_bad_row_with_its_file_and_row(tmp_path):
    path = _bad_shard(tmp_path)
    result = run_cli("dedup", "--seeds", str(path.parent), "--engine", "ray", "--workers", "2", "--no-cache")
    assert result.returncode == 2, result.stderr
    assert f"error: {path}:3: quality: expected a number from 0 to 100, got 140" in result.stderr
    assert "Traceback" not in result.stderr


# --- joining a running cluster through RAY_ADDRESS ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cluster_env(temp_dir: Path) -> dict[str, str]:
    """Token authentication (Ray's default for a started cluster) with this cluster's own token,
    which every node and the run that joins must be given, as on a real cluster; no usage stats."""
    token = temp_dir / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32), encoding="utf-8")
    return {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }


def _ray_node(temp_dir: Path, *args: str) -> subprocess.Popen[str]:
    """``ray start ... --block`` in a session of its own, once it says it runs: Ray makes it the
    leader of its processes' group, so killing that group stops this node and nothing else (``ray
    stop`` would stop every Ray on the machine)."""
    command = [
        str(Path(sys.executable).parent / "ray"), "start", *args, "--num-cpus", "1", "--block",
        "--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", str(temp_dir),
        "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port()),
    ]  # fmt: skip
    node = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=_cluster_env(temp_dir),
    )
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = node.stdout.readline() if node.stdout else ""
        if not line and node.poll() is not None:
            break
        seen.append(line)
        if "Ray runtime started" in line:
            return node
    _stop(node)
    pytest.fail("ray start did not come up:\n" + "".join(seen[-40:]))


def _stop(node: subprocess.Popen[str]) -> None:
    """Kill this node's process group (its raylet, workers and, on the head, the GCS): the group is
    this test's alone, and a graceful stop only costs seconds here (the files go with the temp dir)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.communicate(timeout=10)


@needs_ray
def test_ray_joins_a_running_two_node_cluster_through_ray_address(small_seeds):
    _, _, shards = small_seeds
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live in it
    port = _free_port()
    nodes: list[subprocess.Popen[str]] = []
    try:
        nodes.append(
            _ray_node(
                temp_dir, "--head", "--port", str(port), "--include-dashboard=false",
            )
        )  # fmt: skip
        nodes.append(_ray_node(temp_dir, "--address", f"127.0.0.1:{port}"))
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "training", "dedup", "--seeds", str(shards), "--engine", "ray",
             "--workers", "2", "--no-cache", "--no-progress"],
            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
            env={**_cluster_env(temp_dir), "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": f"127.0.0.1:{port}"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # The run joined the cluster (both nodes' CPUs) rather than starting a Ray of its own ...
        assert f"ray: 127.0.0.1:{port}, " in result.stderr
        assert "'CPU': 2.0" in result.stderr, result.stderr
        assert "texts on 2 actors" in result.stderr  # ... and embedded on its actor pool
        assert json.loads(result.stderr.strip().splitlines()[-1])["articles"] == 90
        assert time.monotonic() - started < 90
        assert all(node.poll() is None for node in nodes)  # the cluster outlives the run that joined it
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)
