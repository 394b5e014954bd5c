"""Inline videos: a finished video reported as ``data:video/mp4;base64,…`` instead of a link.

It is stored exactly like a downloaded one, by the download's own machinery (:class:`.download.Download`
with the HTTP fetch replaced by a decoder): size-capped by ``max_bytes`` — checked from the text's
length before anything is written —, decoded from the string in blocks of about 1 MiB (never a second
whole copy of the file), checked for the MP4 signature, hashed, and placed atomically. Messages and
logs show the URI's header and size only, never the base64 text.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import httpx
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.models import display_url
from airflow_provider_videoquery.storage.download import (
    CHUNK_SIZE,
    ContentKind,
    Download,
    DownloadSettings,
    StoredObject,
)

#: base64 characters decoded per block: a multiple of 4 (whole quanta), about ``CHUNK_SIZE`` bytes out.
BLOCK_CHARS = CHUNK_SIZE // 3 * 4
#: The media types an inline file may declare, per kind of file.
ACCEPTED_TYPES: dict[ContentKind, frozenset[str]] = {
    ContentKind.VIDEO: frozenset({"video/mp4"}),
    ContentKind.IMAGE: frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/avif"}),
}


@dataclass(frozen=True)
class InlineData:
    """Where a ``data:`` URI's base64 text lies in the string, and what it decodes to."""

    uri: str
    media_type: str
    start: int
    size: int

    @classmethod
    def parse(cls, uri: str, kind: ContentKind, what: str) -> InlineData:
        """Read the header and compute the decoded size from the text's length; refuse what is not
        a base64 file of an accepted type."""
        comma = uri.find(",")
        shown = display_url(uri)
        if uri[:5].lower() != "data:" or comma < 0:
            raise VideoDownloadError(f"Storing {what}: {shown!r} is not a data: URI.")
        params = [p.strip().lower() for p in uri[5:comma].split(";")]
        media_type = params[0] or "text/plain"
        accepted = ACCEPTED_TYPES[kind]
        if media_type not in accepted:
            raise VideoDownloadError(
                f"Storing {what}: the gateway reported an inline {media_type!r} file ({shown!r}), not "
                f"{' or '.join(sorted(accepted))}; it is not stored. Check the task at the gateway."
            )
        if params[-1] != "base64":
            raise VideoDownloadError(
                f"Storing {what}: the inline file ({shown!r}) is not base64-encoded; only "
                "data:<type>;base64,… URIs are accepted."
            )
        start = comma + 1
        chars, rest = len(uri) - start, (len(uri) - start) % 4
        if rest == 1:
            raise VideoDownloadError(
                f"Storing {what}: the inline file ({shown!r}) is cut short (not whole base64); not stored."
            )
        tail = uri[max(start, len(uri) - 2) :]
        padding = len(tail) - len(tail.rstrip("=")) if rest == 0 else 0
        # 3 bytes per 4 characters; an unpadded end of 2 or 3 characters holds 1 or 2 bytes.
        size = chars // 4 * 3 - padding + max(rest - 1, 0)
        return cls(uri, media_type, start, size)

    def blocks(self, what: str) -> Iterator[bytes]:
        """The decoded file in blocks of about ``CHUNK_SIZE`` bytes, each decoded from its slice."""
        uri, end = self.uri, len(self.uri)
        for offset in range(self.start, end, BLOCK_CHARS):
            text = uri[offset : min(offset + BLOCK_CHARS, end)]
            if len(text) % 4:  # unpadded base64 (allowed by some encoders): pad the last quantum
                text += "=" * (4 - len(text) % 4)
            try:
                yield binascii.a2b_base64(text, strict_mode=True)
            except (binascii.Error, ValueError) as err:
                raise VideoDownloadError(
                    f"Storing {what}: the inline file is not valid base64 near character "
                    f"{offset - self.start} ({err}); nothing was stored."
                ) from None


class _BlockStream(httpx.SyncByteStream):
    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks

    def __iter__(self) -> Iterator[bytes]:
        return self._blocks


class _InlineDownload(Download):
    """A :class:`Download` whose body comes from the decoder instead of the network: every check,
    the sink, the placement and the messages are the download's own."""

    def __init__(
        self,
        data: InlineData,
        destination: ObjectStoragePath,
        settings: DownloadSettings,
        kind: ContentKind,
        overwrite: bool,
        suffix_from_content: bool,
        what: str,
    ) -> None:
        # Nothing is fetched: the HTTP client of a download is never used (``_open`` is replaced).
        no_client = cast("httpx.Client", None)
        shown = display_url(data.uri) or ""
        super().__init__(shown, destination, settings, kind, overwrite, suffix_from_content, no_client, what)
        self.data = data

    @property
    def label(self) -> str:
        return f"{self.what} (inline, {self.data.media_type}, {self.data.size} bytes)"

    def _open(self, offset: int) -> httpx.Response:
        headers = {"content-type": self.data.media_type, "content-length": str(self.data.size)}
        # The file came in the gateway's own answer: it is the gateway's body (its start may be quoted).
        origin = httpx.Request("GET", self.settings.trusted_origin or "http://inline.invalid")
        stream = _BlockStream(self.data.blocks(self.label))
        return httpx.Response(200, headers=headers, stream=stream, request=origin)


def store_inline(
    uri: str,
    destination: ObjectStoragePath,
    settings: DownloadSettings,
    *,
    kind: ContentKind = ContentKind.VIDEO,
    overwrite: bool = False,
    suffix_from_content: bool = False,
    what: str = "the video",
) -> StoredObject:
    """Store the file a ``data:`` URI carries, like :func:`.store.store_url` stores a downloaded one.

    :raises VideoDownloadError: another media type, not base64, larger than ``max_bytes`` (refused
        before anything is written), not an MP4 (or image), invalid base64, or a conflicting object.
    """
    data = InlineData.parse(uri, kind, what)
    if data.size > settings.max_bytes:
        raise VideoDownloadError(
            f"Storing {what}: the inline file holds {data.size} bytes, above max_bytes="
            f"{settings.max_bytes}; nothing was written. Raise max_bytes if this size is expected."
        )
    return _InlineDownload(data, destination, settings, kind, overwrite, suffix_from_content, what).run()


__all__ = ["ACCEPTED_TYPES", "BLOCK_CHARS", "InlineData", "store_inline"]
