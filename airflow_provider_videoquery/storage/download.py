"""The streaming, verified, atomic download of a video (or its thumbnail) into an ``ObjectStoragePath``.

One file travels from the gateway (or the CDN its signed URL points to) into any store Airflow's object
storage knows (``file://``, ``s3://``, …) without ever being held in memory and without ever leaving a
partial object behind:

* redirects are followed by hand, at most ``max_redirects`` hops, each hop checked: http(s) only, the
  optional host allow-list, and the API key sent only to the gateway's own origin, never to a CDN;
* the body is read in blocks of 1 MiB into two reused buffers (:mod:`.transport`) and handed to a
  :class:`~.sinks.Sink`, which hashes one block while the next is received (memory stays flat whatever
  the size);
* what arrived is checked (status, Content-Type, the MP4 ``ftyp`` box, size limits, Content-Length);
* resets, truncations, 5xx and timeouts are retried with backoff, resuming with ``Range`` when the
  server supports it; any failure removes (or aborts) what was written;
* only a complete, verified file reaches the destination; an identical existing object is kept as is.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.hooks._deadline import SocketDeadline
from airflow_provider_videoquery.hooks._http import (
    RETRYABLE_STATUS,
    GatewayConfig,
    RetryPolicy,
    certificate_message,
    certificate_refused,
    describe,
    redact,
    retry_after,
)
from airflow_provider_videoquery.models import shown_url
from airflow_provider_videoquery.storage.checks import storage_error
from airflow_provider_videoquery.storage.hosts import blocked_address, explicitly_allowed
from airflow_provider_videoquery.storage.paths import object_uri
from airflow_provider_videoquery.storage.sinks import DIRECT_PROTOCOLS, WRITE_BLOCK_SIZE, Sink, sync_folder
from airflow_provider_videoquery.storage.transport import READINTO, Readinto, download_client

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: Bytes read, hashed and handed to storage per block.
CHUNK_SIZE = 1 * MiB
DEFAULT_MAX_BYTES = 8 * 1024 * MiB
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_DOWNLOAD_RETRY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=30.0)
#: A download, its retries included, gets max(DEFAULT_MIN_DEADLINE, size / DEFAULT_MIN_RATE) seconds:
#: 5 minutes, or the time the file takes at 64 KiB/s (512 kbit/s, slower than any real link) if longer.
DEFAULT_MIN_DEADLINE = 300.0
DEFAULT_MIN_RATE = 64 * 1024

_SNIFF_BYTES = 16
_PREVIEW_BYTES = 120
#: Bytes kept of a body's start: the preview and enough beyond it that a credential crossing the
#: preview's end is still recognised (and masked) whole.
_HEAD_BYTES = _PREVIEW_BYTES + 256
_PROGRESS_MIN_TOTAL = 16 * MiB
_PROGRESS_UNKNOWN_STEP = 256 * MiB
_PROGRESS_AFTER = 2.0
_EXPIRED_STATUS = frozenset({401, 403, 404, 410})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_TEXTUAL_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/problem")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


class ContentKind(StrEnum):
    """What a download must turn out to be."""

    VIDEO = "video"
    IMAGE = "image"


@dataclass(frozen=True)
class DownloadSettings:
    """How a download behaves: limits, retries, and whom the gateway's credentials may reach.

    :param trusted_origin: the gateway's base URL; only URLs on this exact origin (scheme, host,
        port) receive ``trusted_headers`` (the API key), e.g. the OpenAI-style ``/v1/videos/{id}/content``.
    :param allowed_hosts: when not empty, every hop must be on one of these hosts (``*.example.com``
        or ``.example.com`` also allow subdomains); the trusted origin itself is always allowed.
    :param min_deadline: seconds a download (all its attempts) gets at least; the first answer's
        headers must arrive within it.
    :param min_rate: bytes per second a download is given time for: it must end within
        ``max(min_deadline, size / min_rate)`` seconds, the size being the announced Content-Length (or
        ``max_bytes`` when the server announces none). A server that trickles cannot hold the worker.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allowed_hosts: tuple[str, ...] = ()
    trusted_origin: str | None = None
    trusted_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    retry: RetryPolicy = DEFAULT_DOWNLOAD_RETRY
    timeout: httpx.Timeout = field(default_factory=lambda: httpx.Timeout(60.0, connect=10.0))
    #: TLS checks for hosts other than ``trusted_origin`` (a CDN) …
    verify_ssl: bool = True
    #: … and for ``trusted_origin`` itself (the gateway's ``verify_ssl``).
    trusted_verify_ssl: bool = True
    #: the connection's explicit proxy; None: the environment's (see ``hooks._http.proxy_for``).
    proxy: str | None = None
    min_deadline: float = DEFAULT_MIN_DEADLINE
    min_rate: float = DEFAULT_MIN_RATE

    def budget(self, size: int | None) -> float:
        """Seconds a download of ``size`` bytes (None: unknown yet) gets, its retries included."""
        if size is None:
            return self.min_deadline
        return max(self.min_deadline, size / self.min_rate)

    @classmethod
    def for_gateway(cls, config: GatewayConfig, **overrides: Any) -> DownloadSettings:
        """Settings for files a gateway reported: its allow-list, TLS setting, timeouts and key."""
        fields: dict[str, Any] = {
            "allowed_hosts": config.allowed_download_hosts,
            "trusted_origin": config.base_url,
            "trusted_headers": config.credentials(),
            "timeout": config.timeout,
            "verify_ssl": config.verify_download_ssl,
            "trusted_verify_ssl": config.verify_ssl,
            "proxy": config.proxy,
        }
        return cls(**{**fields, **overrides})


