"""A small, real Airflow deployment in a temporary folder, for end-to-end tests.

By default API server, scheduler (LocalExecutor), DAG processor and triggerer on a SQLite DB; a
distributed test passes its own components (Celery workers, several triggerers) and a PostgreSQL
database (``tests/e2e/services.py``). Each component runs as its own process group with a complete
environment built here: nothing leaks in from the test process (``tests/conftest.py`` sets
``AIRFLOW_*`` for in-process tests). Each component reports its own name as its hostname, so
``job.hostname`` and ``task_instance.hostname`` say which process holds a trigger or runs a task.
State is read straight from the database, so the test process never imports the cluster's
configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
#: Imported by every component as ``[core] hostname_callable``: the component's name is its hostname.
HOSTNAME_MODULE = """import os, socket

def hostname():
    return os.environ.get("VIDEOQUERY_E2E_COMPONENT") or socket.getfqdn()
"""


@dataclass(frozen=True)
class Component:
    """One long-running process: ``airflow <argv>``, known by ``name`` (its log, its hostname)."""

    name: str
    argv: tuple[str, ...]


#: The default components, in start order (the API server first: workers report to it).
#: Task and trigger logs are files in the same home, so the log-serving HTTP servers (which would
#: bind fixed ports 8793/8794 on all interfaces) are not started.
COMPONENTS: tuple[Component, ...] = (
    Component("api-server", ("api-server",)),
    Component("dag-processor", ("dag-processor",)),
    Component("triggerer", ("triggerer", "--skip-serve-logs")),
    Component("scheduler", ("scheduler", "--skip-serve-logs")),
)


class MetadataDB(Protocol):
    """Where the cluster keeps its state, and a read-only way in for the test (``?`` placeholders)."""

    @property
    def sqlalchemy_url(self) -> str: ...

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...


@dataclass(frozen=True)
class SQLiteDB:
    """The cluster's SQLite file, read through a read-only connection."""

    path: Path

    @property
    def sqlalchemy_url(self) -> str:
        return f"sqlite:///{self.path}"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:  # e.g. "database is locked" under a writer
            if "locked" in str(err):
                return []
            raise
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_environ() -> dict[str, str]:
    """This process's environment without any Airflow setting (those are the cluster's to choose)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_AIRFLOW")) and k != "PYTEST_CURRENT_TEST"
    }


def stop_process(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM the process group started for ``proc``, then SIGKILL it if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Children (task runners, parser processes, uvicorn workers) may outlive their parent.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"(no {path.name})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


@dataclass
class Emulator:
    """The gateway emulator as a subprocess (``python -m airflow_provider_videoquery.emulator``)."""

    proc: subprocess.Popen[str]
    url: str
    log: Path

    @classmethod
    @contextlib.contextmanager
    def run(cls, log: Path, *args: str, startup_timeout: float = 60.0) -> Iterator[Emulator]:
        cmd = [sys.executable, "-m", "airflow_provider_videoquery.emulator", "--port", "0", *args]
        with log.open("w") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=clean_environ(),
                start_new_session=True,
            )
            try:
                url = _first_line(proc, startup_timeout)
                if not url.startswith("http://"):
                    raise RuntimeError(f"the emulator printed {url!r}, not its URL; log:\n{tail(log)}")
                yield cls(proc, url, log)
            finally:
                stop_process(proc, grace=10)
                if proc.stdout is not None:
                    proc.stdout.close()

    def admin(self, path: str, payload: Any) -> Any:
        """POST JSON to an admin route (``/_emulator/…``, no auth) and return the JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def get_bytes(self, url: str) -> bytes:
        """Fetch a file the emulator serves (video URLs need no key, like signed CDN links)."""
        with urllib.request.urlopen(url, timeout=60) as response:
            return bytes(response.read())

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/_emulator/requests", timeout=30) as response:
            return list(json.load(response)["requests"])


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``proc`` within ``timeout`` seconds (raises if it exits or hangs)."""
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise RuntimeError(f"no URL from the emulator within {timeout:.0f}s")
        line = proc.stdout.readline().strip()
    finally:
        sel.close()
    if not line:
        raise RuntimeError(f"the emulator exited ({proc.poll()}) before printing its URL")
    return line


@dataclass
class AirflowCluster:
    """Airflow's components on one metadata DB (SQLite in ``home`` unless given), in ``home``.

    Build it with :meth:`create`, add DAG files to ``home/dags``, then :meth:`start`; :meth:`stop`
    (always: use :meth:`running`) terminates every process group it started.
    """

    home: Path
    env: dict[str, str]
    api_port: int
    db: MetadataDB
    components: tuple[Component, ...] = COMPONENTS
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _log_files: dict[str, IO[bytes]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        home: Path,
        extra_env: Mapping[str, str] | None = None,
        parallelism: int = 3,
        db: MetadataDB | None = None,
        components: tuple[Component, ...] = COMPONENTS,
    ) -> AirflowCluster:
        from cryptography.fernet import Fernet

        home.mkdir(parents=True, exist_ok=True)
        (home / "dags").mkdir(exist_ok=True)
        (home / "components").mkdir(exist_ok=True)
        (home / "lib").mkdir(exist_ok=True)
        (home / "lib" / "videoquery_e2e_hostname.py").write_text(HOSTNAME_MODULE)
        db = db or SQLiteDB(home / "airflow.db")
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = clean_environ()
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db.sqlalchemy_url,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "videoquery_e2e_hostname.hostname",
                "PYTHONPATH": str(home / "lib"),
                # Workers (task supervisors) reach the Execution API of this API server.
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": base_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
                # One secret for the scheduler (signs task tokens) and the API server (checks them).
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
                "AIRFLOW__TRIGGERER__CAPACITY": "50",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra_env or {})
        return cls(home=home, env=env, api_port=port, db=db, components=components)

    # ---- lifecycle -----------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.home / "components" / f"{name}.log"

    def airflow(self, *args: str, timeout: float = 300.0, check: bool = True) -> str:
        """Run one ``airflow`` CLI command in the cluster's environment; return its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
            )
        return result.stdout

    def add_connection(self, conn_id: str, fields: Mapping[str, Any]) -> None:
        """Store a connection in the metadata DB (its password Fernet-encrypted).

        The fields go through stdin, never argv: ``airflow connections add`` would put them on a
        command line that ``ps`` shows and the CLI audit log records.
        """
        script = (
            "import json, sys\n"
            "from airflow.models import Connection\n"
            "from airflow.utils.session import create_session\n"
            "with create_session() as session:\n"
            f"    session.add(Connection(conn_id={conn_id!r}, **json.loads(sys.stdin.read())))\n"
        )
        subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(dict(fields)),
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )

    def start(self) -> None:
        """``airflow db migrate``, then every component in the background (logs in ``components/``)."""
        self.airflow("db", "migrate")
        for component in self.components:
            self.start_component(component.name)
        self.wait_for(self._api_ready, 120, "the API server to answer")

    def start_component(self, name: str) -> None:
        """Start (or restart) one component; its output is appended to ``components/<name>.log``."""
        (component,) = (c for c in self.components if c.name == name)
        if name not in self._log_files:
            self._log_files[name] = self.log_path(name).open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *component.argv],
            env={**self.env, "VIDEOQUERY_E2E_COMPONENT": name},
            cwd=self.home,
            stdout=self._log_files[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group (a crash: no cleanup runs) and forget it."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        # In reverse start order: the scheduler first (it owns the task runners), the API server
        # last (runners report to it).
        for component in reversed(self.components):
            proc = self.procs.pop(component.name, None)
            if proc is not None:
                stop_process(proc)
        for log in self._log_files.values():
            log.close()
        self._log_files.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[AirflowCluster]:
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"airflow {name} exited with {proc.returncode}:\n{tail(self.log_path(name))}"
                )

    def wait_for(self, ready: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
        """Call ``ready`` until it returns something truthy; raise after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = ready()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(every)

    def _api_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/api/v2/version", timeout=5):
                return True
        except OSError:
            return False

    # ---- state (read from the metadata DB) -----------------------------------------------------
    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.db.query(sql, *params)

    def dag_parsed(self, dag_id: str) -> bool:
        rows = self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id)
        return bool(rows)

    def import_errors(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT filename, stacktrace FROM import_error")

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
        return rows[0][0] if rows else None

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        rows = self.query(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", dag_id, run_id
        )
        return dict(rows)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        rows = self.query(
            # As text on every DB (PostgreSQL's driver would decode a JSON column itself).
            "SELECT CAST(value AS TEXT) FROM xcom "
            "WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
            dag_id,
            run_id,
            task_id,
            key,
        )
        if not rows:
            raise KeyError(f"no XCom {key!r} of {task_id!r} in {run_id!r}")
        value = rows[0][0]
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> None:
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        return str(
            self.wait_for(
                lambda: state if (state := self.run_state(dag_id, run_id)) in TERMINAL_RUN_STATES else None,
                timeout,
                f"DAG run {run_id!r} to finish",
                every=2.0,
            )
        )

    # ---- logs ----------------------------------------------------------------------------------
    def log_files(self) -> list[Path]:
        """Every log the deployment wrote: component output and the task/trigger logs."""
        files = sorted((self.home / "components").glob("*.log"))
        if (self.home / "logs").is_dir():
            files += sorted(p for p in (self.home / "logs").rglob("*") if p.is_file())
        return files

    def task_logs(self, dag_id: str, run_id: str, task_id: str) -> str:
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = sorted(p for p in folder.glob("attempt=*.log") if ".trigger." not in p.name)
        return "\n".join(p.read_text(errors="replace") for p in files)

    def trigger_logs(self, dag_id: str, run_id: str, task_id: str) -> str:
        """What the triggerer wrote for this task's triggers (``attempt=N.log.trigger.<job>.log``)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.trigger.*")))

    def diagnostics(self, lines: int = 60) -> str:
        """The tail of each component's log and every task log, for a failing test's output."""
        parts = [f"==== {p.relative_to(self.home)} ====\n{tail(p, lines)}" for p in self.log_files()]
        return "\n\n".join(parts)
