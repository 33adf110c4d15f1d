"""A local PostgreSQL 16 + pgvector 0.6 from the `pgserver` wheel, for development, tests and benchmarks.

``python -m service.pg_local serve --data data/pg`` (``make serve-pg``) starts the server
on a data folder (created on first use, reused after), points ``NEWSDESK_DATABASE_URL`` at it and
serves the app with uvicorn; Ctrl-C stops both. ``... start --data DIR`` only starts the server
and prints its URL. Production points ``NEWSDESK_DATABASE_URL`` at its own PostgreSQL instead.

As root, PostgreSQL refuses to run: pgserver then runs it as the system user ``pgserver``
(``useradd`` once) and opens read/execute permission on the data folder's parents.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class LocalServer:
    """A running local server; `stop` is idempotent."""

    url: str
    data_dir: Path
    _stop: Callable[[], None] = field(repr=False)
    _stopped: bool = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pg_user() -> str | None:
    if os.name != "nt" and os.geteuid() == 0:
        from pgserver.utils import ensure_user_exists

        ensure_user_exists("pgserver")
        return "pgserver"
    return None


def start_local_server(
    data_dir: str | Path, *, port: int | None = None, fast_unsafe: bool = False, timeout_s: int = 60
) -> LocalServer:
    """Start (``initdb`` first if the folder is new) a PostgreSQL on ``data_dir``.

    Parameters
    ----------
    data_dir : the data folder; keep its path short (the unix socket lives in it: 107 bytes max).
    port : None: unix socket only (pgserver's own start). A number (0 = any free one): TCP on
        127.0.0.1, so several processes and tools can reach it by host and port.
    fast_unsafe : fsync, synchronous_commit and full_page_writes off. Tests and benchmarks only.
    """
    import psycopg

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it logs every pg_ctl call at INFO
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if port is None:
        import pgserver

        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        local = LocalServer(server.get_uri(), data_dir, server.cleanup)
    else:
        local = _start_tcp(data_dir, port, timeout_s)
    if fast_unsafe:
        with psycopg.connect(local.url, autocommit=True) as conn:
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(f"ALTER SYSTEM SET {name} = off")  # type: ignore[arg-type]
            conn.execute("SELECT pg_reload_conf()")  # all three reload without a restart
    return local


def _start_tcp(data_dir: Path, port: int, timeout_s: int) -> LocalServer:
    # pgserver always starts with listen_addresses='' (no TCP): run its bundled pg_ctl ourselves.
    from pgserver import initdb, pg_ctl
    from pgserver.utils import ensure_prefix_permissions, find_suitable_port

    user = _pg_user()
    data_dir.mkdir(exist_ok=True)
    if user is not None:
        import pwd

        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data_dir, user=user)
    port = port or find_suitable_port("127.0.0.1")
    options = f"-h 127.0.0.1 -p {port} -k {data_dir}"
    pg_ctl(
        ["-w", "-t", str(timeout_s), "-o", options, "-l", str(data_dir / "log"), "start"],
        pgdata=data_dir,
        user=user,
        timeout=timeout_s + 5,
    )

    def stop() -> None:
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
        except subprocess.CalledProcessError:
            logger.warning("pg_ctl stop failed for %s (already stopped?)", data_dir)

    return LocalServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir, stop)


def temp_server(**kwargs: object) -> LocalServer:
    """A throw-away server in a fresh short temporary folder, removed on stop."""
    base = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    server = start_local_server(base / "data", **kwargs)  # type: ignore[arg-type]
    inner = server._stop

    def stop() -> None:
        inner()
        shutil.rmtree(base, ignore_errors=True)

    server._stop = stop
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local PostgreSQL + pgvector for news-desk.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "start PostgreSQL on DATA and serve the app on it (uvicorn)"),
        ("start", "start PostgreSQL on DATA, print its URL, stay up until Ctrl-C"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "--data", type=Path, default=Path("data/pg"), help="data folder (default data/pg)"
        )
        command.add_argument("--pg-port", type=int, default=None, help="TCP port for PostgreSQL (0: any)")
    serve = sub.choices["serve"]
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with start_local_server(args.data, port=args.pg_port) as server:
        if args.command == "start":
            print(server.url, flush=True)  # noqa: T201  (scripts read the URL from stdout)
            stopped = False

            def on_signal(signum: int, frame: object) -> None:
                nonlocal stopped
                stopped = True

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            while not stopped:
                time.sleep(0.5)
            return
        import uvicorn

        os.environ["NEWSDESK_DATABASE_URL"] = server.url  # read by the app's settings at import
        logger.info("PostgreSQL at %s; serving on http://%s:%d", server.url, args.host, args.port)
        uvicorn.run("service.main:app", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
