"""An overall deadline for blocking sync HTTP: at its end the sockets in use are shut down.

Read timeouts bound each read, not a whole answer: a server that sends one byte every 0.3 s never trips
a 60 s read timeout and holds a call for as long as it likes. A :class:`SocketDeadline` watches the
socket of every connection a request opens and, when the deadline passes, shuts it down from the
process's one watchdog thread (:class:`_Watchdog`; a thread started per call cost a batch of small
downloads more than its fsyncs): the blocked read returns at once and the caller reports
:meth:`SocketDeadline.error` instead of what the dead socket raised. Requests sent under it carry
:meth:`SocketDeadline.extensions`: httpx's ``trace`` extension reports new connections of httpx's own
transports (which must not keep connections alive: a reused connection is not reported),
:data:`WATCH_SOCKET` is called by the download transport for every request, on a new connection or a
reused one.
"""

from __future__ import annotations

import heapq
import itertools
import os
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
        #: Which arming of this deadline the watchdog may fire (any other entry of it is stale).
        self._armed = 0

    def __enter__(self) -> SocketDeadline:
        self._arm()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._armed += 1  # disarmed: the watchdog's entry no longer fires
            self._sockets.clear()
        _watchdog().forget()

    def move_to(self, ends: float | None) -> None:
        """End at ``ends`` instead (e.g. once the size of a download is known)."""
        with self._lock:
            self.ends = ends
            self._armed += 1
        _watchdog().forget()
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
        with self._lock:
            self._armed += 1
            armed = self._armed
        _watchdog().arm(self.ends, self, armed)

    def _expire(self, armed: int) -> None:
        """The watchdog's call at ``ends``: shut the sockets down, unless disarmed or moved since."""
        with self._lock:
            if armed != self._armed:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)


class _Watchdog:
    """The one thread that expires every :class:`SocketDeadline` of the process, earliest first.

    Entries of disarmed deadlines stay in the heap until due (they are skipped then) unless they pile
    up: past :data:`_COMPACT_AFTER` of them, more than half the heap, the heap is rebuilt without them.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, SocketDeadline, int]] = []
        self._order = itertools.count()
        self._stale = 0
        self._thread: threading.Thread | None = None

    def arm(self, ends: float, deadline: SocketDeadline, armed: int) -> None:
        with self._wake:
            heapq.heappush(self._heap, (ends, next(self._order), deadline, armed))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="videoquery-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline and self._heap[0][3] == armed:
                self._wake.notify()  # only an earlier end than the one it sleeps until wakes it

    def forget(self) -> None:
        """One entry went stale (its deadline was disarmed or moved)."""
        with self._wake:
            self._stale += 1
            if self._stale > _COMPACT_AFTER and self._stale * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2]._armed == entry[3]]
                heapq.heapify(self._heap)
                self._stale = 0

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.time():
                    self._wake.wait(self._heap[0][0] - time.time() if self._heap else None)
                _, _, deadline, armed = heapq.heappop(self._heap)
            deadline._expire(armed)


#: Stale entries the watchdog keeps before it considers compacting its heap.
_COMPACT_AFTER = 256
_the_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()


def _watchdog() -> _Watchdog:
    global _the_watchdog
    with _watchdog_lock:
        if _the_watchdog is None:
            _the_watchdog = _Watchdog()
        return _the_watchdog


def _forget_watchdog() -> None:
    """A forked child has none of the parent's threads: it starts its own watchdog when it needs one."""
    global _the_watchdog, _watchdog_lock
    _the_watchdog, _watchdog_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_watchdog)


def _shut(sock: socket.socket) -> None:
    """End every blocked read on ``sock`` at once (the plain ``socket`` method: never the TLS layer's,
    which another thread may be inside); its owner still closes it."""
    with suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
