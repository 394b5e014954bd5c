"""The deadlines of sync HTTP share one watchdog thread: none is started per call, a disarmed or moved
deadline never fires its old end, and an expired one shuts its sockets down (a blocked read returns)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from airflow_provider_videoquery.hooks import _deadline
from airflow_provider_videoquery.hooks._deadline import SocketDeadline

pytestmark = pytest.mark.timeout(30)


def _watchdog_threads() -> int:
    return sum(t.name == "videoquery-deadlines" for t in threading.enumerate())


def test_many_deadlines_one_thread_and_a_disarmed_one_never_fires() -> None:
    left, right = socket.socketpair()
    try:
        for _ in range(200):  # a batch's worth of calls, each under its own deadline
            with SocketDeadline(time.time() + 0.05, "test") as deadline:
                deadline.watch(left)
        assert _watchdog_threads() == 1
        time.sleep(0.3)  # every old end has passed: none may shut the socket they watched
        right.sendall(b"still open")
        assert left.recv(32) == b"still open"
        assert not deadline.expired
    finally:
        left.close()
        right.close()


def test_an_expired_deadline_ends_a_blocked_read_and_a_moved_one_its_new_end() -> None:
    left, right = socket.socketpair()
    try:
        started = time.monotonic()
        with SocketDeadline(time.time() + 0.1, "test") as deadline:
            deadline.move_to(time.time() + 0.4)  # the old end (0.1 s) is stale now
            deadline.watch(left)
            assert left.recv(32) == b""  # blocked until the watchdog shut the socket down
        waited = time.monotonic() - started
        assert deadline.expired
        assert waited >= 0.35  # not at the stale 0.1 s; the upper bound is pytest's timeout
    finally:
        left.close()
        right.close()


def test_stale_entries_do_not_pile_up() -> None:
    for _ in range(2 * _deadline._COMPACT_AFTER + 10):
        with SocketDeadline(time.time() + 3600, "test"):
            pass
    assert len(_deadline._watchdog()._heap) <= _deadline._COMPACT_AFTER + 10
