"""ImageInputs against real storage — local files and moto's S3 on 127.0.0.1: stored images read and
checked (exists, magic bytes, connections, never anonymous), then resolved into what each route takes
(a presigned URL that really fetches, a data: URI, a file part), with signed URLs kept out of errors."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoCreateRequestError, VideoQueryRequestError
from airflow_provider_videoquery.images import inputs as inputs_module
from airflow_provider_videoquery.images import presign
from airflow_provider_videoquery.images.inputs import URL_EXPIRY, ImageInputs, Resolved
from airflow_provider_videoquery.images.multipart import FilePart, encode
from tests.images import PDF, data_uri, png
from tests.s3 import MotoS3
from tests.socket_guard import SocketGuard

pytestmark = pytest.mark.timeout(60)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "veo3.1-fast", "prompt": "make it move", **fields}


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(64, 36))
    (folder / "b.png").write_bytes(png(1280, 720, seed=1))
    (folder / "report.png").write_bytes(PDF)
    return folder


@pytest.fixture
def bucket(moto_server: MotoS3, s3_bucket: str) -> str:
    client = moto_server.client()
    client.put_object(Bucket=s3_bucket, Key="frames/a.png", Body=png(64, 36))
    client.put_object(Bucket=s3_bucket, Key="frames/wide.png", Body=png(1280, 720))
    client.put_object(Bucket=s3_bucket, Key="frames/report.png", Body=PDF)
    return s3_bucket


# -- local files --------------------------------------------------------------------------------------


def test_a_local_image_goes_to_vidu_inline_and_the_request_keeps_its_path(frames: Path) -> None:
    request = body(model="viduq1", images=[f"file://{frames}/a.png", str(frames / "b.png")])
    inputs = ImageInputs("vidu-native")
    assert inputs.check([("Task 'create'", request)]) == []
    resolved = inputs.resolve(request)
    sent = resolved.fields["images"]
    assert [base64.b64decode(uri.split(",", 1)[1]) for uri in sent] == [png(64, 36), png(1280, 720, seed=1)]
    assert all(uri.startswith("data:image/png;base64,") for uri in sent)
    assert request["images"] == [f"file://{frames}/a.png", str(frames / "b.png")]  # untouched


def test_every_problem_of_every_request_at_once(frames: Path) -> None:
    requests = [
        ("Request 'one'", body(model="viduq1", images=[f"file://{frames}/a.png"])),
        ("Request 'two'", body(model="viduq1", images=[f"file://{frames}/missing.png"])),
        ("Request 'three'", body(model="viduq1", images=[f"file://{frames}/report.png", "s3:/x"])),
    ]
    with pytest.raises(VideoCreateRequestError) as caught:
        ImageInputs("vidu-native").check(requests)
    message = str(caught.value)
    assert message.startswith("2 of 3 request(s) refused before anything was created (nothing was paid for):")
    assert f"Request 'two': images[0] file://{frames}/missing.png does not exist" in message
    assert "Request 'three': images[1] 's3:/x' is not an image reference" in message
    assert f"images[0] file://{frames}/report.png is not an image: its bytes are a PDF" in message
    assert "Request 'one'" not in message


def test_a_local_image_on_the_openai_route_is_a_file_part_sent_as_multipart(frames: Path) -> None:
    request = body(model="sora-2", size="1280x720", seconds=8, input_reference=f"{frames}/b.png")
    inputs = ImageInputs("openai")
    inputs.check([("Task 'create'", request)])
    part = inputs.resolve(request).fields["input_reference"]
    assert isinstance(part, FilePart)
    assert (part.filename, part.media_type, part.shown) == ("b.png", "image/png", f"file://{frames}/b.png")
    with encode({**request, "input_reference": part}) as encoded:
        sent = httpx.Request("POST", "http://127.0.0.1/v1/videos", **encoded.content)
        content = b"".join(sent.stream)  # type: ignore[union-attr]
        assert encoded.headers({"Content-Type": "application/json", "A": "b"}) == {"A": "b"}
    assert png(1280, 720, seed=1) in content
    assert b'name="seconds"\r\n\r\n8\r\n' in content


def test_a_data_uri_on_the_openai_route_is_uploaded_decoded() -> None:
    image = png(720, 1280)
    request = body(model="sora-2", input_reference=data_uri(image))
    inputs = ImageInputs("openai")
    inputs.check([("Task 'create'", request)])
    part = inputs.resolve(request).fields["input_reference"]
    assert isinstance(part, FilePart)
    assert part.opener().read() == image


# -- S3 (moto) ----------------------------------------------------------------------------------------


def test_an_s3_image_is_presigned_and_the_url_fetches_it(bucket: str) -> None:
    request = body(images=[f"s3://{bucket}/frames/a.png"])
    inputs = ImageInputs("unified", "aws_default")
    assert inputs.check([("Task 'create'", request)]) == []
    resolved = inputs.resolve(request)
    [url] = resolved.fields["images"]
    assert url.startswith("http://127.0.0.1:")
    assert "Signature" in url
    assert httpx.get(url).content == png(64, 36)
    assert request["images"] == [f"s3://{bucket}/frames/a.png"]
    assert (
        resolved.redact(f"gateway: cannot fetch {url}") == f"gateway: cannot fetch s3://{bucket}/frames/a.png"
    )


def test_presigned_at_each_resolve_with_its_expiry_counted_from_there(bucket: str) -> None:
    request = body(images=[f"s3://{bucket}/frames/a.png"])
    inputs = ImageInputs("unified", "aws_default")
    inputs.check([("Task 'create'", request)])
    for _ in range(2):  # each create (a retry, a later wave) presigns anew
        started = time.time()
        [url] = inputs.resolve(request).fields["images"]
        expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
        assert expires >= int(started + URL_EXPIRY.total_seconds())


class _GoogleStandIn:
    """GCSHook's surface the provider uses (get_conn().bucket().blob().generate_signed_url), recording
    each signing request."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, dict[str, Any]]] = []
        self._where: tuple[str, str] = ("", "")

    def get_conn(self) -> _GoogleStandIn:
        return self

    def bucket(self, name: str) -> _GoogleStandIn:
        self._where = (name, "")
        return self

    def blob(self, key: str) -> _GoogleStandIn:
        self._where = (self._where[0], key)
        return self

    def generate_signed_url(self, **kwargs: Any) -> str:
        self.asked.append((*self._where, kwargs))
        return "https://storage.googleapis.com/b/k.png?X-Goog-Signature=abc"


