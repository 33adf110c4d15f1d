"""`news-desk`: the user's command is a thin front that spawns the service and training as they are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
    for command in ("serve", "train", "evaluate", "compare", "export", "dedup", "check-seeds"):
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


@pytest.mark.e2e
def test_serve_starts_uvicorn_that_answers_health_then_stops(small_bundle, tmp_path):
    from test_e2e_service import free_port

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "NEWSDESK_LOG_LEVEL": "warning",
    }
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)]
    command += ["--bundle", str(small_bundle), "--data", str(tmp_path / "data")]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"news-desk serve exited:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no /healthz in 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "not ready in 120 s"
            time.sleep(0.25)
        assert (tmp_path / "data" / "articles.sqlite3").is_file()  # --data reached the settings
    finally:
        # The command became the server (exec): SIGTERM reaches uvicorn, which shuts down and then
        # ends by the same signal (uvicorn re-raises it), not by a kill after the timeout.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
