"""An overall deadline for blocking sync HTTP: at its end the sockets in use are shut down.

Read timeouts bound each read, not a whole answer: a server that sends one byte every 0.3 s never trips
a 60 s read timeout and holds a call for as long as it likes. A :class:`SocketDeadline` watches the
socket of every connection a request opens and, when the deadline passes, shuts it down from a timer
thread: the blocked read returns at once and the caller reports :meth:`SocketDeadline.error` instead of
what the dead socket raised. Requests sent under it carry :meth:`SocketDeadline.extensions`: httpx's
``trace`` extension reports new connections of httpx's own transports (which must not keep connections
alive: a reused connection is not reported), :data:`WATCH_SOCKET` is called by the download transport.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any

import httpx

#: ``request.extensions`` key of a ``watch(sock)`` callable a transport calls for each socket it opens.
WATCH_SOCKET = "videoquery.watch_socket"


class SocketDeadline:
    """Shut down the watched sockets at ``ends`` (epoch seconds; None: never). Use it as a context manager
    around the requests it covers; :meth:`move_to` sets another end while it runs."""

    def __init__(self, ends: float | None, why: str) -> None:
        self.ends = ends
        #: Says what the deadline is, in the error: e.g. "the connection's timeout, 60 s for the call".
        self.why = why
        self.expired = False
        #: Whether a request's headers went out (after that, a POST may have been acted on).
        self.sent = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __enter__(self) -> SocketDeadline:
        self._arm()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
            self._sockets.clear()
        if timer is not None:
            timer.cancel()

    def move_to(self, ends: float | None) -> None:
        """End at ``ends`` instead (e.g. once the size of a download is known)."""
        with self._lock:
            self.ends = ends
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._arm()

    def extensions(self) -> dict[str, Callable[..., None]]:
        """What the next request sent under this deadline carries (it has not gone out yet)."""
        self.sent = False
        return {"trace": self._trace, WATCH_SOCKET: self.watch}

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (at once if it has passed)."""
        with self._lock:
            if not self.expired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def error(self) -> httpx.TimeoutException:
        """What a request cut by the deadline failed with: a read timeout once its headers went out (the
        server may have acted on it), a connect timeout before (it surely did not)."""
        kind = httpx.ReadTimeout if self.sent else httpx.ConnectTimeout
        return kind(f"no complete answer before the deadline ({self.why}); the connection was closed")

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self.watch(sock)
        elif event == "http11.send_request_headers.started":
            self.sent = True

    def _arm(self) -> None:
        if self.ends is None:
            return
        timer = threading.Timer(max(self.ends - time.time(), 0.0), self._expire)
        timer.daemon = True
        with self._lock:
            self._timer = timer
        timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End every blocked read on ``sock`` at once (the plain ``socket`` method: never the TLS layer's,
    which another thread may be inside); its owner still closes it."""
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
