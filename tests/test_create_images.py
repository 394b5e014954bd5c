"""VideoCreateOperator with images in storage, against the emulator and moto's S3: the gateway gets
what its route takes (a presigned URL it really fetches, a data: URI, a multipart file re-sent whole
after a 429), a wrong image is refused before the create, and no signature reaches a log."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from airflow_provider_videoquery.emulator import Emulator, Fault
from airflow_provider_videoquery.exceptions import VideoCreateRequestError, VideoCreateUncertainError
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator
from tests.airflow_helpers import assert_key_nowhere, make_context
from tests.images import png
from tests.s3 import MotoS3

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def frame(moto_server: MotoS3, s3_bucket: str) -> str:
    moto_server.client().put_object(Bucket=s3_bucket, Key="frames/start.png", Body=png(1280, 720))
    return f"s3://{s3_bucket}/frames/start.png"


SHA = hashlib.sha256(png(1280, 720)).hexdigest()


def test_an_s3_image_reaches_the_gateway_as_a_presigned_url_it_fetches(
    emulator: Emulator, frame: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    operator = VideoCreateOperator(
        task_id="create",
        model="veo3.1-fast",
        prompt="p",
        extra_fields={"images": [frame]},
        inputs_conn_id="aws_default",
    )
    context = make_context()
    video_task_id = operator.execute(context)
    task = emulator.task(video_task_id)
    assert task is not None
    [image] = task.images
    assert (image.form, image.fetched, image.sha256) == ("url", True, SHA)
    assert image.source.endswith(frame.removeprefix("s3://"))
    sent = task.body["images"][0]
    assert "Signature=" in sent
    assert operator.extra_fields == {"images": [frame]}  # the rendered field keeps the URI
    captured = capsys.readouterr()
    logged = captured.out + captured.err + caplog.text  # Airflow's task logger writes to stdout
    assert f"Images: images[0] {frame} as a presigned URL." in logged
    signature = sent.split("Signature=")[1].split("&")[0]
    assert signature not in logged
    assert_key_nowhere(logged, context["ti"].xcom)


def test_the_openai_route_uploads_the_file_and_resends_it_whole_after_a_429(
    emulator: Emulator, frame: str
) -> None:
    emulator.add_fault(
        Fault("http_error", route="openai_create", status=429, times=1, headers={"Retry-After": "0"})
    )
    operator = VideoCreateOperator(
        task_id="create",
        model="sora-2",
        prompt="p",
        route="openai",
        extra_fields={"size": "1280x720", "seconds": 8, "input_reference": frame},
        inputs_conn_id="aws_default",
    )
    video_task_id = operator.execute(make_context())
    task = emulator.task(video_task_id)
    assert task is not None
    assert [(i.form, i.source, i.sha256) for i in task.images] == [("upload", "start.png", SHA)]
    assert (task.body["size"], task.body["seconds"]) == ("1280x720", "8")
    assert emulator.count(route="openai_create") == 2  # the 429, then the create
    assert emulator.state.task_count() == 1


def test_a_reference_of_the_wrong_pixel_size_is_refused_before_the_create(
    emulator: Emulator, frame: str
) -> None:
    operator = VideoCreateOperator(
        task_id="create",
        model="sora-2",
        prompt="p",
        route="openai",
        extra_fields={"size": "720x1280", "input_reference": frame},
        inputs_conn_id="aws_default",
    )
    with pytest.raises(
        VideoCreateRequestError, match=r"is 1280x720 pixels; the openai route needs it to be exactly"
    ):
        operator.execute(make_context())
    assert emulator.count(route="openai_create") == 0


def test_a_local_image_goes_to_vidu_as_a_data_uri(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1280, 720))
    operator = VideoCreateOperator(
        task_id="create",
        model="viduq1",
        prompt="p",
        route="vidu-native",
        extra_fields={"images": [str(tmp_path / "a.png")]},
    )
    task = emulator.task(operator.execute(make_context()))
    assert task is not None
    assert [(i.form, i.source, i.sha256) for i in task.images] == [("data", "data:image/png", SHA)]


def test_a_local_image_on_the_unified_route_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(64, 36))
    operator = VideoCreateOperator(
        task_id="create",
        model="veo3.1-fast",
        prompt="p",
        extra_fields={"images": [f"file://{tmp_path}/a.png"]},
    )
    with pytest.raises(
        VideoCreateRequestError, match="is on the worker's disk, which the gateway cannot reach"
    ):
        operator.execute(make_context())
    assert emulator.count(route="create") == 0


def test_an_uncertain_multipart_create_names_its_prompt(emulator: Emulator, frame: str) -> None:
    emulator.add_fault(Fault("http_error", route="openai_create", status=500))
    operator = VideoCreateOperator(
        task_id="create",
        model="sora-2",
        prompt="A harbour at dawn",
        route="openai",
        extra_fields={"size": "1280x720", "input_reference": frame},
        inputs_conn_id="aws_default",
    )
    with pytest.raises(VideoCreateUncertainError) as caught:
        operator.execute(make_context())
    assert "with the prompt 'A harbour at dawn'" in str(caught.value)
    assert emulator.count(route="openai_create") == 1


def test_new_api_takes_strings_a_url_for_s3_and_a_data_uri_for_a_local_file(
    emulator: Emulator, frame: str, tmp_path: Path
) -> None:
    (tmp_path / "last.png").write_bytes(png(1280, 720))
    operator = VideoCreateOperator(
        task_id="create",
        model="kling-v2",
        prompt="p",
        route="new-api",
        extra_fields={"image": frame, "metadata": {"image_tail": str(tmp_path / "last.png")}},
        inputs_conn_id="aws_default",
    )
    task = emulator.task(operator.execute(make_context()))
    assert task is not None
    assert [(i.field, i.form, i.sha256) for i in task.images] == [
        ("image", "url", SHA),
        ("metadata.image_tail", "data", SHA),
    ]
