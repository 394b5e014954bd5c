"""The triggerer's shared async client: one per event loop and client key (TLS setting, proxy), taken
once per hook, given back exactly as taken — across loops, concurrent first calls and other hooks."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.hooks._aio import AsyncSender
from airflow_provider_videoquery.hooks._http import ClientKey, RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook, _shared_clients
from airflow_provider_videoquery.models import TaskStatus
from tests.conftest import connection_json
from tests.proxy import run_proxy

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
DIRECT = ClientKey(True, None)


def client_of(hook: VideoQueryHook) -> AsyncSender:
    assert hook._lease is not None
    return hook._lease.client


def test_a_hook_moved_to_another_loop_does_not_reuse_a_client_of_a_closed_loop(emulator: Emulator) -> None:
    emulator.add_task("veo3:loops", Scenario(family="veo", polls_to_complete=1))
    hook = VideoQueryHook(retry_policy=FAST)

    async def poll(close: bool) -> tuple[TaskStatus, AsyncSender, int]:
        status = (await hook.aget_task("veo3:loops")).status
        seen = status, client_of(hook), _shared_clients.users()
        if close:
            await hook.aclose()
        return seen

    first = asyncio.run(poll(close=False))  # the loop closes without aclose(), as a careless script's
    second = asyncio.run(poll(close=True))
    assert first[0] is second[0] is TaskStatus.SUCCEEDED
    assert second[1] is not first[1]
    assert second[2] == 1
    assert first[1].is_closed  # given back (and closed) when the hook moved on
    assert emulator.count(route="query") == 2


async def test_concurrent_first_calls_on_one_hook_take_one_client(emulator: Emulator) -> None:
    for i in range(5):
        emulator.add_task(f"veo3:c{i}", Scenario(family="veo", polls_to_complete=1))
    hook = VideoQueryHook(retry_policy=FAST)
    tasks = await asyncio.gather(*(hook.aget_task(f"veo3:c{i}") for i in range(5)))
    assert all(t.status is TaskStatus.SUCCEEDED for t in tasks)
    client = client_of(hook)
    assert _shared_clients.users() == 1
    await hook.aclose()
    assert _shared_clients.users() == 0
    assert client.is_closed  # the last user closed it: nothing leaks


def test_closing_a_hook_on_another_loop_leaves_that_loops_clients_alone(emulator: Emulator) -> None:
    emulator.add_task("veo3:other", Scenario(family="veo", polls_to_complete=1))
    wanderer = VideoQueryHook(retry_policy=FAST)

    async def use_once() -> None:
        await wanderer.aget_task("veo3:other")

    asyncio.run(use_once())  # its loop ends; the hook still holds that loop's client

    async def main() -> None:
        async with VideoQueryHook(retry_policy=FAST) as owner:
            await owner.aget_task("veo3:other")
            await wanderer.aclose()  # must give back its own lease, not the owner's client here
            assert _shared_clients.users() == 1
            assert not client_of(owner).is_closed
            assert (await owner.aget_task("veo3:other")).status is TaskStatus.SUCCEEDED

    asyncio.run(main())


async def test_hooks_with_different_proxies_get_different_clients(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.add_task("veo3:keyed", Scenario(family="veo", polls_to_complete=1))
    with run_proxy() as proxy:
        monkeypatch.setenv(
            "AIRFLOW_CONN_VIA_PROXY", connection_json(emulator.url, timeout=5, proxy=proxy.url)
        )
        async with (
            VideoQueryHook(retry_policy=FAST) as direct,
            VideoQueryHook("via_proxy", retry_policy=FAST) as proxied,
        ):
            await asyncio.gather(direct.aget_task("veo3:keyed"), proxied.aget_task("veo3:keyed"))
            assert client_of(direct) is not client_of(proxied)
            assert _shared_clients.users(DIRECT) == 1
            assert _shared_clients.users(ClientKey(True, proxy.url)) == 1
        assert len(proxy.targets("GET")) == 1  # only the proxied hook's poll
    assert emulator.count(route="query") == 2
