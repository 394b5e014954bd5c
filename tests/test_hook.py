"""VideoQueryHook over real HTTP against the emulator.

Every route, each transient and permanent error class, sync and async.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario
from airflow_provider_videoquery.exceptions import (
    VideoQueryAuthError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.hooks._http import GatewayConfig, RetryPolicy, Route
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook, _shared_clients
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from tests.conftest import API_KEY, connection_json

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the hook's backoff sleeps (sync path) instead of sleeping them."""
    recorded: list[float] = []
    monkeypatch.setattr(time, "sleep", recorded.append)
    return recorded


def hook(route: str | None = None, policy: RetryPolicy = FAST) -> VideoQueryHook:
    return VideoQueryHook(route=route, retry_policy=policy)


def poll_sync(h: VideoQueryHook, task_id: str, limit: int = 10) -> list[VideoTask]:
    seen = []
    for _ in range(limit):
        seen.append(h.get_task(task_id))
        if seen[-1].is_terminal:
            break
    return seen


async def poll_async(h: VideoQueryHook, task_id: str, limit: int = 10) -> list[VideoTask]:
    seen = []
    for _ in range(limit):
        seen.append(await h.aget_task(task_id))
        if seen[-1].is_terminal:
            break
    return seen


ROUTE_CASES = [
    ("unified", "sora-2:task_01kaaaaaaaaaaaaaaaaaaaaaaa", Scenario(family="sora", polls_to_complete=3)),
    ("unified", "veo3.1-fast:1770350082-abcdEFGH12", Scenario(family="veo", polls_to_complete=3)),
    ("unified", "grok:299604b7-c5ea-47b5-bc64-c06f300f0d27", Scenario(family="grok", polls_to_complete=3)),
    ("vidu-native", "876203112", Scenario(family="vidu", polls_to_complete=3)),
    ("openai", "video_68d7512d07848190", Scenario(family="openai", polls_to_complete=3)),
    ("new-api", "task_4XzJ1nQp8fKcV0aLm3yR7tBwE2uH6sDo", Scenario(family="newapi", polls_to_complete=3)),
]


@pytest.mark.parametrize(("route", "task_id", "scenario"), ROUTE_CASES)
def test_sync_query_each_route_to_success(
    emulator: Emulator, route: str, task_id: str, scenario: Scenario
) -> None:
    emulator.add_task(task_id, scenario)
    h = hook(route)
    seen = poll_sync(h, task_id)
    assert [t.status for t in seen][-1] is TaskStatus.SUCCEEDED
    assert len(seen) == 3
    assert seen[0].status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    assert all(t.id == task_id for t in seen)
    done = seen[-1]
    assert done.video_url is not None
    assert done.video_url.startswith(emulator.url)
    assert done.error is None
    assert emulator.polls(task_id) == 3
    h.close()


@pytest.mark.parametrize(("route", "task_id", "scenario"), ROUTE_CASES)
async def test_async_query_each_route_to_success(
    emulator: Emulator, route: str, task_id: str, scenario: Scenario
) -> None:
    emulator.add_task(task_id, scenario)
    async with hook(route) as h:
        seen = await poll_async(h, task_id)
        assert _shared_clients.users() == 1
    assert _shared_clients.users() == 0
    assert seen[-1].status is TaskStatus.SUCCEEDED
    assert seen[-1].video_url is not None


def test_route_comes_from_the_connection(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, route="vidu-native"))
    emulator.add_task("555", Scenario(family="vidu", polls_to_complete=1))
    assert hook().get_task("555").status is TaskStatus.SUCCEEDED
    assert emulator.count(route="vidu_query", task_id="555") == 1


def test_failed_task_carries_the_reason(emulator: Emulator) -> None:
    emulator.add_task("sora-2:task_fail", Scenario(family="sora", polls_to_complete=1, outcome="failed",
                                                   failure_reason="moderation: unsafe content"))  # fmt: skip
    task = hook().get_task("sora-2:task_fail")
    assert task.status is TaskStatus.FAILED
    assert task.error == "moderation: unsafe content"


def test_create_then_poll_with_the_returned_id(emulator: Emulator) -> None:
    h = hook()
    created = h.create_task("sora-2", "a cow flying", orientation="portrait", size="small", duration=10)
    assert created.id.startswith("sora-2:")
    assert created.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    task = emulator.task(created.id)
    assert task is not None
    assert task.body["orientation"] == "portrait"  # unknown fields pass through unchanged
    assert poll_sync(h, created.id)[-1].status is TaskStatus.SUCCEEDED


# -- transient errors: retried with backoff -----------------------------------------------------------

