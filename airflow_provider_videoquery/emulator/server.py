"""Run the emulator in a background thread (tests) or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import ssl
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from . import media
from .app import create_app, reported_video_url
from .limits import CreateCounts, Limits
from .scenarios import DEFAULT_SCENARIO, Fault, Scenario
from .state import EmulatorState, RequestRecord, Task

BACKLOG = 4096


def raise_fd_limit() -> None:
    """Best effort: lift the soft open-files limit to the hard one (10k keep-alive connections)."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def start_site(
    state: EmulatorState,
    host: str,
    port: int,
    access_log: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[web.AppRunner, int]:
    """Set up and start the app on host:port (0 = free port), over TLS when ``ssl_context`` is given;
    returns the runner and the bound port."""
    kwargs: dict[str, Any] = {} if access_log else {"access_log": None}
    runner = web.AppRunner(create_app(state), shutdown_timeout=0.25, keepalive_timeout=75.0, **kwargs)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=BACKLOG, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    bound = runner.addresses[0][1]
    return runner, int(bound)


def _finish_pending(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs at stop (e.g. a handler holding a late answer) and let it unwind."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


class Emulator:
    """A running emulator (see `run_emulator`). All methods are thread-safe."""

    def __init__(
        self,
        state: EmulatorState,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Emulator:
        raise_fd_limit()
        name = f"videoquery-emulator-{id(self):x}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("emulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"emulator failed to start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            _finish_pending(loop)
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        runner, self.port = await start_site(self.state, self.host, self.port, ssl_context=self.ssl_context)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- info --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (``https://`` when serving TLS)."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def api_key(self) -> str | None:
        return self.state.api_key

    # ---- tasks, faults, default ----------------------------------------------------------------
    def add_task(
        self, task_id: str, scenario: Scenario | None = None, *, model: str | None = None, **body: Any
    ) -> None:
        """Register a task the emulator then answers for (scenario None = the default scenario).
        The family comes from ``scenario.family``, else ``model``, else the id's ``family:`` prefix."""
        self.state.add_task(task_id, scenario, model=model, body=body)

    def add_fault(self, fault: Fault) -> None:
        self.state.add_fault(fault)

    def set_default(self, scenario: Scenario) -> None:
        """Scenario for tasks created through the create routes from now on."""
        self.state.default = scenario

    def set_limits(self, limits: Limits) -> None:
        """Per-API-key create limits from now on (live-task cap, create rate, ``Retry-After``)."""
        self.state.limits = limits

    @property
    def limits(self) -> Limits:
        return self.state.limits

    def answer_creates_late(self, delay: float, times: int | None = None) -> None:
        """Creates make their task at once but answer only after ``delay`` seconds (the next
        ``times`` creates; None = all): a POST the gateway took whose answer the client never reads."""
        self.state.add_fault(Fault("late_answer", route="creates", delay=delay, times=times))

    def creates(self, api_key: str | None = None) -> CreateCounts:
        """Creates accepted and refused (429 by the limits) and tasks still live: for one API key
        (``""`` = requests without a key), or summed over every key (None)."""
        return self.state.create_counts(api_key, every_key=api_key is None)

    def reset(self) -> None:
        """Forget all tasks, faults, recorded requests and create counts (default scenario and limits
        stay)."""
        self.state.reset()

    def task(self, task_id: str) -> Task | None:
        return self.state.get_task(task_id)

    def polls(self, task_id: str) -> int:
        """Status queries answered with a state for this task (0 if unknown)."""
        task = self.state.get_task(task_id)
        return 0 if task is None else task.polls

    def video_url_for(self, task_id: str) -> str:
        """The video URL the task reports on success."""
        task = self.state.get_task(task_id)
        if task is None:
            raise KeyError(task_id)
        return reported_video_url(self.url, f"{self.host}:{self.port}", task)

    def expected_video(self, task_id: str) -> bytes:
        """The exact bytes a full download of the task's video yields (small sizes only)."""
        task = self.state.get_task(task_id)
        if task is None:
            raise KeyError(task_id)
        return media.video_bytes(task.scenario.video_size)

    # ---- request log ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[RequestRecord]:
        """Recorded requests, oldest first (admin routes are not recorded)."""
        return self.state.records()

    def count(self, route: str | None = None, task_id: str | None = None, status: int | None = None) -> int:
        """How many recorded requests match (route names: see `scenarios.ROUTES`)."""
        return self.state.count(route, task_id, status)


@contextlib.contextmanager
def run_emulator(
    api_key: str | None = "test-key",
    default: Scenario = DEFAULT_SCENARIO,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    limits: Limits | None = None,
) -> Iterator[Emulator]:
    """Run an emulator on ``host:port`` (0 = a free port) in a background thread for the ``with``
    block. ``api_key=None`` disables the auth check; ``ssl_context`` serves HTTPS (e.g. a self-signed
    certificate, to test TLS verification); ``limits`` caps each key's creates (see `Limits`)."""
    state = EmulatorState(api_key=api_key, default=default, seed=seed)
    if limits is not None:
        state.limits = limits
    emulator = Emulator(state, host, port, ssl_context=ssl_context)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
