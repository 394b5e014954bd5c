"""VideoBatchTrigger against the emulator over HTTP: one event for many tasks, the poll budget kept,
async connection lookups only, plain kwargs that survive serialization."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Fault, Scenario
from airflow_provider_videoquery.hooks.videoquery import _shared_clients
from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger
from tests.conftest import API_KEY, connection_json

pytestmark = pytest.mark.timeout(60)


def _trigger(ids: list[str], timeout: float = 20.0, **kwargs: Any) -> VideoBatchTrigger:
    now = time.time()
    options: dict[str, Any] = {"poll_interval": 0.02, "max_polls_per_second": 1000, "progress_interval": 0.2}
    options.update(kwargs)
    return VideoBatchTrigger(tasks={i: [now, now + timeout] for i in ids}, **options)


async def _only_event(trigger: VideoBatchTrigger) -> dict[str, Any]:
    run = trigger.run()
    event = await anext(run)
    with pytest.raises(StopAsyncIteration):
        await anext(run)
    assert _shared_clients.users() == 0
    payload: dict[str, Any] = event.payload
    json.dumps(payload)
    return payload


def _add(emulator: Any, count: int, scenario: Scenario, prefix: str = "t") -> list[str]:
    ids = [f"sora-2:{prefix}{n}" for n in range(count)]
    for task_id in ids:
        emulator.add_task(task_id, scenario)
    return ids


@pytest.mark.usefixtures("sync_connection_apis_raise")
async def test_one_event_for_every_outcome_of_many_tasks(
    emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _add(emulator, 20, Scenario(polls_to_complete=2))
    failed = _add(
        emulator, 2, Scenario(polls_to_complete=1, outcome="failed", failure_reason="moderated"), "f"
    )
    slow = _add(emulator, 1, Scenario(polls_to_complete=10_000), "s")

    event = await _only_event(_trigger(done + failed + slow, timeout=1.5, fire_after=23, fire_hold=60))

    assert event["status"] == "wave"
    outcomes = event["finished"]
    assert {outcomes[i]["status"] for i in done} == {"success"}
    assert all(outcomes[i]["message"] is None for i in done)  # small: the worker re-reads successes
    assert {outcomes[i]["status"] for i in failed} == {"failed"}
    assert "moderated" in outcomes[failed[0]]["message"]
    assert outcomes[slow[0]]["status"] == "timeout"
    assert "did not finish within" in outcomes[slow[0]]["message"]
    output = capsys.readouterr()
    progress = [line for line in (output.out + output.err).splitlines() if "Batch: 23 request(s)" in line]
    assert len(progress) >= 2  # at the start, every progress_interval, and at the end
    assert "running 0, succeeded 20 (stored 0), failed 3" in progress[-1]
    assert API_KEY not in output.out + output.err


async def test_fires_once_enough_finished_without_waiting_for_the_rest(emulator: Any) -> None:
    quick = _add(emulator, 3, Scenario(polls_to_complete=1))
    slow = _add(emulator, 5, Scenario(polls_to_complete=10_000), "s")

    event = await _only_event(_trigger(quick + slow, fire_after=3))

    assert set(event["finished"]) == set(quick)


async def test_fires_when_a_finished_task_waited_long_enough(emulator: Any) -> None:
    quick = _add(emulator, 1, Scenario(polls_to_complete=1))
    slow = _add(emulator, 3, Scenario(polls_to_complete=10_000), "s")

    event = await _only_event(_trigger(quick + slow, fire_after=4, fire_hold=0.3))

    assert set(event["finished"]) == set(quick)


async def test_wakes_with_nothing_to_wait_for(emulator: Any) -> None:
    event = await _only_event(_trigger([], wake_at=time.time() + 0.2))
    assert event == {"status": "wave", "finished": {}, "message": "Woken to create more tasks."}
    assert emulator.count() == 0


async def test_the_total_poll_rate_stays_under_the_cap(emulator: Any) -> None:
    ids = _add(emulator, 50, Scenario(polls_to_complete=10_000))
    started = time.monotonic()

    event = await _only_event(_trigger(ids, timeout=1.0, max_polls_per_second=40, max_in_flight=8))

    elapsed = time.monotonic() - started
    polls = emulator.count(route="query")
    # 40 a second at most, whatever 50 tasks polled every 20 ms would ask for (+1: the first slot).
    assert polls <= 40 * elapsed + 1
    assert {o["status"] for o in event["finished"].values()} == {"timeout"}


async def test_a_refused_key_fires_at_once(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-wrong"))
    ids = _add(emulator, 5, Scenario(polls_to_complete=10_000))

    event = await _only_event(_trigger(ids, fire_after=5))

    outcome = next(iter(event["finished"].values()))
    assert outcome["error_type"] == "VideoQueryAuthError"
    assert emulator.count(route="query") <= 5  # no task was polled twice: the first refusal ends the wait


async def test_transient_failures_are_ridden_out(emulator: Any) -> None:
    ids = _add(emulator, 4, Scenario(polls_to_complete=2))
    emulator.add_fault(Fault("http_error", route="query", status=503, times=3))

    event = await _only_event(_trigger(ids, fire_after=4))

    assert {o["status"] for o in event["finished"].values()} == {"success"}


async def test_a_broken_connection_still_yields_one_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", json.dumps({"conn_type": "videoquery", "host": ""}))
    event = await _only_event(_trigger(["sora-2:x"]))
    assert event["status"] == "error"
    assert "no API key" in event["message"]


def test_kwargs_are_plain_and_round_trip() -> None:
    trigger = _trigger(["sora-2:a", "veo3.1:b"], wake_at=5.0, progress={"total": 9, "pending": 7})
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_videoquery.triggers.batch.VideoBatchTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert VideoBatchTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert set(kwargs["tasks"]) == {"sora-2:a", "veo3.1:b"}


def test_a_waiting_task_keeps_no_raw_answer() -> None:
    """10,000 waits at once: each keeps its last state for the timeout message, not the whole answer."""
    from airflow_provider_videoquery.models import parse_task
    from airflow_provider_videoquery.triggers.batch import _Wave

    wave = _Wave(_trigger(["sora-2:a"]))
    wave._after(
        "sora-2:a", parse_task({"status": "processing", "progress": 40, "detail": {"x": 1}}, "sora-2:a")
    )
    last = wave.watches["sora-2:a"].last
    assert last is not None
    assert last.raw == {}
    assert last.progress == 40


async def test_an_outage_at_the_start_of_a_wave_is_ridden_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens for the first second of the wave (a restarting gateway): every task still ends
    succeeded, as a VideoTaskTrigger's wait would."""
    import asyncio
    import socket

    from airflow_provider_videoquery.emulator import run_emulator

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(f"http://127.0.0.1:{port}", timeout=5)
    )
    ids = [f"sora-2:outage{n}" for n in range(3)]
    waiting = asyncio.ensure_future(_only_event(_trigger(ids, fire_after=3)))
    await asyncio.sleep(1.0)  # the first polls are refused
    assert not waiting.done()
    with run_emulator(api_key=API_KEY, port=port) as emulator:
        for task_id in ids:
            emulator.add_task(task_id, Scenario(polls_to_complete=1))
        event = await asyncio.wait_for(waiting, 30)
    assert {o["status"] for o in event["finished"].values()} == {"success"}
    assert set(event["finished"]) == set(ids)


