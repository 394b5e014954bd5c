"""Peak RSS and CPU time of running components, sampled from a background thread.

A component is a process and all its descendants (a Celery worker's pool and task processes, a
triggerer's trigger runner), summed: that is what the component costs the machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psutil


@dataclass
class Usage:
    """One component's peak resident memory and the CPU seconds it used, since the last reset."""

    peak_rss: int = 0
    #: PID → (CPU seconds when the window began or the process appeared, CPU seconds now).
    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def cpu_seconds(self) -> float:
        return sum(last - first for first, last in self.cpu.values())


def _tree(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of ``pid`` and its descendants; (0, 0) once it is gone."""
    rss, cpu = 0, 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            times = proc.cpu_times()  # its own time and that of the children it has reaped
            cpu += times.user + times.system + times.children_user + times.children_system
    return rss, cpu


@dataclass
class ResourceMonitor:
    """Samples ``pids()`` (component name → PID) every ``interval`` seconds until stopped."""

    pids: Callable[[], Mapping[str, int]]
    interval: float = 1.0
    usage: dict[str, Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _baseline: bool = True
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="resource-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def reset(self) -> None:
        """Start a new measurement window (peaks and CPU from now on)."""
        with self._lock:
            self.usage = {}
            self._baseline = True
        self.sample()

    def snapshot(self) -> dict[str, Usage]:
        self.sample()
        with self._lock:
            return {name: Usage(u.peak_rss, dict(u.cpu)) for name, u in self.usage.items()}

    def sample(self) -> None:
        with self._lock:
            baseline, self._baseline = self._baseline, False
            for name, pid in dict(self.pids()).items():
                rss, cpu = _tree(pid)
                usage = self.usage.setdefault(name, Usage())
                usage.peak_rss = max(usage.peak_rss, rss)
                # A process that appears during the window (a restart) counts from its own start.
                first, last = usage.cpu.get(pid, (cpu if baseline else 0.0, 0.0))
                usage.cpu[pid] = (first, max(cpu, last, first))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()
