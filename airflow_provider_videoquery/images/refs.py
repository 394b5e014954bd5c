"""Image references as a create request gives them: what each value is, and how messages show it.

Pure: no Airflow, no I/O. A value is an ``https://`` URL (sent as given), a ``data:image/…;base64,``
URI, a path on the worker's disk (``file://…`` or absolute), or an object in a store (``s3://…``,
``gs://…``, an ``ObjectStoragePath``). Messages show a storage object by its URI without connection id,
a URL without its query string (it may be signed) and a ``data:`` URI by its type and size only.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class RefKind(StrEnum):
    """What an image reference points at."""

    URL = "url"
    DATA = "data"
    LOCAL = "local"
    STORED = "stored"


@dataclass(frozen=True)
class ImageRef:
    """One image of a request. ``where`` names its field (``images[1]``, ``metadata.image_tail``),
    ``value`` is what the request holds, ``uri`` the reference as text (a storage URI keeps an
    embedded connection id, as ``ObjectStoragePath`` writes it)."""

    where: str
    value: Any
    kind: RefKind
    uri: str
    protocol: str | None = None

    @property
    def shown(self) -> str:
        """The reference for messages and logs: never a signature, never a data payload."""
        if self.kind is RefKind.DATA:
            return shown_data(self.uri)
        parts = urlsplit(self.uri)
        host = parts.netloc.rpartition("@")[2]
        return parts._replace(netloc=host, query="", fragment="").geturl()


def reference_text(value: Any) -> str | None:
    """``value`` as a reference's text, or None when it cannot be one (a number, a dict, …).

    An ``ObjectStoragePath`` (any universal-pathlib path) is its ``str()``, which carries its
    connection id as ``s3://conn@bucket/key``; a ``pathlib`` path its absolute file name."""
    if isinstance(value, str):
        return value.strip()
    if hasattr(value, "protocol") and hasattr(value, "storage_options"):
        return str(value)
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return path if isinstance(path, str) else None
    return None


def plain(value: Any) -> Any:
    """``value`` (a request) with every path object as its reference text, so it is plain JSON."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    text = reference_text(value)
    return value if text is None else text


def classify(where: str, value: Any) -> ImageRef | str:
    """The reference ``value`` is, or why it is none (a message naming ``where``)."""
    text = reference_text(value)
    if not text:
        shown = "an empty text" if text == "" else f"{type(value).__name__} {value!r}"[:120]
        return f"{where} must be an image reference, not {shown}" + _FORMS_HINT
    scheme = text.partition(":")[0].lower()
    if scheme in ("http", "https"):
        return ImageRef(where, value, RefKind.URL, text, scheme)
    if scheme == "data":
        return ImageRef(where, value, RefKind.DATA, text, "data")
    if text.startswith("/"):
        return ImageRef(where, value, RefKind.LOCAL, f"file://{text}", "file")
    if "://" not in text:
        return f"{where} {text[:120]!r} is not an image reference" + _FORMS_HINT
    if scheme in ("file", "local"):
        return ImageRef(where, value, RefKind.LOCAL, text, "file")
    return ImageRef(where, value, RefKind.STORED, text, scheme)


_FORMS_HINT = (
    ": give an https:// URL, a data:image/…;base64 URI, a storage URI (s3://…, gs://…, file://…), an "
    "absolute path or an ObjectStoragePath"
)


@dataclass(frozen=True)
class DataURI:
    """A decoded ``data:`` URI: the media type it declares and its bytes."""

    media_type: str
    data: bytes


def decode_data_uri(text: str) -> DataURI:
    """Decode ``data:<type>;base64,<payload>``; raise ValueError saying what is wrong (never quoting
    the payload)."""
    header, comma, payload = text.partition(",")
    if not comma:
        raise ValueError("is a data: URI without a comma before its payload")
    params = header[5:].split(";")
    media_type = params[0].strip().lower()
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise ValueError(f"is a data: URI that is not base64 ({header[:60]})")
    if not media_type:
        raise ValueError("is a data: URI without a media type: write data:image/png;base64,…")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is a data: URI whose base64 does not decode ({shown_data(text)})") from None
    return DataURI(media_type, data)


def shown_data(text: str) -> str:
    """A ``data:`` URI as ``data:image/png;base64 (12,345 bytes)``: its header and about its size."""
    header, _, payload = text.partition(",")
    size = len(payload) * 3 // 4
    return f"{header[:80]} (about {size:,} bytes)"


def encode_data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


__all__ = [
    "DataURI",
    "ImageRef",
    "RefKind",
    "classify",
    "decode_data_uri",
    "encode_data_uri",
    "plain",
    "reference_text",
    "shown_data",
]