def test_unreachable_timeout_is_checked_and_kept() -> None:
    assert _trigger(["sora-2:a"]).unreachable_timeout == 180.0
    _, kwargs = _trigger(["sora-2:a"], unreachable_timeout=30).serialize()
    assert kwargs["unreachable_timeout"] == 30.0
    with pytest.raises(ValueError, match="unreachable_timeout must be between 0 and 300"):
        _trigger(["sora-2:a"], unreachable_timeout=900)


async def test_never_fires_sooner_than_its_hold_after_it_started(emulator: Any) -> None:
    """Airflow fails a task whose trigger fired seconds after it deferred ("state mismatch"): finished
    tasks wait for the hold (and are still polled meanwhile), however soon they finished."""
    ids = _add(emulator, 3, Scenario(polls_to_complete=1))
    started = time.monotonic()

    event = await _only_event(_trigger(ids, fire_after=1, min_hold=0.5))

    assert time.monotonic() - started >= 0.5
    assert set(event["finished"]) == set(ids)  # the others finished during the hold and came along


async def test_an_error_event_waits_for_the_hold_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", json.dumps({"conn_type": "videoquery", "host": ""}))
    started = time.monotonic()
    event = await _only_event(_trigger(["sora-2:x"], min_hold=0.3))
    assert event["status"] == "error"
    assert time.monotonic() - started >= 0.3


async def test_a_short_wait_on_the_worker_gives_up_without_an_event(emulator: Any) -> None:
    """What the batch runs on the worker before it would defer: the wave's event if it comes within the
    time given, else None (and nothing left open)."""
    slow = _add(emulator, 2, Scenario(polls_to_complete=10_000), "s")
    assert await _trigger(slow).wait(give_up_after=0.3) is None
    assert _shared_clients.users() == 0

    quick = _add(emulator, 2, Scenario(polls_to_complete=1), "q")
    event = await _trigger(quick, fire_after=2).wait(give_up_after=30)
    assert event is not None
    assert set(event["finished"]) == set(quick)


def test_a_poll_interval_of_zero_does_not_spin() -> None:
    assert _trigger(["sora-2:a"], poll_interval=0).poll_interval > 0
