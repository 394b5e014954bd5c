"""What every benchmark shares: the emulator and moto in their own processes, workers, RSS, the fd limit.

Everything talks to 127.0.0.1 only, every wait is bounded, and every process started here is stopped
in a ``finally`` (Ctrl-C included).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_KEY = "sk-bench-0123456789"
HOST = "127.0.0.1"
_START_TIMEOUT = 30.0
_PAGE = os.sysconf("SC_PAGE_SIZE")
REPO = Path(__file__).resolve().parent.parent


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes() -> int:
    """The current resident set size of this process."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_env(**extra: str) -> dict[str, str]:
    """An environment for a worker: an isolated, throw-away Airflow home and the given variables."""
    home = os.environ.get("VIDEOQUERY_BENCH_AIRFLOW_HOME") or _airflow_home()
    env = {
        **os.environ,
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "VIDEOQUERY_BENCH_AIRFLOW_HOME": home,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.update(extra)
    return env


@functools.cache
def _airflow_home() -> str:
    """One throw-away Airflow home for this run's workers, removed when this process exits."""
    home = tempfile.mkdtemp(prefix="videoquery-bench-home-")
    atexit.register(shutil.rmtree, home, True)
    return home


def package_first(env: dict[str, str], before: Path) -> tuple[dict[str, str], Path]:
    """``env`` and a working folder for a worker that imports the ``airflow_provider_videoquery`` of
    ``before`` (a ``git archive`` or worktree of another commit) instead of this one's; only the package
    comes from there (through a folder holding a link to it), the harness stays this one.

    Run the worker in the returned folder: ``-m`` puts the working folder first on ``sys.path``."""
    package = before.resolve() / "airflow_provider_videoquery"
    if not (package / "__init__.py").is_file():
        raise ValueError(f"{before} holds no airflow_provider_videoquery package")
    folder = Path(tempfile.mkdtemp(prefix="videoquery-bench-before-"))
    atexit.register(shutil.rmtree, folder, True)
    (folder / "airflow_provider_videoquery").symlink_to(package, target_is_directory=True)
    return {**env, "PYTHONPATH": os.pathsep.join([str(folder), env["PYTHONPATH"]])}, folder


def load_average() -> float:
    """The machine's 1-minute load average (what else competed for the cores meanwhile)."""
    return os.getloadavg()[0]


def connection_json(url: str, **extra: object) -> str:
    return json.dumps({"conn_type": "videoquery", "host": url, "password": API_KEY, "extra": extra})


@dataclass
class Server:
    """A server in a child process that printed its base URL on its first stdout line."""

    url: str
    process: subprocess.Popen[str]


def stop_process(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(grace)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


@contextlib.contextmanager
def server_process(argv: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Server]:
    """Start ``argv``, wait (bounded) for the URL on its first stdout line, stop it on exit."""
    process = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    try:
        url = _first_line(process, _START_TIMEOUT)
        yield Server(url, process)
    finally:
        stop_process(process)


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not line or not line[0].strip().startswith("http"):
        # The module only: the argv carries the API key.
        what = " ".join(process.args[1:3])  # type: ignore[index,arg-type]
        raise RuntimeError(f"{what} did not print its URL within {timeout:.0f}s")
    return line[0].strip()


@contextlib.contextmanager
def emulator(polls: int = 4, video_size: int | None = None) -> Iterator[Server]:
    """The gateway emulator in its own process on a free port of 127.0.0.1."""
    argv = [sys.executable, "-m", "airflow_provider_videoquery.emulator", "--host", HOST, "--port", "0"]
    argv += ["--api-key", API_KEY, "--polls", str(polls)]
    if video_size is not None:
        argv += ["--video-size", str(video_size)]
    with server_process(argv) as server:
        yield server


@contextlib.contextmanager
def moto_s3() -> Iterator[Server]:
    """moto's S3 (``ThreadedMotoServer``) in its own process on a free port of 127.0.0.1."""
    with server_process([sys.executable, "-m", "benchmarks._moto"]) as server:
        yield server


def admin(url: str, path: str, body: object | None = None, timeout: float = 60.0) -> Any:
    """Call an emulator admin route (``/_emulator/...``) and return its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url + path,
        data=data,
        method="GET" if data is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def run_worker(
    module: str, args: Sequence[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process; its last stdout line is a JSON result.

    ``cwd``: where it runs (``-m`` puts that folder first on ``sys.path``, before ``PYTHONPATH``)."""
    argv = [sys.executable, "-m", module, *args]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"worker timed out after {timeout:.0f}s"}
    finally:
        stop_process(process)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (err or out).strip().splitlines()[-5:]
        return {"error": f"worker exited {process.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread name (Linux)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
                name = f"{names.get(int(tid), 'native')} ({tid})"
                spent[name] = (int(fields[11]) + int(fields[12])) / ticks
    return spent


def thread_cpu_delta(before: dict[str, float], total: float) -> dict[str, float]:
    """Per-thread CPU since ``before`` for the threads alive at both ends; ``ended``: the rest of
    ``total`` (the process CPU meanwhile), i.e. threads that started and ended in between."""
    after = thread_cpu()
    delta = {name: after[name] - spent for name, spent in before.items() if name in after}
    delta = {name: round(seconds, 3) for name, seconds in delta.items() if seconds > 0}
    delta["ended"] = round(total - sum(delta.values()), 3)
    return delta


def emit(result: dict[str, Any]) -> None:
    """A worker's answer: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def scratch_dir() -> Path:
    """A fresh directory for big files (removed by the caller)."""
    return Path(tempfile.mkdtemp(prefix="videoquery-bench-data-"))