TRANSIENT = [
    pytest.param(Fault("http_error", route="query", status=429, times=2), id="429-json"),
    pytest.param(Fault("http_error", route="query", status=429, body="", times=2), id="429-empty-body"),
    pytest.param(Fault("http_error", route="query", status=500, times=2), id="500-html"),
    pytest.param(Fault("http_error", route="query", status=502, times=2), id="502-html"),
    pytest.param(Fault("http_error", route="query", status=503, times=2), id="503-html"),
    pytest.param(Fault("reset", route="query", times=2, after_bytes=10), id="reset-mid-body"),
    pytest.param(Fault("truncate", route="query", times=2, after_bytes=10), id="truncated-body"),
]


@pytest.mark.parametrize("fault", TRANSIENT)
def test_sync_transient_errors_are_retried(emulator: Emulator, sleeps: list[float], fault: Fault) -> None:
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(fault)
    assert hook().get_task("veo3:t1").status is TaskStatus.SUCCEEDED
    assert emulator.count(route="query", task_id="veo3:t1") == 3
    assert len(sleeps) == 2
    assert all(0 < s <= FAST.max_delay for s in sleeps)


@pytest.mark.parametrize("fault", TRANSIENT)
async def test_async_transient_errors_are_retried(emulator: Emulator, fault: Fault) -> None:
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(fault)
    async with hook() as h:
        assert (await h.aget_task("veo3:t1")).status is TaskStatus.SUCCEEDED
    assert emulator.count(route="query", task_id="veo3:t1") == 3


def test_retry_after_is_honoured(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("http_error", route="query", status=429, times=1, headers={"Retry-After": "3"}))
    h = hook(policy=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=10))
    assert h.get_task("veo3:t1").status is TaskStatus.SUCCEEDED
    assert sleeps == [3.0]


async def test_slow_headers_past_the_read_timeout_are_retried_in_the_triggerer(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=0.2))
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("slow_headers", route="query", times=1, delay=1.0))
    async with hook() as h:
        assert (await h.aget_task("veo3:t1")).status is TaskStatus.SUCCEEDED


def test_on_the_worker_a_query_ends_within_the_connections_timeout(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    """The connection's timeout is the total of a sync call's answers: a timed-out try leaves no time for
    another (the wait polls again later)."""
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=0.2))
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("slow_headers", route="query", times=1, delay=1.0))
    with pytest.raises(VideoQueryTransientError, match=r"after 1 attempt \(its answers took the 0.2s"):
        hook().get_task("veo3:t1")
    assert sleeps == []


def test_backoff_grows_and_gives_up_with_a_clear_error(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=1))
    emulator.add_fault(Fault("http_error", route="query", status=503))
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=4.0)
    with pytest.raises(VideoQueryTransientError) as err:
        hook(policy=policy).get_task("veo3:t1")
    assert emulator.count(route="query", task_id="veo3:t1") == 5
    assert len(sleeps) == 4
    # full jitter within [backoff/2, backoff], backoff = 1, 2, 4, 4 (capped)
    for delay, backoff in zip(sleeps, [1, 2, 4, 4], strict=True):
        assert backoff / 2 <= delay <= backoff
    message = str(err.value)
    assert "veo3:t1" in message
    assert "5 attempts" in message
    assert "503" in message


# -- permanent errors: raised at once --------------------------------------------------------------


def test_bad_key_fails_at_once(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    wrong_key = "sk-wrong-0000000000"
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key=wrong_key))
    emulator.add_task("veo3:t1")
    with pytest.raises(VideoQueryAuthError) as err:
        hook().get_task("veo3:t1")
    assert emulator.count(route="query") == 1
    assert sleeps == []
    assert "401" in str(err.value)
    assert "invalid token" in str(err.value)  # the gateway's own words
    assert wrong_key not in str(err.value)


def test_forbidden_is_an_auth_error(emulator: Emulator) -> None:
    emulator.add_task("veo3:t1")
    emulator.add_fault(Fault("http_error", route="query", status=403))
    with pytest.raises(VideoQueryAuthError, match="403"):
        hook().get_task("veo3:t1")
    assert emulator.count(route="query") == 1


@pytest.mark.parametrize(
    ("route", "task_id", "code"),
    [("unified", "veo3:nope", 400), ("vidu-native", "404404", 404), ("openai", "video_nope", 400)],
)
def test_unknown_task_fails_at_once(emulator: Emulator, route: str, task_id: str, code: int) -> None:
    with pytest.raises(VideoTaskNotFoundError) as err:
        hook(route).get_task(task_id)
    assert task_id in str(err.value)
    assert str(code) in str(err.value)
    assert emulator.count(task_id=task_id) == 1


async def test_async_permanent_errors_raise_the_same_types(emulator: Emulator) -> None:
    async with hook() as h:
        with pytest.raises(VideoTaskNotFoundError):
            await h.aget_task("veo3:nope")
    assert emulator.count(task_id="veo3:nope") == 1


def test_malformed_json_names_the_task_and_shows_the_body(emulator: Emulator) -> None:
    emulator.add_task("veo3:t1")
    emulator.add_fault(Fault("malformed_json", route="query", times=1))
    with pytest.raises(VideoQueryResponseError) as err:
        hook().get_task("veo3:t1")
    message = str(err.value)
    assert "veo3:t1" in message
    assert '{"id": "x", "sta' in message
    assert emulator.count(route="query") == 1


