"""Unreachable is not unwell: a refused connection, an unknown host or TLS spoken to a plain-HTTP port ends
a wait quickly with a message naming the URL and the likely fix; a gateway that answered before is ridden
out. Every case against a real socket on 127.0.0.1 (the unknown host: a resolver that knows no name, so
no DNS packet leaves the machine)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario, run_emulator
from airflow_provider_videoquery.events import task_from_event
from airflow_provider_videoquery.exceptions import VideoQueryTransientError, VideoQueryUnreachableError
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.conftest import API_KEY, connection_json

pytestmark = pytest.mark.timeout(60)

TASK = "veo3:unreachable-1"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> str:
    """``videoquery_default`` pointing at a port of 127.0.0.1 where nothing listens."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(url, timeout=5))
    return url


@pytest.fixture
def no_dns(monkeypatch: pytest.MonkeyPatch) -> str:
    """``videoquery_default`` on a host name the resolver does not know (answered locally)."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "gateway.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    url = "http://gateway.invalid:8080"
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(url, timeout=5))
    return url


@pytest.fixture
def tls_to_plain(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """``videoquery_default`` speaking https to the emulator's plain-HTTP port."""
    url = emulator.url.replace("http://", "https://")
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(url, timeout=5))
    return url


@pytest.fixture(params=["refused", "no_dns", "tls_to_plain"])
def nowhere(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def assert_names_url_and_fix(message: str, url: str) -> None:
    assert f"nothing answered at {url}/v1/video/query " in message
    for fix in ("scheme (http or https), host and port", "HTTPS_PROXY", '"proxy" extra'):
        assert fix in message
    assert "looks unwell" not in message
    assert API_KEY not in message


def test_sync_hook_calls_it_unreachable_after_its_retries(
    nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with pytest.raises(VideoQueryUnreachableError) as err:
        VideoQueryHook(retry_policy=FAST).get_task(TASK)
    assert len(slept) == FAST.max_attempts - 1  # retried first: a blip is not a wrong address
    assert_names_url_and_fix(str(err.value), nowhere)


async def test_async_hook_calls_it_unreachable_not_a_connect_timeout(nowhere: str) -> None:
    async with VideoQueryHook(retry_policy=FAST) as hook:
        with pytest.raises(VideoQueryUnreachableError) as err:
            await hook.aget_task(TASK)
    assert "ConnectTimeout" not in str(err.value)
    assert "ConnectError" in str(err.value)
    assert_names_url_and_fix(str(err.value), nowhere)


def test_an_unwell_gateway_is_not_called_unreachable(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_videoquery.emulator import Fault

    monkeypatch.setattr(time, "sleep", lambda _: None)
    emulator.add_fault(Fault("http_error", route="query", status=503))
    with pytest.raises(VideoQueryTransientError, match="looks unwell") as err:
        VideoQueryHook(retry_policy=FAST).get_task(TASK)
    assert not isinstance(err.value, VideoQueryUnreachableError)


def test_the_workers_first_look_fails_at_once_instead_of_deferring(
    refused: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)  # the hook's own retries, shortened
    sensor = VideoTaskSensor(task_id="wait", video_task_id=TASK, timeout=3600)
    with pytest.raises(VideoQueryUnreachableError, match=f"nothing answered at {refused}"):
        sensor.execute({})  # type: ignore[arg-type]  # a TaskDeferred would mean an hour-long wait


def make_trigger(**kwargs: Any) -> VideoTaskTrigger:
    now = time.time()
    options: dict[str, Any] = {
        "poll_interval": 0.05,
        "max_attempts": 1,
        "deadline": now + 60,
        "started_at": now,
    }
    return VideoTaskTrigger(video_task_id=TASK, **{**options, **kwargs})


async def test_the_trigger_ends_once_nothing_answered_for_its_unreachable_timeout(refused: str) -> None:
    event = (await anext(make_trigger(unreachable_timeout=0.3).run())).payload
    assert event["status"] == "error"
    assert event["error_type"] == "VideoQueryUnreachableError"
    assert "Gave up after" in event["message"]
    assert_names_url_and_fix(event["message"], refused)
    with pytest.raises(VideoQueryUnreachableError):
        task_from_event(event, TASK)


@pytest.fixture
def outage_port(monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(f"http://127.0.0.1:{port}", timeout=5)
    )
    return port


async def test_the_trigger_rides_out_an_outage_of_a_gateway_that_answered(outage_port: int) -> None:
    """The gateway answers, goes away for longer than unreachable_timeout, comes back: success."""
    with run_emulator(api_key=API_KEY, port=outage_port) as before:
        before.add_task(TASK, Scenario(polls_to_complete=10**6))
        waiting = asyncio.ensure_future(anext(make_trigger(unreachable_timeout=0.2).run()))
        for _ in range(500):  # until its first poll got an answer
            if before.count(route="query"):
                break
            await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # five times the unreachable_timeout without anything listening
    assert not waiting.done()
    with run_emulator(api_key=API_KEY, port=outage_port) as after:
        after.add_task(TASK, Scenario(polls_to_complete=1))
        event = (await asyncio.wait_for(waiting, 30)).payload
    assert event["status"] == "success"


def test_unreachable_timeout_is_bounded_and_survives_serialization() -> None:
    _, kwargs = make_trigger(unreachable_timeout=120).serialize()
    assert kwargs["unreachable_timeout"] == 120.0
    assert VideoTaskTrigger(**kwargs).unreachable_timeout == 120.0
    assert make_trigger().unreachable_timeout == 180.0
    with pytest.raises(ValueError, match="between 0 and 300"):
        make_trigger(unreachable_timeout=301)
    with pytest.raises(ValueError, match="between 0 and 300"):
        VideoTaskSensor(task_id="wait", video_task_id=TASK, unreachable_timeout=3600)
