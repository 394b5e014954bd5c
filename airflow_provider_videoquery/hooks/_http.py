"""The pure half of the hook: configuration, request building, answer checking and the retry plan.

Nothing here does I/O. The hook drives :func:`exchange` with a sync ``httpx.Client`` on workers and an
``httpx.AsyncClient`` in the triggerer, so both paths share every decision and neither copies the other.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import random
import ssl
import time
import urllib.request
from collections.abc import Generator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, NamedTuple, NoReturn

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoQueryAuthError,
    VideoQueryRequestError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoQueryUnreachableError,
    VideoTaskNotFoundError,
)
from airflow_provider_videoquery.models import shown_url
from airflow_provider_videoquery.routes import Route as Route  # re-exported: its historic home
from airflow_provider_videoquery.routes import spec

USER_AGENT = "airflow-provider-videoquery"
_BODY_PREVIEW = 200
#: The largest answer read from the gateway, counted as it is decompressed: an inline video (new-api's
#: ``data:video/mp4;base64,…``) of up to ~190 MB fits; a gzip bomb stops here instead of taking the
#: worker's (or the triggerer's) memory. The connection's ``max_answer_bytes`` extra changes it.
DEFAULT_MAX_ANSWER_BYTES = 256 * 1024 * 1024
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})


@functools.lru_cache(maxsize=2)
def tls_context(verify: bool) -> ssl.SSLContext:
    """The TLS context of every client with this ``verify`` setting, as httpx makes it (certifi, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made once per process: loading the CA bundle costs ~50 ms (up to
    a second on a busy machine), and a batch made its clients anew for every wave."""
    return httpx.create_ssl_context(verify=verify)


class ClientKey(NamedTuple):
    """Everything that changes an HTTP client (not a request): clients are shared per key."""

    verify_ssl: bool
    proxy: str | None


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
    verify_download_ssl: bool = True
    proxy: str | None = Field(default=None, repr=False)  # may carry the proxy's credentials
    allowed_download_hosts: tuple[str, ...] = ()
    max_answer_bytes: int = Field(default=DEFAULT_MAX_ANSWER_BYTES, gt=0)

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

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        value = (value or "").strip() or None
        if value is not None and "://" not in value:
            value = f"http://{value}"
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"the proxy must be an http(s) URL such as http://proxy:3128, got {value!r}")
        return value

    @cached_property
    def shown_url(self) -> str:
        """The base URL for messages: without credentials a user may have put into it."""
        return shown_url(self.base_url)

    @cached_property
    def client_key(self) -> ClientKey:
        """What the gateway's client is built from: TLS setting and the proxy it goes through, read once
        per resolved connection (the proxy variables as they were when it was looked up; the triggerer
        looks a connection up again after a minute), not once per request."""
        return ClientKey(self.verify_ssl, proxy_for(self.base_url, self.proxy))

    @cached_property
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
        for key in (
            "route",
            "connect_timeout",
            "read_timeout",
            "verify_ssl",
            "verify_download_ssl",
            "proxy",
            "max_answer_bytes",
        ):
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


def proxy_for(url: str | httpx.URL, explicit: str | None = None) -> str | None:
    """The proxy a request to ``url`` goes through, or None for a direct connection.

    ``explicit`` (the connection's ``proxy`` extra) wins over ``HTTPS_PROXY``/``HTTP_PROXY``/
    ``ALL_PROXY``; ``NO_PROXY`` exempts hosts either way, as in curl. Every HTTP path (the sync and async
    hook, downloads) asks here, so all follow the same rules. Loopback is not exempt by default.
    """
    target = httpx.URL(url)
    env = urllib.request.getproxies_environment()
    if _exempt(target.host, target.port, env.get("no", "")):
        return None
    chosen = explicit or env.get(target.scheme) or env.get("all")
    if not chosen:
        return None
    return chosen if "://" in chosen else f"http://{chosen}"


def _exempt(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` names this host: ``*``, a name (and its subdomains), ``.suffix``, an IP or
    a network (``10.0.0.0/8``), each optionally with ``:port``."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or int(entry_port) != port):
            continue
        name = name.strip("[]")
        if not name:
            continue
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
            continue
        except ValueError:
            pass
        name = name.lstrip("*").lstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


class RetryPolicy(BaseModel):
    """Capped exponential backoff with full jitter; honours ``Retry-After`` up to ``max_retry_after``.

    A gateway that asks for a pause (``Retry-After``, seconds or an HTTP date) gets it, up to
    ``max_retry_after`` seconds (default 5 minutes; raise it for a gateway with longer windows).
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        jittered = random.uniform(backoff / 2, backoff)
        if retry_after is not None:
            return min(self.max_retry_after, max(retry_after, jittered / 2))
        return jittered


class AnswerTooLargeError(httpx.DecodingError):
    """The gateway's answer grew past ``max_answer_bytes`` while it was read (and decompressed)."""


class AnswerBody:
    """A gateway answer's body, collected block by block as it is decompressed, up to ``limit`` bytes:
    nothing larger is ever held or decoded. The drivers feed it; :meth:`response` is the answer whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._blocks: list[bytes] = []

    def add(self, block: bytes) -> None:
        self.size += len(block)
        if self.size > self.limit:
            raise AnswerTooLargeError(
                f"the answer is larger than max_answer_bytes={self.limit} (decompressed); stopped reading "
                "it. Raise the connection's max_answer_bytes extra if the gateway really sends such answers"
            )
        self._blocks.append(block)

    def response(self, streamed: httpx.Response) -> httpx.Response:
        """The answer with its body read (already decompressed: its ``Content-Encoding`` is dropped) and
        the credentials the request carried masked in it (:func:`redact`)."""
        headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() != "content-encoding"]
        return self.answer(streamed.status_code, headers, streamed.request, streamed.extensions)

    def answer(
        self,
        status: int,
        headers: list[tuple[str, str]] | list[tuple[bytes, bytes]],
        request: httpx.Request,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """The answer whole: ``headers`` without a ``Content-Encoding`` (the blocks were decompressed),
        the credentials ``request`` carried masked in the body (:func:`redact`)."""
        content, self._blocks = redact(b"".join(self._blocks), request), []
        return httpx.Response(
            status, headers=headers, content=content, request=request, extensions=extensions
        )


#: Request headers whose values are credentials, besides ``Authorization`` (the connection's extra
#: headers may hold one: ``X-Api-Key``, a cookie, …).
_SECRET_HEADER_WORDS = ("key", "token", "secret", "auth", "cookie", "signature", "password")
#: Shorter values are not masked: masking "abc" would garble every text that contains it.
_SECRET_MIN_LENGTH = 8


def redact(data: bytes, request: httpx.Request | None) -> bytes:
    """``data`` from a server with every credential ``request`` sent it replaced by ``***``.

    The one place gateway text is masked: every answer the hook reads (so nothing quoted from it —
    error messages, body previews, a failure reason, an envelope's message — can carry an API key the
    gateway echoes into a log, an exception, XCom or a manifest) and the download's quotes of the
    gateway's own bodies.
    """
    if request is None:
        return data
    for secret in _credentials_sent(request):
        data = data.replace(secret, b"***")
    return data


def _credentials_sent(request: httpx.Request) -> tuple[bytes, ...]:
    return _credentials_in(tuple(request.headers.raw), request.url.password)


@functools.lru_cache(maxsize=64)
def _credentials_in(headers: tuple[tuple[bytes, bytes], ...], password: str | None) -> tuple[bytes, ...]:
    """The credentials among a request's headers and URL password (worked out once per set: every
    answer of a connection's polls comes for the same headers)."""
    found: list[bytes] = []
    for name, value in headers:
        lowered = name.decode("latin-1").lower()
        if lowered == "authorization":
            scheme, _, credential = value.partition(b" ")
            found.append(credential.strip() or scheme)
        elif any(word in lowered for word in _SECRET_HEADER_WORDS):
            found.append(value.strip())
    if password:
        found.append(password.encode())
    return tuple(secret for secret in found if len(secret) >= _SECRET_MIN_LENGTH)


#: ``request.extensions`` key: epoch seconds by which the answer must be complete (the sync driver shuts
#: the connection down then, see ``hooks/_deadline.py``); set by :func:`exchange` from its budget.
ANSWER_BY = "videoquery.answer_by"

# One step of an exchange: a request to send, or seconds to sleep before the next try. The driver
# passes back the answer (body read) or whatever failed while sending it or reading its answer.
Action = httpx.Request | float
Outcome = httpx.Response | Exception | None


def exchange(
    request: httpx.Request,
    policy: RetryPolicy,
    what: str,
    idempotent: bool = True,
    *,
    deadline: float | None = None,
    check_status: bool = True,
    answer_budget: float | None = None,
) -> Generator[Action, Outcome, httpx.Response]:
    """Send ``request`` until it gets a usable answer; return it or raise a typed error.

    The caller sends each yielded request and passes back the response (body read) or any exception
    raised while sending it or reading its answer, and sleeps for each yielded float. ``what`` names the
    operation in every message. A request that is not ``idempotent`` is retried only when the gateway
    surely did not act on it: any other failure after it may have been sent (a timeout, a reset, an
    answer that cannot be decoded, …) is an uncertain create. No sleep runs past ``deadline`` (epoch
    seconds): the retries end there instead. ``check_status=False`` returns any answer that is not
    retried (4xx, 3xx) instead of raising for it. ``answer_budget``: seconds all answers together may
    take (the sleeps between tries do not count); each request is stamped with the time its answer
    must be complete by (``ANSWER_BY``), and no try starts once the budget is spent.
    """
    attempt, ever_answered, answering = 0, False, 0.0
    while True:
        sent = time.time()
        if answer_budget is not None:
            request.extensions[ANSWER_BY] = sent + answer_budget - answering
        outcome = yield request
        answering += time.time() - sent
        if isinstance(outcome, Exception) and not isinstance(outcome, httpx.TransportError):
            _unreadable(request, what, idempotent, outcome)
        if isinstance(outcome, httpx.TransportError) and certificate_refused(outcome):
            raise VideoQueryRequestError(certificate_message(f"{what}: the gateway's", outcome))
        ever_answered = ever_answered or isinstance(outcome, httpx.Response)
        problem = _transient_problem(outcome)
        if problem is None:
            assert isinstance(outcome, httpx.Response)
            return _check_status(outcome, what) if check_status else outcome
        if not idempotent and not _surely_not_processed(outcome):
            raise uncertain_create(request, what, problem)
        attempt += 1
        wait = policy.delay(
            attempt - 1, retry_after(outcome) if isinstance(outcome, httpx.Response) else None
        )
        spent = answer_budget is not None and answering >= answer_budget
        if (
            attempt >= policy.max_attempts
            or spent
            or (deadline is not None and time.time() + wait > deadline)
        ):
            if not ever_answered and isinstance(outcome, httpx.TransportError) and unreachable(outcome):
                raise VideoQueryUnreachableError(unreachable_message(what, request.url, outcome))
            tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
            if attempt >= policy.max_attempts:
                why = ""
            elif spent:
                why = f" (its answers took the {answer_budget:g}s the connection's timeout allows a call)"
            else:
                why = f" (the next try, in {wait:.0f}s, would pass the deadline)"
            raise VideoQueryTransientError(
                f"{what} still failed after {tries}{why}: {problem}. The gateway looks unwell; "
                "try again later or raise the retries."
            )
        yield wait


def uncertain_create(request: httpx.Request, what: str, problem: str) -> VideoCreateUncertainError:
    """The error for a create the gateway may have taken without telling its id: what to check there."""
    return uncertain_error(what, problem, _prompt_of(request), "just before", datetime.now(UTC))


def uncertain_error(
    what: str, problem: str, prompt: str, relation: str, when: datetime
) -> VideoCreateUncertainError:
    """:func:`uncertain_create`'s error from its parts: ``relation`` ("just before", "at about") ties
    the gateway's task to ``when``."""
    prompt = prompt[:80] + ("…" if len(prompt) > 80 else "")
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    check = (
        f"Check the gateway's task list or usage log for a task created {relation} {stamp} with the "
        f"prompt {prompt!r}: if it is there, pass its id as video_task_id to VideoDownloadOperator or "
        "VideoTaskSensor; if not, clear this task to create it again."
    )
    message = (
        f"{what} failed ({problem}) after the gateway may have received it. Not retried, so that no "
        f"duplicate task is paid for. {check} (retry_uncertain_creates=True lets Airflow retry such "
        "creates instead, at the risk of paying twice.)"
    )
    return VideoCreateUncertainError(message, what=what, problem=problem, check=check)


def _prompt_of(request: httpx.Request) -> str:
    """The prompt a create sent: from its JSON body, or from a multipart body's form fields."""
    try:
        body = json.loads(request.content)
    except ValueError:
        body = {}
    except httpx.RequestNotRead:  # multipart, streamed: its plain fields are still at hand
        fields = getattr(request.stream, "fields", ())
        body = {f.name: f.value for f in fields if isinstance(getattr(f, "value", None), str)}
    return str(body.get("prompt") or "") if isinstance(body, dict) else ""


def _unreadable(request: httpx.Request, what: str, idempotent: bool, err: Exception) -> NoReturn:
    """Raise for an answer that could not be read (not a transport failure: a body that does not match
    its ``Content-Encoding``, one too large, …). Never retried: after a POST it is uncertain."""
    problem = f"its answer could not be read ({describe(err)})"
    if not idempotent:
        raise uncertain_create(request, what, problem) from err
    if isinstance(err, httpx.HTTPError):
        raise VideoQueryResponseError(f"{what}: the gateway answered, but {problem}.") from err
    raise err


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


def describe(err: BaseException) -> str:
    """An error for messages: its type, and its text when it has one."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def unreachable(err: httpx.TransportError) -> bool:
    """Whether nothing answered at all: refused, no such host, a proxy that could not connect, or TLS
    spoken to a plain-HTTP port. Timeouts and dropped answers are a gateway that is unwell instead."""
    return isinstance(err, httpx.ConnectError | httpx.ProxyError) and not certificate_refused(err)


def unreachable_message(what: str, url: httpx.URL, err: httpx.TransportError) -> str:
    """What to fix when nothing answers at ``url`` (shown without its query string)."""
    tried = shown_url(str(url))
    return (
        f"{what}: nothing answered at {tried} ({describe(err)}). Check the connection's base URL: "
        "the scheme (http or https), host and port. If this machine reaches the gateway through a "
        'proxy, set HTTPS_PROXY/HTTP_PROXY (or the connection\'s "proxy" extra), and NO_PROXY for '
        "hosts reached directly."
    )


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


def certificate_message(whose: str, err: httpx.TransportError, opt_out: str = "verify_ssl") -> str:
    """The error text when ``certificate_refused(err)``; ``whose`` names the server ("…: the gateway's"),
    ``opt_out`` the extra that switches the check off for it (``verify_download_ssl`` for other hosts)."""
    server = "gateway" if opt_out == "verify_ssl" else "download host"
    return (
        f"{whose} TLS certificate was not accepted ({describe(err)}). Fix the certificate, or, for a "
        f'self-signed {server} you trust, set "{opt_out}": false in the connection\'s extra.'
    )


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number, or an HTTP date from now); None when absent or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


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
