"""VideoCreateOperator against the emulator: the returned id is one the gateway knows."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Fault
from airflow_provider_videoquery.exceptions import VideoQueryAuthError, VideoQueryError
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator
from tests.conftest import connection_json

pytestmark = pytest.mark.timeout(30)


def test_templated_fields() -> None:
    assert set(VideoCreateOperator.template_fields) == {"model", "prompt", "extra_fields"}


@pytest.mark.parametrize("model", ["veo3.1-fast", "sora-2", "grok-video-3"])
def test_returns_an_id_the_gateway_knows(emulator: Any, model: str) -> None:
    operator = VideoCreateOperator(
        task_id="create",
        model=model,
        prompt="A cat surfing a wave at sunset",
        extra_fields={"aspect_ratio": "16:9", "images": []},
    )

    video_task_id = operator.execute({})

    task = emulator.task(video_task_id)
    assert task is not None
    assert video_task_id.startswith(f"{model}:")
    assert task.body == {
        "model": model,
        "prompt": "A cat surfing a wave at sunset",
        "aspect_ratio": "16:9",
        "images": [],
    }
    assert emulator.count(route="create") == 1
    hook = VideoQueryHook()
    try:
        assert hook.get_task(video_task_id).id == video_task_id
    finally:
        hook.close()


def test_openai_route(emulator: Any) -> None:
    operator = VideoCreateOperator(task_id="create", model="sora-2", prompt="A lighthouse", route="openai")
    video_task_id = operator.execute({})
    assert video_task_id.startswith("video_")
    assert emulator.task(video_task_id) is not None
    assert emulator.count(route="openai_create") == 1


def test_create_is_not_retried_after_the_gateway_may_have_it(emulator: Any) -> None:
    emulator.add_fault(Fault("http_error", route="create", status=500))
    operator = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox")
    with pytest.raises(VideoQueryError, match="not retried"):
        operator.execute({})
    assert emulator.count(route="create") == 1


def test_bad_key_fails_clearly(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-wrong"))
    operator = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox")
    with pytest.raises(VideoQueryAuthError, match="refused the API key"):
        operator.execute({})
    assert emulator.state.task_count() == 0
