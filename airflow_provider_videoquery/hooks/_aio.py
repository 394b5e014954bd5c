"""The triggerer's HTTP: the hook's requests sent straight over one ``aiohttp`` session.

The plans in :mod:`._http` speak httpx (a request to send, an answer to read). On workers httpx sends
them itself. In the triggerer thousands of waits share one event loop and every layer a poll passes is
paid thousands of times a minute: an ``httpx.AsyncClient`` over the httpx-aiohttp transport cost more
CPU per poll than aiohttp's own request (cookies extracted, auth and redirect machinery, a response
wrapped twice). :class:`AsyncSender` sends the plan's ``httpx.Request`` over its session and hands back
an ``httpx.Response`` whose body was read (and decompressed) under the answer cap, or the httpx error
the plans know for what failed, named honestly: refused, unknown host, proxy, certificate, timeout, a
dropped or undecodable answer.
"""

from __future__ import annotations

import asyncio
import functools

import aiohttp
import httpx
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from yarl import URL

from airflow_provider_videoquery.hooks._http import AnswerBody, ClientKey, Outcome, tls_context

#: Idle connections are closed after this many seconds (httpx's default keep-alive expiry).
KEEPALIVE_SECONDS = 5.0


class AsyncSender:
    """One ``aiohttp`` session for a :class:`ClientKey` (TLS setting, proxy) on the running loop.

    Made on the loop it serves (the shared clients of :mod:`.videoquery` hold one per loop and key);
    the connection pool, the TLS context and the proxy are fixed for its life.
    """

    def __init__(self, key: ClientKey, max_connections: int) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()
        tls = tls_context(key.verify_ssl)  # the CA bundle as httpx loads it, as on workers
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_SECONDS, ssl=tls)
        # No cookie jar: a gateway's cookies are not sent back (nor were they by the httpx client).
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        # The proxy URL keeps its credentials: aiohttp sends them as Proxy-Authorization.
        self._proxy = URL(key.proxy) if key.proxy else None

    @property
    def is_closed(self) -> bool:
        return self._session.closed

    async def send(self, request: httpx.Request, max_answer_bytes: int) -> Outcome:
        """Send ``request``; the answer with its body read under ``max_answer_bytes`` (decompressed),
        or what failed (an httpx error; anything else as it was raised)."""
        body = AnswerBody(max_answer_bytes)
        content = request.content or None
        try:
            response = await self._session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=content,
                allow_redirects=False,
                timeout=_timeout(**request.extensions.get("timeout", {})),
                proxy=self._proxy,
            )
        except Exception as err:
            return _httpx_error(err)
        try:
            async for block in response.content.iter_any():
                body.add(block)
        except Exception as err:
            response.close()  # a half-read answer: the connection is not reused
            return _httpx_error(err)
        response.release()
        headers = [(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"]
        return body.answer(response.status, headers, request)

    async def aclose(self) -> None:
        """Close the session. A session whose loop has already ended cannot close its connections
        there: it is only marked closed (detached), so nothing uses it again."""
        try:
            await self._session.close()
        except RuntimeError:  # "Event loop is closed"
            self._session.detach()


@functools.cache
def _timeout(
    connect: float | None = None,
    read: float | None = None,
    write: float | None = None,
    pool: float | None = None,
) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms (one object per set of values): a socket's connect and each
    read, and ``pool`` for taking a connection (connecting included)."""
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)


def _undecodable(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says the body does not decode by its Content-Encoding."""
    seen: BaseException | None = err
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ContentEncodingError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _httpx_error(err: Exception) -> Exception:
    """The httpx error an aiohttp failure really is (the plans decide what each means); others as is."""
    mapped: type[httpx.HTTPError] | None = None
    if isinstance(err, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        mapped = httpx.ProxyError
    elif isinstance(err, aiohttp.ConnectionTimeoutError):
        mapped = httpx.ConnectTimeout
    elif isinstance(err, aiohttp.ClientConnectorError):  # refused, unknown host, TLS (certificate …)
        mapped = httpx.ConnectError
    elif isinstance(err, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        mapped = httpx.ReadTimeout
    elif isinstance(err, aiohttp.ServerDisconnectedError):
        mapped = httpx.RemoteProtocolError
    elif isinstance(err, aiohttp.ClientPayloadError | HttpProcessingError):
        # A body that does not match its Content-Encoding is unreadable; a cut one is transient.
        mapped = httpx.DecodingError if _undecodable(err) else httpx.RemoteProtocolError
    elif isinstance(err, aiohttp.ClientResponseError):  # a malformed status line or headers
        mapped = httpx.RemoteProtocolError
    elif isinstance(err, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        mapped = httpx.UnsupportedProtocol
    elif isinstance(err, aiohttp.ClientError | OSError):  # reset, broken pipe, closed mid-answer
        mapped = httpx.ReadError
    if mapped is None:
        return err
    honest = mapped(" ".join(str(err).split()) or type(err).__name__)  # aiohttp's texts span lines
    honest.__cause__ = err
    return honest


__all__ = ["AsyncSender"]
