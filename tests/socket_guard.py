"""A socket guard for tests: nothing leaves this machine, and what tried to is recorded.

A connect to anything but loopback, and a DNS lookup of anything but ``localhost`` or a numeric
address, is stopped before a packet is sent. Names in :attr:`SocketGuard.names` are answered from
that table, so code that resolves names sees made-up answers without asking DNS.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import pytest


class OffMachine(Exception):
    """Raised by the guard instead of letting a packet leave this machine."""


@dataclass
class SocketGuard:
    #: Name → address answered instead of DNS.
    names: dict[str, str] = field(default_factory=dict)
    #: Non-loopback addresses something tried to connect to (stopped).
    connects: list[Any] = field(default_factory=list)
    #: Names something tried to look up in DNS (stopped).
    lookups: list[str] = field(default_factory=list)


def guard_sockets(monkeypatch: pytest.MonkeyPatch) -> SocketGuard:
    """No packet leaves the machine: non-loopback connects and DNS lookups are stopped and recorded."""
    state = SocketGuard()
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name in state.names:
            address = ipaddress.ip_address(state.names[name])
            af = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sockaddr = (str(address), port or 0, 0, 0) if address.version == 6 else (str(address), port or 0)
            return [(af, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        if name is None or name == "localhost":
            return real_getaddrinfo(host, port, family, type, proto, flags)
        try:  # a numeric address in any spelling: converted here, no lookup
            return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            state.lookups.append(name)
            raise socket.gaierror(socket.EAI_NONAME, "the test's socket guard allows no DNS lookup") from None

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
            if not ip.is_loopback:
                state.connects.append(address[:2])
                raise OffMachine(f"a connect to {address[:2]} would leave this machine")

    def connect(sock: socket.socket, address: Any) -> None:
        check(address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return state
