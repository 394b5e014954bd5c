"""The emulator's new-api route, read as raw JSON over HTTP (no client code: its shapes stand alone)."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from airflow_provider_videoquery.emulator import Emulator, Fault, Scenario


def query(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/video/generations/{task_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "success"
    return body


def test_create_answers_task_id_and_id_then_task_dto(emu: Emulator, client: httpx.Client) -> None:
    r = client.post("/v1/video/generations", json={"model": "veo3.1-fast", "prompt": "a cow flying"})
    assert r.status_code == 200, r.text
    created = r.json()
    task_id = created["task_id"]
    assert task_id.startswith("task_")
    assert created["id"] == task_id
    seen = [query(client, task_id)["data"] for _ in range(3)]
    assert [d["status"] for d in seen] == ["QUEUED", "IN_PROGRESS", "SUCCESS"]
    assert all(d["task_id"] == task_id for d in seen)
    assert seen[1]["progress"].endswith("%")
    assert "result_url" not in seen[0]
    assert seen[2]["result_url"] == emu.video_url_for(task_id)
    assert seen[2]["finish_time"] >= seen[2]["submit_time"] > 0
    assert isinstance(seen[2]["data"], dict)


def test_shapes_null_data_and_inline_video(emu: Emulator, client: httpx.Client) -> None:
    emu.add_task("task_g", Scenario(family="newapi", polls_to_complete=2, newapi_shape="gemini",
                                    newapi_null_polls=1, inline_video=True, video_size=4096))  # fmt: skip
    assert query(client, "task_g")["data"] is None
    data = query(client, "task_g")["data"]
    assert data["status"] == "succeeded"
    assert data["url"].startswith("data:video/mp4;base64,")
    assert base64.b64decode(data["url"].split(",", 1)[1]) == emu.expected_video("task_g")

    emu.add_task("task_l", Scenario(family="newapi", polls_to_complete=1, newapi_shape="legacy"))
    legacy = query(client, "task_l")["data"]
    assert legacy["status"] == "SUCCESS"
    assert "result_url" not in legacy
    assert legacy["fail_reason"] == emu.video_url_for("task_l")


def test_unknown_task_and_faults(emu: Emulator, client: httpx.Client) -> None:
    r = client.get("/v1/video/generations/task_nobody")
    assert r.status_code == 400
    assert r.json()["code"] == "task_not_exist"
    emu.add_task("task_f", Scenario(family="newapi"))
    emu.add_fault(Fault("http_error", route="newapi_query", status=502, times=1))
    assert client.get("/v1/video/generations/task_f").status_code == 502
    assert client.get("/v1/video/generations/task_f").status_code == 200
    assert emu.count(route="newapi_query", task_id="task_f") == 2
