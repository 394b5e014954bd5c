"""The connection test's verdict: only a gateway's own JSON "unknown task" answer proves the API key.

The Test button queries a task id that cannot exist. A video gateway answers that with its own JSON
error (400 ``{"code": "task_not_exist"}``, vidu's 404, an OpenAI-style ``{"error": {…}}``). Anything
else — a website's HTML, a bare 404, a redirect to a login page, a router's "Invalid URL" — means the
base URL does not point at a gateway's API, whatever the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from airflow_provider_videoquery.models import shown_url

#: The id the Test button queries: no gateway knows it.
PROBE_TASK_ID = "videoquery-connection-test"

_UNKNOWN_TASK = re.compile(
    r"not[\s_-]*exist|not[\s_-]*found|no such (task|video)|unknown (task|video)|invalid (task|video)", re.I
)
#: Answers of a web server or API router about the path, not about the task.
_ABOUT_THE_PATH = re.compile(
    r"invalid url|^\s*(404\s*)?(page\s*)?not\s*found\.?\s*$|no route|unknown (path|route|endpoint)", re.I
)
_PATH_HINT = (
    "Check the connection's base URL: the gateway's API root with scheme, host and port (e.g. "
    "https://yunwu.ai), without a path such as /v1 — the provider adds the API paths itself — and its "
    "route extra."
)


def verdict(response: httpx.Response, base_url: str, route: str) -> tuple[bool, str]:
    """``(ok, message)`` for the answer to the probe query: what was reached and, if wrong, what to fix."""
    code = response.status_code
    ctype = (response.headers.get("content-type") or "no content-type").split(";")[0].strip()
    url = shown_url(str(response.request.url))
    body = _json_object(response)
    said = _said(body) if body is not None else []
    if code in (401, 403):
        return False, (
            f"The gateway at {base_url} refused the API key (HTTP {code}: {'; '.join(said) or 'no reason'}). "
            "Check the connection's password."
        )
    if body is not None and code in (400, 404) and _unknown_task(said):
        return True, (
            f"The gateway at {base_url} accepted the API key: it answered the test query for a made-up "
            f"task on the {route} route with its own 'unknown task' reply (HTTP {code}: {said[0]})."
        )
    if body is not None and code == 200:
        return True, f"The gateway at {base_url} accepted the API key (the {route} route answered HTTP 200)."
    reached = f"The test query reached {url} and got HTTP {code} ({ctype})"
    if 300 <= code < 400:
        where = shown_url(response.headers.get("location", "")) or "nowhere"
        return False, (
            f"{reached}, a redirect to {where}: a website or its login page, not a video gateway's API. "
            + _PATH_HINT
        )
    if "html" in ctype:
        return False, f"{reached}: an HTML page, not a video gateway's API answer. " + _PATH_HINT
    shown = "; ".join(said) if said else _preview(response)
    return False, (
        f"{reached}: {shown!r}, which is not a video gateway's 'unknown task' answer, so the key is "
        "not proven. " + _PATH_HINT
    )


def _json_object(response: httpx.Response) -> Mapping[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, Mapping) else None


def _said(body: Mapping[str, Any]) -> list[str]:
    """The texts an error answer carries: ``code``/``message``/``detail`` and ``error`` (string or object)."""
    texts = [body.get(key) for key in ("code", "message", "detail")]
    error = body.get("error")
    if isinstance(error, Mapping):
        texts += [error.get("message"), error.get("code")]
    else:
        texts.append(error)
    return [str(text) for text in texts if isinstance(text, str | int) and str(text).strip()]


def _unknown_task(said: list[str]) -> bool:
    return any(_UNKNOWN_TASK.search(t) for t in said) and not any(_ABOUT_THE_PATH.search(t) for t in said)


def _preview(response: httpx.Response, limit: int = 120) -> str:
    text = response.text.strip().replace("\n", " ")
    return (text[:limit] + ("…" if len(text) > limit else "")) or "(empty body)"
