"""The pure half of the hook: configuration, request building, answer checking and the retry plan.

Nothing here does I/O. The hook drives :func:`exchange` with a sync ``httpx.Client`` on workers and an
``httpx.AsyncClient`` in the triggerer, so both paths share every decision and neither copies the other.
"""

from __future__ import annotations

import json
import random
import ssl
from collections.abc import Generator, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoQueryAuthError,
    VideoQueryRequestError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.routes import Route as Route  # re-exported: its historic home
from airflow_provider_videoquery.routes import spec

USER_AGENT = "airflow-provider-videoquery"
_BODY_PREVIEW = 200
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


class GatewayConfig(BaseModel):
    """A ``videoquery`` connection, resolved once: what every request needs to know."""

    model_config = ConfigDict(frozen=True)

    base_url: str
    api_key: SecretStr = Field(repr=False)
    route: Route = Route.UNIFIED
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    headers: dict[str, str] = Field(default_factory=dict)
    verify_ssl: bool = True
    allowed_download_hosts: tuple[str, ...] = ()

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            raise ValueError("the connection needs a host: the gateway's base URL, e.g. https://yunwu.ai")
        if "://" not in value:
            value = f"https://{value}"
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"the gateway's base URL must be http(s), got {value!r}")
        return value

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout, connect=self.connect_timeout)

    def credentials(self) -> dict[str, str]:
        """The headers that carry the key (and the connection's extra headers): the one place built."""
        return {**self.headers, "Authorization": f"Bearer {self.api_key.get_secret_value()}"}

    def auth_headers(self) -> dict[str, str]:
        return {
            **self.credentials(),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }

    def query_url(self, video_task_id: str, route: Route | None = None) -> str:
        return spec(route or self.route).query_url(self.base_url, video_task_id)

    def content_url(self, video_task_id: str, route: Route | None = None) -> str | None:
        """Where the gateway itself serves the file, on routes that have such a path (OpenAI-style)."""
        return spec(route or self.route).content_url(self.base_url, video_task_id)

    def create_url(self, route: Route | None = None) -> str:
        return spec(route or self.route).create_url(self.base_url)

    @classmethod
    def from_connection(
        cls, conn_id: str, host: str | None, password: str | None, extra: Mapping[str, Any]
    ) -> GatewayConfig:
        if not password:
            raise VideoQueryAuthError(
                f"Connection {conn_id!r} has no API key: put it in the connection's password field."
            )
        # The UI may store form fields with Airflow's old prefixed names; accept both spellings.
        extra = {key.removeprefix("extra__videoquery__"): value for key, value in extra.items()}
        fields: dict[str, Any] = {"base_url": host or "", "api_key": password}
        for key in ("route", "connect_timeout", "read_timeout", "verify_ssl"):
            if extra.get(key) not in (None, ""):
                fields[key] = extra[key]
        if extra.get("timeout") not in (None, ""):
            fields["read_timeout"] = extra["timeout"]
        fields["headers"] = _json_object(extra.get("extra_headers") or extra.get("headers"))
        hosts = extra.get("allowed_download_hosts") or ()
        if isinstance(hosts, str):
            hosts = [h.strip() for h in hosts.split(",")]
        fields["allowed_download_hosts"] = tuple(h.lower() for h in hosts if h)
        try:
            return cls(**fields)
        except ValueError as err:
            raise VideoQueryRequestError(f"Connection {conn_id!r} is not usable: {err}") from None


