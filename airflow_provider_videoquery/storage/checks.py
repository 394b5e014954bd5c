"""The destination, checked before anything is paid for or waited for; storage failures in plain words.

:func:`check_destination` is what an operator calls first: a mistyped connection id, an S3 destination
without credentials, a missing bucket or an unwritable folder then fail in a second, not after the
video was created and waited for. The probes leave nothing behind: locally a probe file is written and
removed (the folder is created, as the download would); on S3 a multipart upload is started and
aborted, which needs the same permission as the upload itself and never shows an object (nor fires a
bucket notification). Other object stores get the connection check only.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook
from airflow.sdk import ObjectStoragePath
from fsspec.implementations.local import LocalFileSystem

from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.storage.paths import destination_folder, destination_uri
from airflow_provider_videoquery.storage.sinks import DIRECT_PROTOCOLS, PROBE_PREFIX

log = logging.getLogger(__name__)


def check_destination(destination: str, conn_id: str | None = None) -> None:
    """Fail now, with what to do, when a download into ``destination`` could not be stored.

    Checks that ``conn_id`` (if given) is an existing connection, that an ``s3://`` destination has
    credentials (anonymous access is refused; no ``conn_id`` is allowed with a warning: boto3's own
    credential chain is used), and that the destination's folder can be written (local folders and
    S3 buckets; see the module docstring). Same rules as :func:`.paths.resolve_destination`.

    :raises VideoDownloadError: naming the destination, what failed and what to do.
    """
    uri = destination_uri(destination)
    if conn_id:
        _check_connection(uri, conn_id)
    try:
        folder = destination_folder(uri, conn_id)
        fs = folder.fs
    except VideoDownloadError:
        raise
    except Exception as err:
        raise VideoDownloadError(
            f"The destination {uri} cannot be opened: {type(err).__name__}: {err}. Check the destination "
            "and its storage connection (destination_conn_id)."
        ) from err
    if isinstance(fs, LocalFileSystem):
        _probe_local(uri, Path(folder.path))
    elif folder.protocol in DIRECT_PROTOCOLS:
        _check_s3(uri, folder, conn_id)


def storage_error(doing: str, err: OSError) -> VideoDownloadError:
    """``err`` from a store as an error a user can act on; ``doing`` says what and where
    (``"Storing the video of task 'x' at file:///data/v.mp4"``)."""
    if isinstance(err, PermissionError):
        hint = (
            "permission denied. Let the worker's user (or the storage connection's credentials) write "
            "there, or choose another destination"
        )
    elif isinstance(err, (NotADirectoryError, FileExistsError)):
        hint = "a part of the path is a file, not a folder. Choose another destination"
    elif isinstance(err, IsADirectoryError):
        hint = "that name is a folder. End the destination with '/' to store the file inside it"
    elif isinstance(err, FileNotFoundError):
        hint = "the folder or bucket does not exist (or vanished meanwhile). Create it or fix the destination"
    elif err.errno == errno.ENOSPC:
        hint = "no space left. Free some, or choose another destination"
    elif err.errno == errno.EROFS:
        hint = "the file system is read-only. Choose another destination"
    else:
        hint = "the store refused it. Check the destination and its storage connection"
    return VideoDownloadError(f"{doing} failed: {hint} ({type(err).__name__}: {err}).")


# -- the checks -------------------------------------------------------------------------------------


def _check_connection(uri: str, conn_id: str) -> None:
    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise VideoDownloadError(
            f"The destination {uri} names the storage connection {conn_id!r}, which does not exist. "
            "Create it (Admin → Connections, or an AIRFLOW_CONN_… variable) or fix destination_conn_id; "
            "a missing connection is never replaced by anonymous access."
        ) from None


def _probe_local(uri: str, folder: Path) -> None:
    """Create ``folder`` (as the download would) and write and remove a probe file in it."""
    doing = f"Checking the destination {uri}: writing in {folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f"{PROBE_PREFIX}{secrets.token_hex(6)}"
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(descriptor, b"probe")
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise storage_error(doing, err) from err


def _check_s3(uri: str, folder: ObjectStoragePath, conn_id: str | None) -> None:
    """Credentials present, the bucket there, and an upload allowed: start one and abort it."""
    fs: Any = folder.fs
    if getattr(fs, "anon", False):
        raise VideoDownloadError(
            f"The destination {uri} has no AWS credentials: "
            + (
                f"the connection {conn_id!r} holds none"
                if conn_id
                else "no destination_conn_id is set and boto3 found none (environment, ~/.aws, instance role)"
            )
            + ", and anonymous writes are refused. Set destination_conn_id to an AWS connection with "
            "credentials (e.g. 'aws_default')."
        )
    if not conn_id:
        log.warning(
            "The destination %s has no destination_conn_id: S3 is reached with boto3's default "
            "credentials (environment, ~/.aws, instance role). Set destination_conn_id (e.g. "
            "'aws_default') to use an Airflow connection.",
            uri,
        )
    bucket, key, _ = fs.split_path(f"{folder.path.rstrip('/')}/{PROBE_PREFIX}{secrets.token_hex(6)}")
    doing = f"Checking the destination {uri}: starting an upload into bucket {bucket!r}"
    try:
        started = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=started["UploadId"])
    except OSError as err:
        raise storage_error(doing, err) from err
    except Exception as err:  # botocore's own (no credentials, endpoint unreachable, …)
        raise VideoDownloadError(
            f"{doing} failed: {type(err).__name__}: {err}. Check the storage connection "
            f"({conn_id or 'none set'}): its credentials, region and endpoint_url."
        ) from err
