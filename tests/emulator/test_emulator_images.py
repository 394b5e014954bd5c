"""The emulator takes images like a gateway: it fetches URLs on 127.0.0.1, decodes data: URIs, reads
multipart files, fails a task whose image it cannot have, and refuses an OpenAI input_reference of
the wrong pixel size before creating anything."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.images import PDF, data_uri, png


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def image_host(tmp_path: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 serving ``tmp_path``: a stand-in image host."""
    (tmp_path / "a.png").write_bytes(png(64, 36))
    (tmp_path / "doc.png").write_bytes(PDF)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _create(client: httpx.Client, path: str, **body: Any) -> str:
    answer = client.post(path, json={"prompt": "p", **body})
    assert answer.status_code == 200, answer.text
    created: dict[str, Any] = answer.json()
    return str(created.get("id") or created.get("task_id") or created["data"]["task_id"])


def _finish(emu: Emulator, client: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(5):
        answer: dict[str, Any] = client.get("/v1/video/query", params={"id": task_id}).json()
        if answer["status"] in ("completed", "failed"):
            return answer
    raise AssertionError(answer)


def test_an_image_url_on_loopback_is_fetched(emu: Emulator, client: httpx.Client, image_host: str) -> None:
    emu.set_default(Scenario(polls_to_complete=1))
    task_id = _create(
        client, "/v1/video/create", model="veo3.1-fast", images=[f"{image_host}/a.png?sig=s3cr3t"]
    )
    task = emu.task(task_id)
    assert task is not None
    [image] = task.images
    assert (image.form, image.kind, image.pixels, image.fetched) == ("url", "png", "64x36", True)
    assert image.sha256 == hashlib.sha256(png(64, 36)).hexdigest()
    assert image.source == f"{image_host}/a.png"  # the query (a signature) is not kept
    assert _finish(emu, client, task_id)["status"] == "completed"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.png", "could not be fetched: HTTP 404 from "),
        ("doc.png", "is not an image the model can use"),
    ],
)
def test_a_task_whose_image_cannot_be_had_fails(
    emu: Emulator, client: httpx.Client, image_host: str, name: str, reason: str
) -> None:
    task_id = _create(client, "/v1/video/create", model="sora-2", images=[f"{image_host}/{name}?sig=s3cr3t"])
    done = _finish(emu, client, task_id)
    assert done["status"] == "failed"
    assert reason in str(done)
    task = emu.task(task_id)
    assert task is not None
    assert reason in task.scenario.failure_reason
    assert "s3cr3t" not in task.scenario.failure_reason  # the reason names the image without its query


def test_a_url_off_loopback_is_never_fetched(emu: Emulator, client: httpx.Client) -> None:
    emu.set_default(Scenario(polls_to_complete=1))
    task_id = _create(client, "/v1/video/create", model="veo3.1-fast", images=["https://example.com/a.png"])
    task = emu.task(task_id)
    assert task is not None
    assert [(i.fetched, i.size) for i in task.images] == [(False, 0)]
    assert _finish(emu, client, task_id)["status"] == "completed"


def test_data_uris_are_decoded_and_kept_short(emu: Emulator, client: httpx.Client) -> None:
    uri = data_uri(png(32, 32))
    task_id = _create(client, "/vidu-native/video/generations", model="viduq1", images=[uri])
    task = emu.task(task_id)
    assert task is not None
    assert [(i.form, i.source, i.kind, i.size) for i in task.images] == [
        ("data", "data:image/png", "png", len(png(32, 32)))
    ]
    assert task.body["images"][0].startswith("data:image/png;base64,…(")
    bad = _create(
        client, "/vidu-native/video/generations", model="viduq1", images=["data:image/png;base64,@@@"]
    )
    answer = client.get(f"/vidu-native/video/generations/{bad}").json()
    assert "invalid base64" in str(answer)


def test_openai_multipart_input_reference(emu: Emulator, client: httpx.Client) -> None:
    files = {"input_reference": ("frame.png", png(1280, 720), "image/png")}
    answer = client.post(
        "/v1/videos", data={"model": "sora-2", "prompt": "p", "size": "1280x720"}, files=files
    )
    assert answer.status_code == 200, answer.text
    task = emu.task(answer.json()["id"])
    assert task is not None
    assert [(i.form, i.source, i.pixels) for i in task.images] == [("upload", "frame.png", "1280x720")]
    assert task.body["input_reference"] == "upload:frame.png"


def test_openai_refuses_a_reference_of_another_size_and_creates_nothing(
    emu: Emulator, client: httpx.Client
) -> None:
    files = {"input_reference": ("frame.png", png(1024, 1024), "image/png")}
    answer = client.post("/v1/videos", data={"model": "sora-2", "prompt": "p"}, files=files)  # 720x1280
    assert answer.status_code == 400
    assert "Inpaint image must match the requested width and height" in answer.text
    assert emu.state.task_count() == 0
