"""VideoBatchOperator: create, wait for and store many videos in one task, each paid for once.

The task works in waves. On the worker it stores the videos that finished and creates new tasks until
``max_active`` are live at the gateway, then defers to one :class:`VideoBatchTrigger` for all of them,
and resumes when enough finished. Every id the gateway returns is written to the manifest before
anything else happens, so a retry, a cleared task or a new run over the same manifest reuses it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from functools import cached_property
from typing import Any

import httpx
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, Context
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.events import EventStatus
from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoDownloadError,
    VideoQueryAuthError,
    VideoQueryError,
    VideoQueryRequestError,
    VideoQueryResponseError,
    VideoQueryTransientError,
    VideoTaskFailedError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.manifest import BatchInputError, Entry, Status
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.storage import (
    DEFAULT_MAX_BYTES,
    DownloadSettings,
    StoredObject,
    check_destination,
    new_client,
    object_uri,
    resolve_destination,
    sha256_of,
    store_url,
)
from airflow_provider_videoquery.storage.paths import destination_uri
from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger
from airflow_provider_videoquery.waiting import refreshed

__all__ = ["VideoBatchOperator"]

#: The deferral's own timeout trails the latest task deadline so the trigger's clearer outcome wins.
_DEFER_MARGIN = 300.0
#: While more requests wait to be created, the trigger fires once this share of the live tasks finished.
_REFILL_SHARE = 0.25
#: A finished video waits at most this long for the worker (signed URLs expire).
_HOLD_WHILE_REFILLING = 30.0
_HOLD_AT_THE_END = 300.0
#: How long to wait before trying creates again after the gateway kept refusing them (429/503) while
#: no task of the batch is live (a live task's end is the better signal, and the trigger waits for it).
_CREATE_BACKOFF = 30.0
#: A refused create (429/503) is tried a few times with the gateway's Retry-After, then left for the
#: next wave: the worker does not sleep through a gateway's live-task cap.
_CREATE_RETRY = RetryPolicy(max_attempts=3)
#: While a wave is being stored, the manifest (rewritten whole) records the videos stored so far at most
#: this often, so a worker killed mid-wave loses at most this much progress, and 1,000 videos cost few
#: rewrites.
_SAVE_STORED_EVERY = 2.0


class VideoBatchOperator(BaseOperator):
    """Create, wait for and store a batch of videos; return the manifest's URI.

    Each request is stored as ``<destination>/<key>.mp4`` (streamed, verified and atomic, like
    :class:`~airflow_provider_videoquery.operators.videoquery.VideoDownloadOperator`). The manifest
    (``<destination>/manifest.jsonl`` by default) holds one JSON object per request: ``key``, ``model``,
    ``video_task_id``, ``status`` (``succeeded``, ``failed``, ``timeout``, ``error``, ``uncertain``, …),
    ``uri``, ``bytes``, ``sha256``, ``error`` and the ``request`` itself. XCom ``summary``: the counts.

    Paid once: an id is recorded in the manifest as soon as the gateway returns it; a rerun reuses
    recorded ids and keeps stored videos that still verify (size and sha256). A create the gateway may
    have received without answering an id is recorded ``uncertain`` and not sent again unless
    ``retry_uncertain_creates``.

    :param requests: a list of dicts (``model``, ``prompt``, any create field, optional ``key``) or
        the URI of a JSONL file with one such object per line (templated).
    :param destination: the folder to store into (any ``ObjectStoragePath`` URI; templated).
    :param manifest: the manifest's URI; default ``<destination>/manifest.jsonl`` (templated).
    :param destination_conn_id: the storage connection of destination and manifest.
    :param requests_conn_id: the storage connection of a JSONL ``requests`` URI.
    :param videoquery_conn_id: the ``videoquery`` connection.
    :param route: ``unified``, ``vidu-native`` or ``openai``; default: the connection's route.
    :param max_active: tasks live at the gateway at once.
    :param creates_per_second: the pace of creates.
    :param max_failed: how many requests may end without a stored video before the task fails.
    :param max_parallel_downloads: videos stored at once.
    :param poll_interval: seconds between two polls of one task.
    :param max_polls_per_second: the total poll rate of the batch.
    :param max_polls_in_flight: polls at once.
    :param timeout: seconds each video may take to finish, counted from its create.
    :param retry_uncertain_creates: send an ``uncertain`` create again (it may be paid twice).
    :param overwrite: replace a different existing object at a video's path.
    :param max_bytes: refuse videos larger than this.
    :param progress_interval: seconds between progress lines while waiting.
    """

    template_fields: Sequence[str] = ("requests", "destination", "manifest")
    template_fields_renderers = {"requests": "json"}
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        requests: list[dict[str, Any]] | str,
        destination: str,
        manifest: str | None = None,
        destination_conn_id: str | None = None,
        requests_conn_id: str | None = None,
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        max_active: int = 20,
        creates_per_second: float = 2.0,
        max_failed: int = 0,
        max_parallel_downloads: int = 4,
        poll_interval: float = 15.0,
        max_polls_per_second: float = 5.0,
        max_polls_in_flight: int = 8,
        timeout: float = 3600.0,
        retry_uncertain_creates: bool = False,
        overwrite: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        progress_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.requests = requests
        self.destination = destination
        self.manifest = manifest
        self.destination_conn_id = destination_conn_id
        self.requests_conn_id = requests_conn_id
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.max_active = max(1, int(max_active))
        self.creates_per_second = float(creates_per_second)
        self.max_failed = int(max_failed)
        self.max_parallel_downloads = max(1, int(max_parallel_downloads))
        self.poll_interval = float(poll_interval)
        self.max_polls_per_second = float(max_polls_per_second)
        self.max_polls_in_flight = int(max_polls_in_flight)
        self.timeout = float(timeout)
        self.retry_uncertain_creates = retry_uncertain_creates
        self.overwrite = overwrite
        self.max_bytes = int(max_bytes)
        self.progress_interval = float(progress_interval)

    @cached_property
    def hook(self) -> VideoQueryHook:
        return VideoQueryHook(self.videoquery_conn_id, route=self.route, retry_policy=_CREATE_RETRY)

    @cached_property
    def folder(self) -> ObjectStoragePath:
        return ObjectStoragePath(
            destination_uri(self.destination.strip().rstrip("/") + "/"), conn_id=self.destination_conn_id
        )

    @cached_property
    def manifest_path(self) -> ObjectStoragePath:
        if self.manifest:
            return ObjectStoragePath(destination_uri(self.manifest), conn_id=self.destination_conn_id)
        return self.folder / "manifest.jsonl"

    # -- entry points --------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        """A fresh start (first try, retry, rerun): merge with the manifest, verify, then the first wave."""
        # Before anything is paid for: the destination can take the videos, the requests are usable.
        check_destination(object_uri(self.folder), self.destination_conn_id)
        entries, others = self._load(fresh=True)
        try:
            self._verify_stored(entries)
            self._save(entries, others)
            return self._wave(context, entries, others, {})
        finally:
            self.hook.close()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger: record what finished, store it, create more, defer or finish."""
        entries, others = self._load(fresh=False)
        try:
            if not isinstance(event, dict) or event.get("status") not in ("wave", EventStatus.ERROR.value):
                raise VideoQueryError(
                    f"The batch's trigger fired an unexpected event {event!r}; this is a bug."
                )
            if event["status"] == EventStatus.ERROR.value:
                raise VideoQueryError(f"{event.get('message')} The manifest keeps every id: retry the task.")
            return self._wave(context, entries, others, dict(event.get("finished") or {}))
        finally:
            self.hook.close()

    # -- the manifest --------------------------------------------------------------------------------

    def _load(self, fresh: bool) -> tuple[list[Entry], list[Entry]]:
        """This batch's entries (in request order) and the manifest's other keys (kept untouched)."""
        try:
            requests = manifest.parse_requests(self._request_items())
            recorded = manifest.read(self.manifest_path.fs, self.manifest_path.path, self._manifest_uri)
            # Resuming, the manifest is exactly what this task wrote before it deferred.
            merged = (
                manifest.merge(requests, recorded, time.time(), self.retry_uncertain_creates)
                if fresh
                else recorded
            )
        except BatchInputError as err:
            raise AirflowFailException(f"Batch {self.task_id!r}: {err} Nothing was created.") from None
        keys = {entry.key for entry in requests}
        if not fresh:
            by_key = {entry.key: entry for entry in merged}
            missing = keys - by_key.keys()
            if missing:
                raise VideoQueryError(
                    f"The manifest {self._manifest_uri} lost key(s) {sorted(missing)[:5]} while the batch "
                    "was waiting; was it replaced by another run? Clear the task to start over from it."
                )
        ours = [entry for entry in merged if entry.key in keys]
        order = {entry.key: index for index, entry in enumerate(requests)}
        ours.sort(key=lambda entry: order[entry.key])
        return ours, [entry for entry in merged if entry.key not in keys]

    def _request_items(self) -> list[tuple[str, Any]]:
        if isinstance(self.requests, str):
            path = ObjectStoragePath(destination_uri(self.requests), conn_id=self.requests_conn_id)
            with path.open("r") as handle:  # type: ignore[no-untyped-call]
                return manifest.parse_jsonl(handle, object_uri(path))
        if not isinstance(self.requests, list | tuple):
            raise BatchInputError(
                "requests must be a list of dicts or the URI of a JSONL file, not "
                f"{type(self.requests).__name__}."
            )
        return [(f"request #{number}", item) for number, item in enumerate(self.requests, start=1)]

    @cached_property
    def _manifest_uri(self) -> str:
        return object_uri(self.manifest_path)

    def _save(self, entries: list[Entry], others: list[Entry]) -> None:
        manifest.write(self.manifest_path.fs, self.manifest_path.path, [*entries, *others])

    def _target(self, entry: Entry) -> ObjectStoragePath:
        return resolve_destination(
            object_uri(self.folder).rstrip("/") + "/", entry.key, self.destination_conn_id
        )

    # -- a wave --------------------------------------------------------------------------------------

    def _wave(
        self,
        context: Context,
        entries: list[Entry],
        others: list[Entry],
        finished: dict[str, dict[str, Any]],
    ) -> str:
        by_id = {entry.video_task_id: entry for entry in entries if entry.video_task_id}
        to_store = self._record(by_id, finished)
        self._save(entries, others)
        self._store(to_store, entries, others)
        refused_until = self._create(entries, others)
        live = [entry for entry in entries if entry.status is Status.RUNNING]
        # Refused creates are tried again when live tasks finish, or after a pause when none is live.
        wake_at = refused_until if not live else None
        if live or wake_at is not None:
            self._defer(entries, live, wake_at)
        return self._finish(context, entries)

    def _record(self, by_id: dict[str, Entry], finished: dict[str, dict[str, Any]]) -> list[Entry]:
        """Apply the trigger's outcomes; return the entries whose tasks succeeded (to store)."""
        to_store: list[Entry] = []
        refused: str | None = None
        for video_task_id, outcome in finished.items():
            entry = by_id.get(video_task_id)
            if entry is None or entry.status is not Status.RUNNING:
                continue
            status, message = outcome.get("status"), str(outcome.get("message") or "")
            if status == EventStatus.SUCCESS.value:
                to_store.append(entry)
            elif status == EventStatus.FAILED.value:
                entry.ended(Status.FAILED, message)
            elif status == EventStatus.TIMEOUT.value:
                entry.ended(Status.TIMEOUT, message)
            else:
                entry.ended(Status.ERROR, message)
                if outcome.get("error_type") == VideoQueryAuthError.__name__:
                    refused = message
        if refused is not None:
            raise VideoQueryAuthError(f"{refused} Every id so far is in the manifest {self._manifest_uri}.")
        return to_store

    def _store(self, to_store: list[Entry], entries: list[Entry], others: list[Entry]) -> None:
        """Store finished videos ``max_parallel_downloads`` at a time, recording them in the manifest as
        they land (every :data:`_SAVE_STORED_EVERY` seconds and at the end of the wave)."""
        if not to_store:
            return
        settings = DownloadSettings.for_gateway(self.hook.config, max_bytes=self.max_bytes)
        self.hook.get_conn()  # made once, here, then shared by the threads
        started = time.monotonic()
        sharing: dict[str, list[Entry]] = {}
        for entry in to_store:
            sharing.setdefault(str(entry.video_task_id), []).append(entry)
        with (
            new_client(settings) as client,
            ThreadPoolExecutor(self.max_parallel_downloads) as pool,
            self.hook.read_tasks(sharing) as reads,
        ):
            jobs: dict[Future[StoredObject], Entry] = {}
            for video_task_id, outcome in reads:  # each download starts as its task's re-read returns
                for entry in sharing[video_task_id]:
                    jobs[pool.submit(self._store_one, entry, settings, client, outcome)] = entry
            pending, unsaved, saved = set(jobs), False, started
            while pending:
                # With landings not yet written, wake up when they are due; else at the next landing.
                due = max(0.0, saved + _SAVE_STORED_EVERY - time.monotonic()) if unsaved else None
                done, pending = wait(pending, timeout=due, return_when=FIRST_COMPLETED)
                for job in done:
                    self._landed(jobs[job], job)
                unsaved = unsaved or bool(done)
                if unsaved and time.monotonic() - saved >= _SAVE_STORED_EVERY:
                    self._save(entries, others)  # what landed so far survives a killed worker
                    unsaved, saved = False, time.monotonic()
        self._save(entries, others)
        self.log.info("Stored %d video(s) in %.1fs.", len(to_store), time.monotonic() - started)

    def _landed(self, entry: Entry, job: Future[StoredObject]) -> None:
        """Record one finished download in ``entry``: stored, or why not."""
        try:
            stored = job.result()
        except VideoTaskFailedError as err:  # it failed after all (a flapping status)
            entry.ended(Status.FAILED, str(err))
            return
        except VideoQueryError as err:
            entry.ended(Status.ERROR, str(err))
            self.log.warning("Could not store %r: %s", entry.key, err)
            return
        entry.stored(stored.uri, stored.size, stored.sha256)

    def _store_one(
        self,
        entry: Entry,
        settings: DownloadSettings,
        client: httpx.Client,
        outcome: VideoTask | Exception | None = None,
    ) -> StoredObject:
        """Store the file of a finished task by its (signed) URL, which events leave out: ``outcome`` is
        the task as just re-read (:meth:`VideoQueryHook.read_tasks`); when that read failed it is read
        again here, the worker's way (retries, a rotated key, its deadline)."""
        video_task_id = str(entry.video_task_id)
        if not isinstance(outcome, VideoTask):
            try:
                outcome = self.hook.get_task(video_task_id)
            except Exception as err:
                outcome = err
        reported = VideoTask(id=video_task_id, status=TaskStatus.SUCCEEDED, raw_status=None)
        task = refreshed(reported, outcome, self.log)
        if not task.video_url:
            raise VideoDownloadError(f"Video task {task.id!r} succeeded but names no video URL.")
        return store_url(
            task.video_url,
            self._target(entry),
            settings,
            overwrite=self.overwrite,
            client=client,
            what=f"the video of {entry.key!r} (task {task.id!r})",
        )

    def _create(self, entries: list[Entry], others: list[Entry]) -> float | None:
        """Create pending requests until ``max_active`` are live; the manifest is written after each.

        Returns when to try again if the gateway kept refusing creates, else None.
        """
        live = sum(1 for entry in entries if entry.status is Status.RUNNING)
        pending = iter([entry for entry in entries if entry.status is Status.PENDING])
        spacing = 1.0 / self.creates_per_second if self.creates_per_second > 0 else 0.0
        last = 0.0
        for entry in _take(pending, self.max_active - live):
            time.sleep(max(0.0, last + spacing - time.monotonic()))
            last = time.monotonic()
            try:
                retry_at = self._create_one(entry)
            finally:
                self._save(entries, others)
            if retry_at is not None:
                return retry_at
        return None

    def _create_one(self, entry: Entry) -> float | None:
        """Create one request; return when to try creates again if the gateway refuses them for now."""
        body = dict(entry.request)
        model, prompt = str(body.pop("model")), str(body.pop("prompt"))
        try:
            task = self.hook.create_task(model, prompt, **body)
        except (VideoCreateUncertainError, VideoQueryResponseError) as err:
            entry.ended(Status.UNCERTAIN, str(err))
            self.log.warning("The create of %r is uncertain and is not sent again: %s", entry.key, err)
            return None
        except VideoQueryTransientError as err:  # refused (429/503) or unreachable: surely not taken
            self.log.warning(
                "The gateway refuses creates for now; %r waits for the next wave: %s", entry.key, err
            )
            return time.time() + _CREATE_BACKOFF
        except VideoQueryRequestError as err:
            entry.ended(Status.FAILED, str(err))
            self.log.warning("The gateway refused the create of %r: %s", entry.key, err)
            return None
        entry.created(task.id, time.time())
        if task.status is TaskStatus.FAILED:
            entry.ended(Status.FAILED, task.error or "the gateway failed the task at once")
        return None

    def _defer(self, entries: list[Entry], live: list[Entry], wake_at: float | None) -> None:
        tasks = {
            str(entry.video_task_id): [float(entry.waiting_since or 0.0), self._deadline(entry)]
            for entry in live
        }
        more = any(entry.status is Status.PENDING for entry in entries)
        fire_after = max(1, math.ceil(len(live) * _REFILL_SHARE)) if more else max(1, len(live))
        counts = manifest.counts(entries)
        latest = max([*(deadline for _, deadline in tasks.values()), wake_at or 0.0])
        self.log.info(
            "Waiting for %d live task(s) in the triggerer (%d stored, %d not created yet).",
            len(live),
            counts[Status.SUCCEEDED.value],
            counts[Status.PENDING.value],
        )
        self.defer(
            trigger=VideoBatchTrigger(
                tasks=tasks,
                videoquery_conn_id=self.videoquery_conn_id,
                route=self.route,
                fire_after=fire_after,
                fire_hold=_HOLD_WHILE_REFILLING if more else _HOLD_AT_THE_END,
                wake_at=wake_at,
                progress={
                    "total": counts["total"],
                    "created": sum(1 for entry in entries if entry.video_task_id),
                    "succeeded": counts[Status.SUCCEEDED.value],
                    "failed": sum(counts[status.value] for status in manifest.NOT_SUCCEEDED),
                    "pending": counts[Status.PENDING.value],
                },
                poll_interval=self.poll_interval,
                max_in_flight=self.max_polls_in_flight,
                max_polls_per_second=self.max_polls_per_second,
                progress_interval=self.progress_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(0.0, latest - time.time()) + _DEFER_MARGIN),
        )

    def _deadline(self, entry: Entry) -> float:
        return float(entry.waiting_since or time.time()) + self.timeout

    # -- verifying and finishing ---------------------------------------------------------------------

    def _verify_stored(self, entries: list[Entry]) -> None:
        """Keep stored videos that still verify (size and sha256); store the others again."""
        stored = [entry for entry in entries if entry.status is Status.SUCCEEDED]
        if not stored:
            return
        with ThreadPoolExecutor(self.max_parallel_downloads) as pool:
            verdicts = list(pool.map(self._still_there, stored))
        now = time.time()
        for entry, problem in zip(stored, verdicts, strict=True):
            if problem is not None:
                self.log.warning("Storing %r again (task %r): %s", entry.key, entry.video_task_id, problem)
                entry.wait_again(now)
                self._remove(self._target(entry))
        kept = verdicts.count(None)
        self.log.info("Kept %d stored video(s) that verify; %d to store again.", kept, len(stored) - kept)

    def _still_there(self, entry: Entry) -> str | None:
        target = self._target(entry)
        try:
            if not target.exists():
                return f"{object_uri(target)} is gone"
            size = target.stat().st_size
            if size != entry.bytes:
                return f"{object_uri(target)} holds {size} bytes, the manifest says {entry.bytes}"
            if sha256_of(target) != entry.sha256:
                return f"{object_uri(target)} has another sha256 than the manifest"
        except OSError as err:
            return f"{object_uri(target)} cannot be read ({err})"
        return None

    @staticmethod
    def _remove(target: ObjectStoragePath) -> None:
        """A stored video that no longer matches its manifest line is this batch's own: it is replaced."""
        try:
            if target.exists():
                target.unlink()
        except OSError:
            pass  # storing it again reports the conflict

    def _finish(self, context: Context, entries: list[Entry]) -> str:
        counts = manifest.counts(entries)
        context["ti"].xcom_push(key="summary", value=counts)
        bad = [entry for entry in entries if entry.status in manifest.NOT_SUCCEEDED]
        self.log.info("Batch done: %s. Manifest: %s", _tally(counts), self._manifest_uri)
        if len(bad) > self.max_failed:
            names = "\n  ".join(
                f"{e.key} ({e.status.value}, task {e.video_task_id}): {e.error}" for e in bad[:50]
            )
            more = f"\n  … and {len(bad) - 50} more (see the manifest)" if len(bad) > 50 else ""
            message = (
                f"{len(bad)} of {counts['total']} video(s) did not succeed (max_failed={self.max_failed}); "
                f"every other video is stored. The manifest {self._manifest_uri} has each outcome:\n  "
                f"{names}{more}"
            )
            final = all(entry.status in (Status.FAILED, Status.UNCERTAIN) for entry in bad)
            raise (AirflowFailException if final else VideoQueryError)(message)
        return self._manifest_uri


def _take(items: Iterator[Entry], count: int) -> Iterator[Entry]:
    for _, item in zip(range(max(0, count)), items, strict=False):
        yield item


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.items() if value or name == "total")
