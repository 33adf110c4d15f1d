"""`news-desk`: the user's command is a thin front that spawns the service and training as they are."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from helpers import ROOT

from service import cli


def news_desk(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `news-desk ARGS` as a user would (the installed script is `service.cli:main`)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_script_entry_point_is_the_cli_and_the_old_name_is_gone():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'news-desk = "service.cli:main"' in text
    assert "news-desk-train" not in text


def test_help_lists_every_command():
    result = news_desk("--help")
    assert result.returncode == 0, result.stderr
    for command in (
        "serve",
        "train",
        "evaluate",
        "compare",
        "export",
        "dedup",
        "check-seeds",
        "backfill",
        "reembed",
    ):
        assert command in result.stdout


def test_serve_help_shows_its_own_options_each_with_help_text():
    result = news_desk("serve", "--help")
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--bundle", "--data", "--database-url", "--postgres-data"):
        assert option in result.stdout
    parser = cli.build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    assert all(action.help for action in serve._actions)


@pytest.mark.parametrize(
    ("command", "training_command", "option"),
    [
        ("train", "fit", "--holdout"),
        ("evaluate", "evaluate", "--model"),
        ("compare", "compare", "--challenger"),
        ("export", "export", "--data-dir"),
        ("dedup", "dedup", "--story-window-days"),
        ("check-seeds", "check-seeds", "--bundle"),
        ("backfill", "backfill", "--database-url"),
        ("reembed", "reembed", "--bundle"),
    ],
)
def test_training_commands_forward_help_to_training(command, training_command, option):
    result = news_desk(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"python -m training {training_command}" in result.stdout
    assert option in result.stdout


def test_a_forwarded_command_keeps_trainings_one_line_error_and_exit_code(tmp_path):
    result = news_desk("export", "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no article store here" in result.stderr
    assert not (tmp_path / "out").exists()


def test_check_seeds_runs_for_real_against_a_bundle(small_seeds, small_bundle):
    result = news_desk("check-seeds", "--seeds", str(small_seeds), "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matches the live bundle" in result.stdout


def test_the_cli_imports_neither_training_nor_the_app():
    code = (
        "import sys, service.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training' or m == 'service.main'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_serve_points_the_settings_at_the_given_folders_and_database(tmp_path):
    args = cli.build_parser().parse_args(
        [
            "serve",
            "--port",
            "9001",
            "--bundle",
            "b",
            "--data",
            str(tmp_path),
            "--database-url",
            "postgresql://x/y",
        ]
    )
    command, env = cli.serve_argv(args)
    assert command[1:4] == ["-m", "uvicorn", "service.main:app"] and command[-2:] == ["--port", "9001"]
    assert env["NEWSDESK_BUNDLE"] == "b" and env["NEWSDESK_DATA_DIR"] == str(tmp_path)
    assert env["NEWSDESK_DATABASE_URL"] == "postgresql://x/y"
    local = cli.build_parser().parse_args(["serve", "--postgres-data", "pg", "--postgres-port", "0"])
    command, _ = cli.serve_argv(local)
    assert command[1:5] == ["-m", "service.pg_local", "serve", "--data"]
    assert "--pg-port" in command


def _serve_then_stop(args: list[str], port: int, log: Path, ready_s: float = 120) -> httpx.Response:
    """Run `news-desk serve ARGS`, wait for /healthz then /readyz, return /v1/model, stop with SIGTERM."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "NEWSDESK_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            assert process.poll() is None, f"news-desk serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /healthz in {ready_s} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        while (ready := httpx.get(f"{base}/readyz", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, f"not ready in {ready_s} s: {ready.text}"
            time.sleep(0.25)
        return httpx.get(f"{base}/v1/model", timeout=30)
    finally:
        # The command became the server (exec): SIGTERM reaches it, it shuts down and then ends by
        # the same signal (uvicorn re-raises it) or with 0, not by a kill after the timeout.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM), log.read_text()[-3000:]


@pytest.mark.e2e
def test_serve_starts_uvicorn_that_answers_health_then_stops(small_bundle, tmp_path):
    from test_e2e_service import free_port

    data = tmp_path / "data"
    model = _serve_then_stop(
        ["--bundle", str(small_bundle), "--data", str(data)], free_port(), tmp_path / "log"
    )
    assert model.status_code == 200 and model.json()["labels"]
    assert (data / "articles.sqlite3").is_file()  # --data reached the settings


@pytest.mark.e2e
def test_serve_on_a_local_postgres_stores_there(small_bundle, tmp_path):
    pytest.importorskip("pgserver", reason="pgserver is not installed (pip install -e '.[dev]')")
    if importlib.util.find_spec("service.pg_local") is None:
        pytest.skip("service.pg_local (the local PostgreSQL launcher) is not in this tree")
    from test_e2e_service import free_port

    # Short path: PostgreSQL's unix socket lives in its data folder (107 bytes at most).
    pg_data = Path(tempfile.mkdtemp(prefix="pgcli-", dir="/tmp")) / "pg"
    try:
        args = [
            "--bundle",
            str(small_bundle),
            "--data",
            str(tmp_path / "data"),
            "--postgres-data",
            str(pg_data),
        ]
        model = _serve_then_stop(args, free_port(), tmp_path / "log", ready_s=180)
        assert model.status_code == 200
        assert (pg_data / "PG_VERSION").is_file()  # the server was created on that folder
        assert not (tmp_path / "data" / "articles.sqlite3").exists()  # and the articles live there
    finally:
        shutil.rmtree(pg_data.parent, ignore_errors=True)
