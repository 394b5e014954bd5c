"""Routes as data (``routes.ROUTES``) and new-api's task answers through the one parser."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_videoquery.hooks import _http, videoquery
from airflow_provider_videoquery.hooks._http import GatewayConfig
from airflow_provider_videoquery.models import (
    TaskStatus,
    VideoTask,
    display_url,
    elide_inline,
    is_elided,
    parse_task,
)
from airflow_provider_videoquery.routes import ROUTES, Envelope, EnvelopeError, Route, RouteSpec, spec

BASE = "https://gw.example"
TASK_ID = "task_4XzJ1nQp8fKcV0aLm3yR7tBwE2uH6sDo"
VIDEO = "https://cdn.example/v/4XzJ1nQp.mp4"


def config(route: Route) -> GatewayConfig:
    return GatewayConfig(base_url=BASE, api_key="sk-x", route=route)


def task_dto(status: str, **fields: Any) -> dict[str, Any]:
    """new-api's TaskDto as ``GET /v1/video/generations/{task_id}`` returns it inside ``data``."""
    return {
        "id": 4711,
        "created_at": 1764522500,
        "updated_at": 1764522552,
        "task_id": TASK_ID,
        "platform": "54",
        "user_id": 1,
        "group": "default",
        "channel_id": 3,
        "quota": 0,
        "action": "generate",
        "status": status,
        "fail_reason": "",
        "submit_time": 1764522500,
        "start_time": 1764522501,
        "finish_time": 0,
        "progress": "45%",
        "properties": {"input": "a cow flying"},
        "data": {"id": "upstream-1", "status": "whatever the upstream says", "video_url": None},
        **fields,
    }


def envelope(data: Any) -> dict[str, Any]:
    return {"code": "success", "message": "", "data": data}


def parse_new_api(answer: dict[str, Any]) -> VideoTask:
    """What the hook does with a new-api answer: unwrap by the route, then the one parser."""
    route = spec(Route.NEW_API)
    return parse_task(route.unwrap(answer), TASK_ID, None, route.statuses)


# -- the registry -----------------------------------------------------------------------------------


def test_every_route_is_described_once() -> None:
    assert set(ROUTES) == set(Route)
    assert Route.NEW_API.value == "new-api"


def test_route_keeps_its_public_homes() -> None:
    assert _http.Route is Route
    assert videoquery.Route is Route
    assert "Route" in videoquery.__all__


@pytest.mark.parametrize(
    ("route", "query", "create", "content"),
    [
        (Route.UNIFIED, "/v1/video/query?id=sora-2%3Atask_01%2Fx", "/v1/video/create", None),
        (
            Route.VIDU_NATIVE,
            "/vidu-native/video/generations/sora-2%3Atask_01%2Fx",
            "/vidu-native/video/generations",
            None,
        ),
        (
            Route.OPENAI,
            "/v1/videos/sora-2%3Atask_01%2Fx",
            "/v1/videos",
            "/v1/videos/sora-2%3Atask_01%2Fx/content",
        ),
        (Route.NEW_API, "/v1/video/generations/sora-2%3Atask_01%2Fx", "/v1/video/generations", None),
    ],
)
def test_gateway_config_urls_come_from_the_registry(
    route: Route, query: str, create: str, content: str | None
) -> None:
    task_id = "sora-2:task_01/x"  # ":" and "/" are encoded: a path segment or a query value
    cfg = config(route)
    assert cfg.query_url(task_id) == BASE + query
    assert cfg.create_url() == BASE + create
    assert cfg.content_url(task_id) == (BASE + content if content else None)
    # an explicit route wins over the connection's
    assert config(Route.UNIFIED).query_url(task_id, route) == BASE + query