def _json_object(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise VideoQueryRequestError("The connection's extra_headers must be a JSON object.")
    return {str(k): str(v) for k, v in value.items()}


class RetryPolicy(BaseModel):
    """Capped exponential backoff with full jitter; honours ``Retry-After`` up to the cap."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        jittered = random.uniform(backoff / 2, backoff)
        if retry_after is not None:
            return min(self.max_delay, max(retry_after, jittered / 2))
        return jittered


# One step of an exchange: a request to send, or seconds to sleep before the next try.
Action = httpx.Request | float
Outcome = httpx.Response | httpx.TransportError | None


def exchange(
    request: httpx.Request, policy: RetryPolicy, what: str, idempotent: bool = True
) -> Generator[Action, Outcome, httpx.Response]:
    """Send ``request`` until it gets a usable answer; return it or raise a typed error.

    The caller sends each yielded request and passes back the response (body read) or the transport
    error, and sleeps for each yielded float. ``what`` names the operation in every message. A request
    that is not ``idempotent`` is retried only when the gateway surely did not act on it.
    """
    attempt = 0
    while True:
        outcome = yield request
        if isinstance(outcome, httpx.TransportError) and certificate_refused(outcome):
            raise VideoQueryRequestError(certificate_message(f"{what}: the gateway's", outcome))
        problem = _transient_problem(outcome)
        if problem is None:
            assert isinstance(outcome, httpx.Response)
            return _check_status(outcome, what)
        if not idempotent and not _surely_not_processed(outcome):
            raise uncertain_create(request, what, problem)
        attempt += 1
        if attempt >= policy.max_attempts:
            raise VideoQueryTransientError(
                f"{what} still failed after {attempt} attempts: {problem}. The gateway looks unwell; "
                "try again later or raise the retries."
            )
        wait = retry_after(outcome) if isinstance(outcome, httpx.Response) else None
        yield policy.delay(attempt - 1, wait)


def uncertain_create(request: httpx.Request, what: str, problem: str) -> VideoCreateUncertainError:
    """The error for a create the gateway may have taken without telling its id: what to check there."""
    try:
        body = json.loads(request.content)
    except ValueError:
        body = {}
    prompt = str(body.get("prompt") or "") if isinstance(body, dict) else ""
    prompt = prompt[:80] + ("…" if len(prompt) > 80 else "")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    check = (
        f"Check the gateway's task list or usage log for a task created just before {now} with the prompt "
        f"{prompt!r}: if it is there, pass its id as video_task_id to VideoDownloadOperator or "
        "VideoTaskSensor; if not, clear this task to create it again."
    )
    message = (
        f"{what} failed ({problem}) after the gateway may have received it. Not retried, so that no "
        f"duplicate task is paid for. {check} (retry_uncertain_creates=True lets Airflow retry such "
        "creates instead, at the risk of paying twice.)"
    )
    return VideoCreateUncertainError(message, what=what, problem=problem, check=check)


def _transient_problem(outcome: Outcome) -> str | None:
    if isinstance(outcome, httpx.TransportError):
        return describe(outcome)
    if isinstance(outcome, httpx.Response) and outcome.status_code in RETRYABLE_STATUS:
        return f"HTTP {outcome.status_code} {_preview(outcome)}".rstrip()
    return None


def _surely_not_processed(outcome: Outcome) -> bool:
    if isinstance(outcome, httpx.Response):
        return outcome.status_code in (429, 503)
    return isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def describe(err: httpx.TransportError) -> str:
    """A transport error for messages: its type, and its text when it has one."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def certificate_refused(err: BaseException) -> bool:
    """Whether a transport error comes from TLS certificate verification (permanent: not retried)."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def certificate_message(whose: str, err: httpx.TransportError) -> str:
    """The error text when ``certificate_refused(err)``; ``whose`` names the server ("…: the gateway's")."""
    return (
        f"{whose} TLS certificate was not accepted ({describe(err)}). Fix the certificate, or, for a "
        'self-signed gateway you trust, set "verify_ssl": false in the connection\'s extra.'
    )


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; None when absent or an HTTP date (our own backoff applies)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _check_status(response: httpx.Response, what: str) -> httpx.Response:
    code = response.status_code
    if code < 400:
        return response
    said = gateway_message(response)
    if code in (401, 403):
        raise VideoQueryAuthError(
            f"{what}: the gateway refused the API key (HTTP {code}: {said}). "
            "Check the password of the videoquery connection."
        )
    if code == 404 or "task_not_exist" in said:
        raise VideoTaskNotFoundError(
            f"{what}: the gateway does not know this task (HTTP {code}: {said}). "
            "Check the id, the route and that it was created with this gateway and key."
        )
    raise VideoQueryRequestError(f"{what}: the gateway rejected the request (HTTP {code}: {said}).")


def gateway_message(response: httpx.Response) -> str:
    """The gateway's own words for an error answer, whatever shape it chose."""
    try:
        body = response.json()
    except ValueError:
        return _preview(response) or "(empty body)"
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        for key in ("message", "error", "code", "detail"):
            if body.get(key):
                return str(body[key])
    return _preview(response)


def _preview(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:_BODY_PREVIEW] + ("…" if len(text) > _BODY_PREVIEW else "")


def json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """The answer as a JSON object, or an error naming the task and showing the body's start."""
    try:
        body = response.json()
    except ValueError:
        raise VideoQueryResponseError(
            f"{what}: the gateway answered HTTP {response.status_code} with a body that is not JSON "
            f"(content-type {response.headers.get('content-type', 'unknown')!r}): {_preview(response)!r}"
        ) from None
    if not isinstance(body, dict):
        raise VideoQueryResponseError(f"{what}: expected a JSON object, got {_preview(response)!r}")
    return body
