"""VideoCreateOperator against the emulator: the returned id is one the gateway knows, and a create is
paid for once — also across Airflow's own retries."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_videoquery.emulator import Emulator, Fault, Limits
from airflow_provider_videoquery.exceptions import (
    VideoCreateRequestError,
    VideoCreateUncertainError,
    VideoQueryAuthError,
    VideoQueryTransientError,
)
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator
from tests.airflow_helpers import assert_key_nowhere, load_dag, make_context, run_dag, use_dags_folder
from tests.conftest import connection_json

pytestmark = pytest.mark.timeout(60)


def test_templated_fields() -> None:
    assert set(VideoCreateOperator.template_fields) == {"model", "prompt", "extra_fields"}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("veo3.1-fast", {"aspect_ratio": "16:9", "images": []}),
        ("sora-2", {"orientation": "portrait", "images": []}),
        ("grok-video-3", {"aspect_ratio": "3:2", "images": []}),
    ],
)
def test_returns_an_id_the_gateway_knows(emulator: Emulator, model: str, fields: dict[str, Any]) -> None:
    operator = VideoCreateOperator(
        task_id="create", model=model, prompt="A cat surfing a wave at sunset", extra_fields=fields
    )
    context = make_context()

    video_task_id = operator.execute(context)

    task = emulator.task(video_task_id)
    assert task is not None
    assert video_task_id.startswith(f"{model}:")
    assert task.body == {"model": model, "prompt": "A cat surfing a wave at sunset", **fields}
    assert emulator.count(route="create") == 1
    pushed = context["ti"].xcom
    assert pushed.keys() == {"video_task_id", "video_request"}
    assert pushed["video_task_id"] == video_task_id
    # What the gallery shows for the video a downstream download stores (docs/gallery.md).
    assert pushed["video_request"] == {
        "video_task_id": video_task_id,
        "model": model,
        "prompt": "A cat surfing a wave at sunset",
        "created_at": pushed["video_request"]["created_at"],
    }
    hook = VideoQueryHook()
    try:
        assert hook.get_task(video_task_id).id == video_task_id
    finally:
        hook.close()


def test_openai_route(emulator: Emulator) -> None:
    operator = VideoCreateOperator(task_id="create", model="sora-2", prompt="A lighthouse", route="openai")
    video_task_id = operator.execute({})
    assert video_task_id.startswith("video_")
    assert emulator.task(video_task_id) is not None
    assert emulator.count(route="openai_create") == 1


def test_created_is_logged_once_with_the_id(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    video_task_id = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox").execute({})
    logs = capsys.readouterr().out + caplog.text  # structlog lines reach stdout, stdlib ones the capture
    lines = [line for line in logs.splitlines() if "Created" in line]
    assert len(lines) == 1
    assert video_task_id in lines[0]


# -- checked before anything is paid for ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "prompt", "fields", "message"),
    [
        ("veo3.1-fast", "", {}, "prompt must be a non-empty text"),
        ("", "A fox", {}, "model must be a non-empty text"),
        ("grok-video-3", "A fox", {"aspect_ratio": "16:9"}, "(accepted: '2:3', '3:2', '1:1')"),
        ("sora-2", "A fox", {"duration": 25}, "(accepted: 10, 15)"),
    ],
)
def test_a_bad_request_fails_before_the_create(
    emulator: Emulator, model: str, prompt: str, fields: dict[str, Any], message: str
) -> None:
    operator = VideoCreateOperator(task_id="create", model=model, prompt=prompt, extra_fields=fields)
    with pytest.raises(VideoCreateRequestError, match=re.escape(message)) as caught:
        operator.execute(make_context())
    assert "Task 'create' was not sent (nothing was paid for)" in str(caught.value)
    assert isinstance(caught.value, AirflowFailException)
    assert emulator.count() == 0


def test_an_unknown_model_is_created_with_one_warning(
    emulator: Emulator, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    operator = VideoCreateOperator(task_id="create", model="kling-v2", prompt="A fox", extra_fields={"x": 1})
    operator.execute({})
    logs = capsys.readouterr().out + caplog.text
    assert len([line for line in logs.splitlines() if "sent unchecked" in line]) == 1
    assert emulator.creates().accepted == 1


def test_openai_route_fields_are_not_held_to_the_unified_rules(emulator: Emulator) -> None:
    operator = VideoCreateOperator(
        task_id="create", model="sora-2", prompt="A fox", route="openai", extra_fields={"size": "1280x720"}
    )
    assert operator.execute({}).startswith("video_")


# -- a create the gateway may have received is paid for once ---------------------------------------------
UNCERTAIN = {
    "500": [Fault("http_error", route="create", status=500)],
    "502-html": [Fault("http_error", route="create", status=502)],
    "reset-after-the-task-was-made": [Fault("reset", route="create", after_bytes=5)],
    "200-without-an-id": [Fault("http_error", route="create", status=200, body='{"status": "pending"}')],
    "200-not-json": [Fault("malformed_json", route="create")],
}


@pytest.mark.parametrize("name", list(UNCERTAIN))
def test_uncertain_create_fails_without_retries_and_says_what_to_check(emulator: Emulator, name: str) -> None:
    for fault in UNCERTAIN[name]:
        emulator.add_fault(fault)
    operator = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox in the snow")

    with pytest.raises(VideoCreateUncertainError) as caught:
        operator.execute(make_context())

    err = caught.value
    assert isinstance(err, AirflowFailException)  # Airflow does not retry it
    assert isinstance(err, VideoQueryTransientError)
    message = str(err)
    assert "'veo3.1-fast'" in message
    assert emulator.url in message
    assert "Check the gateway's task list" in message
    assert "'A fox in the snow'" in message
    assert "retry_uncertain_creates=True" in message
    assert_key_nowhere(message)
    assert emulator.count(route="create") == 1


def test_a_late_answer_is_uncertain(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=0.3))
    emulator.answer_creates_late(2.0, times=1)
    operator = VideoCreateOperator(task_id="create", model="sora-2", prompt="A lighthouse")
    with pytest.raises(VideoCreateUncertainError, match="ReadTimeout"):
        operator.execute({})
    assert emulator.creates().accepted == 1


def test_opting_in_makes_the_uncertain_create_retryable(emulator: Emulator) -> None:
    emulator.add_fault(Fault("http_error", route="create", status=500))
    operator = VideoCreateOperator(
        task_id="create", model="veo3.1-fast", prompt="A fox", retry_uncertain_creates=True
    )
    with pytest.raises(VideoQueryTransientError) as caught:
        operator.execute({})
    assert not isinstance(caught.value, AirflowFailException)
    assert "retry_uncertain_creates=True" in str(caught.value)
    assert "Check the gateway's task list" in str(caught.value)


def test_refusals_the_gateway_surely_did_not_act_on_are_retried(emulator: Emulator) -> None:
    emulator.set_limits(Limits(create_rate=1000.0, create_burst=1, retry_after=0))
    emulator.add_fault(Fault("http_error", route="create", status=503, times=1))
    VideoCreateOperator(task_id="a", model="veo3.1-fast", prompt="A fox").execute({})
    VideoCreateOperator(task_id="b", model="veo3.1-fast", prompt="A fox").execute({})  # 429 first, then ok
    assert emulator.creates().accepted == 2
    assert emulator.count(route="create", status=503) == 1


def test_bad_key_fails_clearly(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, api_key="sk-wrong"))
    operator = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox")
    with pytest.raises(VideoQueryAuthError, match="refused the API key"):
        operator.execute({})
    assert emulator.state.task_count() == 0


# -- a real Airflow retry: retries=2, the first POST answered after the read timeout ----------------------
RETRY_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator

with DAG(dag_id="videoquery_paid_once", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
    VideoCreateOperator(
        task_id="create",
        model="veo3.1-fast",
        prompt="A paper boat on a rainy street",
        retries=2,
        retry_delay=timedelta(0),
        retry_uncertain_creates={opt_in},
    )
"""


@pytest.mark.integration
@pytest.mark.parametrize("opt_in", [False, True])
def test_airflow_retries_do_not_pay_twice(
    opt_in: bool,
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=0.5))
    emulator.answer_creates_late(1.5)  # every create: made at once, answered after the read timeout
    (tmp_path / "videoquery_paid_once.py").write_text(RETRY_DAG.format(opt_in=opt_in))
    use_dags_folder(monkeypatch, tmp_path)

    result = run_dag(load_dag(tmp_path / "videoquery_paid_once.py"), capsys)

    assert result.states == {"create": "failed"}
    if opt_in:  # Airflow retried twice: three videos made, as the user asked
        assert emulator.creates().accepted == 3
        return
    assert emulator.creates().accepted == 1
    assert "VideoCreateUncertainError" in result.output
    assert "Check the gateway's task list" in result.output
    assert_key_nowhere(result.output)