def test_a_new_family_is_one_entry_with_its_own_status_words() -> None:
    family = RouteSpec(
        query="/api/jobs/{id}",
        create="/api/jobs",
        envelope=Envelope(data_key="result", code_key="state", ok_codes=frozenset({"ok"})),
        id_keys=("job",),
        statuses={"ready": TaskStatus.SUCCEEDED, "cooking": TaskStatus.RUNNING},
    )
    assert family.query_url(BASE, "a b") == f"{BASE}/api/jobs/a%20b"
    assert family.new_id({"id": "not this", "job": 7}) == "7"
    answer = {"state": "OK", "result": {"status": "Ready", "video_url": VIDEO}}
    task = parse_task(family.unwrap(answer), "7", None, family.statuses)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url == VIDEO
    assert parse_task({"status": "cooking"}, "7", None, family.statuses).status is TaskStatus.RUNNING


def test_new_api_create_answer_polls_with_task_id() -> None:
    route = spec(Route.NEW_API)
    assert route.new_id({"id": "video_abc", "task_id": TASK_ID}) == TASK_ID
    assert route.new_id({"id": TASK_ID}) == TASK_ID
    assert route.new_id({"task_id": ""}) is None
    assert spec(Route.UNIFIED).new_id({"id": "veo3:1", "task_id": "other"}) == "veo3:1"


# -- the envelope -----------------------------------------------------------------------------------


def test_envelope_variants() -> None:
    env = Envelope()
    assert env.open(envelope({"status": "QUEUED"})) == {"status": "QUEUED"}
    assert env.open({"code": "success", "data": None}) is None  # nothing yet
    assert env.open({"code": "success"}) is None
    assert env.open({"status": "QUEUED"}) == {"status": "QUEUED"}  # a proxy stripped the wrapper
    with pytest.raises(EnvelopeError, match=r"get_task_failed.*database is locked"):
        env.open({"code": "get_task_failed", "message": "database is locked", "data": None})


# -- new-api's TaskDto through the one parser -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("NOT_START", TaskStatus.QUEUED),
        ("SUBMITTED", TaskStatus.QUEUED),
        ("QUEUED", TaskStatus.QUEUED),
        ("IN_PROGRESS", TaskStatus.RUNNING),
        ("UNKNOWN", TaskStatus.RUNNING),
        ("SUCCESS", TaskStatus.SUCCEEDED),
        ("FAILURE", TaskStatus.FAILED),
    ],
)
def test_each_new_api_status(raw: str, status: TaskStatus) -> None:
    fields: dict[str, Any] = {"result_url": VIDEO} if status is TaskStatus.SUCCEEDED else {}
    if status is TaskStatus.FAILED:
        fields["fail_reason"] = "upstream rejected the prompt"
    task = parse_new_api(envelope(task_dto(raw, **fields)))
    assert task.status is status
    assert task.raw_status == raw
    assert task.id == TASK_ID
    assert task.progress == 45.0
    assert task.video_url == (VIDEO if status is TaskStatus.SUCCEEDED else None)
    assert task.error == ("upstream rejected the prompt" if status is TaskStatus.FAILED else None)


def test_new_api_failure_without_reason_still_says_so() -> None:
    task = parse_new_api(envelope(task_dto("FAILURE", progress="100%")))
    assert task.status is TaskStatus.FAILED
    assert task.error == "the gateway gave no reason"


def test_older_new_api_puts_the_url_in_fail_reason_on_success() -> None:
    task = parse_new_api(envelope(task_dto("SUCCESS", fail_reason=VIDEO, progress="100%")))
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url == VIDEO
    assert task.error is None  # the URL is not an error


def test_result_url_wins_over_fail_reason() -> None:
    other = "https://old.example/stale.mp4"
    task = parse_new_api(envelope(task_dto("SUCCESS", result_url=VIDEO, fail_reason=other)))
    assert task.video_url == VIDEO


def test_a_text_in_fail_reason_is_no_url() -> None:
    task = parse_new_api(envelope(task_dto("SUCCESS", fail_reason="quota settled late")))
    assert task.status is TaskStatus.RUNNING  # a success without a file: keep waiting
    assert task.video_url is None


def test_fail_reason_is_the_error_on_failure_even_when_it_looks_like_a_url() -> None:
    task = parse_new_api(envelope(task_dto("FAILURE", fail_reason="https://docs.example/limits")))
    assert task.status is TaskStatus.FAILED
    assert task.video_url is None
    assert task.error == "https://docs.example/limits"


