"""Presigned https URLs for S3 and GCS objects, made through the stores' Airflow hooks.

A presigned URL carries a signature (and, with temporary credentials, a session token): the provider
hands it to the gateway in the create body and shows the object's URI everywhere else. One hook per
store and connection is kept, so a batch presigning thousands of images builds one client each.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.images.stored import connection_of


class PresignError(Exception):
    """An object could not be presigned; the message ends a sentence that starts with its URI."""


class Presigner:
    """Presign objects for ``expires_in`` seconds, counted from each call (so from each create)."""

    def __init__(self, expires_in: float) -> None:
        self.expires_in = int(expires_in)
        self._hooks: dict[tuple[str, str | None], Any] = {}
        self._lock = threading.Lock()

    def url(self, path: ObjectStoragePath) -> str:
        bucket, _, key = path.path.partition("/")
        protocol, conn_id = path.protocol, connection_of(path)
        try:
            if protocol in ("s3", "s3a"):
                signed = self._hook("s3", conn_id).generate_presigned_url(
                    client_method="get_object",
                    params={"Bucket": bucket, "Key": key},
                    expires_in=self.expires_in,
                )
            elif protocol in ("gs", "gcs"):
                blob = self._hook("gs", conn_id).get_conn().bucket(bucket).blob(key)
                signed = blob.generate_signed_url(
                    version="v4", expiration=timedelta(seconds=self.expires_in), method="GET"
                )
            else:
                raise PresignError(f"cannot be presigned: {protocol}:// objects are not supported")
        except PresignError:
            raise
        except ImportError as err:
            raise PresignError(f"cannot be presigned: {err}") from None
        except Exception as err:  # the SDKs' own: no credentials, a key that cannot sign, …
            raise PresignError(
                f"cannot be presigned with {_conn(conn_id)} ({type(err).__name__}: {err}); presigning "
                "needs credentials that can sign (an access key, a service account key)"
            ) from None
        if not signed:
            raise PresignError(f"cannot be presigned with {_conn(conn_id)} (the store refused)")
        return str(signed)

    def _hook(self, store: str, conn_id: str | None) -> Any:
        with self._lock:
            hook = self._hooks.get((store, conn_id))
            if hook is None:
                hook = self._hooks[(store, conn_id)] = _new_hook(store, conn_id)
            return hook


def _new_hook(store: str, conn_id: str | None) -> Any:
    if store == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=conn_id)
    try:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook
    except ImportError:
        raise ImportError("gs:// images need apache-airflow-providers-google") from None
    return GCSHook(gcp_conn_id=conn_id or "google_cloud_default")


def _conn(conn_id: str | None) -> str:
    return f"connection {conn_id!r}" if conn_id else "the store's default credentials"


__all__ = ["PresignError", "Presigner"]
