"""The image rules per route and family, pure: references, magic bytes and pixel sizes, data: URIs,
forms, counts and limits — through ``check_create_request``, the function the operators call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.create_fields import ROUTE_IMAGES, check_create_request, check_images
from airflow_provider_videoquery.exceptions import VideoCreateRequestError
from airflow_provider_videoquery.images.refs import ImageRef, RefKind, classify, plain
from airflow_provider_videoquery.images.rules import MB, ImageForm
from airflow_provider_videoquery.images.sniff import ImageFacts, facts, sniff
from tests.images import PDF, data_uri, gif, jpeg, png, webp


@pytest.mark.parametrize(
    ("data", "kind", "pixels"),
    [
        (png(1280, 720), "png", "1280x720"),
        (jpeg(720, 1280), "jpeg", "720x1280"),
        (jpeg(1024, 1792, exif_bytes=200_000), "jpeg", "1024x1792"),  # frame header past 64 KB of EXIF
        (webp(1792, 1024), "webp", "1792x1024"),
        (gif(10, 20), "gif", "10x20"),
        (PDF, "pdf", None),
        (b"<!DOCTYPE html><html><body>Access denied</body></html>", "html", None),
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "mp4", None),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "heic", None),
        (b"", "empty", None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_kind_by_magic_bytes_and_pixels_from_the_header(data: bytes, kind: str, pixels: str | None) -> None:
    found = facts(data, len(data))
    assert (found.kind, found.pixels) == (kind, pixels)


def test_a_jpeg_cut_before_its_frame_header_has_no_size() -> None:
    data = jpeg(640, 480, exif_bytes=200_000)[:65536]
    assert sniff(data) == "jpeg"
    assert facts(data, 300_000).pixels is None


@pytest.mark.parametrize(
    ("value", "kind", "shown"),
    [
        ("https://cdn.example/a.png", RefKind.URL, "https://cdn.example/a.png"),
        (
            "https://b.s3.amazonaws.com/a.png?X-Amz-Signature=abc",
            RefKind.URL,
            "https://b.s3.amazonaws.com/a.png",
        ),
        ("s3://bucket/frames/a.png", RefKind.STORED, "s3://bucket/frames/a.png"),
        ("s3://aws_default@bucket/a.png", RefKind.STORED, "s3://bucket/a.png"),
        ("gs://bucket/a.png", RefKind.STORED, "gs://bucket/a.png"),
        ("file:///data/a.png", RefKind.LOCAL, "file:///data/a.png"),
        ("/data/a.png", RefKind.LOCAL, "file:///data/a.png"),
        (Path("/data/a.png"), RefKind.LOCAL, "file:///data/a.png"),
    ],
)
def test_references_and_how_messages_show_them(value: Any, kind: RefKind, shown: str) -> None:
    ref = classify("images[0]", value)
    assert isinstance(ref, ImageRef)
    assert (ref.kind, ref.shown) == (kind, shown)


def test_a_data_uri_is_shown_by_type_and_size_only() -> None:
    uri = data_uri(png(32, 32))
    ref = classify("images[0]", uri)
    assert isinstance(ref, ImageRef)
    assert ref.kind is RefKind.DATA
    assert ref.shown.startswith("data:image/png;base64 (about ")
    assert uri.split(",")[1][:20] not in ref.shown


@pytest.mark.parametrize("value", ["frames/a.png", "", 42, {"url": "x"}])
def test_what_is_no_reference_says_what_would_be(value: Any) -> None:
    problem = classify("image", value)
    assert isinstance(problem, str)
    assert problem.startswith("image ")
    assert "s3://" in problem


def test_plain_turns_path_objects_into_their_text() -> None:
    request = {"model": "m", "images": [Path("/data/a.png"), "s3://b/k.png"], "n": 3}
    assert plain(request) == {"model": "m", "images": ["/data/a.png", "s3://b/k.png"], "n": 3}


# -- the rules, as check_create_request applies them ------------------------------------------------

STORE: dict[str, bytes] = {
    "s3://frames/ok.png": png(1280, 720),
    "s3://frames/portrait.png": png(720, 1280),
    "s3://frames/report.png": PDF,
    "s3://frames/anim.gif": gif(64, 64),
    "s3://frames/wide.png": png(4000, 900),
    "gs://b/c.webp": webp(1280, 720),
    "file:///data/small.png": png(64, 36),
    "file:///data/photo.jpg": jpeg(1280, 720),
}
SIZES = {"s3://frames/huge.png": 60 * MB, "file:///data/big.png": 12 * MB, "s3://frames/big.png": 12 * MB}


def inspect(ref: ImageRef, need_pixels: bool) -> ImageFacts | str:
    """Facts of the objects above (sizes of the big ones made up: they are not held in memory)."""
    if ref.uri in SIZES:
        return ImageFacts("png", SIZES[ref.uri], 1280, 720)
    data = STORE.get(ref.uri)
    return "does not exist" if data is None else facts(data, len(data))


def problems(body: dict[str, Any], route: str) -> list[str]:
    try:
        check_create_request({"model": "veo3.1-fast", "prompt": "p", **body}, route=route, inspect=inspect)
    except VideoCreateRequestError as err:
        return err.problems
    return []


ACCEPTED = [
    ("unified", {"images": ["https://cdn.example/a.png", "s3://frames/ok.png", "gs://b/c.webp"]}),
    ("unified", {"model": "veo3-pro-frames", "images": ["s3://frames/ok.png", "s3://frames/portrait.png"]}),
    ("vidu-native", {"model": "viduq1", "images": ["file:///data/small.png", data_uri(png(64, 36))]}),
    ("vidu-native", {"model": "viduq1", "images": ["s3://frames/big.png"]}),  # too big to inline: a URL
    ("openai", {"model": "sora-2", "size": "1280x720", "input_reference": "s3://frames/ok.png"}),
    ("openai", {"model": "sora-2", "size": "1280x720", "input_reference": "/data/photo.jpg"}),
    ("openai", {"model": "sora-2", "input_reference": "s3://frames/portrait.png"}),  # default 720x1280
    ("openai", {"model": "sora-2", "size": "1280x720", "input_reference": data_uri(png(1280, 720))}),
    (
        "new-api",
        {"image": "file:///data/small.png", "metadata": {"image_tail": "s3://frames/ok.png"}, "images": []},
    ),
]


@pytest.mark.parametrize(("route", "body"), ACCEPTED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(ACCEPTED)])
def test_accepted(route: str, body: dict[str, Any]) -> None:
    assert problems(body, route) == []


REFUSED = [
    (
        "unified",
        {"images": ["file:///data/small.png"]},
        "is on the worker's disk, which the gateway cannot reach",
    ),
    ("unified", {"images": ["/data/small.png"]}, "file:///data/small.png is on the worker's disk"),
    (
        "unified",
        {"images": [data_uri(png())]},
        "images[0] is a data: URI; the unified route takes image URLs only",
    ),
    ("unified", {"images": ["az://container/a.png"]}, "presigns s3:// and gs:// objects only, not az://"),
    ("unified", {"images": ["s3://frames/missing.png"]}, "images[0] s3://frames/missing.png does not exist"),
    (
        "unified",
        {"images": ["s3://frames/report.png"]},
        "images[0] s3://frames/report.png is not an image: its bytes are a PDF document "
        "(its name ends in .png)",
    ),
    (
        "unified",
        {"images": ["s3://frames/anim.gif"]},
        "s3://frames/anim.gif is a GIF image; the unified route takes PNG, JPEG or WebP",
    ),
    (
        "unified",
        {"images": ["s3://frames/huge.png"]},
        "is 60.0 MB; the unified route takes images up to 50.0 MB",
    ),
    (
        "unified",
        {"model": "veo3-pro-frames", "images": ["https://x/1.png"] * 3},
        "'veo3-pro-frames' takes at most 2 images, got 3",
    ),
    ("unified", {"images": "s3://frames/ok.png"}, "images must be a list of image URLs"),
    ("vidu-native", {"images": ["s3://frames/x.png"] * 8}, "the vidu-native route takes at most 7 images"),
    (
        "vidu-native",
        {"images": ["file:///data/big.png"]},
        "is 12.0 MB; the vidu-native route takes inline images",
    ),
    ("vidu-native", {"images": [data_uri(b"\x00" * 16)]}, "is not an image: its bytes are not a file type"),
    ("vidu-native", {"images": ["data:image/png;base64,%%%"]}, "images[0] is a data: URI whose base64"),
    ("vidu-native", {"images": [data_uri(png(), "image/jpeg")]}, "says image/jpeg but its bytes are a PNG"),
    ("vidu-native", {"images": ["s3://frames/wide.png"]}, "is 4000x900 pixels, an aspect ratio of 4.44:1"),
    (
        "openai",
        {"size": "1280x720", "input_reference": "s3://frames/portrait.png"},
        "input_reference s3://frames/portrait.png is 720x1280 pixels; the openai route needs it to be "
        "exactly the request's size 1280x720",
    ),
    ("openai", {"input_reference": "s3://frames/ok.png"}, "exactly the request's size 720x1280 by default"),
    (
        "openai",
        {"input_reference": "https://cdn.example/a.png"},
        "is a URL; the openai route takes the image as",
    ),
    (
        "openai",
        {"input_reference": ["s3://frames/ok.png"]},
        "input_reference takes one image, not a list of 1",
    ),
    ("new-api", {"image": "s3://frames/report.png"}, "image s3://frames/report.png is not an image"),
    (
        "new-api",
        {"metadata": {"image_tail": "frames/b.png"}},
        "metadata.image_tail 'frames/b.png' is not an image",
    ),
]


@pytest.mark.parametrize(("route", "body", "problem"), REFUSED, ids=[p for _, _, p in REFUSED])
def test_refused_with_what_to_do(route: str, body: dict[str, Any], problem: str) -> None:
    found = problems(body, route)
    assert any(problem in p for p in found), found


def test_every_image_problem_of_a_request_at_once() -> None:
    body = {"images": ["s3://frames/missing.png", "s3://frames/report.png", "s3://frames/ok.png", "x"]}
    assert len(problems(body, "unified")) == 3


def test_without_an_inspector_only_forms_are_checked() -> None:
    body = {"model": "veo3.1-fast", "prompt": "p", "images": ["s3://frames/missing.png"]}
    assert check_create_request(body) == []
    with pytest.raises(VideoCreateRequestError, match="on the worker's disk"):
        check_create_request({**body, "images": ["/data/a.png"]})


def test_images_are_checked_for_unknown_models_and_every_route() -> None:
    body = {"model": "kling-v2", "prompt": "p", "images": ["file:///data/small.png"]}
    with pytest.raises(VideoCreateRequestError, match="worker's disk"):
        check_create_request(body)
    for route in ROUTE_IMAGES:
        assert ROUTE_IMAGES[route].forms, route


@pytest.mark.parametrize(
    ("route", "protocol", "size", "form"),
    [
        ("unified", "s3", 1 * MB, ImageForm.URL),
        ("unified", "file", 1 * MB, None),
        ("vidu-native", "s3", 1 * MB, ImageForm.DATA),  # inlined first: no signed URL leaves the worker
        ("vidu-native", "s3", 10 * MB, ImageForm.URL),  # "decoded < 10 MB": 10 MB goes as a URL
        ("vidu-native", "file", 10 * MB, None),
        ("new-api", "s3", 1 * MB, ImageForm.URL),
        ("new-api", "file", 1 * MB, ImageForm.DATA),
        ("openai", "file", 40 * MB, ImageForm.UPLOAD),
    ],
)
def test_the_form_a_stored_image_takes(route: str, protocol: str, size: int, form: ImageForm | None) -> None:
    assert ROUTE_IMAGES[route].stored_form(protocol, size) is form


def test_check_images_checks_the_images_only_with_the_models_own_count() -> None:
    body = {"model": "grok-video-3", "prompt": "p", "aspect_ratio": "16:9", "images": ["https://x/a.png"]}
    check_images(body)  # the aspect ratio is check_create_request's
    with pytest.raises(VideoCreateRequestError, match="aspect_ratio '16:9' is not accepted"):
        check_create_request(body)
    with pytest.raises(VideoCreateRequestError, match="worker's disk"):
        check_images({**body, "images": ["/data/a.png"]})
    frames = {"model": "veo3-pro-frames", "prompt": "p", "images": ["https://x/1.png"] * 3}
    with pytest.raises(VideoCreateRequestError, match="'veo3-pro-frames' takes at most 2 images, got 3"):
        check_images(frames)
