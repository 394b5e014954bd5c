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
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import NoReturn

import httpx

from airflow_provider_videoquery.hooks._deadline import WATCH_SOCKET
from airflow_provider_videoquery.hooks._http import USER_AGENT, ClientKey, proxy_for

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

    def choose(url: httpx.URL) -> ClientKey:
        verify = gateway_verify_ssl if _origin(url) == gateway_origin else verify_ssl
        return ClientKey(verify, proxy_for(url, proxy))

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

    def transport_for(self, url: httpx.URL) -> httpx.BaseTransport:
        """The transport a request to ``url`` goes over: blocks read straight from the socket when
        direct, httpx's own transport through a proxy."""
        key = self._choose(url)
        transport = self._transports.get(key)
        if transport is None:
            verify, proxy = key
            transport = _proxied(verify, proxy) if proxy else BlockTransport(verify)
            self._transports[key] = transport
        return transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.transport_for(request.url).handle_request(request)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()


def _proxied(verify: bool, proxy: str) -> httpx.HTTPTransport:
    """httpx's own transport through ``proxy``, without keep-alive: a request's deadline watches the
    socket of each connection it opens (:mod:`..hooks._deadline`), and a reused one would go unwatched."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.HTTPTransport(verify=verify, proxy=proxy, limits=limits)


class BlockTransport(httpx.BaseTransport):
    """HTTP/1.1 over one ``http.client`` connection per request, closed with its response."""

    def __init__(self, verify_ssl: bool = True) -> None:
        self._verify_ssl = verify_ssl
        self._tls: ssl.SSLContext | None = None

    def tls_context(self) -> ssl.SSLContext:
        """Made at the first https request: loading the CA bundle costs ~50 ms (up to a second on a
        busy machine) that a plain-http download (a local gateway, a proxy-less LAN) never needs."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context(verify=self._verify_ssl)
        return self._tls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url, timeouts = request.url, request.extensions.get("timeout", {})
        # An explicit port always: http.client reads a bare IPv6 literal ("::1") as host ":" port 1.
        port = url.port or (443 if url.scheme == "https" else 80)
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            connection = http.client.HTTPSConnection(
                url.host, port, timeout=timeouts.get("connect"), context=self.tls_context()
            )
        elif url.scheme == "http":
            connection = http.client.HTTPConnection(url.host, port, timeout=timeouts.get("connect"))
        else:
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{url.scheme}://'.")
        try:
            try:
                connection.connect()
            except OSError as err:
                _raise(err, httpx.ConnectTimeout, httpx.ConnectError)
            assert connection.sock is not None
            watch = request.extensions.get(WATCH_SOCKET)
            if watch is not None:  # the caller's overall deadline shuts it down when it passes
                watch(connection.sock)
            connection.sock.settimeout(timeouts.get("read"))
            try:
                connection.putrequest(
                    request.method, url.raw_path.decode("ascii"), skip_host=True, skip_accept_encoding=True
                )
                for name, value in request.headers.raw:
                    connection.putheader(name.decode("latin-1"), value.decode("latin-1"))
                connection.endheaders(request.read() or None)
                answer = connection.getresponse()
            except (OSError, http.client.HTTPException) as err:
                _raise(err, httpx.ReadTimeout, httpx.ReadError)
        except BaseException:
            connection.close()
            raise
        body = _Body(connection, answer)
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


class _Body(httpx.SyncByteStream):
    """A response body read from its connection; closing it closes the connection."""

    def __init__(self, connection: http.client.HTTPConnection, answer: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._answer = answer

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
        self._answer.close()
        self._connection.close()


def _raise(
    err: BaseException, on_timeout: type[httpx.TransportError], other: type[httpx.TransportError]
) -> NoReturn:
    """Re-raise an ``http.client``/socket error as the httpx error the download code handles."""
    if isinstance(err, (socket.timeout, TimeoutError)):
        raise on_timeout(str(err) or "timed out") from err
    if isinstance(err, http.client.HTTPException):  # a truncated chunk, a malformed status line, …
        raise httpx.RemoteProtocolError(f"{type(err).__name__}: {err}".rstrip(": ")) from err
    raise other(str(err) or type(err).__name__) from err
