"""Every gateway fault of the issue, end to end: a sensor and a download operator under ``dag.test()``
(the worker pokes, the trigger runs inline, the download resumes), plus retry discipline on the trigger.

Each ``dag.test()`` case asserts the outcome (success after retries, or the error the docs promise), that
the destination holds the complete file or nothing (no ``.part-`` leftovers), how many requests the
emulator saw, and that the API key appears nowhere: captured logs, the task log output, exception texts,
XCom values, rendered templates, trigger kwargs and events. docs/reliability.md lists the figures.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import (
    RunResult,
    assert_key_nowhere,
    first_event,
    listing,
    load_dag,
    run_dag,
    use_dags_folder,
)
from tests.conftest import connection_json

pytestmark = pytest.mark.timeout(120)

TASK = "veo3.1-fast:1764522552-FaultE2E01"
NAME = "veo3.1-fast_1764522552-FaultE2E01.mp4"
VIDEO_SIZE = 256 * 1024
#: Backoff sleeps actually taken, as a fraction of what the policy computed (the computed value is
#: what the assertions check; the real sleep is shortened to keep the suite fast).
SLEEP_SCALE = 0.02
DAG_ID = "videoquery_faults_e2e"

DAG_SOURCE = f'''
"""The DAG the fault tests run: wait for a video task, then download it (both deferrable)."""
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor

with DAG(
    dag_id="{DAG_ID}",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={{"video_task_id": Param("", type="string"), "destination": Param("", type="string")}},
) as dag:
    wait = VideoTaskSensor(
        task_id="wait",
        video_task_id="{{{{ params.video_task_id }}}}",
        poke_interval=0.05,
        timeout=15,
        not_found_grace=0.5,
    )
    download = VideoDownloadOperator(
        task_id="download",
        video_task_id="{{{{ params.video_task_id }}}}",
        destination="{{{{ params.destination }}}}",
        poll_interval=0.05,
        timeout=15,
        download_attempts=4,
        download_retry_delay=0.01,
    )
    wait >> download
'''


# -- fixtures and helpers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DAGs folder holding the fault DAG: ``dag.test()`` needs the DAG in the dags-folder bundle."""
    folder = tmp_path_factory.mktemp("fault-dags")
    (folder / "videoquery_faults_e2e.py").write_text(DAG_SOURCE)
    return folder


