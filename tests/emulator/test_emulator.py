"""The local gateway emulator, exercised over real HTTP on 127.0.0.1 with httpx."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from airflow_provider_videoquery.emulator import (
    CreateCounts,
    Emulator,
    Fault,
    Limits,
    Scenario,
    generated_bytes,
    iter_video,
    key_fingerprint,
    run_emulator,
    sample_mp4,
)
from airflow_provider_videoquery.emulator.media import SAMPLE_MP4, generated_header, iter_generated
from tests.conftest import REPO


def poll(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get("/v1/video/query", params={"id": task_id})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def create(client: httpx.Client, model: str, **extra: Any) -> str:
    r = client.post("/v1/video/create", json={"model": model, "prompt": "a cow flying", **extra})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "pending"
    assert body["status_update_time"] > 1e12
    assert body["id"].startswith(f"{model}:")
    task_id: str = body["id"]
    return task_id


def download(url: str) -> bytes:
    r = httpx.get(url, timeout=5.0)  # no auth header: video URLs are signed-CDN style
    assert r.status_code == 200
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    assert int(r.headers["content-length"]) == len(r.content)
    return r.content


# ---- happy paths, seed shapes ---------------------------------------------------------------
def test_veo_completes_after_three_polls_with_seed_001_shape(emu: Emulator, client: httpx.Client) -> None:
    task_id = create(client, "veo3.1-fast", images=["https://example.com/a.png"], enable_upsample=True)
    first, second = poll(client, task_id), poll(client, task_id)
    assert (first["status"], second["status"]) == ("pending", "processing")
    assert first["video_url"] is None
    assert first["detail"]["running"] is True
    done = poll(client, task_id)
    assert done["status"] == "completed"
    url = emu.video_url_for(task_id)
    assert done["video_url"] == done["detail"]["upsample_video_url"] == done["detail"]["video_url"] == url
    assert "reCAPTCHA" in done["detail"]["error_message"]  # noisy error text on success, like seed 001
    assert "unsafe" in done["detail"]["video_generation_error"]
    assert done["detail"]["req"]["images"] == ["https://example.com/a.png"]
    assert done["status_update_time"] > 1e12
    assert download(url) == sample_mp4()
    assert emu.count("query", task_id) == 3
    assert emu.polls(task_id) == 3


def test_sora_progress_fraction_and_all_url_fields(emu: Emulator, client: httpx.Client) -> None:
    task_id = create(client, "sora-2", orientation="landscape", images=[])
    poll(client, task_id)
    running = poll(client, task_id)
    pct = running["detail"]["pending_info"]["progress_pct"]
    assert 0 < pct < 1
    assert running["detail"]["pending_info"]["failure_reason"] is None
    done = poll(client, task_id)
    url = emu.video_url_for(task_id)
    d = done["detail"]
    assert done["status"] == "completed"
    assert done["video_url"] == d["url"] == d["draft_info"]["downloadable_url"] == url
    assert done["thumbnail_url"].endswith(".jpg")
    assert d["thumbnail_url"] == done["thumbnail_url"]
    assert (done["width"], done["height"]) == (640, 352)
    thumb = httpx.get(done["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"


def test_grok_progress_and_seconds_timestamps(client: httpx.Client) -> None:
    task_id = create(client, "grok-video-3")
    seen = [poll(client, task_id) for _ in range(3)]
    assert [s["progress"] for s in seen] == [33, 67, 100]
    done = seen[-1]
    assert done["status"] == "completed"
    assert done["error"] == ""
    assert done["status_update_time"] < 1e12
    assert done["completed_at"] < 1e12
    assert done["video_url"].endswith(".mp4")
    assert done["thumbnail_url"]


def test_vidu_native_route(emu: Emulator, client: httpx.Client) -> None:
    r = client.post("/vidu-native/video/generations", json={"model": "viduq1", "prompt": "x"})
    assert r.status_code == 200
    task_id = r.json()["id"]
    assert task_id.isdigit()
    assert r.json()["state"] == "created"
    states = [client.get(f"/vidu-native/video/generations/{task_id}").json() for _ in range(3)]
    assert [s["state"] for s in states] == ["created", "processing", "success"]
    assert states[0]["creations"] == []
    assert states[-1]["err_code"] == ""
    creation = states[-1]["creations"][0]
    assert set(creation) >= {"id", "url", "cover_url", "watermarked_url"}
    assert download(creation["url"])[4:8] == b"ftyp"


def test_openai_routes(emu: Emulator, client: httpx.Client) -> None:
    r = client.post("/v1/videos", json={"model": "sora-2", "prompt": "x", "seconds": "4"})
    created = r.json()
    assert created["object"] == "video"
    assert created["status"] == "queued"
    assert created["error"] is None
    video_id = created["id"]
    not_ready = client.get(f"/v1/videos/{video_id}/content")
    assert not_ready.status_code == 400
    states = [client.get(f"/v1/videos/{video_id}").json() for _ in range(3)]
    assert [s["status"] for s in states] == ["queued", "in_progress", "completed"]
    assert states[-1]["progress"] == 100
    assert states[-1]["expires_at"] > time.time()
    content = client.get(f"/v1/videos/{video_id}/content")
    assert content.status_code == 200
    assert content.content == sample_mp4()
    thumbnail = client.get(f"/v1/videos/{video_id}/content", params={"variant": "thumbnail"})
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content[:3] == b"\xff\xd8\xff"  # a JPEG
    assert client.get(f"/v1/videos/{video_id}/content", params={"variant": "spritesheet"}).status_code == 400
    assert (
        client.get(f"/v1/videos/{video_id}/content", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )


@pytest.mark.parametrize(
    ("family", "where"),
    [
        ("veo", lambda d: d["detail"]["video_generation_error"]),
        ("sora", lambda d: d["detail"]["pending_info"]["failure_reason"]),
        ("grok", lambda d: d["error"]),
        ("vidu", lambda d: d["err_code"]),
        ("openai", lambda d: d["error"]["message"]),
    ],
)
def test_failure_reason_where_each_family_puts_it(
    emu: Emulator, client: httpx.Client, family: str, where: Any
) -> None:
    emu.add_task("t:1", Scenario(family=family, polls_to_complete=1, outcome="failed", failure_reason="boom"))  # type: ignore[arg-type]
    data = poll(client, "t:1")
    assert (data.get("status") or data.get("state")) == "failed"
    assert where(data) == "boom"
    assert data.get("video_url") is None


def test_explicit_statuses_unknown_and_flapping(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:odd", Scenario(statuses=["queued", "weird_status", "completed"]))
    assert [poll(client, "veo3:odd")["status"] for _ in range(4)] == [
        "queued",
        "weird_status",
        "completed",
        "completed",
    ]
    emu.add_task("veo3:flap", Scenario(statuses=["processing", "completed", "processing", "completed"]))
    seen = [poll(client, "veo3:flap") for _ in range(4)]
    assert [s["status"] for s in seen] == ["processing", "completed", "processing", "completed"]
    assert seen[1]["video_url"]
    assert seen[2]["video_url"] is None


def test_grace_and_completed_without_url(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:late", Scenario(polls_to_complete=1, unknown_for_polls=2, success_without_url_polls=1))
    for _ in range(2):
        assert client.get("/v1/video/query", params={"id": "veo3:late"}).status_code == 400
    first = poll(client, "veo3:late")
    assert first["status"] == "completed"
    assert first["video_url"] is None
    assert poll(client, "veo3:late")["video_url"] == emu.video_url_for("veo3:late")


def test_seconds_to_complete(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("grok:s", Scenario(seconds_to_complete=0.3))
    assert poll(client, "grok:s")["status"] != "completed"
    time.sleep(0.35)
    assert poll(client, "grok:s")["status"] == "completed"


def test_scenario_override_in_create_body(emu: Emulator, client: httpx.Client) -> None:
    task_id = create(client, "veo3", emulator={"polls_to_complete": 1, "video_size": 5000})
    done = poll(client, task_id)
    assert done["status"] == "completed"
    body = download(done["video_url"])
    assert len(body) == 5000
    assert body[4:8] == b"ftyp"
    assert emu.expected_video(task_id) == body
    bad = client.post("/v1/video/create", json={"model": "veo3", "emulator": {"nope": 1}})
    assert bad.status_code == 400


# ---- auth and unknown ids -------------------------------------------------------------------
def test_auth(emu: Emulator) -> None:
    task_id = "veo3:auth"
    emu.add_task(task_id)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": emu.api_key or ""}):
        r = httpx.get(f"{emu.url}/v1/video/query", params={"id": task_id}, headers=headers)
        assert r.status_code == 401
        err = r.json()["error"]
        assert err["type"] == "new_api_error"
        assert "request id" in err["message"]
        assert err["code"] == ""
    assert emu.polls(task_id) == 0
    assert emu.count(status=401) == 3


def test_unknown_task(emu: Emulator, client: httpx.Client) -> None:
    r = client.get("/v1/video/query", params={"id": "veo3:missing"})
    assert r.status_code == 400
    assert r.json() == {"code": "task_not_exist", "message": "task_not_exist", "data": None}
    assert client.get("/v1/videos/video_missing").status_code == 400
    assert client.get("/vidu-native/video/generations/123").status_code == 404
    assert httpx.get(f"{emu.url}/videos/nothing.mp4").status_code == 404


# ---- faults --------------------------------------------------------------------------------
def test_http_error_faults(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:f")
    emu.add_fault(Fault("http_error", route="query", status=429, headers={"Retry-After": "2"}, times=1))
    emu.add_fault(Fault("http_error", route="query", status=429, body="", times=1))
    emu.add_fault(Fault("http_error", route="query", status=503, times=1))
    emu.add_fault(Fault("http_error", route="video", status=403, times=1))
    r = client.get("/v1/video/query", params={"id": "veo3:f"})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert r.json()["error"]
    r = client.get("/v1/video/query", params={"id": "veo3:f"})
    assert r.status_code == 429
    assert r.content == b""
    assert "retry-after" not in r.headers
    r = client.get("/v1/video/query", params={"id": "veo3:f"})
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    assert "<html>" in r.text
    assert emu.polls("veo3:f") == 0  # faulted queries do not advance the task
    assert poll(client, "veo3:f")["status"] == "pending"
    url = emu.video_url_for("veo3:f")
    assert httpx.get(url).status_code == 403
    assert httpx.get(url).status_code == 200
    assert [r.fault for r in emu.requests].count("http_error") == 4


def test_fault_matching_skip_task_rate(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:a")
    emu.add_task("veo3:b")
    emu.add_fault(Fault("http_error", task_id="veo3:b", status=500, skip=1, times=2))
    codes = [client.get("/v1/video/query", params={"id": "veo3:b"}).status_code for _ in range(4)]
    assert codes == [200, 500, 500, 200]
    assert client.get("/v1/video/query", params={"id": "veo3:a"}).status_code == 200
    emu.add_fault(Fault("http_error", route="query", task_id="veo3:a", status=502, rate=0.5))
    codes = [client.get("/v1/video/query", params={"id": "veo3:a"}).status_code for _ in range(40)]
    assert 5 < codes.count(502) < 35


def test_reset_raises_read_error(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:r", Scenario(video_size=200_000))
    emu.add_fault(Fault("reset", route="video", times=1))
    with pytest.raises(httpx.ReadError):
        httpx.get(emu.video_url_for("veo3:r"))
    emu.add_fault(Fault("reset", route="query", times=1))
    with pytest.raises(httpx.ReadError):
        client.get("/v1/video/query", params={"id": "veo3:r"})
    assert len(download(emu.video_url_for("veo3:r"))) == 200_000


def test_truncate_sends_less_than_content_length(emu: Emulator) -> None:
    emu.add_task("veo3:t", Scenario(video_size=100_000))
    emu.add_fault(Fault("truncate", route="video", after_bytes=1000, times=1))
    received = bytearray()
    declared: list[int] = []

    def read_all() -> None:
        with httpx.stream("GET", emu.video_url_for("veo3:t")) as r:
            declared.append(int(r.headers["content-length"]))
            for chunk in r.iter_raw():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError):
        read_all()
    assert declared == [100_000]
    assert bytes(received) == generated_bytes(100_000, 0, 1000)


def test_slow_headers(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:slow")
    emu.add_fault(Fault("slow_headers", route="query", delay=30.0, times=1))
    with pytest.raises(httpx.ReadTimeout):  # the headers are held back: the client gives up first
        client.get("/v1/video/query", params={"id": "veo3:slow"}, timeout=0.2)
    emu.add_fault(Fault("slow_headers", route="query", delay=0.2, times=1))
    start = time.monotonic()
    assert poll(client, "veo3:slow")["id"] == "veo3:slow"
    assert time.monotonic() - start >= 0.2


def test_malformed_json_and_html_video(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:m", Scenario(polls_to_complete=1))
    emu.add_fault(Fault("malformed_json", route="query", times=1))
    r = client.get("/v1/video/query", params={"id": "veo3:m"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        r.json()
    emu.add_fault(Fault("html_video", route="video", times=1))
    url = poll(client, "veo3:m")["video_url"]
    r = httpx.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.content[4:8] != b"ftyp"


def test_redirect_faults(emu: Emulator) -> None:
    emu.add_task("veo3:x")
    url = emu.video_url_for("veo3:x")
    emu.add_fault(Fault("redirect", route="video"))  # every first hop; the hop itself is served
    with httpx.Client(follow_redirects=True) as c:
        r = c.get(url)
        assert r.status_code == 200
        assert r.content == sample_mp4()
        assert len(r.history) == 1
    emu.reset()
    emu.add_task("veo3:x")
    emu.add_fault(Fault("redirect_loop", route="video"))
    with httpx.Client(follow_redirects=True, max_redirects=5) as c, pytest.raises(httpx.TooManyRedirects):
        c.get(url)
    emu.reset()
    emu.add_task("veo3:x")
    emu.add_fault(Fault("redirect_scheme", route="video", location="ftp://127.0.0.1/x.mp4", times=1))
    emu.add_fault(Fault("redirect_scheme", route="video", times=1))
    assert httpx.get(url).headers["location"] == "ftp://127.0.0.1/x.mp4"
    assert httpx.get(url).headers["location"] == "file:///etc/passwd"


def test_scenario_video_url_options(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("veo3:ftp", Scenario(polls_to_complete=1, video_url_scheme="ftp"))
    assert poll(client, "veo3:ftp")["video_url"].startswith("ftp://127.0.0.1:")
    emu.add_task("veo3:hop", Scenario(polls_to_complete=1, video_redirects=2))
    url = poll(client, "veo3:hop")["video_url"]
    with httpx.Client(follow_redirects=True) as c:
        r = c.get(url)
    assert r.status_code == 200
    assert len(r.history) == 2
    assert r.content == sample_mp4()


# ---- bytes and ranges -----------------------------------------------------------------------
def test_range_requests(emu: Emulator) -> None:
    emu.add_task("veo3:range", Scenario(video_size=300_000))
    url = emu.video_url_for("veo3:range")
    full = generated_bytes(300_000)
    r = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.content == full[1000:]
    assert r.headers["content-range"] == "bytes 1000-299999/300000"
    assert int(r.headers["content-length"]) == 299_000
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == full[10:20]
    r = httpx.get(url, headers={"Range": "bytes=300000-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */300000"
    assert httpx.head(url).headers["content-length"] == "300000"


@pytest.mark.parametrize("size", [0, 5, 39, 40, 1000, 64 * 1024 + 7, 300_001])
def test_generated_bytes_exact_size(size: int) -> None:
    data = generated_bytes(size)
    assert len(data) == size
    if size >= 8:
        assert data[4:8] == b"ftyp"
    if size >= 40:
        assert data[36:40] == b"mdat"
    pieces = b"".join(iter_generated(size, size // 3, size - size // 5))
    assert pieces == data[size // 3 : size - size // 5]
    assert all(len(c) <= 64 * 1024 for c in iter_video(size))


def test_huge_generated_header_uses_largesize() -> None:
    header = generated_header(5 * 1024**3)
    assert header[4:8] == b"ftyp"
    assert header[36:40] == b"mdat"
    assert len(header) == 48
    assert len(b"".join(iter_generated(5 * 1024**3, 4 * 1024**3, 4 * 1024**3 + 10))) == 10


def test_sample_mp4_is_a_small_real_mp4() -> None:
    data = SAMPLE_MP4.read_bytes()
    assert data[4:8] == b"ftyp"
    assert b"moov" in data
    assert 1000 < len(data) < 60_000


# ---- admin routes and CLI ---------------------------------------------------------------------
def test_admin_routes(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url, timeout=5.0) as admin:
        r = admin.post("/_emulator/tasks", json={"id": "sora-2:task_x", "scenario": {"polls_to_complete": 1}})
        assert r.status_code == 200
        assert r.json()["family"] == "sora"
        assert r.json()["video_url"] == emu.video_url_for("sora-2:task_x")
        r = admin.post(
            "/_emulator/faults", json=[{"kind": "http_error", "route": "query", "status": 502, "times": 1}]
        )
        assert r.json() == {"added": 1}
        assert admin.post("/_emulator/faults", json={"kind": "nope"}).status_code == 400
        h = {"Authorization": f"Bearer {emu.api_key}"}
        assert admin.get("/v1/video/query", params={"id": "sora-2:task_x"}, headers=h).status_code == 502
        assert (
            admin.get("/v1/video/query", params={"id": "sora-2:task_x"}, headers=h).json()["status"]
            == "completed"
        )
        stats = admin.get("/_emulator/stats").json()
        assert stats["total"] == 2
        assert stats["by_route"] == {"query": 2}
        assert stats["by_status"] == {"502": 1, "200": 1}
        assert admin.get("/_emulator/requests").json()["requests"][0]["status"] == 502
        assert (
            admin.post("/_emulator/default", json={"polls_to_complete": 7}).json()["polls_to_complete"] == 7
        )
        assert admin.post("/_emulator/reset").json() == {"ok": True}
        assert admin.get("/_emulator/stats").json()["tasks"] == 0
    assert emu.count() == 0


def test_cli_prints_url_and_serves() -> None:
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_videoquery.emulator",
        "--port",
        "0",
        "--api-key",
        "k",
        "--polls",
        "1",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # the process prints it within ~1 s
        assert line.startswith("http://127.0.0.1:"), (
            line,
            proc.poll(),
        )
        h = {"Authorization": "Bearer k"}
        created = httpx.post(
            f"{line}/v1/video/create", json={"model": "grok-video-3"}, headers=h, timeout=5
        ).json()
        done = httpx.get(f"{line}/v1/video/query", params={"id": created["id"]}, headers=h, timeout=5).json()
        assert done["status"] == "completed"
        assert httpx.get(done["video_url"], timeout=5).content[4:8] == b"ftyp"
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# ---- per-key create limits and late answers -----------------------------------------------------
def _create_as(emu: Emulator, key: str, timeout: float = 5.0) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "veo3.1-fast", "prompt": "a cow flying"}
    return httpx.post(f"{emu.url}/v1/video/create", json=body, headers=headers, timeout=timeout)


def test_live_task_cap_is_per_key_and_frees_as_tasks_finish() -> None:
    with run_emulator(
        api_key=None, default=Scenario(polls_to_complete=1), limits=Limits(max_live_tasks=2)
    ) as emu:
        first, second = _create_as(emu, "key-a"), _create_as(emu, "key-a")
        refused = _create_as(emu, "key-a")
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "task_limit_exceeded"
        assert emu.state.task_count() == 2  # a refused create makes nothing
        assert _create_as(emu, "key-b").status_code == 200  # the cap is per key
        with httpx.Client(base_url=emu.url, timeout=5.0) as c:
            assert poll(c, first.json()["id"])["status"] == "completed"
        assert _create_as(emu, "key-a").status_code == 200  # a finished task frees its slot
        assert emu.creates("key-a") == CreateCounts(accepted=3, over_live_cap=1, rate_limited=0, live=2)
        assert emu.creates("key-b") == CreateCounts(accepted=1, live=1)
        assert emu.creates() == CreateCounts(accepted=4, over_live_cap=1, live=3)
        assert emu.creates().refused == 1
        assert second.status_code == 200


def test_create_rate_limit_answers_429_with_retry_after(emu: Emulator) -> None:
    emu.set_limits(Limits(create_rate=0.5, create_burst=2))
    assert [_create_as(emu, str(emu.api_key)).status_code for _ in range(2)] == [200, 200]
    refused = _create_as(emu, str(emu.api_key))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"  # one token every 2 s, in whole seconds
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    emu.set_limits(Limits(create_rate=0.5, create_burst=2, retry_after=0.25))
    assert _create_as(emu, str(emu.api_key)).headers["Retry-After"] == "0.25"
    emu.set_limits(Limits(create_rate=0.5, create_burst=2, omit_retry_after=True))
    assert "Retry-After" not in _create_as(emu, str(emu.api_key)).headers
    counts = emu.creates(emu.api_key)
    assert (counts.accepted, counts.rate_limited, counts.refused) == (2, 3, 3)
    assert emu.count(route="create", status=429) == 3


def test_rate_limit_refills_over_time(emu: Emulator) -> None:
    emu.set_limits(Limits(create_rate=1.0, create_burst=1))
    assert _create_as(emu, str(emu.api_key)).status_code == 200
    assert _create_as(emu, str(emu.api_key)).status_code == 429
    time.sleep(1.05)  # a token's worth at 1/s
    assert _create_as(emu, str(emu.api_key)).status_code == 200


def test_late_create_is_made_at_once_and_answered_after_the_read_timeout(emu: Emulator) -> None:
    emu.answer_creates_late(30.0, times=1)
    with pytest.raises(httpx.ReadTimeout):
        _create_as(emu, str(emu.api_key), timeout=0.3)
    assert emu.creates().accepted == 1  # the gateway took it: a retry would pay twice
    assert emu.state.task_count() == 1
    # Only the first one was late: a second late answer would outlast this timeout threefold.
    assert _create_as(emu, str(emu.api_key), timeout=10.0).status_code == 200
    assert emu.creates().accepted == 2


def test_late_answer_fault_matches_every_create_route(emu: Emulator, client: httpx.Client) -> None:
    emu.add_fault(Fault("late_answer", route="creates", delay=30.0))
    for path in ("/v1/video/create", "/v1/videos", "/vidu-native/video/generations"):
        with pytest.raises(httpx.ReadTimeout):  # answered late: the client gives up first
            client.post(path, json={"model": "sora-2", "prompt": "x"}, timeout=0.3)
    # A query is not a create: answered at once (a late one would outlast this timeout threefold).
    assert client.get("/v1/video/query", params={"id": "nope"}, timeout=10.0).status_code in (400, 404)
    assert emu.creates().accepted == 3  # each late create was still made


def test_admin_limits_and_create_counts_by_key_fingerprint(emu: Emulator) -> None:
    with httpx.Client(base_url=emu.url, timeout=5.0) as admin:
        r = admin.post("/_emulator/limits", json={"max_live_tasks": 1})
        assert r.json()["max_live_tasks"] == 1
        assert admin.post("/_emulator/limits", json={"max_live": 1}).status_code == 400
        assert _create_as(emu, str(emu.api_key)).status_code == 200
        assert _create_as(emu, str(emu.api_key)).status_code == 429
        stats = admin.get("/_emulator/stats")
        assert stats.json()["creates"] == {
            key_fingerprint(emu.api_key): {
                "accepted": 1,
                "over_live_cap": 1,
                "rate_limited": 0,
                "live": 1,
                "refused": 1,
            }
        }
        assert str(emu.api_key) not in stats.text
        admin.post("/_emulator/reset")
        assert emu.creates() == CreateCounts()
        assert emu.limits.max_live_tasks == 1  # limits stay, like the default scenario


def test_cli_limit_flags() -> None:
    from airflow_provider_videoquery.emulator.__main__ import build_parser, limits_from_args

    args = build_parser().parse_args(
        ["--max-live-tasks", "20", "--create-rate", "2.5", "--create-burst", "5", "--retry-after", "0.5"]
    )
    assert limits_from_args(args) == Limits(
        max_live_tasks=20, create_rate=2.5, create_burst=5, retry_after=0.5, omit_retry_after=False
    )
    assert limits_from_args(build_parser().parse_args(["--no-retry-after"])).omit_retry_after


def test_cli_late_creates_and_live_cap() -> None:
    cmd = [sys.executable, "-m", "airflow_provider_videoquery.emulator", "--port", "0", "--api-key", "k"]
    cmd += ["--max-live-tasks", "1", "--retry-after", "3", "--late-creates", "1", "--late-creates-times", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        h = {"Authorization": "Bearer k"}
        body = {"model": "veo3.1-fast", "prompt": "x"}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/video/create", json=body, headers=h, timeout=0.3)
        refused = httpx.post(f"{url}/v1/video/create", json=body, headers=h, timeout=5)
        assert (refused.status_code, refused.headers["Retry-After"]) == (429, "3")
        creates = httpx.get(f"{url}/_emulator/stats", timeout=5).json()["creates"]
        assert creates[key_fingerprint("k")]["accepted"] == 1
        assert creates[key_fingerprint("k")]["over_live_cap"] == 1
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
