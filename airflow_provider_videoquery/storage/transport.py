"""The HTTP client of downloads: httpx for the requests, ``http.client`` underneath for the bytes.

httpx's own sync transport reads the socket 64 KiB at a time and allocates every chunk; on a fast link
that costs more CPU than the sha256 of the file. :class:`BlockTransport` sends each request over a
fresh ``http.client`` connection and exposes, next to the usual stream, a ``readinto`` that fills the
caller's reused buffer straight from the socket. Everything else — redirects handled by the caller,
headers, event hooks, timeouts, TLS verification — stays httpx's, so tests can still swap the
transport (``httpx.MockTransport``) and the download code has one path.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

import httpx

from airflow_provider_videoquery.hooks._deadline import WATCH_SOCKET
from airflow_provider_videoquery.hooks._http import USER_AGENT, ClientKey, proxy_for, tls_context

#: ``response.extensions`` key of the body's ``readinto(buffer) -> int`` (0 at the end of the body).
READINTO = "videoquery.readinto"
Readinto = Callable[[memoryview], int]

_ITER_BYTES = 64 * 1024


def download_client(
    verify_ssl: bool,
    timeout: httpx.Timeout,
    *,
    gateway: str | None = None,
    gateway_verify_ssl: bool = True,
    proxy: str | None = None,
) -> httpx.Client:
    """A client for downloads: no automatic redirects (each hop is checked) and no compression.

    TLS is checked per origin: ``gateway_verify_ssl`` applies to the ``gateway``'s own origin only,
    ``verify_ssl`` to every other host (a CDN). Each request goes through the proxy
    :func:`~airflow_provider_videoquery.hooks._http.proxy_for` names (``proxy`` first, then the
    environment); direct requests use :class:`BlockTransport`, proxied ones httpx's own transport.
    """
    gateway_origin = _origin(httpx.URL(gateway)) if gateway else None
    # One choice per origin for the client's life (the proxy rules read the environment: not per file).
    chosen: dict[tuple[str, str, int | None], ClientKey] = {}

    def choose(url: httpx.URL) -> ClientKey:
        origin = _origin(url)
        key = chosen.get(origin)
        if key is None:
            verify = gateway_verify_ssl if origin == gateway_origin else verify_ssl
            key = chosen[origin] = ClientKey(verify, proxy_for(url, proxy))
        return key

    return httpx.Client(
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        transport=RoutedTransport(choose),
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host.lower(), url.port or {"http": 80, "https": 443}.get(url.scheme)


class RoutedTransport(httpx.BaseTransport):
    """Sends each request over the transport its URL needs (TLS setting, proxy), made once per kind."""

    def __init__(self, choose: Callable[[httpx.URL], ClientKey]) -> None:
        self._choose = choose
        self._transports: dict[ClientKey, httpx.BaseTransport] = {}
        self._lock = threading.Lock()  # threads share a client: one transport (and pool) per kind

    def transport_for(self, url: httpx.URL) -> httpx.BaseTransport:
        """The transport a request to ``url`` goes over: blocks read straight from the socket when
        direct, httpx's own transport through a proxy."""
        key = self._choose(url)
        with self._lock:
            transport = self._transports.get(key)
            if transport is None:
                verify, proxy = key
                transport = _proxied(verify, proxy) if proxy else BlockTransport(verify)
                self._transports[key] = transport
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.transport_for(request.url).handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = self._transports, {}
        for transport in transports.values():
            transport.close()


