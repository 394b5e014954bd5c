"""``python -m benchmarks._moto``: moto's S3 server on a free port of 127.0.0.1 until SIGTERM / Ctrl-C.

Prints its URL on the first stdout line, like the emulator, so the benchmarks run it the same way.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from benchmarks._common import HOST, raise_fd_limit


def main() -> int:
    from moto.server import ThreadedMotoServer

    raise_fd_limit()
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    try:
        print(f"http://{HOST}:{port}", flush=True)
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
