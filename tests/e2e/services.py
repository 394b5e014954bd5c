"""PostgreSQL and Redis for a distributed Airflow test: private, on 127.0.0.1, stopped by PID.

PostgreSQL is a throw-away cluster from the machine's own server binaries (``initdb`` into a private
folder, ``fsync`` off); as root it runs as the ``postgres`` user, since ``initdb`` refuses root.
Redis is Debian's ``redis-server`` started by hand without persistence. Both are started in their
own process group, and their logs are copied into the run folder when they stop.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.airflow_cluster import free_port, stop_process, tail


def _wait_until(ready: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not start within {timeout:.0f}s:\n{tail(log)}")
        time.sleep(0.3)


def postgres_bin() -> Path:
    """The newest PostgreSQL server binaries on the machine (``/usr/lib/postgresql/<v>/bin``)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if not found:
        which = shutil.which("initdb")
        if which is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb): apt-get install postgresql")
        return Path(which).parent
    return Path(found[-1]).parent


@dataclass
class Postgres:
    """A private PostgreSQL cluster with one database (trust auth, 127.0.0.1 only)."""

    data: Path
    port: int
    log: Path
    database: str = "airflow"
    user: str = "postgres"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @classmethod
    @contextlib.contextmanager
    def run(cls, keep_log: Path, database: str = "airflow") -> Iterator[Postgres]:
        """initdb, start, create ``database``; on exit stop the server, keep its log, delete the data."""
        bindir = postgres_bin()
        # A folder of its own outside the run folder: the postgres user must be able to reach it.
        root = Path(tempfile.mkdtemp(prefix="videoquery-pg-"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            as_postgres = ["runuser", "-u", "postgres", "--"]
        data, log = root / "data", root / "postgres.log"
        port = free_port()
        pg = cls(data=data, port=port, log=log, database=database)
        try:
            subprocess.run(
                [
                    *as_postgres,
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=300 -c shared_buffers=64MB"
            )
            subprocess.run(
                [
                    *as_postgres,
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                check=True,
                capture_output=True,
                timeout=90,
            )
            _wait_until(pg._ready, 30, "PostgreSQL", log)
            conn = pg.connect("postgres")
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{database}"')
            conn.close()
            yield pg
        finally:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [
                        *as_postgres,
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "30",
                        "stop",
                    ],
                    capture_output=True,
                    timeout=60,
                )
            pg._kill_leftovers()
            if log.exists():
                keep_log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, keep_log)
            shutil.rmtree(root, ignore_errors=True)

    def connect(self, database: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            dbname=database or self.database,
            connect_timeout=10,
        )

    def _ready(self) -> bool:
        try:
            self.connect("postgres").close()
        except Exception:
            return False
        return True

    @property
    def pid(self) -> int | None:
        """The postmaster's PID (from its pid file), None when it is not running."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def _kill_leftovers(self) -> None:
        """SIGKILL the postmaster by its PID, if ``pg_ctl stop`` left it running."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run a read query (``?`` placeholders, as for SQLite) on the metadata database."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return list(cur.fetchall())
        finally:
            conn.close()


@dataclass
class Redis:
    """``redis-server`` on 127.0.0.1 and a free port, no persistence."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    @contextlib.contextmanager
    def run(cls, folder: Path) -> Iterator[Redis]:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise RuntimeError("no redis-server: apt-get install redis-server")
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = folder / "redis.log"
        cmd = [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(log),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        redis = cls(proc, port, log)
        try:
            _wait_until(redis._ready, 30, "Redis", log)
            yield redis
        finally:
            stop_process(proc, grace=10)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{tail(self.log)}")
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False
