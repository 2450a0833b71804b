"""Throwaway PostgreSQL clusters and MLflow servers for the scale-out tests (and CI).

Why a file of its own, stdlib only: `.ci/run` starts the cluster with the system python3
before nox has built any environment, and the tests start one the same way when CI did not.
A cluster lives in a fresh folder under /tmp (not pytest's tmp_path: that is root-only, and
PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user), on a
free port on 127.0.0.1, with trust authentication, fsync off: fast, local and disposable.

    python3 tests/pg.py start [--dir DIR] [--port PORT]   # prints the database URL
    python3 tests/pg.py stop --dir DIR
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DB_NAME = "effgan_test"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be started here; the message says why and how to fix it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    """The newest /usr/lib/postgresql/*/bin that has initdb and pg_ctl."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin; install them with "
            "`apt-get update && apt-get install -y postgresql`, or set EFFGAN_TEST_POSTGRES_URL"
        )
    return Path(found[-1]).parent


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses root: run as `postgres` when we are root."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def _run(cmd: list[str], what: str, timeout: float = 60) -> None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PostgresUnavailable(f"{what} failed: {e}") from None
    if out.returncode:
        raise PostgresUnavailable(f"{what} failed ({out.returncode}): {out.stderr.strip()[-800:]}")


def start(base: str | Path | None = None, port: int | None = None) -> tuple[Path, str]:
    """Create and start a cluster; (its folder, the URL of database effgan_test)."""
    bindir = pg_bin()
    base = Path(base or tempfile.mkdtemp(prefix="effgan-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    data, sock = base / "data", base / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = port or free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    _run(_as_owner([*initdb, "--no-sync", "-E", "UTF8"]), "initdb")
    opts = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sock} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    _run(_as_owner([*pg_ctl, "-o", opts, "-w", "-t", "60", "start"]), "pg_ctl start", 90)
    (base / "port").write_text(str(port))
    createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    try:
        _run(_as_owner([*createdb, DB_NAME]), "createdb")
    except PostgresUnavailable:
        stop(base)
        raise
    return base, f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DB_NAME}"


def stop(base: str | Path) -> None:
    """Stop the cluster (immediately: it is disposable) and delete its folder."""
    base = Path(base)
    data = base / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(PostgresUnavailable):
            cmd = [str(pg_bin() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            _run(_as_owner(cmd), "pg_ctl stop")
    shutil.rmtree(base, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead."""
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


def create_database(url: str, name: str) -> str:
    """CREATE DATABASE `name` through `url` (needs psycopg); the new database's URL."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}"')
        con.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def drop_database(url: str, name: str) -> None:
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with (
        contextlib.suppress(Exception),
        psycopg.connect(plain, autocommit=True, connect_timeout=10) as con,
    ):
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class MlflowServer:
    """`mlflow server` on 127.0.0.1 backed by `backend_uri`, artifacts served by the server."""

    def __init__(self, backend_uri: str, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(workdir) / "mlflow-server.log"
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(Path(workdir) / "mlartifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.tail()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the whole process group (uvicorn starts children)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # stragglers of the group
            os.killpg(self.proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="throwaway PostgreSQL cluster for tests")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--dir", default=None, help="cluster folder (default: a new /tmp dir)")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.action == "stop":
        if not args.dir:
            parser.error("stop needs --dir")
        stop(args.dir)
        return 0
    try:
        _, url = start(args.dir, args.port)
    except PostgresUnavailable as e:
        print(f"pg.py: {e}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
