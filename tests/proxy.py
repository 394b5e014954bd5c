"""A small recording forward proxy on 127.0.0.1 for tests: absolute-form requests and CONNECT tunnels.

Every request that passes through is recorded as ``(method, target)`` — ``("GET",
"http://127.0.0.1:5555/v1/video/query?id=…")`` for a plain-HTTP request, ``("CONNECT",
"127.0.0.1:5555")`` for a tunnel (TLS inside it is opaque, as in a real proxy).
"""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024


class RecordingProxy:
    """The running proxy (see :func:`run_proxy`)."""

    def __init__(self, server: socketserver.ThreadingTCPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._seen: list[tuple[str, str]] = []
        #: The ``Proxy-Authorization`` of each request ("" when none), in order.
        self.auths: list[str] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def seen(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._seen)

    def record(self, method: str, target: str) -> None:
        with self._lock:
            self._seen.append((method, target))

    def targets(self, method: str | None = None) -> list[str]:
        return [target for m, target in self.seen if method is None or m == method]


def _read_head(sock: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes] | None:
    """One request head (up to the blank line) and whatever followed it; None at EOF."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
        if len(data) > _HEAD_LIMIT:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], 30)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


def _relay_response(upstream: socket.socket, client: socket.socket) -> None:
    """Copy the upstream's answer (it closes after it: we asked for ``Connection: close``)."""
    while data := upstream.recv(65536):
        client.sendall(data)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client: socket.socket = self.request
        pending = b""
        while True:  # one client connection may carry several requests (keep-alive)
            read = _read_head(client, pending)
            if read is None:
                return
            head, pending = read
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ", 2)
            self.server.proxy.record(method, target)
            self.server.proxy.auths.append(
                next((line.split(":", 1)[1].strip() for line in header_lines
                      if line.lower().startswith("proxy-authorization:")), "")
            )  # fmt: skip
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as upstream:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    if pending:
                        upstream.sendall(pending)
                    _pipe(client, upstream)
                return
            parts = urlsplit(target)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = [
                line
                for line in header_lines
                if not line.lower().startswith(("proxy-", "connection:", "keep-alive:"))
            ]
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in headers
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            while len(pending) < length:
                pending += client.recv(65536)
            body, pending = pending[:length], pending[length:]
            outgoing = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""])
            port = parts.port or (443 if parts.scheme == "https" else 80)
            with socket.create_connection((parts.hostname or "", port), timeout=30) as upstream:
                upstream.sendall(outgoing.encode("latin-1") + body)
                _relay_response(upstream, client)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: RecordingProxy


@contextlib.contextmanager
def run_proxy() -> Iterator[RecordingProxy]:
    """A recording forward proxy on a free port of 127.0.0.1 for the ``with`` block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.proxy = RecordingProxy(server)
    thread = threading.Thread(target=server.serve_forever, name="recording-proxy", daemon=True)
    thread.start()
    try:
        yield server.proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
