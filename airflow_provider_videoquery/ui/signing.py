"""Signed, expiring media links, for browsers that cannot send Airflow's credentials with ``<video>``.

Airflow 3.1's UI keeps its token in local storage and sends it as a header, which ``<video src>`` and
``<img src>`` cannot do. The JSON answer to such a request carries media links signed with a key derived
from the api-server's ``[api] secret_key``: valid for one object of one task instance, until they expire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

#: How long a signed media link is valid: long enough to watch a video, short enough to leak little.
LINK_SECONDS = 3600
_LABEL = b"airflow-provider-videoquery media link v1\n"


def media_key(secret: str) -> bytes:
    """The signing key: the api-server's secret, hashed with this use's label (never the secret itself)."""
    return hashlib.sha256(_LABEL + secret.encode()).digest()


def signature(key: bytes, parts: tuple[str, ...], expires: int) -> str:
    message = "\x1f".join((*parts, str(expires))).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def valid(key: bytes, parts: tuple[str, ...], expires: int, given: str, now: float) -> bool:
    """Whether ``given`` signs ``parts`` until ``expires`` and that time has not passed."""
    return now < expires and hmac.compare_digest(signature(key, parts, expires), given)
