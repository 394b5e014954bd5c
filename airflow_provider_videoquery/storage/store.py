"""Storing a file a gateway reported: the one entry point, which picks the file's source.

A finished task names its video (or thumbnail) as a link to download (:mod:`.download`) or carries the
file itself as a ``data:`` URI (:mod:`.inline`, which checks, hashes and places it with the download's
own machinery). The choice is made here, above both, so the two stay one-way: inline builds on download,
download knows nothing of inline.
"""

from __future__ import annotations

import httpx
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery.models import is_inline
from airflow_provider_videoquery.storage.download import (
    ContentKind,
    Download,
    DownloadSettings,
    StoredObject,
    new_client,
)
from airflow_provider_videoquery.storage.inline import store_inline


def store_url(
    url: str,
    destination: ObjectStoragePath,
    settings: DownloadSettings,
    *,
    kind: ContentKind = ContentKind.VIDEO,
    overwrite: bool = False,
    suffix_from_content: bool = False,
    client: httpx.Client | None = None,
    what: str = "the video",
) -> StoredObject:
    """Store the file ``url`` names (a link, or an inline ``data:`` URI) into ``destination``
    atomically and return what was stored.

    ``destination`` is left untouched unless the complete, verified file replaces it. When it already
    exists and ``overwrite`` is false, an identical object (size and sha256) is kept and reported as
    ``reused``; a different one fails. ``suffix_from_content`` renames the target to the extension of
    what arrived (e.g. a thumbnail that turns out to be PNG). ``what`` names the file in messages.
    ``client`` (:func:`.download.new_client`) may be shared by many downloads; an inline file needs none.

    :raises VideoDownloadError: expired URL, not a video/image, too large, unsafe redirect, conflict,
        invalid inline data, or transient failures that outlasted the retries.
    """
    if is_inline(url):  # the file itself, not a link: decoded, checked and placed like a download
        options = {"overwrite": overwrite, "suffix_from_content": suffix_from_content}
        return store_inline(url, destination, settings, kind=kind, what=what, **options)
    http = client if client is not None else new_client(settings)
    try:
        return Download(url, destination, settings, kind, overwrite, suffix_from_content, http, what).run()
    finally:
        if client is None:
            http.close()


__all__ = ["store_url"]
