"""The provider on a distributed Airflow: CeleryExecutor, two workers, two triggerers, PostgreSQL.

One deployment for the whole module, all on 127.0.0.1 and owned by the test: a private PostgreSQL
cluster (metadata DB and Celery result backend), Redis (broker), the api-server, scheduler and
dag-processor, two triggerers, two Celery workers (concurrency 2: the machine has 2 cores) and the
emulator. The connection comes from an ``AIRFLOW_CONN_*`` variable that every component sees.
Each scenario asserts on the emulator's own counts and on the destination folder, and adds a row to
the report printed at the end (wall time, creates, videos, peak RSS of each component); a failing
scenario prints the tail of every component's log.

Run with ``make test-distributed`` (it installs Redis and the Celery pieces first); logs stay in
``build/test-distributed``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.airflow_cluster import AirflowCluster, Component, Emulator, tail
from tests.e2e.monitor import ResourceMonitor
from tests.e2e.services import Postgres, Redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_DISTRIBUTED") != "1",
        reason="a distributed Airflow deployment: run `make test-distributed`",
    ),
    pytest.mark.timeout(900),
]

WORKERS = ("worker-1", "worker-2")
TRIGGERERS = ("triggerer-1", "triggerer-2")
#: Two task slots per worker: four in all on a 2-core machine, where each task is mostly waiting.
WORKER_CONCURRENCY = 2
COMPONENTS: tuple[Component, ...] = (
    Component("api-server", ("api-server",)),
    Component("dag-processor", ("dag-processor",)),
    *(Component(name, ("triggerer", "--skip-serve-logs")) for name in TRIGGERERS),
    *(
        Component(
            name,
            (
                "celery",
                "worker",
                "--skip-serve-logs",
                "--concurrency",
                str(WORKER_CONCURRENCY),
                "--celery-hostname",
                f"{name}@127.0.0.1",
                "--without-gossip",
                "--without-mingle",
            ),
        )
        for name in WORKERS
    ),
    Component("scheduler", ("scheduler", "--skip-serve-logs")),
)
#: A dead triggerer's triggers move after this many seconds without its heartbeat (default 30).
TRIGGERER_HEALTH_CHECK_THRESHOLD = 10
#: A killed worker's task is failed (and retried) after this many seconds without its heartbeat.
TASK_HEARTBEAT_TIMEOUT = 20
PARSE_TIMEOUT = 240.0
RUN_TIMEOUT = 480.0

MAPPED_DAG = "videoquery_distributed_mapped"
MAPPED_SOURCE = f'''
"""50 prompts, each created, waited for in a triggerer and stored (tests/e2e/test_distributed.py)."""
from datetime import datetime

from airflow.sdk import DAG, Param, task

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator

with DAG(
    dag_id="{MAPPED_DAG}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_tasks=16,
    params={{"count": Param(50, type="integer"), "label": Param("run", type="string"),
             "destination": Param("", type="string")}},
) as dag:

    @task
    def prompts(params=None):
        return [f"{{params['label']}}: a paper boat, take {{i}}" for i in range(int(params["count"]))]

    created = VideoCreateOperator.partial(task_id="create", model="veo3.1-fast").expand(prompt=prompts())
    VideoDownloadOperator.partial(
        task_id="download",
        destination="{{{{ params.destination }}}}",
        deferrable=True,
        poll_interval=2,
        timeout=600,
    ).expand(video_task_id=created.output)
'''

BATCH_CRASH_DAG = "videoquery_distributed_batch_crash"
BATCH_DAG = "videoquery_distributed_batch"
SHARDS_DAG = "videoquery_distributed_shards"
SHARDS = 4

SHARDS_SOURCE = f'''
"""One request file split into {SHARDS} shards, one mapped batch task each (tests/e2e/test_distributed.py)."""
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(
    dag_id="{SHARDS_DAG}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_tasks=8,
    params={{"requests": Param("", type="string"), "destination": Param("", type="string")}},
) as dag:
    VideoBatchOperator.partial(
        task_id="batch",
        requests="{{{{ params.requests }}}}",
        destination="{{{{ params.destination }}}}",
        shards={SHARDS},
        # The gateway's limits are per key: each of the {SHARDS} shards takes a quarter of them.
        max_active=50,
        creates_per_second=10.0,
        max_polls_per_second=25.0,
        max_polls_in_flight=8,
        max_parallel_downloads=4,
        poll_interval=2,
        progress_interval=30.0,
        retries=2,
        retry_delay=timedelta(seconds=2),
    ).expand(shard=list(range({SHARDS})))
'''


def batch_source(dag_id: str, max_active: int, **options: Any) -> str:
    """A DAG with one VideoBatchOperator over a JSONL file of requests (``params.requests``)."""
    extra = "".join(f"        {name}={value!r},\n" for name, value in options.items())
    return f'''
"""A batch of prompts in one task (tests/e2e/test_distributed.py)."""
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={{"requests": Param("", type="string"), "destination": Param("", type="string")}},
) as dag:
    VideoBatchOperator(
        task_id="batch",
        requests="{{{{ params.requests }}}}",
        destination="{{{{ params.destination }}}}",
        max_active={max_active},
        poll_interval=2,
        retries=2,
        retry_delay=timedelta(seconds=2),
{extra}    )
'''


DAG_FILES = {
    MAPPED_DAG: MAPPED_SOURCE,
    # All 24 live at once: one wave, then a long store phase (slow video answers) to crash in.
    BATCH_CRASH_DAG: batch_source(BATCH_CRASH_DAG, 24, creates_per_second=20.0, max_parallel_downloads=4),
    BATCH_DAG: batch_source(
        BATCH_DAG,
        100,
        creates_per_second=20.0,
        max_polls_per_second=50.0,
        max_polls_in_flight=16,
        max_parallel_downloads=4,
        progress_interval=30.0,
    ),
    SHARDS_DAG: SHARDS_SOURCE,
}


# ---- the report ----------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    passed: bool = False
    wall: float = 0.0
    creates: int | None = None
    videos: int | None = None
    rss: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def format_report(rows: list[Row]) -> str:
    lines = ["", "==== distributed Airflow report (2 cores, shared machine: times are inflated) ===="]
    for row in rows:
        lines.append(
            f"{row.scenario:<18} {'PASS' if row.passed else 'FAIL'}  wall {row.wall:6.1f} s  "
            f"creates {row.creates if row.creates is not None else '-'}  "
            f"videos {row.videos if row.videos is not None else '-'}"
        )
        lines.extend(f"    {note}" for note in row.notes)
        rss = ", ".join(f"{name} {size / 2**20:.0f}" for name, size in sorted(row.rss.items()))
        lines.append(f"    peak RSS MiB: {rss}")
    return "\n".join(lines)


# ---- the deployment ------------------------------------------------------------------------------
@dataclass
class Deployment:
    cluster: AirflowCluster
    emu: Emulator
    pg: Postgres
    redis: Redis
    monitor: ResourceMonitor
    run_dir: Path
    api_key: str
    rows: list[Row] = field(default_factory=list)

    def logs(self) -> list[Path]:
        return [
            *sorted((self.cluster.home / "components").glob("*.log")),
            self.emu.log,
            self.redis.log,
            self.pg.log,
        ]

    def tails(self, lines: int = 40) -> str:
        return "\n\n".join(f"==== {p.name} ====\n{tail(p, lines)}" for p in self.logs())

    def creates(self) -> int:
        return int(self.stats()["by_route"].get("create", 0))

    def stats(self) -> dict[str, Any]:
        with contextlib.closing(_urlopen(self.emu.url + "/_emulator/stats")) as response:
            return dict(json.load(response))

    def set_scenario(self, **fields: Any) -> None:
        """Forget every task and request, and give new tasks this scenario."""
        self.emu.admin("/_emulator/reset", {})
        self.emu.admin("/_emulator/default", fields)

    @contextlib.contextmanager
    def scenario(self, name: str) -> Iterator[Row]:
        """Time a scenario and record its row; on failure print every component's log tail."""
        row = Row(name)
        self.rows.append(row)
        self.monitor.reset()
        began = time.monotonic()
        try:
            yield row
            row.passed = True
        except BaseException:
            print(f"\n#### scenario {name!r} failed; the tail of every log:\n{self.tails()}")
            raise
        finally:
            row.wall = time.monotonic() - began
            row.rss = {n: u.peak_rss for n, u in self.monitor.snapshot().items()}