def _proxied(verify: bool, proxy: str) -> httpx.HTTPTransport:
    """httpx's own transport through ``proxy``, without keep-alive: a request's deadline watches the
    socket of each connection it opens (:mod:`..hooks._deadline`), and a reused one would go unwatched."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.HTTPTransport(verify=tls_context(verify), proxy=proxy, limits=limits)


class BlockTransport(httpx.BaseTransport):
    """HTTP/1.1 over ``http.client`` connections kept alive per origin (scheme, host, port).

    A connection goes back to its origin's idle pool only once its answer was read to the end and the
    server did not ask to close it; an error page read in part, a failed or cut transfer close it. A
    kept connection is reused only if it is still quiet (a server that closed it has made it readable)
    and younger than :data:`IDLE_SECONDS`; a request on a kept connection that the server closed meanwhile
    is sent once more on a fresh one. Every request's socket, fresh or reused, is handed to the
    caller's deadline (:data:`~..hooks._deadline.WATCH_SOCKET`). Safe to share between threads.
    """

    def __init__(self, verify_ssl: bool = True) -> None:
        self._verify_ssl = verify_ssl
        self._tls: ssl.SSLContext | None = None
        self._idle: dict[tuple[str, str, int], list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()

    def tls_context(self) -> ssl.SSLContext:
        """Made at the first https request: loading the CA bundle costs ~50 ms (up to a second on a
        busy machine) that a plain-http download (a local gateway, a proxy-less LAN) never needs."""
        if self._tls is None:
            self._tls = tls_context(self._verify_ssl)
        return self._tls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{url.scheme}://'.")
        # An explicit port always: http.client reads a bare IPv6 literal ("::1") as host ":" port 1.
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        kept = self._take(origin)
        if kept is not None:
            try:
                return self._exchange(kept, origin, request)
            except _Stale:
                pass  # the server closed it while it was idle: once more on a fresh connection
        return self._exchange(self._connect(origin, request), origin, request)

    def _connect(self, origin: tuple[str, str, int], request: httpx.Request) -> http.client.HTTPConnection:
        scheme, host, port = origin
        timeout = request.extensions.get("timeout", {}).get("connect")
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self.tls_context())
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.connect()
        except OSError as err:
            connection.close()
            _raise(err, httpx.ConnectTimeout, httpx.ConnectError)
        return connection

    def _exchange(
        self, connection: http.client.HTTPConnection, origin: tuple[str, str, int], request: httpx.Request
    ) -> httpx.Response:
        """Send ``request`` on ``connection`` and return the answer, its body still to read."""
        reused = connection.sock is not None and getattr(connection, _REUSED, False)
        try:
            assert connection.sock is not None
            watch = request.extensions.get(WATCH_SOCKET)
            if watch is not None:  # the caller's overall deadline shuts it down when it passes
                watch(connection.sock)
            connection.sock.settimeout(request.extensions.get("timeout", {}).get("read"))
            try:
                connection.putrequest(
                    request.method,
                    request.url.raw_path.decode("ascii"),
                    skip_host=True,
                    skip_accept_encoding=True,
                )
                for name, value in request.headers.raw:
                    connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
                connection.endheaders(request.read() or None)
                answer = connection.getresponse()
            except _CLOSED_WHILE_IDLE as err:
                if reused:
                    raise _Stale from err
                _raise(err, httpx.ReadTimeout, httpx.ReadError)
            except (OSError, http.client.HTTPException) as err:
                _raise(err, httpx.ReadTimeout, httpx.ReadError)
        except BaseException:
            connection.close()
            raise
        body = _Body(connection, answer, lambda: self._keep(origin, connection))
        return httpx.Response(
            answer.status,
            headers=answer.getheaders(),
            stream=body,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": answer.reason.encode("latin-1", "replace"),
                READINTO: body.readinto,
            },
        )

    def _take(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        """A kept connection to ``origin`` that is still usable, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                if not idle:
                    return None
                since, connection = idle.pop()
            sock = connection.sock
            if sock is not None and time.monotonic() - since < IDLE_SECONDS and _quiet(sock):
                return connection
            connection.close()

    def _keep(self, origin: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        """Put a connection whose answer was read whole back into its origin's idle pool."""
        setattr(connection, _REUSED, True)
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append((time.monotonic(), connection))
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            kept, self._idle = self._idle, {}
        for idle in kept.values():
            for _, connection in idle:
                connection.close()


#: Seconds a kept connection may idle before it is closed instead of reused (servers close idle ones
#: after 15-75 s; a reused one the server closed meanwhile costs a second try).
IDLE_SECONDS = 30.0
#: Idle connections kept per origin (more than a batch's parallel downloads need).
MAX_IDLE_PER_ORIGIN = 16
#: Marks a connection that was kept: a failure to send on it may just be the server's idle timeout.
_REUSED = "_videoquery_reused"
#: What sending on a connection the server closed while it idled raises (before any answer came).
_CLOSED_WHILE_IDLE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class _Stale(Exception):
    """A kept connection turned out closed by the server: the request goes on a fresh one."""


def _quiet(sock: socket.socket) -> bool:
    """Whether an idle connection has nothing to read: a server that closed it made it readable."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class _Body(httpx.SyncByteStream):
    """A response body read from its connection. Closed after the body was read to its end (and the
    server keeps the connection open), the connection goes back to ``keep``; otherwise it is closed."""

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        answer: http.client.HTTPResponse,
        keep: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._answer = answer
        self._keep = keep

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` (short only at the end of the body); httpx errors on failure."""
        try:
            return self._answer.readinto(buffer)
        except (OSError, http.client.HTTPException) as err:
            _raise(err, httpx.ReadTimeout, httpx.ReadError)

    def __iter__(self) -> Iterator[bytes]:
        buffer = memoryview(bytearray(_ITER_BYTES))
        while count := self.readinto(buffer):
            yield bytes(buffer[:count])

    def close(self) -> None:
        answer, connection = self._answer, self._connection
        whole = answer.isclosed() and not answer.will_close  # read to its end, and kept open
        answer.close()
        if whole and connection.sock is not None:
            self._keep()
        else:
            connection.close()


def _raise(
    err: BaseException, on_timeout: type[httpx.TransportError], other: type[httpx.TransportError]
) -> NoReturn:
    """Re-raise an ``http.client``/socket error as the httpx error the download code handles."""
    if isinstance(err, (socket.timeout, TimeoutError)):
        raise on_timeout(str(err) or "timed out") from err
    if isinstance(err, http.client.HTTPException):  # a truncated chunk, a malformed status line, …
        raise httpx.RemoteProtocolError(f"{type(err).__name__}: {err}".rstrip(": ")) from err
    raise other(str(err) or type(err).__name__) from err
