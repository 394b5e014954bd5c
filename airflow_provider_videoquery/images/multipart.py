"""A create body as the request carries it: JSON, or ``multipart/form-data`` when it holds a file.

An image the route takes as an upload (OpenAI's ``input_reference``) is a :class:`FilePart` in the body:
opened only when the request is built, streamed in blocks from its store (httpx rewinds it for a
resend after a 429), closed when the exchange ends. The hook calls :func:`encode` and knows nothing
else about images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from airflow_provider_videoquery.exceptions import VideoCreateRequestError


@dataclass(frozen=True)
class FilePart:
    """An image to send as a file part: its file name and media type for the gateway, how messages
    show it, and how to open it (called once per request built)."""

    filename: str
    media_type: str
    shown: str
    opener: Callable[[], IO[bytes]] = field(repr=False)

    def __str__(self) -> str:
        return self.shown


@dataclass
class Encoded:
    """What ``httpx.Request`` takes for a body (``content``), and the headers that go with it."""

    content: dict[str, Any]
    multipart: bool = False

    def headers(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` for a JSON body; without its Content-Type for multipart (httpx sets the boundary)."""
        if not self.multipart:
            return dict(base)
        return {name: value for name, value in base.items() if name.lower() != "content-type"}


@contextmanager
def encode(body: Mapping[str, Any]) -> Iterator[Encoded]:
    """The body as JSON, or as multipart form fields and open file parts (closed on leaving)."""
    parts = {name: value for name, value in body.items() if isinstance(value, FilePart)}
    if not parts:
        yield Encoded({"json": body})
        return
    form = {
        name: _form_value(value) for name, value in body.items() if name not in parts and value is not None
    }
    opened: list[IO[bytes]] = []
    try:
        files: dict[str, tuple[str, IO[bytes], str]] = {}
        for name, part in parts.items():
            try:
                handle = part.opener()
            except OSError as err:
                raise VideoCreateRequestError(
                    f"{name} {part.shown} cannot be read now ({type(err).__name__}: {err}); nothing was sent."
                ) from None
            opened.append(handle)
            files[name] = (part.filename, handle, part.media_type)
        yield Encoded({"data": form, "files": files}, multipart=True)
    finally:
        for handle in opened:
            handle.close()


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value)


__all__ = ["Encoded", "FilePart", "encode"]