def _urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=30)


def _run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("VIDEOQUERY_DISTRIBUTED_DIR")
    if not chosen:
        return tmp_path_factory.mktemp("distributed")
    path = Path(chosen).resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    run_dir = _run_dir(tmp_path_factory)
    api_key = f"sk-dist-{secrets.token_hex(12)}"
    rows: list[Row] = []
    with (
        Postgres.run(run_dir / "postgres.log") as pg,
        Redis.run(run_dir / "redis") as redis,
        Emulator.run(run_dir / "emulator.log", "--api-key", api_key) as emu,
    ):
        connection = {"conn_type": "videoquery", "host": emu.url, "password": api_key}
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": redis.url,
            # Celery's DB result backend needs the driver spelled out.
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.sqlalchemy_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "16",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD),
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
            "AIRFLOW_CONN_VIDEOQUERY_DEFAULT": json.dumps(connection),
        }
        cluster = AirflowCluster.create(run_dir / "airflow", env, parallelism=8, db=pg, components=COMPONENTS)
        for dag_id, source in DAG_FILES.items():
            (cluster.home / "dags" / f"{dag_id}.py").write_text(source)

        def pids() -> dict[str, int]:
            found = {name: proc.pid for name, proc in cluster.procs.items()}
            found.update(emulator=emu.proc.pid, redis=redis.proc.pid)
            if pg.pid is not None:
                found["postgres"] = pg.pid
            return found

        monitor = ResourceMonitor(pids)
        deployment = Deployment(cluster, emu, pg, redis, monitor, run_dir, api_key, rows)
        try:
            with cluster.running():
                monitor.start()
                for dag_id in DAG_FILES:
                    cluster.wait_for(
                        lambda dag_id=dag_id: cluster.dag_parsed(dag_id) or _no_import_errors(cluster),
                        PARSE_TIMEOUT,
                        f"the DAG processor to parse {dag_id}",
                    )
                yield deployment
        except BaseException:
            print(f"\n#### the deployment failed; the tail of every log:\n{deployment.tails()}")
            raise
        finally:
            monitor.stop()
            report = format_report(rows) + f"\nlogs: {run_dir}\n"
            (run_dir / "report.txt").write_text(report)
            print(report)


