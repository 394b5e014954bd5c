"""200 triggers in one event loop: all finish right, and one shared HTTP client serves them all."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow_provider_videoquery.emulator import Scenario
from airflow_provider_videoquery.hooks.videoquery import _shared_clients
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import first_event

N = 200


async def test_200_triggers_share_one_client(emulator: Any) -> None:
    ids = [f"veo3.1-fast:load-{i:04d}" for i in range(N)]
    for i, task_id in enumerate(ids):
        scenario = Scenario(polls_to_complete=3 + i % 3, outcome="failed" if i % 10 == 0 else "success")
        emulator.add_task(task_id, scenario)
    now = time.time()
    triggers = [
        VideoTaskTrigger(video_task_id=task_id, deadline=now + 600, poll_interval=0.1, started_at=now)
        for task_id in ids
    ]

    loop = asyncio.get_running_loop()
    clients_seen: set[int] = set()
    peak_users = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak_users
        while not done.is_set():
            held = _shared_clients._by_loop.get(loop, {})
            assert len(held) <= 1, "more than one client on the loop"
            for client, users in held.values():
                clients_seen.add(id(client))
                peak_users = max(peak_users, users)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    done.set()
    await watcher

    for i, (task_id, event) in enumerate(zip(ids, events, strict=True)):
        assert event["video_task_id"] == task_id
        assert event["status"] == ("failed" if i % 10 == 0 else "success"), event["message"]
        assert emulator.polls(task_id) == 3 + i % 3
    assert len(clients_seen) == 1
    assert 1 < peak_users <= N
    assert _shared_clients.users() == 0
    assert not _shared_clients._by_loop.get(loop)