@dataclass(frozen=True)
class StoredObject:
    """A verified object in storage and where it came from."""

    path: ObjectStoragePath
    source_url: str
    size: int
    sha256: str
    content_type: str | None
    #: True when an identical object was already there and was kept instead of rewritten.
    reused: bool = False

    @property
    def uri(self) -> str:
        """The object's URI without the connection id (safe for XCom and asset events)."""
        return object_uri(self.path)


def new_client(settings: DownloadSettings) -> httpx.Client:
    """A client for downloads: no automatic redirects (each hop is checked), no compression, and
    bodies read in large blocks (:func:`.transport.download_client`)."""
    return download_client(
        settings.verify_ssl,
        settings.timeout,
        gateway=settings.trusted_origin,
        gateway_verify_ssl=settings.trusted_verify_ssl,
        proxy=settings.proxy,
    )


def sha256_of(path: ObjectStoragePath) -> str:
    """The sha256 of a stored object, read block by block."""
    digest = hashlib.sha256()
    for block in iter_object(path):
        digest.update(block)
    return digest.hexdigest()


def iter_object(path: ObjectStoragePath, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read a stored object block by block, never whole."""
    with path.fs.open(path.path, "rb", block_size=WRITE_BLOCK_SIZE) as handle:
        while block := handle.read(chunk_size):
            yield block


# -- URL checks -------------------------------------------------------------------------------------


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith(("*.", ".")):
            if host.endswith("." + entry.lstrip("*.")):
                return True
        elif host == entry:
            return True
    return False


# -- the download -----------------------------------------------------------------------------------


class _Transient(Exception):
    """A failure worth another attempt (reset, truncation, 5xx, timeout)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Download:
    """One file fetched and placed (a :func:`.store.store_url` of a link): the attempt loop, the response
    checks and the final placement."""

    def __init__(
        self,
        url: str,
        destination: ObjectStoragePath,
        settings: DownloadSettings,
        kind: ContentKind,
        overwrite: bool,
        suffix_from_content: bool,
        client: httpx.Client,
        what: str,
    ) -> None:
        self.url = url
        self.destination = destination
        self.settings = settings
        self.kind = kind
        self.overwrite = overwrite
        self.suffix_from_content = suffix_from_content
        self.client = client
        self.what = what
        self.trusted = _origin(httpx.URL(settings.trusted_origin)) if settings.trusted_origin else None
        self.sink: Sink | None = None
        #: Sizes of objects already at a path (None: none there), each looked up once.
        self.existing: dict[str, int | None] = {}
        self.total: int | None = None
        self.content_type: str | None = None
        self.suffix: str | None = None
        self.resumable = False
        self.validator: str | None = None
        self.progress: _Progress | None = None
        #: The host the body being read came from, when it is not the gateway (its bytes are not shown).
        self.body_host: str | None = None
        #: The request whose answer is being read (its credentials are masked where its body is quoted).
        self.body_request: httpx.Request | None = None
        self.started = time.time()
        self.deadline = SocketDeadline(self.started + settings.budget(None), "the download's deadline")

    @property
    def label(self) -> str:
        return f"{self.what} from {shown_url(self.url)}"

    def run(self) -> StoredObject:
        try:
            with self.deadline:
                digest = self._fetch_with_retries()
            return self._place(digest)
        except BaseException as err:
            self._drop_sink()
            if isinstance(err, OSError):  # the store's, not the network's (those are httpx errors)
                where = object_uri(self._final_path())
                raise storage_error(f"Storing {self.label} at {where}", err) from err
            raise

    def _fetch_with_retries(self) -> str:
        policy, attempt = self.settings.retry, 0
        while True:
            try:
                self._attempt()
                break
            except _Transient as err:
                attempt += 1
                delay = policy.delay(attempt - 1, err.retry_after)
                ends = self.deadline.ends or float("inf")
                if self.deadline.expired or time.time() + delay >= ends:
                    raise self._too_slow(err) from None
                if attempt >= policy.max_attempts:
                    raise VideoDownloadError(
                        f"Downloading {self.label} still failed after {attempt} attempts: {err}. "
                        "The server looks unwell; retry the task later."
                    ) from None
                resume = self.sink.size if self.sink is not None and self.resumable else 0
                log.warning(
                    "Downloading %s failed (%s); attempt %d of %d in %.1fs, %s.",
                    self.label,
                    err,
                    attempt + 1,
                    policy.max_attempts,
                    delay,
                    f"resuming at byte {resume}" if resume else "starting over",
                )
                time.sleep(delay)
        if self.sink is None:  # an empty body: nothing was written yet
            self.sink = self._open_sink()
        if self.total is not None and self.sink.size != self.total:
            raise VideoDownloadError(
                f"Downloading {self.label}: got {self.sink.size} bytes but the server announced "
                f"{self.total}; not stored."
            )
        digest = self.sink.finish()
        if self.progress is not None:
            self.progress.done(self.sink.size)
        return digest

    # -- one attempt ------------------------------------------------------------------------------

    def _attempt(self) -> None:
        offset = self.sink.size if self.sink is not None and self.resumable else 0
        if offset == 0:
            self._drop_sink()
        response = self._open(offset)
        try:
            offset = self._accept(response, offset)
            self._stream(response, offset)
        finally:
            response.close()

    def _open(self, offset: int) -> httpx.Response:
        """Follow redirects by hand, checking every hop; return a streaming 200/206 response."""
        raw = self.url
        try:
            url = httpx.URL(raw)
        except httpx.InvalidURL as err:
            raise VideoDownloadError(
                f"Downloading {self.what}: the gateway reported an invalid URL {shown_url(raw)!r} ({err})."
            ) from None
        for _hop in range(self.settings.max_redirects + 1):
            self._check_hop(url, raw)
            response = self._send(url, offset)
            code = response.status_code
            if code in _REDIRECT_STATUS and "location" in response.headers:
                raw = response.headers["location"]
                response.close()
                try:
                    url = url.join(raw)
                except httpx.InvalidURL as err:
                    raise VideoDownloadError(
                        f"Downloading {self.label}: a redirect points to an invalid URL ({err})."
                    ) from None
                continue
            if code in (200, 206):
                return response
            if code == 416 and offset:
                response.close()
                self._drop_sink()
                raise _Transient("the server cannot resume at the bytes already received")
            self._refuse(response)
        raise VideoDownloadError(
            f"Downloading {self.label}: more than {self.settings.max_redirects} redirects (a redirect "
            "loop?). The URL is not usable; re-query the task for a fresh one."
        )

    def _check_hop(self, url: httpx.URL, raw: str) -> None:
        if url.scheme not in ("http", "https") or not url.host:
            raise VideoDownloadError(
                f"Downloading {self.label}: refusing to fetch {shown_url(raw)!r}; only http(s) URLs are "
                "accepted at every redirect hop."
            )
        allowed = self.settings.allowed_hosts
        host = url.host.lower()
        if _origin(url) == self.trusted:
            return  # the gateway itself: the hook talks to it anyway
        if allowed and not _host_allowed(host, allowed):
            raise VideoDownloadError(
                f"Downloading {self.label}: host {host!r} is not in the connection's "
                f"allowed_download_hosts {list(allowed)}. Add it there if it is the gateway's CDN."
            )
        blocked = blocked_address(host, _origin(url)[2])
        if blocked is not None and not explicitly_allowed(host, blocked, allowed):
            raise VideoDownloadError(
                f"Downloading {self.label}: refusing to connect to {host!r} ({blocked}): link-local and "
                "cloud-metadata addresses (169.254.0.0/16, fe80::/10, …) are never fetched, as a video "
                "URL pointing there is a request forgery or a misconfigured gateway. If this host really "
                "serves the videos, name it in the connection's allowed_download_hosts."
            )

    def _send(self, url: httpx.URL, offset: int) -> httpx.Response:
        accept = (
            "video/mp4, video/*;q=0.9, */*;q=0.8" if self.kind is ContentKind.VIDEO else "image/*, */*;q=0.8"
        )
        headers = {"Accept": accept}
        if self.trusted is not None and _origin(url) == self.trusted:
            headers.update(self.settings.trusted_headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        request = self.client.build_request(
            "GET", url, headers=headers, extensions=self.deadline.extensions()
        )
        try:
            return self.client.send(request, stream=True)
        except httpx.TransportError as err:
            if certificate_refused(err):
                opt_out = "verify_ssl" if _origin(url) == self.trusted else "verify_download_ssl"
                raise VideoDownloadError(
                    certificate_message(f"Downloading {self.label}: the server's", err, opt_out)
                ) from None
            raise _Transient(describe(err)) from None

    def _from_gateway(self, response: httpx.Response) -> bool:
        return self.trusted is not None and _origin(response.request.url) == self.trusted

    def _preview(self, response: httpx.Response) -> str:
        """The start of the body for messages (quoted), from the gateway's own origin only.

        Another host's body is never quoted into a log or an exception: a request forgery that reached
        a metadata service or an internal page would otherwise print its answer (credentials)."""
        if self._from_gateway(response):
            text = _body_preview(response)
            return repr(text) if text else "(no body)"
        return f"(body not shown: it came from {response.request.url.host!r}, not the gateway)"

    def _refuse(self, response: httpx.Response) -> None:
        """Raise the right error for a non-success answer (and close it)."""
        code = response.status_code
        preview = self._preview(response)
        response.close()
        if code in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {code} {preview}", retry_after(response))
        if code in _EXPIRED_STATUS:
            raise VideoDownloadError(
                f"Downloading {self.label}: HTTP {code} {preview}. The video URL has "
                "probably expired or was revoked: signed links last hours to days. Download soon after "
                "the task completes, re-query the task for a fresh URL, or create a new task."
            )
        raise VideoDownloadError(f"Downloading {self.label}: the server answered HTTP {code}: {preview}")

    def _accept(self, response: httpx.Response, offset: int) -> int:
        """Check a 200/206 answer against what is already written; return where the body starts."""
        if response.status_code == 206:
            start, total = _content_range(response.headers.get("content-range"))
            expected_total = self.total
            if start == offset and (expected_total is None or total in (None, expected_total)):
                self.resumable = True
                if self.total is None:
                    self.total = total
                if offset == 0:
                    self._check_headers(response, total)
                return offset
            log.warning("The server answered an unusable range (%s); starting over.", response.headers)
            self._drop_sink()
            raise _Transient("the server sent another range than asked for")
        if offset:
            log.warning("The server ignored the resume request; downloading %s from the start.", self.what)
            self._drop_sink()
        self.total, self.suffix = None, None
        length = _int_header(response.headers.get("content-length"))
        self.resumable = response.headers.get("accept-ranges", "").strip().lower() == "bytes"
        self._check_headers(response, length)
        self.total = length
        return 0

    def _check_headers(self, response: httpx.Response, total: int | None) -> None:
        self.content_type = response.headers.get("content-type")
        self.body_host = None if self._from_gateway(response) else response.request.url.host
        self.body_request = response.request
        ctype = (self.content_type or "").split(";")[0].strip().lower()
        if ctype.startswith(_TEXTUAL_TYPES) or ctype.endswith(("+json", "+xml")):
            raise VideoDownloadError(
                f"Downloading {self.label}: the server answered HTTP {response.status_code} with "
                f"{ctype!r} instead of {'a video' if self.kind is ContentKind.VIDEO else 'an image'}: "
                f"{self._preview(response)}. The gateway probably served an error page; re-query the "
                "task or retry later."
            )
        if total is not None and total > self.settings.max_bytes:
            raise VideoDownloadError(
                f"Downloading {self.label}: the server announces {total} bytes, above max_bytes="
                f"{self.settings.max_bytes}. Raise max_bytes if this size is expected."
            )
        # The deadline, until now the headers' own, becomes the whole file's.
        self.deadline.move_to(
            self.started + self.settings.budget(self.settings.max_bytes if total is None else total)
        )
        validator = response.headers.get("etag", "")
        self.validator = (
            validator
            if validator and not validator.startswith("W/")
            else response.headers.get("last-modified")
        )
        self._check_early_conflict(total)
        if total is None or total >= _PROGRESS_MIN_TOTAL:
            self.progress = self.progress or _Progress(self.label, total)

    def _check_early_conflict(self, total: int | None) -> None:
        """Fail before streaming when an existing object surely differs (its size does)."""
        if self.overwrite or total is None or self.suffix_from_content:
            return
        existing = self._existing_size(self.destination)
        if existing is not None and existing != total:
            raise self._conflict(f"it holds {existing} bytes, the download has {total}")

    def _existing_size(self, path: ObjectStoragePath, fresh: bool = False) -> int | None:
        """The size of the object at ``path``, None when there is none: one ``info`` call per path."""
        if fresh or path.path not in self.existing:
            fs = path.fs
            with suppress(Exception):
                fs.invalidate_cache(path.path)
            try:
                info = fs.info(path.path)
            except FileNotFoundError:
                size: int | None = None
            else:
                if info.get("type") == "directory":
                    raise VideoDownloadError(
                        f"{object_uri(path)} is a folder, so {self.what} cannot be stored under that name. "
                        "End the destination with '/' to store the file inside it."
                    )
                size = int(info.get("size") or 0)
            self.existing[path.path] = size
        return self.existing[path.path]

    def _stream(self, response: httpx.Response, offset: int) -> None:
        received = offset
        if self.sink is not None:  # resuming: the thread's buffers are refilled, its last block hashed first
            self.sink.wait_hashed()
        readinto: Readinto | None = response.extensions.get(READINTO)
        blocks = _read_blocks(readinto) if readinto is not None else _join_chunks(response.iter_raw())
        head = b""  # the body's start, until it is long enough to tell what it is
        try:
            for block in blocks:
                received += len(block)
                if received > self.settings.max_bytes:
                    raise VideoDownloadError(
                        f"Downloading {self.label}: more than max_bytes={self.settings.max_bytes} bytes "
                        "arrived; stopped. Raise max_bytes if this size is expected."
                    )
                if self.suffix is None:  # blocks are whole (>= 1 MiB) but for the last or a cut one
                    head += bytes(block[: _HEAD_BYTES - len(head)])
                    if len(head) >= _SNIFF_BYTES:
                        self._sniff(head)
                if self.sink is None:
                    self.sink = self._open_sink()
                self.sink.write(block)
                if self.progress is not None:
                    self.progress.update(received)
        except httpx.TransportError as err:
            raise _Transient(f"{describe(err)} after {received} bytes") from None
        if self.total is not None and received < self.total:
            raise _Transient(f"the body ended after {received} of {self.total} bytes")
        if self.suffix is None:  # a whole body shorter than the sniff
            self._sniff(head)

    def _sniff(self, head: bytes) -> None:
        suffix = _video_suffix(head) if self.kind is ContentKind.VIDEO else _image_suffix(head)
        if suffix is None:
            expected = "an MP4 ('ftyp' at byte 4)" if self.kind is ContentKind.VIDEO else "an image"
            if not head:
                shown = "(empty body)"
            elif self.body_host is None:
                shown = repr(redact(head, self.body_request)[:_PREVIEW_BYTES].decode("utf-8", "replace"))
            else:
                shown = f"bytes not shown: they came from {self.body_host!r}, not the gateway"
            raise VideoDownloadError(
                f"Downloading {self.label}: what arrived is not {expected} (content-type "
                f"{self.content_type!r}, starts with {shown}). The gateway probably served an error "
                "page; re-query the task or retry later."
            )
        self.suffix = suffix

    # -- placement --------------------------------------------------------------------------------

    def _final_path(self) -> ObjectStoragePath:
        if self.suffix_from_content and self.suffix and self.destination.suffix.lower() != self.suffix:
            return self.destination.with_suffix(self.suffix)
        return self.destination

    def _open_sink(self) -> Sink:
        """The final S3 key itself when nothing is to be compared with; a temporary object otherwise."""
        final = self._final_path()
        if final.protocol in DIRECT_PROTOCOLS and (self.overwrite or self._existing_size(final) is None):
            return Sink.direct(final)
        return Sink.beside(final)

    def _place(self, digest: str) -> StoredObject:
        assert self.sink is not None
        final, size = self._final_path(), self.sink.size
        if not self.sink.temporary:  # the upload completed at the destination itself
            self.sink = None
            return self._placed(final, size, digest)
        existing = None if self.overwrite else self._existing_size(final, fresh=True)
        if existing is not None:
            if existing == size and sha256_of(final) == digest:
                log.info(
                    "%s already holds this exact file (sha256 %s); keeping it.", object_uri(final), digest
                )
                self._drop_sink()
                return self._stored(final, size, digest, reused=True)
            raise self._conflict(
                f"it holds {existing} bytes"
                + (" with another sha256" if existing == size else f", the download has {size}"),
                final,
            )
        final.fs.mv(self.sink.path.path, final.path)
        self.sink = None
        sync_folder(final)
        return self._placed(final, size, digest)

    def _placed(self, final: ObjectStoragePath, size: int, digest: str) -> StoredObject:
        log.info("Stored %s (%d bytes, sha256 %s) at %s.", self.label, size, digest, object_uri(final))
        return self._stored(final, size, digest, reused=False)

    def _stored(self, path: ObjectStoragePath, size: int, digest: str, reused: bool) -> StoredObject:
        return StoredObject(path, self.url, size, digest, self.content_type, reused)

    def _too_slow(self, err: _Transient) -> VideoDownloadError:
        settings = self.settings
        budget = (self.deadline.ends or self.started) - self.started
        received = self.sink.size if self.sink is not None else 0
        last = "the connection was closed at the deadline" if self.deadline.expired else str(err)
        return VideoDownloadError(
            f"Downloading {self.label}: not complete within {budget:.0f}s, the download's deadline "
            f"(max(min_deadline={settings.min_deadline:g}s, size / min_rate={settings.min_rate:g} "
            f"bytes/s), size {self.total if self.total is not None else 'not announced'}); {received} "
            f"bytes arrived ({last}). The server is stalled or far too slow: retry the task later."
        )

    def _conflict(self, detail: str, path: ObjectStoragePath | None = None) -> VideoDownloadError:
        target = object_uri(path or self.destination)
        return VideoDownloadError(
            f"{target} already exists and differs from {self.label} ({detail}). Set overwrite=True to "
            "replace it, or choose another destination."
        )

    def _drop_sink(self) -> None:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.discard()


class _Progress:
    """Logs every ~10 % (or every 256 MiB when the size is unknown) with the average throughput, once
    the download has run :data:`_PROGRESS_AFTER` seconds: one that ends sooner (a batch's 16 MiB
    videos: milliseconds each) says only that it started and, in the "Stored" line, that it ended."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.started = time.monotonic()
        self.next_mark = 0.1 if total else float(_PROGRESS_UNKNOWN_STEP)
        log.info("Downloading %s (%s).", label, f"{total / MiB:.1f} MiB" if total else "size unknown")

    def update(self, received: int) -> None:
        value = received / self.total if self.total else float(received)
        if value < self.next_mark or time.monotonic() - self.started < _PROGRESS_AFTER:
            return
        rate = received / MiB / max(time.monotonic() - self.started, 1e-6)
        if self.total:
            log.info(
                "  %3.0f%%  %.1f / %.1f MiB  %.1f MB/s", value * 100, received / MiB, self.total / MiB, rate
            )
            while self.next_mark <= value:
                self.next_mark += 0.1
        else:
            log.info("  %.1f MiB  %.1f MB/s", received / MiB, rate)
            self.next_mark += _PROGRESS_UNKNOWN_STEP

    def done(self, received: int) -> None:
        seconds = max(time.monotonic() - self.started, 1e-6)
        if seconds < _PROGRESS_AFTER:
            return
        log.info(
            "Downloaded %.1f MiB in %.1fs (%.1f MB/s).", received / MiB, seconds, received / MiB / seconds
        )


# -- small helpers ----------------------------------------------------------------------------------


def _read_blocks(readinto: Readinto) -> Iterator[memoryview]:
    """The body in blocks of ``CHUNK_SIZE`` (shorter only at its end) in two buffers taken in turn: a
    block stays valid while the next one is read (and hashed on by the sink, see :meth:`.Sink.write`).

    The buffers are the thread's own, kept for its next download (allocating and zeroing 2 MiB per
    file cost a small video more than receiving it); a download ends (its sink finished or discarded,
    which waits for the last hash) before the thread starts another."""
    buffers: tuple[memoryview, memoryview] | None = getattr(_buffers, "pair", None)
    if buffers is None:
        buffers = _buffers.pair = (memoryview(bytearray(CHUNK_SIZE)), memoryview(bytearray(CHUNK_SIZE)))
    turn = 0
    while count := readinto(buffers[turn]):
        yield buffers[turn][:count]
        turn ^= 1


_buffers = threading.local()


def _join_chunks(chunks: Iterator[bytes]) -> Iterator[memoryview]:
    """The same blocks from any other httpx stream (a proxy's, a test's ``MockTransport``)."""
    pending: list[bytes] = []
    size = 0
    for chunk in chunks:
        pending.append(chunk)
        size += len(chunk)
        if size >= CHUNK_SIZE:
            yield memoryview(b"".join(pending))
            pending, size = [], 0
    if pending:
        yield memoryview(b"".join(pending))


def _video_suffix(head: bytes) -> str | None:
    if len(head) >= 8 and head[4:8] == b"ftyp":
        return ".mp4"
    return None


def _image_suffix(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return ".avif"
    return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if match is None:
        return None, None
    total = match.group(3)
    return int(match.group(1)), (None if total == "*" else int(total))


def _int_header(value: str | None) -> int | None:
    try:
        number = int((value or "").strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _body_preview(response: httpx.Response) -> str:
    """The start of a (small, error) body, read without loading a large one."""
    data = b""
    with suppress(httpx.HTTPError, RuntimeError):
        for chunk in response.iter_raw():
            data += chunk
            if len(data) >= _HEAD_BYTES:
                break
    data = redact(data, response.request)
    text = data[:_PREVIEW_BYTES].decode("utf-8", "replace").strip().replace("\n", " ")
    return text + ("…" if len(data) > _PREVIEW_BYTES else "")
