"""``news-desk``: the one command for users, a thin front over the service and training.

``news-desk serve`` starts uvicorn on ``service.main:app`` as ``make serve`` does (or, with
``--postgres-data``, the local PostgreSQL first, as ``make serve-pg`` does); ``news-desk train``,
``evaluate``, ``compare``, ``export``, ``dedup``, ``check-seeds``, ``backfill`` and ``reembed`` run
``python -m training <command>`` with the same arguments (``train`` is training's ``fit``). Every
command runs as its own process: this module imports neither the app nor ``training``, so it adds no
arrow between service and training (the service already runs training as a child process for a retrain).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# news-desk command -> `python -m training` command, with what it does (for `news-desk --help`).
TRAINING_COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("fit", "train a model bundle from seed files (`python -m training fit`)"),
    "evaluate": ("evaluate", "print a bundle's metrics on seed files as one JSON object"),
    "compare": ("compare", "champion vs challenger on the same held-out articles, with the gate's verdict"),
    "export": ("export", "write editors' corrections as seed files and their graded pairs as pairs.tsv"),
    "dedup": ("dedup", "list duplicate groups and story clusters of a bulk import"),
    "check-seeds": ("check-seeds", "exit 0 if the live bundle was trained on these seeds, 1 if they changed"),
    "backfill": ("backfill", "load an archive of seed files into the service's store in batches (no HTTP)"),
    "reembed": ("reembed", "fill a new encoder's vector generation in the store offline (no HTTP)"),
}

# What `make serve` exports: the encoder's weights come from a Python package, never from a hub.
# OMP_WAIT_POLICY: the e5 encoder's OpenMP threads sleep, not spin, between work (10-20x faster on
# a busy 2-core machine; docs/encoders.md); read once when OpenMP starts, so set before it loads.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="news-desk",
        description="Serve the news-desk API, or train, evaluate, compare, export, dedup, backfill and "
        "reembed with its model. Each training command takes the options of `python -m training <command>`; "
        "`news-desk <command> --help` lists them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API and the editors' pages (uvicorn on service.main:app)",
        description="Start the service on HOST:PORT. Settings not given here come from NEWSDESK_* "
        "variables and the NEWSDESK_CONFIG file, as for `make serve`. Without a bundle the service "
        "starts and answers 503 until one exists: train one first with `news-desk train`.",
    )
    serve.add_argument(
        "--host", help="interface to bind (default: $NEWSDESK_HOST, else 127.0.0.1; others need API keys)"
    )
    serve.add_argument("--port", type=int, help="port to listen on (default: $NEWSDESK_PORT, else 8000)")
    serve.add_argument(
        "--bundle",
        type=Path,
        metavar="DIR",
        help="a bundle version folder, or a folder of versions (the live one is served); "
        "sets NEWSDESK_BUNDLE",
    )
    serve.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="data folder holding the SQLite article store (created if missing); sets NEWSDESK_DATA_DIR",
    )
    store = serve.add_mutually_exclusive_group()
    store.add_argument(
        "--database-url",
        metavar="URL",
        help="keep articles in this PostgreSQL (>= 15 with pgvector >= 0.6) instead of SQLite; "
        "sets NEWSDESK_DATABASE_URL",
    )
    store.add_argument(
        "--postgres-data",
        type=Path,
        metavar="DIR",
        help="start a local PostgreSQL + pgvector (the pgserver wheel, from the dev extra) on DIR, "
        "created on first use, and serve on it; Ctrl-C stops both (`make serve-pg`)",
    )
    serve.add_argument(
        "--postgres-port",
        type=int,
        metavar="N",
        help="with --postgres-data: also listen on TCP port N on 127.0.0.1 (0: any free one); "
        "default: a unix socket only",
    )
    for name, (_fit_name, text) in TRAINING_COMMANDS.items():
        # Listed for --help only: main() forwards these before argparse sees their options.
        commands.add_parser(name, help=text, add_help=False)
    return parser


def training_argv(command: str, args: Sequence[str]) -> list[str]:
    """The child process that runs a training command."""
    return [sys.executable, "-m", "training", TRAINING_COMMANDS[command][0], *args]


def child_env() -> dict[str, str]:
    """The caller's environment, offline unless it says otherwise."""
    return OFFLINE | dict(os.environ)


def serve_argv(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The process that serves, and its environment (settings not given stay as the caller has them)."""
    env = child_env()
    host = args.host or env.get("NEWSDESK_HOST") or "127.0.0.1"
    port = str(args.port if args.port is not None else env.get("NEWSDESK_PORT") or 8000)
    if args.bundle is not None:
        env["NEWSDESK_BUNDLE"] = str(args.bundle)
    if args.data is not None:
        env["NEWSDESK_DATA_DIR"] = str(args.data)
    if args.database_url:
        env["NEWSDESK_DATABASE_URL"] = args.database_url
    if args.postgres_data is not None:
        command = [sys.executable, "-m", "service.pg_local", "serve", "--data", str(args.postgres_data)]
        if args.postgres_port is not None:
            command += ["--pg-port", str(args.postgres_port)]
        return [*command, "--host", host, "--port", port], env
    return [sys.executable, "-m", "uvicorn", "service.main:app", "--host", host, "--port", port], env


def _run(argv: list[str], env: dict[str, str]) -> int:
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 130  # the child got the same Ctrl-C and stops on its own


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        command, rest = argv[0], argv[1:]
        if {"-h", "--help"} & set(rest):
            target = TRAINING_COMMANDS[command][0]
            print(f"news-desk {command} runs `python -m training {target}`; its options:", flush=True)  # noqa: T201
        return _run(training_argv(command, rest), child_env())
    args = build_parser().parse_args(argv)
    if args.postgres_port is not None and args.postgres_data is None:
        build_parser().error("--postgres-port needs --postgres-data")
    command, env = serve_argv(args)
    if os.name == "posix":
        # Become the server: signals (Ctrl-C, a supervisor's SIGTERM) reach uvicorn directly.
        sys.stdout.flush()
        os.execve(sys.executable, command, env)
    return _run(command, env)


if __name__ == "__main__":
    raise SystemExit(main())
