"""What a destination means, and checking it before anything is paid for or waited for.

Through the operator against the emulator, into real local folders and moto's S3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.storage import object_uri, resolve_destination, safe_file_name
from tests.airflow_helpers import make_context

pytestmark = pytest.mark.timeout(60)

TASK = "veo3.1-fast:1764522552-Dest0001"
NAME = safe_file_name(TASK)


def download(emulator: Emulator, destination: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Run the operator (not deferrable) for a finished task; (returned URI, XCom ``video``)."""
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_size=64 * 1024))
    context = make_context()
    operator = VideoDownloadOperator(
        task_id="download",
        video_task_id=TASK,
        destination=destination,
        deferrable=False,
        poll_interval=0.05,
        timeout=10,
        download_attempts=2,
        download_retry_delay=0.01,
        **kwargs,
    )
    uri: str = operator.execute(context)  # type: ignore[arg-type]
    return uri, context["ti"].xcom["video"]


def every_file(root: Path) -> list[str]:
    """Every file under ``root``, hidden ones included, relative and sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- what a destination names -----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["file://{}/out", "{}/out"], ids=["uri", "plain-path"])
def test_an_existing_folder_without_the_slash_gets_the_file_inside(
    emulator: Emulator, tmp_path: Path, form: str
) -> None:
    (tmp_path / "out").mkdir()
    uri, video = download(emulator, form.format(tmp_path))
    assert uri == f"file://{tmp_path}/out/{NAME}"
    assert video["uri"] == uri
    assert every_file(tmp_path) == [f"out/{NAME}"]  # no hidden .part left anywhere
    assert (tmp_path / "out" / NAME).read_bytes() == emulator.expected_video(TASK)
    assert ObjectStoragePath(uri).exists()


@pytest.mark.parametrize("destination", ["{}/videos/", "{}/videos/clip.mp4"])
def test_a_plain_absolute_path_is_a_local_file_with_a_file_uri(
    emulator: Emulator, tmp_path: Path, destination: str
) -> None:
    uri, video = download(emulator, destination.format(tmp_path))
    expected = f"{tmp_path}/videos/" + (NAME if destination.endswith("/") else "clip.mp4")
    assert uri == f"file://{expected}"
    assert video["uri"] == uri
    assert Path(expected).read_bytes() == emulator.expected_video(TASK)
    assert ObjectStoragePath(uri).exists()  # the URI a downstream task reads really names the file


def test_plain_paths_resolve_to_file_uris(tmp_path: Path) -> None:
    assert object_uri(resolve_destination(f"{tmp_path}/a/", TASK)) == f"file://{tmp_path}/a/{NAME}"
    assert object_uri(resolve_destination(f"  {tmp_path}/a/b.mp4 ", TASK)) == f"file://{tmp_path}/a/b.mp4"
    assert object_uri(ObjectStoragePath(f"{tmp_path}/c.mp4")) == f"file://{tmp_path}/c.mp4"


@pytest.mark.parametrize("destination", ["videos/", "./videos/clip.mp4", "~/videos/"])
def test_a_relative_path_is_refused(destination: str) -> None:
    with pytest.raises(VideoDownloadError, match=r"relative path: give an absolute path"):
        resolve_destination(destination, TASK)


def test_a_file_name_without_a_video_suffix_is_kept_with_a_warning(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    uri, _ = download(emulator, f"file://{tmp_path}/out")
    assert uri == f"file://{tmp_path}/out"  # the documented rule: the file itself
    assert (tmp_path / "out").read_bytes() == emulator.expected_video(TASK)
    assert f"file://{tmp_path}/out has no video suffix" in caplog.text
    assert "End the destination with '/'" in caplog.text


def test_a_video_file_name_gets_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    for name in ("clip.mp4", "clip.MOV", "clip.webm"):
        resolve_destination(f"file://{tmp_path}/{name}", TASK)
    assert "no video suffix" not in caplog.text
