"""The demo behind ``make demo-ui``: the gallery in the Airflow UI, end to end, on this machine.

1. the emulator on 127.0.0.1 (real, playable MP4s and thumbnails);
2. ``airflow standalone`` in ``.airflow-demo-ui/`` (api-server, scheduler, dag-processor, triggerer;
   SQLite; every visitor is an admin, so no login: a local demo only);
3. ``example_videoquery_gallery`` triggered: 6 videos through one batch (one failed by the emulator on
   purpose), 1 through create → download;
4. where to look: the run's "Videos" tab. It keeps running until Ctrl-C.

``--port`` chooses the UI's port (default 8080); ``--exit`` stops once the run is done (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from demo import DEMO_KEY, REPO, say, start_emulator, stop

BASE = Path(os.environ.get("VIDEOQUERY_DEMO_DIR", REPO)).resolve()
HOME = BASE / ".airflow-demo-ui"
DAG_ID = "example_videoquery_gallery"


def airflow_env(port: int, emulator_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # airflow standalone starts its components as `airflow …`: this venv's first on the PATH.
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    base_url = f"http://127.0.0.1:{port}"
    env.update(
        {
            "AIRFLOW_HOME": str(HOME),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME}/airflow.db",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW_CONN_VIDEOQUERY_DEFAULT": json.dumps(
                {"conn_type": "videoquery", "host": emulator_url, "password": DEMO_KEY}
            ),
        }
    )
    return env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=300
    )


def wait(what: str, seconds: float, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"Gave up after {seconds:.0f} s waiting for {what}; logs in {HOME}.")
        time.sleep(3)


def answering(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/version", timeout=5):
            return True
    except OSError:
        return False


def run_state(env: dict[str, str], run_id: str) -> str | None:
    listed = airflow(env, "dags", "list-runs", DAG_ID, "-o", "json")
    if listed.returncode != 0:
        return None
    for line in reversed(listed.stdout.splitlines()):  # the JSON, after any warnings Airflow prints
        try:
            runs = json.loads(line)
        except ValueError:
            continue
        if isinstance(runs, list):
            return next((str(r["state"]) for r in runs if r.get("run_id") == run_id), None)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="the UI's port on 127.0.0.1")
    parser.add_argument("--exit", action="store_true", help="stop once the run is done")
    args = parser.parse_args()
    HOME.mkdir(parents=True, exist_ok=True)
    # Slow enough that each wait defers for a while, as with a real gateway.
    emulator, url = start_emulator(False, "--seconds", "15")
    say(f"Gateway emulator serving at {url}")
    env = airflow_env(args.port, url)
    log = (HOME / "standalone.log").open("w")
    say(f"Starting airflow standalone on http://127.0.0.1:{args.port} (log: {HOME / 'standalone.log'})")
    standalone = subprocess.Popen(
        [sys.executable, "-m", "airflow", "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait("the API server", 300, lambda: answering(args.port))
        run_id = f"gallery_demo_{time.strftime('%Y%m%dT%H%M%S')}"
        conf = json.dumps({"folder": str(BASE / "demo_output" / "gallery"), "emulator_failure": True})
        say(f"Triggering {DAG_ID} (run {run_id}) once its file is parsed")
        trigger = ("dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", conf)
        wait(f"{DAG_ID} to be parsed", 300, lambda: airflow(env, *trigger).returncode == 0)
        wait("the run to finish", 600, lambda: run_state(env, run_id) in ("success", "failed"))
        state = run_state(env, run_id)
        tab = f"http://127.0.0.1:{args.port}/dags/{DAG_ID}/runs/{run_id}/plugin/videoquery-run-videos"
        page = f"http://127.0.0.1:{args.port}/videoquery/dags/{DAG_ID}/runs/{run_id}"
        say(
            f"Run {run_id}: {state}. See the videos:\n"
            f"    the run's Videos tab:  {tab}\n"
            f"    the gallery alone:     {page}\n"
            "    (a task's Videos tab and its 'Videos' extra link show that task's videos)"
        )
        if not args.exit:
            say("Airflow keeps running: Ctrl-C stops it and the emulator.")
            while standalone.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            os.killpg(standalone.pid, signal.SIGTERM)
            standalone.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(standalone.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        stop(emulator)


if __name__ == "__main__":
    main()