def _no_import_errors(cluster: AirflowCluster) -> bool:
    errors = cluster.import_errors()
    if errors:
        raise AssertionError(f"a DAG file does not import: {errors}")
    return False


# ---- helpers -------------------------------------------------------------------------------------
def trigger_run(d: Deployment, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
    d.cluster.trigger(dag_id, run_id, conf)


def mapped_states(d: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[int, str | None]:
    rows = d.cluster.query(
        "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        dag_id,
        run_id,
        task_id,
    )
    return dict(rows)


def triggers_by_triggerer(d: Deployment) -> dict[str, int]:
    """How many trigger rows each triggerer (by component name) holds; None = not assigned."""
    rows = d.cluster.query(
        "SELECT j.hostname, COUNT(*) FROM trigger t LEFT JOIN job j ON t.triggerer_id = j.id "
        "GROUP BY j.hostname"
    )
    return {str(host): int(n) for host, n in rows}


def stored_videos(destination: Path) -> list[Path]:
    return sorted(destination.glob("*.mp4")) if destination.is_dir() else []


def leftovers(destination: Path) -> list[str]:
    """Anything in the folder that is not a finished video (partial or hidden temporary files)."""
    if not destination.is_dir():
        return []
    return sorted(p.name for p in destination.iterdir() if p.name.startswith(".") or ".part" in p.name)


def check_mapped_run(d: Deployment, run_id: str, destination: Path, count: int, row: Row) -> None:
    """The run succeeded, every prompt was created once and its video stored exactly once."""
    state = d.cluster.wait_for_run(MAPPED_DAG, run_id, RUN_TIMEOUT)
    downloads = mapped_states(d, MAPPED_DAG, run_id, "download")
    assert state == "success", downloads
    assert set(downloads.values()) == {"success"}
    assert len(downloads) == count
    tries = d.cluster.query(
        "SELECT MAX(try_number) FROM task_instance WHERE dag_id = ? AND run_id = ?", MAPPED_DAG, run_id
    )
    assert tries[0][0] == 1, "a task was retried"
    stats = d.stats()
    row.creates = int(stats["by_route"].get("create", 0))
    videos = stored_videos(destination)
    row.videos = len(videos)
    assert row.creates == count, stats
    assert stats["tasks"] == count
    assert len(videos) == count
    assert not leftovers(destination)
    # Each task's video was fetched once: nothing was stored twice.
    fetched = [r for r in d.emu.requests() if r["route"] == "video"]
    assert len(fetched) == count, [r["path"] for r in fetched]
    sample = d.emu.get_bytes(d.emu.url + "/videos/_sample.mp4")
    assert all(p.read_bytes() == sample for p in videos)


# ---- the scenarios -------------------------------------------------------------------------------
def test_mapped_prompts(deployment: Deployment) -> None:
    """50 prompts with .expand: each is created once, waited for in a triggerer, stored once."""
    d = deployment
    destination = d.run_dir / "videos-mapped"
    with d.scenario("1 mapped x50") as row:
        d.set_scenario(polls_to_complete=4)
        trigger_run(
            d, MAPPED_DAG, "mapped", {"count": 50, "label": "mapped", "destination": f"file://{destination}/"}
        )
        check_mapped_run(d, "mapped", destination, 50, row)
        deferred = d.cluster.query(
            "SELECT COUNT(DISTINCT map_index) FROM log "
            "WHERE dag_id = ? AND run_id = ? AND event = 'deferred'",
            MAPPED_DAG,
            "mapped",
        )
        row.notes.append(f"downloads that deferred: {deferred[0][0]}")
        assert deferred[0][0] == 50


def test_triggerer_crash(deployment: Deployment) -> None:
    """SIGKILL the triggerer holding most waits: the other takes them over; nothing is created twice."""
    d = deployment
    destination = d.run_dir / "videos-triggerer-crash"
    count = 30  # enough for both triggerers to hold some; fewer task runs than scenario 1
    with d.scenario("2 triggerer crash") as row:
        # Long enough (about 2 s per poll) that every wait is still deferred when the kill comes.
        d.set_scenario(polls_to_complete=30)
        trigger_run(
            d,
            MAPPED_DAG,
            "crash",
            {"count": count, "label": "crash", "destination": f"file://{destination}/"},
        )

        def most_deferred() -> dict[str, int] | None:
            held = triggers_by_triggerer(d)
            assigned = sum(n for host, n in held.items() if host in TRIGGERERS)
            return held if assigned >= count * 0.8 else None

        held = d.cluster.wait_for(most_deferred, RUN_TIMEOUT, "most downloads to defer")
        victim = max(TRIGGERERS, key=lambda name: held.get(name, 0))
        survivor = next(name for name in TRIGGERERS if name != victim)
        d.cluster.kill(victim)
        killed_at = time.monotonic()
        row.notes.append(f"killed {victim} holding {held.get(victim, 0)} of {sum(held.values())} triggers")

        def taken_over() -> bool:
            return victim not in triggers_by_triggerer(d)

        d.cluster.wait_for(taken_over, 120, f"{survivor} to take over {victim}'s triggers", every=0.5)
        row.notes.append(
            f"{survivor} took them over {time.monotonic() - killed_at:.1f} s after the kill "
            f"(health-check threshold {TRIGGERER_HEALTH_CHECK_THRESHOLD} s)"
        )
        check_mapped_run(d, "crash", destination, count, row)
        # Back to two triggerers for the scenarios that follow.
        d.cluster.start_component(victim)


# ---- the batch scenarios -------------------------------------------------------------------------
def write_requests(path: Path, count: int, label: str) -> str:
    """``count`` requests as JSONL (one object per line); return the file's URI."""
    lines = [
        json.dumps(
            {"key": f"{label}-{i:04d}", "model": "veo3.1-fast", "prompt": f"{label}: a red fox, take {i}"}
        )
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path.as_uri()


def check_batch(d: Deployment, dag_id: str, run_id: str, destination: Path, count: int, row: Row) -> None:
    """The run succeeded; each request was created once; its video and manifest line are complete."""
    state = d.cluster.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    assert state == "success", d.cluster.task_states(dag_id, run_id)
    stats = d.stats()
    row.creates = int(stats["by_route"].get("create", 0))
    videos = stored_videos(destination)
    row.videos = len(videos)
    assert row.creates == count, stats
    assert len(videos) == count
    assert not leftovers(destination)
    lines = [json.loads(line) for line in (destination / "manifest.jsonl").read_text().splitlines() if line]
    assert len(lines) == count
    assert {line["status"] for line in lines} == {"succeeded"}
    assert len({line["video_task_id"] for line in lines}) == count
    for line in lines:
        data = (destination / f"{line['key']}.mp4").read_bytes()
        assert len(data) == line["bytes"]
        assert hashlib.sha256(data).hexdigest() == line["sha256"]
        assert data[4:8] == b"ftyp"


def running_task(d: Deployment, dag_id: str, run_id: str) -> tuple[str, int | None, int]:
    """(hostname, pid, try_number) of the ``batch`` task instance."""
    rows = d.cluster.query(
        "SELECT hostname, pid, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        dag_id,
        run_id,
        "batch",
    )
    host, pid, tries = rows[0]
    return str(host), pid, int(tries)


def kill_orphan(pid: int | None) -> bool:
    """SIGKILL a task process a killed worker left behind (it runs in a process group of its own)."""
    if pid is None:
        return False
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if group == os.getpgrp():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    return True


def test_worker_crash_while_storing(deployment: Deployment) -> None:
    """SIGKILL the worker running a batch while it stores: the retry completes it, each video paid once."""
    d = deployment
    count = 24
    destination = d.run_dir / "videos-worker-crash"
    with d.scenario("3 worker crash") as row:
        d.set_scenario(polls_to_complete=3, video_size=4 * 2**20 + 7)
        # Every video answer waits 1.5 s: storing 24 four at a time takes long enough to crash in.
        d.emu.admin("/_emulator/faults", {"kind": "slow_headers", "route": "video", "delay": 1.5})
        uri = write_requests(d.run_dir / "requests-crash.jsonl", count, "crash")
        trigger_run(d, BATCH_CRASH_DAG, "crash", {"requests": uri, "destination": str(destination)})

        def storing() -> bool:
            done = len(stored_videos(destination))
            if done >= count:
                raise AssertionError("the batch stored everything before the worker could be killed")
            return done >= 3

        d.cluster.wait_for(storing, RUN_TIMEOUT, "the batch to store its first videos", every=0.2)
        host, pid, tries = running_task(d, BATCH_CRASH_DAG, "crash")
        assert host in WORKERS
        assert tries == 1
        d.cluster.kill(host)
        orphan = kill_orphan(pid)
        stored_at_kill, parts_at_kill = len(stored_videos(destination)), len(leftovers(destination))
        row.notes.append(
            f"killed {host} and its orphaned task process ({'found' if orphan else 'gone'}) with "
            f"{stored_at_kill} of {count} stored, {parts_at_kill} temporary file(s) in the folder"
        )
        d.cluster.start_component(host)
        check_batch(d, BATCH_CRASH_DAG, "crash", destination, count, row)
        _, _, tries = running_task(d, BATCH_CRASH_DAG, "crash")
        assert tries == 2, "the batch task was not retried"
        fetched = sum(1 for r in d.emu.requests() if r["route"] == "video")
        row.notes.append(f"video downloads: {fetched} for {count} videos")


def test_batch_of_500(deployment: Deployment) -> None:
    """500 prompts through one VideoBatchOperator: time, triggerer CPU and RSS, trigger rows used."""
    d = deployment
    count = 500
    destination = d.run_dir / "videos-batch"
    with d.scenario("4 batch x500") as row:
        d.set_scenario(polls_to_complete=3)
        uri = write_requests(d.run_dir / "requests-batch.jsonl", count, "batch")
        before = trigger_rows_created(d)
        trigger_run(d, BATCH_DAG, "batch", {"requests": uri, "destination": str(destination)})
        check_batch(d, BATCH_DAG, "batch", destination, count, row)
        usage = d.monitor.snapshot()
        cpu = sum(usage[name].cpu_seconds for name in TRIGGERERS if name in usage)
        rss = max(usage[name].peak_rss for name in TRIGGERERS if name in usage)
        row.notes.append(
            f"trigger rows used: {trigger_rows_created(d) - before}; triggerer CPU {cpu:.1f} s (both); "
            f"triggerer peak RSS {rss / 2**20:.0f} MiB"
        )


def trigger_rows_created(d: Deployment) -> int:
    """How many trigger rows were ever created (PostgreSQL's sequence behind ``trigger.id``)."""
    ((value,),) = d.cluster.query("SELECT COALESCE(MAX(id), 0) FROM trigger")
    rows = d.cluster.query("SELECT last_value, is_called FROM trigger_id_seq")
    last, called = rows[0]
    return int(last) if called else max(int(value), 0)


def shard_tasks(d: Deployment, run_id: str) -> list[tuple[int, str, str | None, int | None, int]]:
    """(map_index, state, hostname, pid, try_number) of each shard's task instance."""
    rows = d.cluster.query(
        "SELECT map_index, state, hostname, pid, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? AND task_id = ? ORDER BY map_index",
        SHARDS_DAG,
        run_id,
        "batch",
    )
    return [(int(m), str(state), host or None, pid, int(tries)) for m, state, host, pid, tries in rows]


def test_shards_over_two_workers_with_one_killed(deployment: Deployment) -> None:
    """4 shards x 500 over the two Celery workers; the worker storing the most is SIGKILLed mid-store:
    every video stored once, every request created once (a killed try's create in flight at most once
    more), each key in exactly one shard's ledger."""
    from airflow_provider_videoquery import manifest

    d = deployment
    count = SHARDS * 500
    destination = d.run_dir / "videos-shards"
    with d.scenario(f"5 shards {SHARDS}x500, worker crash") as row:
        d.set_scenario(polls_to_complete=3, video_size=64 * 1024 + 3)
        # Every video answer waits 0.3 s: the store phases last long enough to crash in.
        d.emu.admin("/_emulator/faults", {"kind": "slow_headers", "route": "video", "delay": 0.3})
        uri = write_requests(d.run_dir / "requests-shards.jsonl", count, "shard")
        trigger_run(d, SHARDS_DAG, "shards", {"requests": uri, "destination": str(destination)})

        def storing_on_a_worker() -> bool:
            done = len(stored_videos(destination))
            if done >= count:
                raise AssertionError("the shards stored everything before a worker could be killed")
            running = [t for t in shard_tasks(d, "shards") if t[1] == "running" and t[2] in WORKERS]
            return done >= 200 and bool(running)

        d.cluster.wait_for(
            storing_on_a_worker, RUN_TIMEOUT, "the shards to store their first videos", every=0.2
        )
        running = [t for t in shard_tasks(d, "shards") if t[1] == "running" and t[2] in WORKERS]
        host = max(WORKERS, key=lambda name: sum(1 for t in running if t[2] == name))
        victims = [t for t in running if t[2] == host]
        d.cluster.kill(host)
        orphans = sum(kill_orphan(t[3]) for t in victims)
        stored_at_kill = len(stored_videos(destination))
        row.notes.append(
            f"killed {host} running shard(s) {[t[0] for t in victims]} ({orphans} orphaned task "
            f"process(es) killed) with {stored_at_kill} of {count} stored"
        )
        d.cluster.start_component(host)
        state = d.cluster.wait_for_run(SHARDS_DAG, "shards", RUN_TIMEOUT * 2)
        assert state == "success", shard_tasks(d, "shards")
        tries = {t[0]: t[4] for t in shard_tasks(d, "shards")}
        assert all(tries[t[0]] >= 2 for t in victims), tries

        stats = d.stats()
        row.creates = int(stats["by_route"].get("create", 0))
        videos = stored_videos(destination)
        row.videos = len(videos)
        # None lost, and none paid twice but the one a killed try may have had in flight: sent, its
        # answer not yet in the ledger when the SIGKILL came (docs/batch.md, "re-pays at most one").
        # The kill lands in a store phase or, as often, in the next wave's creates.
        in_flight = row.creates - count
        assert 0 <= in_flight <= len(victims), stats
        row.notes.append(f"{in_flight} create(s) in flight at the kill paid again")
        assert len(videos) == count
        assert not leftovers(destination)
        keys: list[str] = []
        for shard in range(SHARDS):
            name = manifest.sharded_name("manifest.jsonl", shard, SHARDS)
            lines = [json.loads(line) for line in (destination / name).read_text().splitlines() if line]
            assert {line["status"] for line in lines} == {"succeeded"}, name
            assert all(manifest.shard_of(line["key"], SHARDS) == shard for line in lines)
            for line in lines:
                data = (destination / f"{line['key']}.mp4").read_bytes()
                assert hashlib.sha256(data).hexdigest() == line["sha256"]
            keys += [line["key"] for line in lines]
        assert len(keys) == len(set(keys)) == count
        fetched = int(stats["by_route"].get("video", 0))
        row.notes.append(f"tries {tries}; video downloads: {fetched} for {count} videos")
