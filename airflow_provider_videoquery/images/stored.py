"""Stored images: the ``ObjectStoragePath`` a reference names, its facts from its first bytes, its
bytes for a ``data:`` URI, and read failures in plain words.

A reference's own connection (an ``ObjectStoragePath``'s ``conn_id``, or ``s3://conn@bucket/key``)
wins over ``inputs_conn_id``; with neither, the store's default credentials are used, and an S3 store
that found none is refused instead of being read anonymously.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.images.refs import ImageRef
from airflow_provider_videoquery.images.rules import megabytes
from airflow_provider_videoquery.images.sniff import HEADER_BYTES, ImageFacts, facts, needs_more, sniff
from airflow_provider_videoquery.storage.paths import object_uri


class NoCredentialsError(PermissionError):
    """The store found no credentials and would read anonymously: refused."""


def storage_path(ref: ImageRef, conn_id: str | None) -> ObjectStoragePath:
    """The object ``ref`` names, reached with its own connection, else ``conn_id``."""
    value = ref.value
    if isinstance(value, ObjectStoragePath):
        if connection_of(value) or not conn_id:
            return value
        return ObjectStoragePath(object_uri(value), conn_id=conn_id)
    return ObjectStoragePath(ref.uri, conn_id=conn_id)  # "s3://conn@bucket/key" keeps its own conn


def connection_of(path: ObjectStoragePath) -> str | None:
    """The connection id a path is reached with (``conn_id`` on Airflow 3.2+, a storage option on 3.1)."""
    own = getattr(path, "conn_id", None)
    return str(own) if own else path.storage_options.get("conn_id") or None


def read_facts(path: ObjectStoragePath, need_pixels: bool) -> ImageFacts:
    """Kind, size and (when its header holds it) pixel size of the object: one ranged read, more only
    for a JPEG whose frame header lies behind a long EXIF block."""
    fs = _readable_fs(path)
    info = fs.info(path.path)
    if info.get("type") == "directory":
        raise IsADirectoryError(path.path)
    size = int(info.get("size") or 0)
    head: bytes = fs.cat_file(path.path, start=0, end=min(size, HEADER_BYTES)) if size else b""
    while need_pixels and needs_more(sniff(head), head, size):
        more: bytes = fs.cat_file(path.path, start=len(head), end=min(size, len(head) + 4 * HEADER_BYTES))
        if not more:
            break
        head += more
    return facts(head, size)


def read_bytes(path: ObjectStoragePath, limit: int | None) -> bytes:
    """The whole object, refused beyond ``limit`` bytes (read at most one byte more)."""
    fs = _readable_fs(path)
    data: bytes = fs.cat_file(path.path, start=0, end=None if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"it grew past {megabytes(limit)} since it was checked")
    return data


def _readable_fs(path: ObjectStoragePath) -> Any:
    fs = path.fs
    if getattr(fs, "anon", False):
        raise NoCredentialsError(path.path)
    return fs


def read_failure(err: Exception, conn_id: str | None) -> str:
    """Why an image could not be read, as the end of a sentence that starts with its URI."""
    if isinstance(err, FileNotFoundError):
        return "does not exist (or is not visible to " + _reader(conn_id) + ")"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(err, NoCredentialsError):
        return (
            "cannot be read: no credentials were found (no inputs_conn_id, and none in the environment), "
            "and anonymous reads are refused; set inputs_conn_id to a connection with credentials"
        )
    if isinstance(err, PermissionError):
        return f"cannot be read with {_reader(conn_id)}: permission denied"
    return f"cannot be read with {_reader(conn_id)} ({type(err).__name__}: {err})"


def _reader(conn_id: str | None) -> str:
    return f"connection {conn_id!r}" if conn_id else "the store's default credentials"


__all__ = ["NoCredentialsError", "connection_of", "read_bytes", "read_facts", "read_failure", "storage_path"]
