"""Images a create carries, taken the way a gateway takes them: URLs fetched, ``data:`` URIs decoded,
multipart files read. A task whose image cannot be had fails with the reason, as on a real gateway;
OpenAI's route refuses an ``input_reference`` whose pixel size is not the request's ``size`` (HTTP 400,
nothing created), as OpenAI does. The emulator never connects beyond 127.0.0.1: a URL on another host
is recorded as not fetched and the task goes on.

Independent of the client: the emulator keeps its own small table of fields and magic bytes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from .scenarios import Scenario

#: The body fields each create route reads images from (``a.b``: field ``b`` of object ``a``).
FIELDS: dict[str, tuple[str, ...]] = {
    "create": ("images",),
    "vidu_create": ("images",),
    "openai_create": ("input_reference",),
    "newapi_create": (
        "image",
        "images",
        "input_reference",
        "metadata.image_tail",
        "metadata.first_frame_image",
        "metadata.last_frame_image",
    ),
}
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
#: Vidu: "the length of the base64 decode must be under 10MB".
VIDU_INLINE_LIMIT = 10 * 1024 * 1024
FETCH_TIMEOUT = 10.0
_OPENAI_DEFAULT_SIZE = "720x1280"
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF8", "gif"))


@dataclass(frozen=True)
class ReceivedImage:
    """One image a create brought: where from (a URL without its query, ``data:<type>``, or the
    uploaded file's name), its kind by magic bytes, size, sha256, and pixels when it is a PNG.
    ``fetched`` is False for a URL off 127.0.0.1 (never connected to: kind None, size 0)."""

    field: str
    form: str
    source: str
    kind: str | None
    size: int
    sha256: str
    pixels: str | None = None
    fetched: bool = True


@dataclass
class Received:
    """What the create's images came to: the body as the task keeps it (inline payloads shown by
    size), the images, and why the task must fail (``failure``) or the create be refused (``refusal``)."""

    body: dict[str, Any]
    images: list[ReceivedImage] = field(default_factory=list)
    failure: str | None = None
    refusal: str | None = None

    def scenario(self, scenario: Scenario) -> Scenario:
        """``scenario``, or one failing at the first query when an image could not be had."""
        if self.failure is None:
            return scenario
        return dataclasses.replace(
            scenario,
            outcome="failed",
            failure_reason=self.failure,
            polls_to_complete=1,
            seconds_to_complete=None,
            statuses=None,
        )


async def receive(request: web.Request, route: str, body: dict[str, Any]) -> Received:
    """Take the images of a create on ``route`` (fields per :data:`FIELDS`)."""
    received = Received(dict(body))
    items: list[tuple[str, Any]] = []
    for name in FIELDS.get(route, ()):
        value = _get(body, name)
        if isinstance(value, list):
            items += [(f"{name}[{n}]", item) for n, item in enumerate(value)]
        elif value is not None:
            items.append((name, value))
    if request.content_type == "multipart/form-data":
        form = await request.post()
        for name in FIELDS.get(route, ()):
            part = form.get(name)
            if isinstance(part, web.FileField):
                items.append((name, part))
                received.body[name] = f"upload:{part.filename}"
    if items:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as session:
            for where, value in items:
                image, why = await _take(session, where, value, route)
                if image is not None:
                    received.images.append(image)
                if why is not None and received.failure is None:
                    received.failure = why
    received.body = _short_inline(received.body)
    if route == "openai_create":
        received.refusal = _size_mismatch(received.images, str(body.get("size") or _OPENAI_DEFAULT_SIZE))
    return received


async def _take(
    session: aiohttp.ClientSession, where: str, value: Any, route: str
) -> tuple[ReceivedImage | None, str | None]:
    if isinstance(value, web.FileField):
        data = value.file.read()
        return _image(where, "upload", str(value.filename), data)
    if not isinstance(value, str):
        return None, f"{where} is not an image reference"
    if value[:5].lower() == "data:":
        header, _, payload = value.partition(",")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None, f"{where} could not be decoded: invalid base64"
        if route == "vidu_create" and len(data) >= VIDU_INLINE_LIMIT:
            return None, f"{where}: the base64 decode must be under 10MB"
        return _image(where, "data", header.split(";")[0], data)
    return await _fetch(session, where, value)


async def _fetch(
    session: aiohttp.ClientSession, where: str, url: str
) -> tuple[ReceivedImage | None, str | None]:
    shown = str(URL(url).with_query(None).with_fragment(None))
    host = URL(url).host
    if host not in LOOPBACK:
        return ReceivedImage(where, "url", shown, None, 0, "", fetched=False), None
    try:
        async with session.get(url, allow_redirects=False) as answer:
            data = await answer.read()
            if answer.status != 200:
                return None, f"{where} could not be fetched: HTTP {answer.status} from {shown}"
    except (aiohttp.ClientError, TimeoutError) as err:
        return None, f"{where} could not be fetched from {shown}: {type(err).__name__}"
    return _image(where, "url", shown, data)


def _image(where: str, form: str, source: str, data: bytes) -> tuple[ReceivedImage | None, str | None]:
    kind = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    if kind is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kind = "webp"
    image = ReceivedImage(
        where, form, source, kind, len(data), hashlib.sha256(data).hexdigest(), _png_size(data)
    )
    return image, None if kind is not None else f"{where} is not an image the model can use ({source})"


def _png_size(data: bytes) -> str | None:
    if not data.startswith(b"\x89PNG") or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return f"{width}x{height}"


def _size_mismatch(images: list[ReceivedImage], size: str) -> str | None:
    for image in images:
        if image.pixels is not None and image.pixels != size.lower():
            return "Inpaint image must match the requested width and height"
    return None


def _get(body: dict[str, Any], name: str) -> Any:
    value: Any = body
    for key in name.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _short_inline(value: Any) -> Any:
    """``value`` with each ``data:`` string as its header and size (a task keeps no payloads)."""
    if isinstance(value, str) and value[:5].lower() == "data:":
        header, _, payload = value.partition(",")
        return f"{header},…({len(payload) * 3 // 4} bytes)"
    if isinstance(value, dict):
        return {key: _short_inline(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_short_inline(item) for item in value]
    return value
