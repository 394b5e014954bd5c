"""Many tasks re-read at once on a worker: the triggerer's lean poll, run on a private event loop.

A batch stores its finished videos ``max_parallel_downloads`` at a time, and each needs its task read
again for the signed URL (events leave it out). Read one by one in the download threads, each read
held a thread for a round trip, a fresh connection and the sync client's per-request work before its
download could start. :class:`TaskReads` reads them all from one background thread instead: the async
hook path (one aiohttp session, connections kept alive), a few reads in flight, each result handed
over as it arrives so its download starts at once. A read is best effort: the caller re-reads a task
whose read failed (for now, or a refused key) the usual way.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from airflow_provider_videoquery.models import VideoTask

if TYPE_CHECKING:
    from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook

Outcome = VideoTask | Exception
#: Seconds between two looks at whether the reading thread is still alive, while waiting for a result.
_CHECK_EVERY = 1.0


class TaskReads:
    """Read ``video_task_ids`` with ``hook``'s async path, ``concurrency`` at once, each within
    ``timeout`` seconds; iterate for ``(video_task_id, task or exception)`` as they come back.

    Use it as a context manager: leaving stops the reads still running and closes what they opened.
    ``hook`` is used on the background thread's loop only, and must have its connection resolved.
    """

    def __init__(
        self, hook: VideoQueryHook, video_task_ids: Iterable[str], concurrency: int, timeout: float
    ) -> None:
        self._hook = hook
        self._ids = list(dict.fromkeys(video_task_ids))  # each task read once
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._results: queue.SimpleQueue[tuple[str, Outcome]] = queue.SimpleQueue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="videoquery-reads", daemon=True)
        self._main: asyncio.Future[list[None]] | None = None  # the reads while they run
        self._stopping = False

    def __enter__(self) -> TaskReads:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._cancel)
        self._thread.join()

    def __iter__(self) -> Iterator[tuple[str, Outcome]]:
        """Every task once, as its read comes back; one the reads never got to (they stopped) with an
        error saying so."""
        left = set(self._ids)
        while left:
            try:
                video_task_id, outcome = self._results.get(timeout=_CHECK_EVERY)
            except queue.Empty:
                if self._thread.is_alive() or not self._results.empty():
                    continue
                for video_task_id in [i for i in self._ids if i in left]:
                    left.discard(video_task_id)
                    yield video_task_id, RuntimeError("the reads stopped before this task was read")
                return
            left.discard(video_task_id)
            yield video_task_id, outcome

    def _cancel(self) -> None:
        if self._main is not None:
            self._main.cancel()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._read_all())
        finally:
            self._loop.close()

    async def _read_all(self) -> None:
        gate = asyncio.Semaphore(self._concurrency)

        async def read(video_task_id: str) -> None:
            outcome: Outcome
            async with gate:
                if self._stopping:
                    return
                try:
                    async with asyncio.timeout(self._timeout):
                        ends = time.time() + self._timeout
                        outcome = await self._hook.aget_task(video_task_id, deadline=ends)
                except Exception as err:  # the caller reads this one again its own way
                    outcome = err
            self._results.put((video_task_id, outcome))

        # Leaving cancels the reads only: the session they used is closed either way, uncancelled.
        reads = asyncio.gather(*(read(video_task_id) for video_task_id in self._ids))
        self._main = reads
        if self._stopping:
            reads.cancel()
        try:
            await reads
        except asyncio.CancelledError:
            pass
        finally:
            self._main = None
            await self._hook.aclose()


__all__ = ["TaskReads"]
