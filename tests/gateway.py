"""A scripted gateway on 127.0.0.1 for answers the emulator does not give: a body that does not match its
``Content-Encoding``, a gzip bomb, a server that trickles one byte at a time, an error page echoing the
key. Each request is answered by the test's own function; every request is recorded."""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: How a test answers one request: the handler (write status, headers, body with it).
Answer = Callable[["Handler"], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedGateway:
    url: str
    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        """How many requests came (of ``method``, on paths starting with ``path_prefix``)."""
        return sum(
            1 for s in self.seen if (method is None or s.method == method) and s.path.startswith(path_prefix)
        )


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gateway: ScriptedGateway

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.gateway.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        self.gateway.answer(self)

    do_GET = do_POST = _any

    def log_message(self, *args: object) -> None:
        pass

    # -- answers ------------------------------------------------------------------------------------

    def send(self, status: int, body: bytes | str, headers: dict[str, str] | None = None) -> None:
        """One whole answer."""
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def trickle(self, raw: bytes, interval: float) -> None:
        """``raw`` (status line, headers and body as written on the wire) one byte every ``interval``
        seconds, until the client hangs up or the server stops."""
        self.close_connection = True
        for byte in raw:
            if self.gateway.stopping.is_set():
                return
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:
                return
            time.sleep(interval)

    def gzip_bomb(self, decompressed_bytes: int) -> None:
        """A 200 whose gzip body inflates to ``decompressed_bytes`` of JSON-looking text."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
        block = b'{"id": "' + b"a" * (1024 * 1024) + b'"'
        sent = 0
        try:
            while sent < decompressed_bytes and not self.gateway.stopping.is_set():
                self._chunk(packer.compress(block))
                sent += len(block)
            self._chunk(packer.flush())
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def wire(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """An HTTP/1.1 answer as written on the wire (for :meth:`Handler.trickle`)."""
    fields = {"Content-Type": "application/json", **(headers or {}), "Content-Length": str(len(body))}
    lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


@contextmanager
def scripted_gateway(answer: Answer) -> Iterator[ScriptedGateway]:
    """A gateway on a free port of 127.0.0.1 answering every request with ``answer``."""
    gateway = ScriptedGateway(url="", answer=answer)
    handler = type("BoundHandler", (Handler,), {"gateway": gateway})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    gateway.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        gateway.stopping.set()
        server.shutdown()
        server.server_close()
