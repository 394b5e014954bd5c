"""``ImageInputs``: the images of create requests on one route, checked before anything is paid for
and turned into what the route takes right before each create.

The operators call two methods: :meth:`ImageInputs.check` (every request at once: connections,
forms, counts, and each stored image read — exists, an image by its magic bytes, within the limits,
the right pixel size) and :meth:`ImageInputs.resolve` (just before a create: presign, inline or upload,
so a presigned URL's expiry counts from that create and a retry presigns again). The request itself,
and so a batch's manifest, keeps the references the user gave; a signed URL lives only in the body
sent, and :meth:`Resolved.redacting` takes it out of any error raised while sending.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.create_fields import ROUTE_IMAGES, check_create_request, check_images
from airflow_provider_videoquery.exceptions import VideoCreateRequestError
from airflow_provider_videoquery.images.checks import references
from airflow_provider_videoquery.images.multipart import FilePart
from airflow_provider_videoquery.images.presign import Presigner, PresignError
from airflow_provider_videoquery.images.refs import (
    ImageRef,
    RefKind,
    classify,
    decode_data_uri,
    encode_data_uri,
)
from airflow_provider_videoquery.images.rules import ImageForm, RouteImages
from airflow_provider_videoquery.images.sniff import ImageFacts, facts
from airflow_provider_videoquery.images.stored import (
    connection_of,
    read_bytes,
    read_facts,
    read_failure,
    storage_path,
)

#: How long a presigned image URL stays valid, counted from the create that carries it: the gateway
#: may fetch the image only when the task leaves its queue.
URL_EXPIRY = timedelta(hours=6)
#: At create time an image read longer ago than this (seconds) is read and checked again.
RECHECK_AFTER = 60.0
#: Stored images read at once while a batch is checked.
CHECK_THREADS = 8
_LISTED = 50
_DATA_PAYLOAD = re.compile(r"(data:[\w.+-]+/[\w.+-]+(?:;[\w=.+-]+)*;base64,)[A-Za-z0-9+/=\s]{8,}", re.I)


class ImageInputs:
    """The images of create requests on ``route``, read with ``conn_id`` (``inputs_conn_id``) unless a
    reference carries its own connection; without either, the store's default credentials."""

    def __init__(self, route: str, conn_id: str | None = None, *, url_expiry: timedelta = URL_EXPIRY) -> None:
        self.route = route
        self.conn_id = conn_id or None
        self.rules: RouteImages | None = ROUTE_IMAGES.get(route)
        self._presigner = Presigner(url_expiry.total_seconds())
        self._facts: dict[tuple[str, str | None], tuple[float, ImageFacts | str]] = {}
        self._connections: dict[str, str | None] = {}
        self._lock = threading.Lock()

    # -- before anything is paid for -------------------------------------------------------------

    def check(self, requests: Sequence[tuple[str, Mapping[str, Any]]], *, fields: bool = True) -> list[str]:
        """Check each ``(what, body)`` with :func:`check_create_request` (``fields=False``: with
        :func:`check_images`, the images only) and its stored images; raise one
        :class:`VideoCreateRequestError` listing every problem of every request, or return the
        warnings to log. ``what`` names a request in messages (``"Task 'create'"``)."""
        if self.conn_id:
            missing = self._missing_connection(self.conn_id)
            if missing:
                raise VideoCreateRequestError(
                    f"Nothing was sent (nothing was paid for): {missing}.", problems=[missing]
                )
        self._read_all(body for _, body in requests)
        if len(requests) == 1:
            return self._check_one(*requests[0], fields=fields)
        warnings: list[str] = []
        refused: list[tuple[str, list[str]]] = []
        for what, body in requests:
            try:
                warnings += self._check_one(what, body, fields=fields)
            except VideoCreateRequestError as err:
                refused.append((what, err.problems))
        if refused:
            lines = [f"{what}: {'; '.join(problems)}" for what, problems in refused]
            more = f"\n  … and {len(lines) - _LISTED} more" if len(lines) > _LISTED else ""
            raise VideoCreateRequestError(
                f"{len(refused)} of {len(requests)} request(s) refused before anything was created (nothing "
                f"was paid for):\n  " + "\n  ".join(lines[:_LISTED]) + more,
                problems=lines,
            )
        return warnings

    def _check_one(self, what: str, body: Mapping[str, Any], *, fields: bool) -> list[str]:
        if fields:
            return check_create_request(body, route=self.route, what=what, inspect=self.inspect)
        check_images(body, route=self.route, what=what, inspect=self.inspect)
        return []

    def inspect(self, ref: ImageRef, need_pixels: bool, max_age: float | None = None) -> ImageFacts | str:
        """The facts of a stored image, or why it cannot be read; read again when what is remembered
        is older than ``max_age`` seconds (None: remembered for this run)."""
        key = (ref.uri, self.conn_id)
        with self._lock:
            read_at, known = self._facts.get(key, (0.0, None))
        if known is None or (max_age is not None and time.monotonic() - read_at > max_age):
            known = self._read(ref, need_pixels)
            with self._lock:
                self._facts[key] = (time.monotonic(), known)
        return known

    def _read_all(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        """Read every stored image of ``bodies`` once, a few at a time (a batch may name thousands)."""
        if self.rules is None:
            return
        rules = self.rules
        stored: dict[str, ImageRef] = {}
        for body in bodies:
            for ref in references(body, rules)[0]:
                if ref.kind in (RefKind.LOCAL, RefKind.STORED) and rules.stored_form(ref.protocol, None):
                    stored.setdefault(ref.uri, ref)
        if len(stored) > 1:
            self._open_stores(stored.values())
            with ThreadPoolExecutor(min(CHECK_THREADS, len(stored))) as pool:
                list(pool.map(lambda ref: self.inspect(ref, rules.needs_pixels), stored.values()))

    def _open_stores(self, refs: Iterable[ImageRef]) -> None:
        """Look each connection up and open each store here, once, before the reading threads start:
        a task's connection lookups go through one channel to its supervisor; the threads then find
        the stores in Airflow's cache."""
        opened: set[tuple[str | None, str | None]] = set()
        for ref in refs:
            try:
                path = storage_path(ref, self.conn_id)
                conn_id = connection_of(path)
                if (path.protocol, conn_id) in opened:
                    continue
                opened.add((path.protocol, conn_id))
                if not (conn_id and self._missing_connection(conn_id)):
                    path.fs  # noqa: B018 - opened (and cached by Airflow) on this thread
            except Exception:
                continue  # reading the image reports why

    def _read(self, ref: ImageRef, need_pixels: bool) -> ImageFacts | str:
        try:
            path = storage_path(ref, self.conn_id)
        except Exception as err:
            return f"cannot be opened ({type(err).__name__}: {err})"
        conn_id = connection_of(path)
        if conn_id and conn_id != self.conn_id:
            missing = self._missing_connection(conn_id)
            if missing:
                return f"cannot be read: {missing}"
        try:
            return read_facts(path, need_pixels)
        except Exception as err:
            return read_failure(err, conn_id)

    def _missing_connection(self, conn_id: str) -> str | None:
        """Why ``conn_id`` cannot be used (it does not exist), or None; looked up once."""
        with self._lock:
            if conn_id in self._connections:
                return self._connections[conn_id]
        try:
            BaseHook.get_connection(conn_id)
            missing = None
        except AirflowNotFoundException:
            missing = (
                f"the storage connection {conn_id!r} (inputs_conn_id or the image's own) does not exist: "
                "create it or fix the id; a missing connection is never replaced by anonymous access"
            )
        with self._lock:
            self._connections[conn_id] = missing
        return missing

    # -- right before a create -------------------------------------------------------------------

    def resolve(self, body: Mapping[str, Any], what: str = "The create request") -> Resolved:
        """``body`` with each image in the form the route takes: presigned (expiring from now), inlined
        as a ``data:`` URI or as a :class:`FilePart`. Raises :class:`VideoCreateRequestError` (nothing
        was sent) when an image no longer passes its checks, or can no longer be read or signed."""
        out = dict(body)
        if self.rules is None:
            return Resolved(out)
        # Checked again, on reads at most a minute old: a later wave's image may have changed or gone.
        check_images(body, route=self.route, what=what, inspect=self._recent)
        resolved = Resolved(out)
        for image_field, value in self.rules.values(body):
            if image_field.many and isinstance(value, list | tuple):
                wired: Any = [
                    self._wire(f"{image_field.name}[{n}]", item, resolved, what)
                    for n, item in enumerate(value)
                ]
            else:
                wired = self._wire(image_field.name, value, resolved, what)
            image_field.put(out, wired)
        return resolved

    def _recent(self, ref: ImageRef, need_pixels: bool) -> ImageFacts | str:
        return self.inspect(ref, need_pixels, max_age=RECHECK_AFTER)

    def _wire(self, where: str, value: Any, resolved: Resolved, what: str) -> Any:
        rules = self.rules
        assert rules is not None
        ref = classify(where, value)
        if isinstance(ref, str):
            raise VideoCreateRequestError(
                f"{what} was not sent (nothing was paid for): {ref}.", problems=[ref]
            )
        if ref.kind is RefKind.URL:
            return ref.uri
        if ref.kind is RefKind.DATA:
            if ImageForm.DATA in rules.forms:
                return ref.uri
            decoded = decode_data_uri(ref.uri)
            return FilePart(
                f"image{_SUFFIXES.get(decoded.media_type, '')}",
                decoded.media_type,
                ref.shown,
                lambda: io.BytesIO(decoded.data),
            )
        try:
            return self._wire_stored(ref, rules, resolved)
        except (OSError, ValueError, PresignError) as err:
            why = read_failure(err, self.conn_id) if isinstance(err, OSError) else str(err)
            problem = f"{where} {ref.shown} {why}"
            raise VideoCreateRequestError(
                f"{what} was not sent (nothing was paid for): {problem}.", problems=[problem]
            ) from None

    def _wire_stored(self, ref: ImageRef, rules: RouteImages, resolved: Resolved) -> Any:
        path = storage_path(ref, self.conn_id)
        known = self._recent(ref, rules.needs_pixels)
        if isinstance(known, str):
            raise ValueError(known)
        form = rules.stored_form(ref.protocol, known.size)
        if form is None:
            raise ValueError("cannot be sent on this route")
        resolved.sent.append(f"{ref.where} {ref.shown} as {_AS[form]}")
        if form is ImageForm.URL:
            url = self._presigner.url(path)
            resolved.signed[url] = ref.shown
            return url
        if form is ImageForm.DATA:
            data = read_bytes(path, rules.max_inline_bytes)
            return encode_data_uri(facts(data, len(data)).media_type, data)
        return FilePart(path.name, known.media_type, ref.shown, lambda: _open(path))


def _open(path: ObjectStoragePath) -> IO[bytes]:
    handle: IO[bytes] = path.open("rb")  # type: ignore[no-untyped-call]
    return handle


_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_AS = {ImageForm.URL: "a presigned URL", ImageForm.DATA: "a data: URI", ImageForm.UPLOAD: "an uploaded file"}


@dataclass
class Resolved:
    """A body ready to send, and the signed URLs in it with how each is shown instead."""

    fields: dict[str, Any]
    signed: dict[str, str] = field(default_factory=dict)
    #: How each stored image goes, for the log: ``"images[0] s3://b/k.png as a presigned URL"``.
    sent: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        """``text`` without any signed URL of this body (or a piece of one) and without data payloads."""
        for url, shown in self.signed.items():
            text = text.replace(url, shown)
            for secret in _secret_parts(url):
                text = text.replace(secret, "…")
        return _DATA_PAYLOAD.sub(r"\1…", text)

    @contextmanager
    def redacting(self) -> Iterator[None]:
        """Run the create; an error raised meanwhile loses every signed URL and data payload."""
        try:
            yield
        except BaseException as err:
            seen: BaseException | None = err
            for _ in range(5):
                if seen is None:
                    break
                _scrub(seen, self.redact)
                seen = seen.__cause__ or seen.__context__
            raise


def _secret_parts(url: str) -> list[str]:
    """The pieces of a presigned URL that grant access: its query string (raw and decoded) and each
    long parameter value (signature, credential, session token)."""
    query = urlsplit(url).query
    parts = [query, unquote(query)] if query else []
    for _, value in parse_qsl(query):
        if len(value) >= 16:
            parts += [value, unquote(value)]
    return sorted({part for part in parts if part}, key=len, reverse=True)


def _scrub(err: BaseException, redact: Any) -> None:
    err.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in err.args)
    for name in ("problem", "check", "what"):
        value = getattr(err, name, None)
        if isinstance(value, str):
            setattr(err, name, redact(value))


__all__ = ["URL_EXPIRY", "ImageInputs", "Resolved"]