def test_gcs_objects_are_signed_v4_for_a_get_through_the_google_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GCS signing runs here (it needs the Google SDK and a service-account key): a stand-in for
    GCSHook records how the provider asks for the URL, and that one hook serves a connection."""
    google = _GoogleStandIn()
    made: list[tuple[str, str | None]] = []

    def new_hook(store: str, conn_id: str | None) -> _GoogleStandIn:
        made.append((store, conn_id))
        return google

    monkeypatch.setattr(presign, "_new_hook", new_hook)
    path: Any = SimpleNamespace(
        protocol="gs", path="frames-bucket/a/b.png", conn_id="gcp"
    )  # gs:// needs Google's fs
    signer = presign.Presigner(3600)
    assert signer.url(path).startswith("https://storage.googleapis.com/")
    signer.url(path)
    expected = {"version": "v4", "expiration": timedelta(seconds=3600), "method": "GET"}
    assert google.asked == [("frames-bucket", "a/b.png", expected)] * 2
    assert made == [("gs", "gcp")]


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("frames/missing.png", "does not exist (or is not visible to connection 'aws_default')"),
        ("frames/report.png", "is not an image: its bytes are a PDF document (its name ends in .png)"),
    ],
)
def test_s3_problems_are_found_before_paying(bucket: str, key: str, problem: str) -> None:
    with pytest.raises(VideoCreateRequestError) as caught:
        ImageInputs("unified", "aws_default").check(
            [("Task 'create'", body(images=[f"s3://{bucket}/{key}"]))]
        )
    assert (
        f"Task 'create' was not sent (nothing was paid for): images[0] s3://{bucket}/{key} {problem}"
        in str(caught.value)
    )


def test_an_image_may_carry_its_own_connection(bucket: str) -> None:
    own = ObjectStoragePath(f"s3://{bucket}/frames/wide.png", conn_id="aws_default")
    request = body(model="sora-2", size="1280x720", input_reference=own)
    inputs = ImageInputs("openai")  # no inputs_conn_id: the path's own connection is used
    inputs.check([("Task 'create'", request)])
    part = inputs.resolve(request).fields["input_reference"]
    assert part.opener().read() == png(1280, 720)
    uri_request = body(images=[f"s3://aws_default@{bucket}/frames/a.png"])
    assert ImageInputs("unified").check([("Task 'create'", uri_request)]) == []


def test_a_missing_inputs_connection_is_refused_before_anything(bucket: str) -> None:
    with pytest.raises(
        VideoCreateRequestError, match=r"the storage connection 'no_such_aws'.*does not exist"
    ):
        ImageInputs("unified", "no_such_aws").check([("Task 'create'", body(images=["https://x/a.png"]))])


def test_no_credentials_is_refused_not_read_anonymously(
    bucket: str, no_ambient_aws: SocketGuard, monkeypatch: pytest.MonkeyPatch, moto_server: MotoS3
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_EMPTY",
        json.dumps({"conn_type": "aws", "extra": {"endpoint_url": moto_server.endpoint_url}}),
    )
    for conn_id in (None, "aws_empty"):
        with pytest.raises(
            VideoCreateRequestError, match=r"no credentials were found.*anonymous reads are refused"
        ):
            ImageInputs("unified", conn_id).check(
                [("Task 'create'", body(images=[f"s3://{bucket}/frames/a.png"]))]
            )
    assert no_ambient_aws.connects == []


def test_an_image_gone_by_create_time_is_not_sent(bucket: str, moto_server: MotoS3) -> None:
    request = body(model="viduq1", images=[f"s3://{bucket}/frames/a.png"])
    inputs = ImageInputs("vidu-native", "aws_default")
    inputs.check([("Request 'k'", request)])
    moto_server.client().delete_object(Bucket=bucket, Key="frames/a.png")
    with pytest.raises(
        VideoCreateRequestError, match=r"Request 'k' was not sent \(nothing was paid for\): images"
    ):
        inputs.resolve(request, what="Request 'k'")


def test_an_image_changed_since_its_check_is_checked_again_at_create_time(
    bucket: str, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inputs_module, "RECHECK_AFTER", 0.0)  # a later wave: the check's read is old
    request = body(images=[f"s3://{bucket}/frames/a.png"])
    inputs = ImageInputs("unified", "aws_default")
    inputs.check([("Request 'k'", request)])
    moto_server.client().put_object(Bucket=bucket, Key="frames/a.png", Body=PDF)
    with pytest.raises(
        VideoCreateRequestError, match=r"Request 'k' was not sent.*is not an image: its bytes are a PDF"
    ):
        inputs.resolve(request, what="Request 'k'")


# -- keeping signed URLs and payloads out of errors ---------------------------------------------------


def test_an_error_raised_while_sending_loses_signed_urls_and_payloads() -> None:
    url = "https://b.s3.amazonaws.com/k.png?X-Amz-Credential=AKIAEXAMPLE%2F2026&X-Amz-Signature=0123456789abcdef99"
    resolved = Resolved({}, {url: "s3://b/k.png"})
    payload = data_uri(png(8, 8))
    with pytest.raises(VideoQueryRequestError) as caught, resolved.redacting():
        raise VideoQueryRequestError(
            f"HTTP 400: cannot fetch {url}; signature 0123456789abcdef99 and AKIAEXAMPLE/2026; bad {payload}"
        )
    text = str(caught.value)
    assert "s3://b/k.png" in text
    assert "0123456789abcdef99" not in text
    assert "AKIAEXAMPLE" not in text
    assert payload.split(",")[1][:16] not in text
    assert "data:image/png;base64,…" in text
