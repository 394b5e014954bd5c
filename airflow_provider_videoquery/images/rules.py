"""The shape of the image rules: which fields of a route's create body carry images, in which forms
the route takes them, and the limits it documents. The rules themselves are data in
:mod:`airflow_provider_videoquery.create_fields` (``ROUTE_IMAGES``), beside the other create fields.

Pure: no Airflow, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MB = 1024 * 1024

#: Stores whose objects the provider can turn into a presigned https URL (through their Airflow hooks).
PRESIGNABLE = frozenset({"s3", "s3a", "gs", "gcs"})


class ImageForm(StrEnum):
    """How an image travels to the gateway."""

    #: A URL the gateway fetches: as given, or presigned from S3/GCS.
    URL = "url"
    #: A ``data:image/…;base64,`` URI inside the JSON body.
    DATA = "data"
    #: A file part of a ``multipart/form-data`` body, streamed from storage.
    UPLOAD = "upload"


@dataclass(frozen=True)
class ImageField:
    """A body field that carries images: ``path`` into the body (``("metadata", "image_tail")``), and
    whether it holds a list of images or one."""

    path: tuple[str, ...]
    many: bool = False

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def get(self, body: Mapping[str, Any]) -> Any:
        value: Any = body
        for key in self.path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value

    def put(self, body: dict[str, Any], value: Any) -> None:
        """Set the field in ``body`` (copying nested objects, so the request given stays untouched)."""
        *parents, last = self.path
        target = body
        for key in parents:
            inner = dict(target.get(key) or {})
            target[key] = inner
            target = inner
        target[last] = value


@dataclass(frozen=True)
class RouteImages:
    """How one route takes images.

    :param fields: the body fields that carry images.
    :param forms: the forms the route accepts; a stored image becomes the first of them it can take.
    :param types: accepted image types (by their magic bytes), as :mod:`.sniff` names them.
    :param max_bytes: largest image the route takes.
    :param max_inline_bytes: a ``data:`` URI must decode to fewer bytes than this.
    :param max_images: most images one request may carry (all fields together).
    :param max_aspect: the long side over the short side must stay below this.
    :param size_field: the image's pixel size must equal this body field (``"1280x720"``).
    :param default_size: the size the route assumes when ``size_field`` is not given.
    """

    fields: tuple[ImageField, ...]
    forms: tuple[ImageForm, ...]
    types: tuple[str, ...] = ("png", "jpeg", "webp")
    max_bytes: int | None = None
    max_inline_bytes: int | None = None
    max_images: int | None = None
    max_aspect: float | None = None
    size_field: str | None = None
    default_size: str | None = None

    @property
    def needs_pixels(self) -> bool:
        return self.size_field is not None or self.max_aspect is not None

    def values(self, body: Mapping[str, Any]) -> Iterator[tuple[ImageField, Any]]:
        """Each image field the body sets, with its value."""
        for image_field in self.fields:
            value = image_field.get(body)
            if value is not None:
                yield image_field, value

    def stored_form(self, protocol: str | None, size: int | None) -> ImageForm | None:
        """The form a stored image of ``size`` bytes takes on this route (None: none can carry it)."""
        for form in self.forms:
            if form is ImageForm.UPLOAD:
                return form
            if form is ImageForm.URL and protocol in PRESIGNABLE:
                return form
            if form is ImageForm.DATA and (
                self.max_inline_bytes is None or size is None or size < self.max_inline_bytes
            ):
                return form
        return None

    def expected_pixels(self, body: Mapping[str, Any]) -> tuple[int, int] | None:
        """(width, height) the ``size_field`` asks for, or None when the route asks for none / the
        value is not ``WxH`` (the gateway then refuses it itself)."""
        if self.size_field is None:
            return None
        size = str(body.get(self.size_field) or self.default_size or "")
        width, cross, height = size.lower().partition("x")
        if not cross or not width.strip().isdigit() or not height.strip().isdigit():
            return None
        return int(width), int(height)


def megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB" if size >= MB // 10 else f"{size:,} bytes"


__all__ = ["MB", "PRESIGNABLE", "ImageField", "ImageForm", "RouteImages", "megabytes"]
