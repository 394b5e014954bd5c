"""Credentials never come back out: a real server on 127.0.0.1 that puts them into what the provider shows.

* A video URL with credentials in its userinfo (``http://reader:TOKEN@cdn/v.mp4``) is fetched with them,
  but the "Stored … from …" log line, download errors and so the batch manifest's ``error`` show the
  URL without them (nor its query string).
* A gateway that echoes the API key (an error page, an error JSON, a failure reason, a create answer
  without an id, a file route's error body) has it masked as ``***`` wherever its text is repeated.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoDownloadError,
    VideoQueryAuthError,
    VideoQueryTransientError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.storage import DownloadSettings, store_url
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import assert_key_nowhere, first_event, load_dag, run_dag, use_dags_folder
from tests.conftest import API_KEY, connection_json
from tests.gateway import Answer, Handler, ScriptedGateway, scripted_gateway

pytestmark = pytest.mark.timeout(120)

TOKEN = "cdn-reader-token-7f3a9c"
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000
ECHO = f"invalid token {API_KEY} (Authorization: Bearer {API_KEY})"
TASK = "sora-2:task_echo"


class Routes(dict[str, Answer]):
    """Answers by path prefix, set by each test; anything else is a 404."""

    def __call__(self, handler: Handler) -> None:
        for prefix, answer in self.items():
            if handler.path.startswith(prefix):
                answer(handler)
                return
        handler.send(404, '{"error": "no such route"}')


@pytest.fixture
def routes() -> Routes:
    return Routes()


@pytest.fixture
def gateway(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGateway]:
    with scripted_gateway(routes) as running:
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(running.url, timeout=5))
        yield running


def with_userinfo(url: str, path: str = "/v.mp4") -> str:
    return url.replace("http://", f"http://reader:{TOKEN}@") + path + "?sig=abc"


# -- userinfo in a video URL -------------------------------------------------------------------------


def test_userinfo_is_used_but_never_shown(
    gateway: ScriptedGateway, routes: Routes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = with_userinfo(gateway.url)
    routes["/v.mp4"] = lambda handler: handler.send(200, MP4, {"Content-Type": "video/mp4"})

    stored = store_url(url, ObjectStoragePath(f"file://{tmp_path}/a.mp4"), DownloadSettings())

    assert stored.size == len(MP4)
    assert gateway.seen[-1].headers["Authorization"].startswith("Basic ")  # the credentials were sent
    assert f"from {gateway.url}/v.mp4 " in caplog.text  # "Stored the video from <URL> (… bytes …)"
    routes["/v.mp4"] = lambda handler: handler.send(403, "forbidden", {"Content-Type": "text/plain"})
    with pytest.raises(VideoDownloadError, match="HTTP 403") as caught:
        store_url(url, ObjectStoragePath(f"file://{tmp_path}/b.mp4"), DownloadSettings())
    for shown in (caplog.text, str(caught.value)):
        assert TOKEN not in shown
        assert "reader" not in shown
        assert "sig=abc" not in shown


BATCH_DAG = """
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(dag_id="videoquery_batch_userinfo", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VideoBatchOperator(
        task_id="batch",
        requests=[{{"key": "clip", "model": "sora-2", "prompt": "A fox"}}],
        destination="{destination}",
        creates_per_second=0,
        poll_interval=0.05,
        max_polls_per_second=1000,
        timeout=60,
    )
"""


@pytest.mark.integration
def test_the_batch_manifest_error_shows_no_userinfo(
    airflow_db: str,
    gateway: ScriptedGateway,
    routes: Routes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video_url = with_userinfo(gateway.url)
    done = {"id": TASK, "status": "completed", "video_url": video_url}
    routes["/v1/video/create"] = lambda handler: handler.send(
        200, json.dumps({"id": TASK, "status": "queued"})
    )
    routes["/v1/video/query"] = lambda handler: handler.send(200, json.dumps(done))
    routes["/v.mp4"] = lambda handler: handler.send(403, "forbidden", {"Content-Type": "text/plain"})
    out = tmp_path / "videos"
    (tmp_path / "dags").mkdir()
    dag_file = tmp_path / "dags" / "videoquery_batch_userinfo.py"
    dag_file.write_text(BATCH_DAG.format(destination=out))
    use_dags_folder(monkeypatch, dag_file.parent)

    result = run_dag(load_dag(dag_file), capsys)

    assert result.states == {"batch": "failed"}
    (entry,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert "HTTP 403" in entry["error"]
    assert f"{gateway.url}/v.mp4" in entry["error"]
    for shown in (entry["error"], result.output):
        assert TOKEN not in shown
        assert "sig=abc" not in shown


# -- a gateway that echoes the API key ---------------------------------------------------------------


def echo(status: int, content_type: str = "application/json", body: str | None = None) -> Answer:
    text = body if body is not None else json.dumps({"error": {"message": ECHO, "type": "new_api_error"}})
    return lambda handler: handler.send(status, text, {"Content-Type": content_type})


def assert_masked(text: str) -> None:
    assert_key_nowhere(text)
    assert "***" in text


def test_an_error_json_echoing_the_key_is_masked(gateway: ScriptedGateway, routes: Routes) -> None:
    routes["/v1/video/query"] = echo(401)
    hook = VideoQueryHook()
    try:
        with pytest.raises(VideoQueryAuthError) as caught:
            hook.get_task(TASK)
    finally:
        hook.close()
    assert_masked(str(caught.value))


def test_an_error_page_echoing_the_key_is_masked(gateway: ScriptedGateway, routes: Routes) -> None:
    routes["/v1/video/query"] = echo(502, "text/html", f"<html><body>upstream said: {ECHO}</body></html>")
    hook = VideoQueryHook(retry_policy=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(VideoQueryTransientError) as caught:
            hook.get_task(TASK)
    finally:
        hook.close()
    assert_masked(str(caught.value))


def test_a_failure_reason_echoing_the_key_is_masked_in_the_task_and_the_event(
    gateway: ScriptedGateway, routes: Routes
) -> None:
    failed = {"id": TASK, "status": "failed", "fail_reason": ECHO}
    routes["/v1/video/query"] = lambda handler: handler.send(200, json.dumps(failed))
    hook = VideoQueryHook()
    try:
        task = hook.get_task(TASK)
    finally:
        hook.close()
    assert task.error is not None
    assert_masked(task.error)
    trigger = VideoTaskTrigger(video_task_id=TASK, deadline=9e9, poll_interval=0.05)
    event: dict[str, Any] = asyncio.run(first_event(trigger))
    assert event["status"] == "failed"
    assert_masked(json.dumps(event))


def test_a_create_answer_echoing_the_key_is_masked(gateway: ScriptedGateway, routes: Routes) -> None:
    routes["/v1/video/create"] = lambda handler: handler.send(200, json.dumps({"status": "ok", "note": ECHO}))
    hook = VideoQueryHook()
    try:
        with pytest.raises(VideoCreateUncertainError) as caught:
            hook.create_task("sora-2", "A fox")
    finally:
        hook.close()
    assert_masked(str(caught.value))


@pytest.mark.parametrize("answer", ["403-json", "200-html"])
def test_a_file_route_echoing_the_key_is_masked(
    gateway: ScriptedGateway, routes: Routes, tmp_path: Path, answer: str
) -> None:
    """The gateway's own file route gets the key (and its bodies are quoted in errors): masked."""
    routes["/v1/videos/"] = echo(403) if answer == "403-json" else echo(200, "text/html", f"<p>{ECHO}</p>")
    hook = VideoQueryHook()
    settings = DownloadSettings.for_gateway(hook.config)
    with pytest.raises(VideoDownloadError) as caught:
        store_url(
            f"{gateway.url}/v1/videos/{TASK}/content", ObjectStoragePath(f"file://{tmp_path}/v.mp4"), settings
        )
    assert gateway.seen[-1].headers["Authorization"] == f"Bearer {API_KEY}"
    assert_masked(str(caught.value))


def test_the_connection_test_masks_an_echoed_key(gateway: ScriptedGateway, routes: Routes) -> None:
    routes["/v1/video/query"] = echo(404, "text/plain", f"route not found for key {API_KEY}")
    ok, message = VideoQueryHook().test_connection()
    assert not ok
    assert_masked(message)