def test_the_upstream_raw_data_is_not_read() -> None:
    answer = envelope(task_dto("IN_PROGRESS", data={"status": "completed", "video_url": VIDEO}))
    task = parse_new_api(answer)
    assert task.status is TaskStatus.RUNNING
    assert task.video_url is None


def test_data_null_is_not_terminal() -> None:
    task = parse_new_api({"code": "success", "data": None})
    assert task.status is TaskStatus.QUEUED
    assert not task.is_terminal
    assert task.raw_status is None
    assert task.id == TASK_ID


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", TaskStatus.QUEUED),
        ("processing", TaskStatus.RUNNING),
        ("succeeded", TaskStatus.SUCCEEDED),
        ("failed", TaskStatus.FAILED),
    ],
)
def test_gemini_vertex_channel_answers(raw: str, status: TaskStatus) -> None:
    data: dict[str, Any] = {"task_id": TASK_ID, "status": raw}
    if status is TaskStatus.SUCCEEDED:
        data.update(url=VIDEO, format="mp4", metadata={"duration": 8.0, "fps": 24, "width": 1280})
    if status is TaskStatus.FAILED:
        data["error"] = {"code": 400, "message": "The prompt was blocked by safety filters."}
    task = parse_new_api(envelope(data))
    assert task.status is status
    assert task.video_url == (VIDEO if status is TaskStatus.SUCCEEDED else None)
    assert task.error == (
        "The prompt was blocked by safety filters." if status is TaskStatus.FAILED else None
    )


# -- inline (data:) videos stay out of logs, events and XCom ----------------------------------------


INLINE = "data:video/mp4;base64," + "AAAAGGZ0eXBpc29t" * 10_000  # 120,000 bytes once decoded


def test_an_inline_video_is_a_success_and_shown_short() -> None:
    task = parse_new_api(envelope(task_dto("SUCCESS", result_url=INLINE)))
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url == INLINE  # the file itself: the download decodes it
    short = display_url(INLINE)
    assert short == "data:video/mp4;base64,…(120000 bytes)"
    assert is_elided(short)
    assert not is_elided(INLINE)
    assert "AAAAGGZ0" not in repr(task)
    assert len(repr(task)) < 1000


def test_inline_url_from_fail_reason_of_an_older_new_api() -> None:
    task = parse_new_api(envelope(task_dto("SUCCESS", fail_reason=INLINE)))
    assert task.video_url == INLINE


def test_elide_inline_walks_the_whole_answer() -> None:
    task = parse_new_api(envelope(task_dto("SUCCESS", result_url=INLINE)))
    dumped = {**task.model_dump(mode="json"), "raw": task.raw}  # raw is never dumped by itself
    small = elide_inline(dumped)
    assert small["video_url"] == display_url(INLINE)
    assert small["raw"]["result_url"] == display_url(INLINE)
    assert small["raw"]["task_id"] == TASK_ID
    assert len(repr(small)) < 3000
    short = "data:video/mp4;base64,AAAAGGZ0eXA="
    assert display_url(short) == short  # a tiny one stays whole
    assert display_url(VIDEO) == VIDEO


@pytest.mark.parametrize("size", [300, 301, 302])
@pytest.mark.parametrize("pad", [True, False])
def test_display_url_names_the_decoded_size(size: int, pad: bool) -> None:
    import base64

    text = base64.b64encode(bytes(size)).decode()
    uri = "data:video/mp4;base64," + (text if pad else text.rstrip("="))
    assert display_url(uri) == f"data:video/mp4;base64,…({size} bytes)"
    plain = "data:text/plain," + "x" * 300
    assert display_url(plain) == "data:text/plain,…(300 bytes)"


def test_display_url_copies_nothing_of_a_large_inline_video() -> None:
    import tracemalloc

    uri = "data:video/mp4;base64," + "AAAA" * 5_000_000  # 20 MB of base64
    tracemalloc.start()
    try:
        shown = display_url(uri)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shown == "data:video/mp4;base64,…(15000000 bytes)"
    assert peak < 100_000  # the header only, never a slice of the data
