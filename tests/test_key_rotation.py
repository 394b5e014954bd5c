"""A rotated API key: the gateway now accepts only the new key, the connection already holds it.

On a 401 the hook looks the connection up again, past every cache (the hook's resolved config and the
triggerer's per-loop lookup cache), and retries once with the new key; only when the key did not change
is the refusal final.
"""

from __future__ import annotations

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.exceptions import VideoQueryAuthError
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus
from tests.conftest import connection_json

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
NEW_KEY = "sk-rotated-7c1e0d9b2a"
TASK = "veo3:rotated-1"


def rotate(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin's rotation: the connection gets the new key, the gateway revokes the old one."""
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, NEW_KEY, timeout=5))
    emulator.state.api_key = NEW_KEY


async def test_a_wait_survives_a_rotated_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator.add_task(TASK, Scenario(family="veo", polls_to_complete=3))
    async with VideoQueryHook(retry_policy=FAST) as hook:
        assert (await hook.aget_task(TASK)).status is not TaskStatus.SUCCEEDED  # key resolved, cached
        rotate(emulator, monkeypatch)
        assert (await hook.aget_task(TASK)).status is not TaskStatus.SUCCEEDED
        async with VideoQueryHook(retry_policy=FAST) as later:  # a hook started after: no 401 at all
            assert (await later.aget_task(TASK)).status is TaskStatus.SUCCEEDED
    assert emulator.count(route="query", status=401) == 1
    assert emulator.count(route="query", status=200) == 3
    logged = capsys.readouterr().out
    assert "now holds another one" in logged
    assert NEW_KEY not in logged


def test_sync_query_and_create_survive_a_rotated_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.add_task(TASK, Scenario(family="veo", polls_to_complete=1))
    hook = VideoQueryHook(retry_policy=FAST)
    assert hook.get_task(TASK).status is TaskStatus.SUCCEEDED
    rotate(emulator, monkeypatch)
    assert hook.get_task(TASK).status is TaskStatus.SUCCEEDED
    assert emulator.count(route="query", status=401) == 1

    creator = VideoQueryHook(retry_policy=FAST)
    assert creator.config.api_key.get_secret_value() == NEW_KEY  # resolved before the next rotation
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, "sk-third", timeout=5)
    )
    emulator.state.api_key = "sk-third"
    assert creator.create_task("veo3", "a cow").id.startswith("veo3:")
    assert emulator.count(route="create", status=401) == 1
    assert emulator.count(route="create", status=200) == 1  # paid once
    hook.close()
    creator.close()


async def test_a_revoked_key_without_a_new_one_fails_after_one_lookup(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.add_task(TASK, Scenario(family="veo", polls_to_complete=3))
    async with VideoQueryHook(retry_policy=FAST) as hook:
        await hook.aget_task(TASK)
        emulator.state.api_key = NEW_KEY  # revoked, but nobody updated the connection
        with pytest.raises(VideoQueryAuthError, match="401"):
            await hook.aget_task(TASK)
    assert emulator.count(route="query", status=401) == 1