def test_create_is_not_retried_once_the_gateway_may_have_taken_it(
    emulator: Emulator, sleeps: list[float]
) -> None:
    emulator.add_fault(Fault("reset", route="create", times=1, after_bytes=5))
    with pytest.raises(VideoQueryTransientError, match="duplicate"):
        hook().create_task("veo3", "a cow")
    assert emulator.count(route="create") == 1
    assert sleeps == []


def test_create_is_retried_when_rate_limited(emulator: Emulator, sleeps: list[float]) -> None:
    emulator.add_fault(Fault("http_error", route="create", status=429, times=1))
    assert hook().create_task("veo3", "a cow").id.startswith("veo3:")
    assert emulator.count(route="create") == 2


# -- connection handling -----------------------------------------------------------------------------


async def test_async_path_never_calls_sync_connection_apis(
    emulator: Emulator, sync_connection_apis_raise: None
) -> None:
    emulator.add_task("veo3:t1", Scenario(family="veo", polls_to_complete=2))
    async with hook() as h:
        tasks = await poll_async(h, "veo3:t1")
    assert tasks[-1].status is TaskStatus.SUCCEEDED


async def test_sync_guard_is_real(emulator: Emulator, sync_connection_apis_raise: None) -> None:
    with pytest.raises(AssertionError, match="sync connection API"):
        hook().get_task("veo3:t1")  # a sync call made on the loop, as a careless trigger would


async def test_hooks_on_one_loop_share_one_client(emulator: Emulator) -> None:
    for i in range(20):
        emulator.add_task(f"veo3:s{i}", Scenario(family="veo", polls_to_complete=1))
    hooks = [hook() for _ in range(20)]
    results = await asyncio.gather(*(h.aget_task(f"veo3:s{i}") for i, h in enumerate(hooks)))
    assert all(t.status is TaskStatus.SUCCEEDED for t in results)
    assert len({id(h._lease.client) for h in hooks if h._lease}) == 1
    assert _shared_clients.users() == 20
    await asyncio.gather(*(h.aclose() for h in hooks))
    assert _shared_clients.users() == 0


def test_test_connection(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = hook().test_connection()
    assert ok
    assert "accepted" in message
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-bad-999"))
    ok, message = hook().test_connection()
    assert not ok
    assert "API key" in message
    assert "sk-bad-999" not in message


def test_config_from_connection_fields() -> None:
    config = GatewayConfig.from_connection(
        "c", "gw.example.com/", API_KEY,
        {"route": "openai", "timeout": "12", "extra_headers": json.dumps({"X-Forwarded-Host": "me.example"}),
         "allowed_download_hosts": "cdn.a.com, CDN.B.com", "verify_ssl": False},
    )  # fmt: skip
    assert config.base_url == "https://gw.example.com"
    assert config.route is Route.OPENAI
    assert config.read_timeout == 12.0
    assert config.allowed_download_hosts == ("cdn.a.com", "cdn.b.com")
    assert config.verify_ssl is False
    headers = config.auth_headers()
    assert headers["X-Forwarded-Host"] == "me.example"
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["Accept"] == headers["Content-Type"] == "application/json"
    assert API_KEY not in repr(config)
    assert config.query_url("sora-2:task_1") == "https://gw.example.com/v1/videos/sora-2%3Atask_1"
    assert config.query_url("a:b/c", Route.UNIFIED) == "https://gw.example.com/v1/video/query?id=a%3Ab%2Fc"
    assert (
        config.query_url("a/b", Route.VIDU_NATIVE)
        == "https://gw.example.com/vidu-native/video/generations/a%2Fb"
    )


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(VideoQueryAuthError, match="password"):
        GatewayConfig.from_connection("c", "https://gw", "", {})


async def test_a_batch_of_hooks_looks_the_connection_up_once_a_minute(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_videoquery.hooks import videoquery

    lookups: list[str] = []
    real_lookup = videoquery.get_async_connection

    async def counting_lookup(conn_id: str) -> Any:
        lookups.append(conn_id)
        return await real_lookup(conn_id)

    monkeypatch.setattr(videoquery, "get_async_connection", counting_lookup)
    emulator.add_task("veo3:c1", Scenario(family="veo", polls_to_complete=1))
    hooks = [hook() for _ in range(10)]
    await asyncio.gather(*(h.aget_task("veo3:c1") for h in hooks))
    assert lookups == ["videoquery_default"]

    monkeypatch.setattr(videoquery._recent_configs, "ttl", -1.0)  # the minute has passed
    async with hook() as late:
        await late.aget_task("veo3:c1")
    assert lookups == ["videoquery_default"] * 2
    await asyncio.gather(*(h.aclose() for h in hooks))
