"""The streaming, verified, atomic download of a video (or its thumbnail) into an ``ObjectStoragePath``.

* :mod:`.store` — ``store_url``: the entry point, a link to download or an inline file;
* :mod:`.download` — the download: redirects checked hop by hop, response checks, retries with
  ``Range`` resume, connections kept per host, placement;
* :mod:`.inline` — a video reported inline (``data:video/mp4;base64,…``), stored by the same checks
  and placement;
* :mod:`.transport` — the HTTP client of downloads, reading bodies in 1 MiB blocks into a reused buffer;
* :mod:`.sinks` — where the bytes go: a temporary object renamed into place, or the final S3 key
  through a multipart upload that is invisible until complete;
* :mod:`.paths` — destination rules, names and connection-free URIs;
* :mod:`.checks` — ``check_destination``: the destination checked before anything is paid for;
* :mod:`.hosts` — the addresses a download never connects to (link-local, cloud metadata).
"""

from airflow_provider_videoquery.storage.checks import check_destination, storage_error
from airflow_provider_videoquery.storage.download import (
    CHUNK_SIZE,
    DEFAULT_MAX_BYTES,
    ContentKind,
    DownloadSettings,
    StoredObject,
    iter_object,
    new_client,
    sha256_of,
)
from airflow_provider_videoquery.storage.paths import object_uri, resolve_destination, safe_file_name
from airflow_provider_videoquery.storage.store import store_url

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "ContentKind",
    "DownloadSettings",
    "StoredObject",
    "check_destination",
    "iter_object",
    "new_client",
    "object_uri",
    "resolve_destination",
    "safe_file_name",
    "sha256_of",
    "storage_error",
    "store_url",
]
