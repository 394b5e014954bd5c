"""What a destination means, and checking it before anything is paid for or waited for.

Through the operator against the emulator, into real local folders and moto's S3.
(``check_destination`` is ``airflow_provider_videoquery.storage.check_destination``.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.emulator import Emulator, Scenario
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from airflow_provider_videoquery.storage import (
    DownloadSettings,
    check_destination,
    object_uri,
    resolve_destination,
    safe_file_name,
    store_url,
)
from tests.airflow_helpers import make_context
from tests.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from tests.socket_guard import SocketGuard

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


# -- checked before anything is paid for or waited for -----------------------------------------------


def test_a_missing_local_folder_is_created_and_probed_leaving_nothing(tmp_path: Path) -> None:
    check_destination(f"{tmp_path}/a/b/")
    check_destination(f"file://{tmp_path}/c/clip.mp4")
    assert every_file(tmp_path) == []  # the probes are gone
    assert (tmp_path / "a" / "b").is_dir()
    assert (tmp_path / "c").is_dir()


def test_a_file_in_the_way_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(VideoDownloadError) as err:
        check_destination(f"file://{tmp_path}/taken/videos/")
    message = str(err.value)
    assert f"Checking the destination file://{tmp_path}/taken/videos/" in message
    assert "a part of the path is a file, not a folder. Choose another destination" in message


def test_an_unwritable_folder_fails_the_check() -> None:
    """/sys refuses new folders, even to root (who may write anywhere else)."""
    with pytest.raises(
        VideoDownloadError, match=r"file:///sys/videoquery-test/.*(permission denied|read-only)"
    ):
        check_destination("/sys/videoquery-test/")


def test_a_missing_storage_connection_fails_before_anything_is_waited_for(
    emulator: Emulator, tmp_path: Path
) -> None:
    with pytest.raises(VideoDownloadError) as err:
        download(emulator, f"{tmp_path}/out/", destination_conn_id="aws_defualt")
    assert str(err.value) == (
        f"The destination file://{tmp_path}/out/ names the storage connection 'aws_defualt', which does "
        "not exist. Create it (Admin → Connections, or an AIRFLOW_CONN_… variable) or fix "
        "destination_conn_id; a missing connection is never replaced by anonymous access."
    )
    assert emulator.requests == []  # not even one status query
    assert not (tmp_path / "out").exists()


def test_storing_into_a_path_blocked_by_a_file_is_a_clear_error(emulator: Emulator, tmp_path: Path) -> None:
    """A failure while storing (here: the check was skipped) is wrapped, naming the target."""
    (tmp_path / "taken").write_text("a file, not a folder")
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_size=4096))
    settings = DownloadSettings(trusted_origin=emulator.url)
    target = resolve_destination(f"file://{tmp_path}/taken/out/", TASK)
    with pytest.raises(VideoDownloadError) as err:
        store_url(emulator.video_url_for(TASK), target, settings)
    assert f"Storing the video from {emulator.url}" in str(err.value)
    assert f"at file://{tmp_path}/taken/out/{NAME} failed: a part of the path is a file" in str(err.value)
    assert isinstance(err.value.__cause__, OSError)


# -- S3 (moto) ----------------------------------------------------------------------------------------


def test_an_s3_bucket_that_takes_uploads_passes_and_keeps_nothing(
    moto_server: MotoS3, s3_bucket: str
) -> None:
    check_destination(f"s3://{s3_bucket}/videos/", "aws_default")
    check_destination(f"s3://{s3_bucket}/videos/clip.mp4", "aws_default")
    assert moto_server.keys(s3_bucket) == []
    assert moto_server.uploads(s3_bucket) == []  # the probe uploads were aborted


def test_a_missing_bucket_fails_the_check(moto_server: MotoS3) -> None:
    with pytest.raises(VideoDownloadError) as err:
        check_destination("s3://no-such-bucket-here/videos/", "aws_default")
    message = str(err.value)
    assert (
        "Checking the destination s3://no-such-bucket-here/videos/: starting an upload into bucket" in message
    )
    assert "the folder or bucket does not exist" in message


def test_s3_without_any_credentials_is_refused_not_anonymous(
    moto_server: MotoS3, s3_bucket: str, no_ambient_aws: SocketGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        VideoDownloadError, match=r"no destination_conn_id is set and boto3 found none.*anonymous"
    ):
        check_destination(f"s3://{s3_bucket}/videos/")
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_EMPTY",
        json.dumps({"conn_type": "aws", "extra": {"endpoint_url": moto_server.endpoint_url}}),
    )
    with pytest.raises(VideoDownloadError, match=r"the connection 'aws_empty' holds none.*anonymous"):
        check_destination(f"s3://{s3_bucket}/videos/", "aws_empty")
    assert no_ambient_aws.connects == []


def test_s3_without_a_connection_uses_boto3s_credentials_with_a_warning(
    moto_server: MotoS3,
    s3_bucket: str,
    no_ambient_aws: SocketGuard,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server.endpoint_url)
    caplog.set_level(logging.WARNING)
    check_destination(f"s3://{s3_bucket}/videos/")
    assert f"The destination s3://{s3_bucket}/videos/ has no destination_conn_id" in caplog.text
    assert "boto3's default credentials" in caplog.text
    assert moto_server.uploads(s3_bucket) == []
    assert no_ambient_aws.connects == []