@dataclass
class Backoff:
    """Every delay the retry policies computed: (base_delay, attempt, retry_after, delay)."""

    delays: list[tuple[float, int, float | None, float]] = field(default_factory=list)


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> Backoff:
    """Record each computed backoff and sleep only SLEEP_SCALE of it."""
    recorded = Backoff()
    original = RetryPolicy.delay

    def delay(self: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
        value = original(self, attempt, retry_after)
        recorded.delays.append((self.base_delay, attempt, retry_after, value))
        return value * SLEEP_SCALE

    monkeypatch.setattr(RetryPolicy, "delay", delay)
    return recorded


@dataclass
class TriggerSpy:
    """What every trigger carried in (its serialized kwargs) and out (its events)."""

    kwargs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def trigger_spy(monkeypatch: pytest.MonkeyPatch) -> TriggerSpy:
    spy = TriggerSpy()
    original = VideoTaskTrigger.run

    async def run(self: VideoTaskTrigger) -> Any:
        spy.kwargs.append(self.serialize()[1])
        async for event in original(self):
            spy.events.append(event.payload)
            yield event

    monkeypatch.setattr(VideoTaskTrigger, "run", run)
    return spy


def figure(name: str, result: RunResult, emulator: Emulator) -> None:
    """One line of figures for docs/reliability.md (shown with ``-rP`` or ``-s``)."""
    by_route: dict[str, int] = {}
    for record in emulator.requests:
        by_route[record.route] = by_route.get(record.route, 0) + 1
    print(f"FIGURE {name}: {result.seconds:.2f}s requests={by_route}")


# -- the cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fault: how the gateway misbehaves and what the DAG must end with."""

    scenario: Scenario = field(default_factory=lambda: Scenario(polls_to_complete=2, video_size=VIDEO_SIZE))
    faults: tuple[Fault, ...] = ()
    #: None: both tasks succeed. Else (failing task, a regex of the error the docs promise).
    error: tuple[str, str] | None = None
    #: Extra fields of the videoquery connection.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Register the task at the emulator (False: the gateway does not know the id).
    known: bool = True
    check: Callable[[Emulator, Backoff], None] | None = None


def _counts(route: str, expected: int, status: int | None = None) -> Callable[[Emulator, Backoff], None]:
    def check(emulator: Emulator, backoff: Backoff) -> None:
        assert emulator.count(route=route, status=status) == expected, [
            (r.route, r.status, r.fault) for r in emulator.requests
        ]

    return check


def _retry_after_honoured(emulator: Emulator, backoff: Backoff) -> None:
    assert emulator.count(route="query", status=429) == 2
    honoured = [d for d in backoff.delays if d[2] == 2.0]
    assert len(honoured) == 2
    assert all(delay >= 2.0 for *_, delay in honoured)


def _backoff_without_retry_after(emulator: Emulator, backoff: Backoff) -> None:
    assert emulator.count(route="query", status=429) == 2
    assert len(backoff.delays) == 2
    for base, attempt, retry_after, delay in backoff.delays:
        assert retry_after is None
        assert base * 2**attempt / 2 <= delay <= base * 2**attempt


def _flapped(emulator: Emulator, backoff: Backoff) -> None:
    # sensor poke (processing), trigger (completed), the sensor's re-read (processing: it keeps the
    # event's URL), download's look (processing: it waits again), trigger (completed), the download's
    # re-read (completed).
    assert emulator.polls(TASK) == 6


def _not_found_bounded(route: str) -> Callable[[Emulator, Backoff], None]:
    def check(emulator: Emulator, backoff: Backoff) -> None:
        queries = emulator.count(route=route)
        # One request per poll (never retried) for the 0.5 s grace at 0.05 s (+ up to 10 % jitter).
        assert 2 <= queries <= 0.5 / 0.05 + 3, queries
        assert emulator.count(route=route, status=200) == 0
        assert backoff.delays == []

    return check


def _http_error(route: str, status: int, **kwargs: Any) -> Fault:
    return Fault("http_error", route=route, status=status, **kwargs)


FLAPPING = ("processing", "completed", "processing", "processing", "completed")

CASES: dict[str, Case] = {
    # -- the status query misbehaves, then recovers: both tasks succeed --------------------------------
    "query-429-retry-after": Case(
        faults=(_http_error("query", 429, times=2, skip=1, headers={"Retry-After": "2"}),),
        check=_retry_after_honoured,
    ),
    "query-429-empty-body-no-retry-after": Case(
        faults=(_http_error("query", 429, times=2, skip=1, body=""),),
        check=_backoff_without_retry_after,
    ),
    "query-500-html": Case(faults=(_http_error("query", 500, times=2),), check=_counts("query", 2, 500)),
    "query-502-html": Case(faults=(_http_error("query", 502, times=2),), check=_counts("query", 2, 502)),
    "query-503-html": Case(faults=(_http_error("query", 503, times=2),), check=_counts("query", 2, 503)),
    "query-reset-mid-body": Case(faults=(Fault("reset", route="query", times=2, after_bytes=20),)),
    "query-truncated-body": Case(faults=(Fault("truncate", route="query", times=2, after_bytes=20),)),
    "query-slow-headers": Case(
        faults=(Fault("slow_headers", route="query", times=1, skip=1, delay=1.0),),
        extra={"timeout": 0.3},
    ),
    "query-malformed-json": Case(faults=(Fault("malformed_json", route="query", times=2),)),
    "unknown-status-words": Case(
        scenario=Scenario(statuses=("queued", "e2e_warp_drive", "QUANTUM_RENDERING", "completed")),
    ),
    "status-flaps-completed-to-processing": Case(scenario=Scenario(statuses=FLAPPING), check=_flapped),
    # -- permanent query errors: fail at once (or after the unknown-id grace), never retried --------
    "query-401": Case(
        faults=(_http_error("query", 401),),
        error=("wait", r"VideoQueryAuthError: .*refused the API key \(HTTP 401"),
        check=_counts("query", 1),
    ),
    "unknown-task-400": Case(
        known=False,
        error=("wait", r"VideoTaskNotFoundError: .*still unknown to the gateway after the 0s grace period"),
        check=_not_found_bounded("query"),
    ),
    "unknown-task-404-vidu": Case(
        known=False,
        extra={"route": "vidu-native"},
        error=("wait", r"VideoTaskNotFoundError: .*still unknown .*HTTP 404"),
        check=_not_found_bounded("vidu_query"),
    ),
    # -- the video URL misbehaves ------------------------------------------------------------------------
    "video-reset-mid-body": Case(
        faults=(Fault("reset", route="video", times=1, after_bytes=64 * 1024),), check=_counts("video", 2)
    ),
    "video-truncated-body": Case(
        faults=(Fault("truncate", route="video", times=1, after_bytes=64 * 1024),), check=_counts("video", 2)
    ),
    "video-503-html": Case(faults=(_http_error("video", 503, times=2),), check=_counts("video", 3)),
    "video-403-expired": Case(
        faults=(_http_error("video", 403),),
        error=("download", r"VideoDownloadError: .*HTTP 403 .*has probably expired"),
        check=_counts("video", 1),
    ),
    "video-410-expired": Case(
        faults=(_http_error("video", 410),),
        error=("download", r"VideoDownloadError: .*HTTP 410 .*has probably expired"),
        check=_counts("video", 1),
    ),
    "html-page-as-video-200": Case(
        faults=(Fault("html_video", route="video"),),
        error=("download", r"VideoDownloadError: .*'text/html' instead of a video"),
        check=_counts("video", 1),
    ),
    "redirect-loop": Case(
        faults=(Fault("redirect_loop", route="video"),),
        error=("download", r"VideoDownloadError: .*more than 5 redirects"),
        check=_counts("video", 6),
    ),
    "video-url-non-http-scheme": Case(
        scenario=Scenario(polls_to_complete=2, video_url_scheme="ftp"),
        error=("download", r"VideoDownloadError: .*refusing to fetch 'ftp://.*only http\(s\)"),
        check=_counts("video", 0),
    ),
    "redirect-to-file-scheme": Case(
        faults=(Fault("redirect_scheme", route="video", location="file:///etc/passwd"),),
        error=("download", r"VideoDownloadError: .*refusing to fetch 'file:///etc/passwd'"),
        check=_counts("video", 1),
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(CASES))
def test_fault_end_to_end(
    name: str,
    airflow_db: str,
    emulator: Emulator,
    dags_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    backoff: Backoff,
    trigger_spy: TriggerSpy,
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    case = CASES[name]
    caplog.set_level(logging.DEBUG)
    use_dags_folder(monkeypatch, dags_folder)
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, **{"timeout": 5, **case.extra})
    )
    if case.known:
        emulator.add_task(TASK, case.scenario)
    for fault in case.faults:
        emulator.add_fault(fault)
    out = tmp_path / "out"
    dag = load_dag(dags_folder / "videoquery_faults_e2e.py")

    result = run_dag(dag, capsys, video_task_id=TASK, destination=f"file://{out}/")
    figure(name, result, emulator)

    if case.error is None:
        assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
        assert result.states == {"wait": TaskInstanceState.SUCCESS, "download": TaskInstanceState.SUCCESS}
        assert listing(out) == [NAME]
        assert (out / NAME).read_bytes() == emulator.expected_video(TASK)
        assert result.xcoms[("download", "return_value")] == f"file://{out}/{NAME}"
        assert result.xcoms[("wait", "return_value")]["status"] == "succeeded"
    else:
        failing, message = case.error
        assert result.run.state == DagRunState.FAILED
        assert result.states[failing] == TaskInstanceState.FAILED
        if failing == "wait":
            assert result.states["download"] == TaskInstanceState.UPSTREAM_FAILED
        assert_error_logged(result.output, message)
        assert listing(out) == []  # nothing at the destination, not even a temporary
    if case.check is not None:
        case.check(emulator, backoff)
    assert_key_nowhere(
        result.output,
        caplog.text,
        result.xcoms,
        result.rendered,
        trigger_spy.kwargs,
        trigger_spy.events,
    )
    for kwargs in trigger_spy.kwargs:
        assert set(kwargs) >= {"video_task_id", "videoquery_conn_id"}
        assert not {k for k in kwargs if "key" in k.lower() or "password" in k.lower()}


def assert_error_logged(output: str, pattern: str) -> None:
    import re

    assert re.search(pattern, output), f"{pattern!r} not in the task log:\n{output[-3000:]}"


# -- retry discipline, measured on the emulator's clock (the trigger, real sleeps) ---------------------------


def make_trigger(task_id: str = TASK, *, timeout: float = 10.0, **kwargs: Any) -> VideoTaskTrigger:
    now = time.time()
    options: dict[str, Any] = {"poll_interval": 0.05, "max_attempts": 4, "retry_delay": 0.1}
    options.update(kwargs)
    return VideoTaskTrigger(
        video_task_id=task_id, deadline=now + timeout, not_found_deadline=now + 1, started_at=now, **options
    )


def gaps(emulator: Emulator, route: str = "query") -> list[float]:
    times = [r.time for r in emulator.requests if r.route == route]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_retry_after_is_waited_for_real(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    emulator.add_fault(_http_error("query", 429, times=1, headers={"Retry-After": "1"}))

    event = await first_event(make_trigger(retry_delay=0.01))

    assert event["status"] == "success"
    assert emulator.count(route="query") == 2
    assert gaps(emulator) == [pytest.approx(gaps(emulator)[0])]
    assert gaps(emulator)[0] >= 0.95  # the gateway asked for 1 s; backoff alone would be ~0.01 s
    print(f"FIGURE retry-after: gap {gaps(emulator)[0]:.3f}s")


async def test_backoff_doubles_between_tries_within_one_poll(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    emulator.add_fault(_http_error("query", 503, times=3))

    event = await first_event(make_trigger(retry_delay=0.1))

    assert event["status"] == "success"
    assert emulator.count(route="query") == 4  # 3 failures + the answer, all within one poll
    # Full jitter within [b/2, b] for b = 0.1, 0.2, 0.4 (the emulator's clock). A gap is never shorter
    # than its backoff's half whatever the load; above, only a bound a wrong backoff would pass tenfold.
    print(f"FIGURE backoff gaps: {[round(g, 3) for g in gaps(emulator)]}")
    for gap, backoff in zip(gaps(emulator), (0.1, 0.2, 0.4), strict=True):
        assert backoff / 2 - 0.01 <= gap <= backoff * 10


async def test_persistent_outage_has_no_retry_storm(emulator: Emulator) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    emulator.add_fault(_http_error("query", 503))
    started = time.monotonic()

    event = await first_event(make_trigger(timeout=1.5, poll_interval=0.25, max_attempts=3, retry_delay=0.05))

    elapsed = time.monotonic() - started
    assert event["status"] == "timeout"
    # A poll costs at least 0.25 s of sleep plus its two backoffs (>= 0.025 + 0.05 s): within 1.5 s
    # at most ceil(1.5 / 0.325) + 1 polls, each at most max_attempts requests.
    polls_bound = int(1.5 / 0.325) + 2
    print(
        f"FIGURE outage: {emulator.count(route='query')} requests in {elapsed:.2f}s (bound {polls_bound * 3})"
    )
    assert emulator.count(route="query") <= polls_bound * 3
    assert emulator.count(route="query") >= 3


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (_http_error("query", 401), "refused the API key"),
        (_http_error("query", 403), "refused the API key"),
    ],
)
async def test_permanent_errors_are_not_retried(emulator: Emulator, fault: Fault, reason: str) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    emulator.add_fault(fault)

    event = await first_event(make_trigger())

    assert event["status"] == "error"
    assert reason in event["message"]
    assert emulator.count(route="query") == 1
