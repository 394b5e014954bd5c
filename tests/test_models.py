"""The parser against every seed example (verbatim fixtures) and the shapes API.md describes."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_videoquery.models import TaskStatus, VideoTask, parse_task
from tests.conftest import FIXTURES

SORA_ID = "sora-2:task_01k6x15vhrff09dkkqjrzwhm60"
SORA_SRC = (
    "https://filesystem.site/gptimage/vg-assets/assets%2Ftask_01k6x15vhrff09dkkqjrzwhm60%2F"
    "task_01k6x15vhrff09dkkqjrzwhm60_genid_6d46f487-b05f-4854-9c0f-4f2169caab0d_25_10_06_15_13_166244"
    "%2Fvideos%2F00000_wm%2Fsrc.mp4?st=2025-10-06T14%3A04%3A21Z&se=2025-10-12T15%3A04%3A21Z&sks=b"
    "&skt=2025-10-06T14%3A04%3A21Z&ske=2025-10-12T15%3A04%3A21Z&sktid=a48cca56-e6da-484e-a814-9c849652bcb3"
    "&skoid=8ebb0df1-a278-4e2e-9c20-f2d373479b3a&skv=2019-02-02&sv=2018-11-09&sr=b&sp=r&spr=https%2Chttp"
    "&sig=log0LI%2Bwadi1bnm9MOw4UAptQC9Bi%2F8fPcpSVeRBq7I%3D&az=oaivgprodscus"
)
COW_PROMPT_START = "```\nA surreal and whimsical digital painting of a majestic brown cow"
GROK_VIDEO = (
    "https://soruxgpt-saas-yimeng.soruxgpt.com/file_download/ca10efbb-ae64-426e-99f0-f365bc3cd941.mp4"
)
GROK_THUMB = (
    "https://soruxgpt-saas-yimeng.soruxgpt.com/file_download/f4fd6fe4-8091-4528-be32-335f4fc9af65.jpg"
)


def seed(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "seeds" / name).read_text(encoding="utf-8"))
    return data


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- seeds: every normalized field ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["000_veo_pending.json", "003_grok_doc_pending.json", "004_vidu_route_pending.json"]
)
def test_seed_documented_pending_example(name: str) -> None:
    payload = seed(name)
    task = parse_task(payload, "veo3:1753613210-OR998GOIzu")
    assert task.id == "veo3:1753613210-OR998GOIzu"
    assert task.status is TaskStatus.QUEUED
    assert task.raw_status == "pending"
    assert task.progress is None
    assert task.video_url is None
    assert task.thumbnail_url is None
    assert task.enhanced_prompt is not None
    assert task.enhanced_prompt.startswith(COW_PROMPT_START)
    assert task.enhanced_prompt.endswith("rich, saturated colors.\n```")
    assert task.error is None
    assert task.updated_at == utc(2025, 6, 19, 8, 52, 47, 3000)
    assert task.raw == payload
    assert not task.is_terminal


def test_seed_001_veo31_completed_ignores_error_fields_and_prefers_upscaled_url() -> None:
    payload = seed("001_veo31_fast_completed.json")
    task = parse_task(payload, "veo3.1-fast:1770350082-trii1OXZc3")
    assert task.id == "veo3.1-fast:1770350082-trii1OXZc3"
    assert task.status is TaskStatus.SUCCEEDED
    assert task.raw_status == "completed"
    assert task.progress is None
    # Top-level video_url is the upsampled file; detail.video_url is the plain one.
    assert task.video_url == "https://pro.filesystem.site/cdn/20260206/1b50395bad4c6c7bc22e6ada144951.mp4"
    assert task.video_url == payload["detail"]["upsample_video_url"]
    assert task.video_url != payload["detail"]["video_url"]
    assert task.thumbnail_url is None
    assert task.enhanced_prompt == (
        "Create a vibrant and whimsical animation that features a joyful scene of colorful animals "
        "playing together in a sunny meadow, surrounded by blooming flowers and butterflies fluttering by."
    )
    # The completed answer carries a reCAPTCHA error_message and an "unsafe prompt" text: not failures.
    assert "reCAPTCHA" in payload["detail"]["error_message"]
    assert task.error is None
    assert task.updated_at == utc(2026, 2, 6, 3, 58, 49, 98000)
    assert task.is_terminal


def test_seed_002_sora2_pending_progress_is_a_fraction() -> None:
    task = parse_task(seed("002_sora2_pending.json"), SORA_ID)
    assert task.id == SORA_ID
    assert task.status is TaskStatus.QUEUED
    assert task.raw_status == "pending"
    assert task.progress == 93.02
    assert task.video_url is None
    assert task.thumbnail_url is None
    assert task.enhanced_prompt is None
    assert task.error is None
    assert task.updated_at == utc(2025, 10, 6, 15, 13, 41, 142000)


def test_seed_002_sora2_completed() -> None:
    payload = seed("002_sora2_completed.json")
    task = parse_task(payload, SORA_ID)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.raw_status == "completed"
    assert task.progress is None
    assert task.video_url == SORA_SRC
    assert task.thumbnail_url == payload["thumbnail_url"]
    assert task.thumbnail_url is not None
    assert task.thumbnail_url.split("?")[0].endswith("thumbnail.webp")
    assert task.enhanced_prompt is None
    assert task.error is None
    assert task.updated_at == utc(2025, 10, 6, 15, 14, 11, 908000)


@pytest.mark.parametrize("name", ["003_grok_completed.json", "004_vidu_route_grok_completed.json"])
def test_seed_grok_completed_timestamps_in_seconds_and_empty_error(name: str) -> None:
    payload = seed(name)
    task = parse_task(payload, "grok:299604b7-c5ea-47b5-bc64-c06f300f0d27")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.raw_status == "completed"
    assert task.progress == 100.0
    assert task.video_url == GROK_VIDEO
    assert task.thumbnail_url == GROK_THUMB
    assert task.enhanced_prompt is None
    assert payload["error"] == ""
    assert task.error is None
    assert task.updated_at == utc(2025, 11, 30, 17, 9, 12)


# -- shapes API.md describes beyond the seeds ------------------------------------------------------------


def test_vidu_native_state_and_creations() -> None:
    payload = {
        "id": "8762031", "state": "success", "err_code": "", "credits": 4,
        "creations": [{"id": "c1", "url": "https://cdn.vidu/v.mp4", "cover_url": "https://cdn.vidu/c.jpg",
                       "watermarked_url": "https://cdn.vidu/w.mp4"}],
    }  # fmt: skip
    task = parse_task(payload, "8762031")
    assert (task.status, task.raw_status) == (TaskStatus.SUCCEEDED, "success")
    assert task.video_url == "https://cdn.vidu/v.mp4"
    assert task.thumbnail_url == "https://cdn.vidu/c.jpg"
    assert task.error is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"status": "failed", "detail": {"pending_info": {"failure_reason": "moderation: unsafe"}}},
         "moderation: unsafe"),
        ({"status": "video_generation_failed", "detail": {"video_generation_error": "unsafe prompt"}},
         "unsafe prompt"),
        ({"status": "failed", "detail": {"error_message": "[403] reCAPTCHA evaluation failed"}},
         "[403] reCAPTCHA evaluation failed"),
        ({"status": "failed", "error": "grok refused"}, "grok refused"),
        ({"status": "failed", "error": {"code": "content_policy", "message": "blocked by policy"}},
         "blocked by policy"),
        ({"status": "FAILURE", "fail_reason": "upstream timeout"}, "upstream timeout"),
        ({"id": "1", "state": "failed", "err_code": "AuditFailed", "creations": []}, "AuditFailed"),
        ({"status": "cancelled", "message": "cancelled by user"}, "cancelled by user"),
        ({"status": "failed"}, "the gateway gave no reason"),
    ],
)  # fmt: skip
def test_failure_reason_wherever_the_family_puts_it(payload: dict[str, Any], expected: str) -> None:
    task = parse_task(payload, "x:1")
    assert task.status is TaskStatus.FAILED
    assert task.error == expected


def test_openai_style_uses_content_url_once_completed() -> None:
    queued = {"id": "video_1", "object": "video", "status": "in_progress", "progress": 40, "error": None}
    done = {**queued, "status": "completed", "progress": 100, "expires_at": 1764522552}
    content = "http://gw/v1/videos/video_1/content"
    running = parse_task(queued, "video_1", content_url=content)
    assert (running.status, running.progress, running.video_url) == (TaskStatus.RUNNING, 40.0, None)
    finished = parse_task(done, "video_1", content_url=content)
    assert (finished.status, finished.video_url) == (TaskStatus.SUCCEEDED, content)


def test_success_without_any_url_is_still_running() -> None:
    task = parse_task({"status": "completed", "video_url": None, "detail": {"url": ""}}, "veo3:1")
    assert task.status is TaskStatus.RUNNING
    assert task.raw_status == "completed"


def test_video_generation_completed_is_not_terminal_for_veo() -> None:
    task = parse_task(
        {"status": "video_generation_completed", "detail": {"video_url": "https://x/v.mp4"}}, "v:1"
    )
    assert task.status is TaskStatus.RUNNING


def test_url_priority_follows_api_md() -> None:
    detail = {
        "upsample_video_url": "https://a/up.mp4",
        "video_url": "https://a/plain.mp4",
        "url": "https://a/u",
    }
    assert parse_task({"status": "done", "detail": detail}, "i").video_url == "https://a/up.mp4"
    detail.pop("upsample_video_url")
    assert parse_task({"status": "done", "detail": detail}, "i").video_url == "https://a/plain.mp4"
    draft = {"status": "succeeded", "detail": {"draft_info": {"downloadable_url": "https://a/d.mp4"}}}
    assert parse_task(draft, "i").video_url == "https://a/d.mp4"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(50, 50.0), ("50", 50.0), ("50%", 50.0), (" 7.5 % ", 7.5), (130, 100.0), ("n/a", None), (True, None)],
)
def test_progress_as_number_string_or_percent(raw: object, expected: float | None) -> None:
    assert parse_task({"status": "processing", "progress": raw}, "i").progress == expected


@pytest.mark.parametrize(
    "raw", [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "inf%", "-inf"]
)
@pytest.mark.parametrize("where", ["progress", "progress_pct"])
def test_a_progress_that_is_no_number_is_dropped(raw: object, where: str) -> None:
    """NaN would reach events and XCom as an invalid JSON ``NaN``; infinity would read as 100 %."""
    payload: dict[str, Any] = {"status": "processing"}
    if where == "progress":
        payload["progress"] = raw
    else:
        payload["detail"] = {"pending_info": {"progress_pct": raw}}
    task = parse_task(payload, "i")
    assert task.progress is None
    json.dumps(task.for_xcom(), allow_nan=False)


def test_progress_fraction_is_scaled() -> None:
    payload = {"status": "processing", "detail": {"pending_info": {"progress_pct": 0.5}}}
    assert parse_task(payload, "i").progress == 50.0


@pytest.mark.parametrize(
    ("raw", "status"),
    [("QUEUED", TaskStatus.QUEUED), ("not_start", TaskStatus.QUEUED), ("queueing", TaskStatus.QUEUED),
     ("Video_Upsampling", TaskStatus.RUNNING), ("unknown", TaskStatus.RUNNING),
     ("aborted", TaskStatus.FAILED), ("canceled", TaskStatus.FAILED)],
)  # fmt: skip
def test_status_union_is_case_insensitive(raw: str, status: TaskStatus) -> None:
    assert parse_task({"status": raw}, "i").status is status


def test_unknown_status_is_running_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_videoquery.models")
    first = parse_task({"status": "teleporting"}, "veo3:abc")
    again = parse_task({"status": "teleporting"}, "veo3:abc")
    assert first.status is again.status is TaskStatus.RUNNING
    assert first.raw_status == "teleporting"
    warnings = [r for r in caplog.records if "teleporting" in r.getMessage()]
    assert len(warnings) == 1
    assert "veo3:abc" in warnings[0].getMessage()


def test_missing_status_does_not_crash() -> None:
    task = parse_task({}, "i")
    assert (task.status, task.raw_status) == (TaskStatus.RUNNING, None)


def test_iso_timestamp_and_naive_becomes_utc() -> None:
    assert parse_task({"status": "queued", "updated_at": "2025-10-06T15:10:26Z"}, "i").updated_at == utc(
        2025, 10, 6, 15, 10, 26
    )


def test_task_round_trips_as_json_without_its_raw_answer() -> None:
    task = parse_task(seed("002_sora2_completed.json"), SORA_ID)
    dumped = task.model_dump(mode="json")
    assert "raw" not in dumped  # about ten signed URLs: never in XCom or events
    again = VideoTask.model_validate(json.loads(json.dumps(dumped)))
    assert again == task.model_copy(update={"raw": {}})
    assert again.updated_at is not None
    assert again.updated_at.tzinfo is not None


# -- status times: any epoch unit, and nothing absurd ever raises -------------------------------------

GROK_SECOND = utc(2025, 11, 30, 17, 9, 12)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1764522552, GROK_SECOND),
        ("1764522552", GROK_SECOND),
        (1764522552.5, GROK_SECOND.replace(microsecond=500000)),
        (1764522552123, GROK_SECOND.replace(microsecond=123000)),
        (1764522552123456, GROK_SECOND.replace(microsecond=123456)),
        ("1764522552123456", GROK_SECOND.replace(microsecond=123456)),
        (1764522552123456789, GROK_SECOND.replace(microsecond=123457)),
    ],
)
def test_epoch_status_time_in_any_unit(value: Any, expected: datetime) -> None:
    task = parse_task({"status": "running", "status_update_time": value}, "i")
    assert task.updated_at == expected


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1764522552,
        float("nan"),
        float("inf"),
        "NaN",
        "-inf",
        1e25,
        10**30,
        12345,  # 1970: a placeholder, not a time
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00Z",
        "not a time",
        "",
        True,
        [1764522552],
    ],
)
def test_absurd_status_time_becomes_none(value: Any) -> None:
    task = parse_task({"status": "running", "status_update_time": value}, "i")
    assert task.updated_at is None
    task.model_dump_json()  # and it serializes


def test_an_absurd_status_time_falls_back_to_the_next_field() -> None:
    payload = {"status": "running", "status_update_time": -1, "updated_at": "2025-10-06T17:10:26+02:00"}
    assert parse_task(payload, "i").updated_at == utc(2025, 10, 6, 15, 10, 26)


# -- what a trigger event may carry: nothing signed, nothing bulky -------------------------------------


def test_for_event_leaves_out_signed_and_bulky_urls() -> None:
    sora = parse_task(seed("002_sora2_completed.json"), SORA_ID)
    assert sora.video_url == SORA_SRC

    carried = sora.for_event()

    assert carried.video_url is None  # signed: the worker re-queries the task for it
    assert "?" not in carried.model_dump_json()
    assert "raw" not in carried.model_dump()
    assert (
        carried.model_copy(update={"video_url": sora.video_url, "thumbnail_url": sora.thumbnail_url}) == sora
    )


INLINE = "data:video/mp4;base64," + "AAAAGGZ0eXBpc29t" * 1000


@pytest.mark.parametrize(
    ("url", "carried"),
    [
        (GROK_VIDEO, GROK_VIDEO),
        ("http://127.0.0.1:8080/videos/a.mp4", "http://127.0.0.1:8080/videos/a.mp4"),
        ("https://cdn.example/v.mp4?X-Amz-Signature=abc", None),
        ("https://cdn.example/v.mp4#token=abc", None),
        ("https://user:secret@cdn.example/v.mp4", None),
        ("https://cdn.example/" + "a" * 3000 + ".mp4", None),
        ("http://[::1/videos/x.mp4", None),
        ("data:video/mp4;base64,AAAAIGZ0eXBpc29t", "data:video/mp4;base64,AAAAIGZ0eXBpc29t"),
        (INLINE, "data:video/mp4;base64,…(12000 bytes)"),  # shown short: the worker re-reads it
    ],
)
def test_for_event_keeps_only_what_a_log_may_show(url: str, carried: str | None) -> None:
    task = VideoTask(
        id="i", status=TaskStatus.SUCCEEDED, raw_status="completed", video_url=url, thumbnail_url=url
    )
    event_task = task.for_event()
    assert event_task.video_url == carried
    assert event_task.thumbnail_url == carried


def test_for_xcom_keeps_signed_urls_and_shortens_inline_videos() -> None:
    sora = parse_task(seed("002_sora2_completed.json"), SORA_ID)
    assert sora.for_xcom()["video_url"] == SORA_SRC  # what a downstream task downloads
    assert "raw" not in sora.for_xcom()
    inline = sora.model_copy(update={"video_url": INLINE})
    assert inline.for_xcom()["video_url"] == "data:video/mp4;base64,…(12000 bytes)"
