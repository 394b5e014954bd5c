"""The demo behind ``make demo``: a real DAG against the bundled emulator, ending in a stored video.

1. an isolated Airflow home in ``.airflow-demo/`` (SQLite, migrated on first run);
2. the emulator in its own process on 127.0.0.1 (``python -m airflow_provider_videoquery.emulator``);
3. ``example_videoquery_download`` run with ``dag.test()``: create → defer → download (``dag.test()``
   runs the trigger inline in this process; a deployment hands it to its triggerer);
4. the stored video's URI and metadata, read back from XCom.

``--route new-api`` runs it on new-api's own task route; ``--inline`` has the emulator report the
finished video inline (``data:video/mp4;base64,…``) instead of a link.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import selectors
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where the Airflow home and the stored video go (the wheel check points it at a temporary folder).
BASE = Path(os.environ.get("VIDEOQUERY_DEMO_DIR", REPO)).resolve()
HOME = BASE / ".airflow-demo"
OUTPUT = BASE / "demo_output"
DAG_ID = "example_videoquery_download"
DEMO_KEY = "sk-demo-not-a-real-key"

# dag.test() talks to Airflow's in-process API through starlette's TestClient, which warns that it
# wants httpx2: Airflow's internals, nothing a user of the demo can act on.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")

os.environ.update(
    {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
)


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def migrate() -> None:
    say(f"Airflow metadata DB in {HOME} (first run takes ~30 s)")
    HOME.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)


def start_emulator(inline: bool, *extra: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "airflow_provider_videoquery.emulator", "--port", "0"]
    command += ["--api-key", DEMO_KEY, "--polls", "2", *extra]
    if inline:
        command += ["--scenario", json.dumps({"inline_video": True})]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:  # its first line is its URL; wait at most 30 s
        selector.register(process.stdout, selectors.EVENT_READ)
        url = process.stdout.readline().strip() if selector.select(timeout=30) else ""
    if not url.startswith("http://127.0.0.1:"):
        stop(process)
        raise SystemExit(f"The emulator did not start within 30 s (it printed {url!r}).")
    return process, url


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_dag(url: str, route: str) -> None:
    os.environ["AIRFLOW_CONN_VIDEOQUERY_DEFAULT"] = json.dumps(
        {"conn_type": "videoquery", "host": url, "password": DEMO_KEY, "extra": {"route": route}}
    )
    from airflow.utils.state import DagRunState

    spec = importlib.util.spec_from_file_location(DAG_ID, REPO / "example_dags" / f"{DAG_ID}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"{DAG_ID} is missing from example_dags/.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    destination = f"{OUTPUT.as_uri()}/"
    say(
        f"Running {DAG_ID}: create → wait → download into {destination}\n"
        "    (the wait defers; dag.test() runs its trigger inline in this process, where a deployment"
        " would hand it to the triggerer)"
    )
    dag_run = dag.test(run_conf={"destination": destination, "model": "sora-2"})
    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    say(f"DAG run {dag_run.state}: {states}")
    if dag_run.state != DagRunState.SUCCESS:
        raise SystemExit(1)
    uri = xcom(dag_run, "download")
    video = xcom(dag_run, "download", "video")
    say(f"Stored video: {uri}")
    print(json.dumps(video, indent=2))
    stored = Path(uri.removeprefix("file://"))
    with stored.open("rb") as file:
        signature = "ok" if file.read(8)[4:8] == b"ftyp" else "MISSING"
    print(f"\n{stored.stat().st_size} bytes on disk, MP4 signature {signature}")
    say(
        "To see and play videos in the Airflow UI (a run's 'Videos' tab): make demo-ui\n"
        "    (airflow standalone on http://127.0.0.1:8080 with example_videoquery_gallery; docs/gallery.md)"
    )


def xcom(dag_run: object, task_id: str, key: str = "return_value") -> object:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID,
                XComModel.run_id == dag_run.run_id,  # type: ignore[attr-defined]
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).one()
        return XComModel.deserialize_value(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--route", default="unified", choices=["unified", "openai", "new-api"])
    parser.add_argument("--inline", action="store_true", help="the video reported as a data: URI")
    args = parser.parse_args()
    migrate()
    emulator, url = start_emulator(args.inline)
    say(f"Gateway emulator serving at {url} (veo, sora-2, grok, vidu, OpenAI-style and new-api routes)")
    say(f"Using the {args.route!r} route" + (", the video reported inline" if args.inline else ""))
    try:
        run_dag(url, args.route)
    finally:
        stop(emulator)


if __name__ == "__main__":
    main()
