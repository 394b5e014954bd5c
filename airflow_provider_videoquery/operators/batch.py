"""VideoBatchOperator: create, wait for and store many videos in one task, each paid for once.

The task works in waves. On the worker it stores the videos that finished and creates new tasks until
``max_active`` are live at the gateway, then defers to one :class:`VideoBatchTrigger` for all of them,
and resumes when enough finished. Every id the gateway returns is written to the manifest before
anything else happens, so a retry, a cleared task or a new run over the same manifest reuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from functools import cached_property
from typing import Any

import httpx
from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, Context, TaskDeferred
from airflow.sdk import ObjectStoragePath

from airflow_provider_videoquery import lease, manifest
from airflow_provider_videoquery import ledger as ledger_file
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
from airflow_provider_videoquery.images.inputs import ImageInputs
from airflow_provider_videoquery.images.refs import plain
from airflow_provider_videoquery.ledger import Ledger
from airflow_provider_videoquery.manifest import BatchInputError, Entry, Status
from airflow_provider_videoquery.models import TaskStatus, VideoTask
from airflow_provider_videoquery.operators._gallery import dataset_name, lineage
from airflow_provider_videoquery.storage import (
    DEFAULT_MAX_BYTES,
    DownloadSettings,
    StoredObject,
    check_destination,
    new_client,
    object_uri,
    sha256_of,
    store_url,
)
from airflow_provider_videoquery.storage.paths import destination_uri, safe_file_name
from airflow_provider_videoquery.storage.sinks import remove_stale_parts
from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger
from airflow_provider_videoquery.ui import xcom
from airflow_provider_videoquery.ui.links import VideosLink
from airflow_provider_videoquery.waiting import (
    DEFAULT_UNREACHABLE_TIMEOUT,
    refreshed,
    unreachable_timeout_checked,
)

__all__ = ["VideoBatchOperator"]

#: The deferral's own timeout trails the latest task deadline so the trigger's clearer outcome wins.
_DEFER_MARGIN = 300.0
#: While more requests wait to be created, the trigger fires once this share of the live tasks finished
#: (more, up to all of them, for a batch that would otherwise take more than :data:`_MAX_WAVES` waves:
#: each resume reads the whole ledger).
_REFILL_SHARE = 0.25
_MAX_WAVES = 200
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
#: After a wave the worker waits for the next one itself, with the trigger's own code, for up to this
#: long: a wave that needs the worker again within seconds never defers. A deferred trigger fires no
#: sooner than ``_SAFE_HOLD`` after it started, well after its task's defer-exit has been processed:
#: Airflow's scheduler fails a task resumed before that ("state mismatch", apache/airflow#72716,
#: #71580; not fixed in 3.3.2). See docs/deployment.md.
_STAY_ON_WORKER = 30.0
_SAFE_HOLD = 60.0
#: The manifest's lease while the worker works on it, renewed every :data:`_LEASE_BEAT` seconds: a
#: killed worker's lease frees the manifest for other runs this long after (its own retry takes it at
#: once) …
_LEASE_TTL = 600.0
_LEASE_BEAT = 60.0
#: … and across a deferral: until the deferral's timeout plus this much for the resume to start.
_LEASE_AFTER_DEFERRAL = 900.0


class VideoBatchOperator(BaseOperator):
    """Create, wait for and store a batch of videos; return the manifest's URI.

    Each request is stored as ``<destination>/<key>.mp4`` (streamed, verified and atomic, like
    :class:`~airflow_provider_videoquery.operators.videoquery.VideoDownloadOperator`). The manifest
    (``<destination>/manifest.jsonl`` by default) holds one JSON object per request: ``key``, ``model``,
    ``video_task_id``, ``status`` (``succeeded``, ``failed``, ``timeout``, ``error``, ``uncertain``, …),
    ``uri``, ``bytes``, ``sha256``, ``error``, ``created_at``/``stored_at`` (epoch seconds) and the
    ``request`` itself. XCom ``summary``: the counts; XCom ``ledger``: where the manifest and videos are
    (what the gallery reads, as the "Videos" extra link shows: docs/gallery.md).

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
    :param inputs_conn_id: the storage connection of images the requests name by storage URI or path
        (docs/create.md, "Images"); every request's images are checked before the first create, and
        each is presigned, inlined or uploaded right before its own create. None: the store's default
        credentials, never anonymous.
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
    :param wait_for_manifest: seconds to wait for another run that holds the manifest's lease before
        failing (0: fail at once, naming that run); see docs/batch.md, "One run at a time".
    :param unreachable_timeout: seconds the trigger keeps polling an address where nothing answers
        (refused, unknown host) before a task that has not been answered once in the wave ends
        (3 minutes by default, at most 5), as for ``VideoTaskSensor``.
    :param shards: split the requests into this many shards, one task each (map ``shard`` over
        ``range(shards)``): a request belongs to the shard its key's digest names, whatever its position,
        and each shard has a ledger of its own (``manifest-002-of-004.jsonl``). A shard starting fresh
        carries over what the destination's other ledgers recorded for its requests, so a batch split
        anew is not paid for again. ``max_active`` and ``creates_per_second`` are per shard: divide
        the gateway's limits by ``shards`` (docs/batch.md, "Shards").
    :param shard: which shard this task works on (0 … ``shards`` - 1).
    """

    template_fields: Sequence[str] = ("requests", "destination", "manifest")
    template_fields_renderers = {"requests": "json"}
    ui_color = "#f0e4ff"
    operator_extra_links = (VideosLink(),)

    def __init__(
        self,
        *,
        requests: list[dict[str, Any]] | str,
        destination: str,
        manifest: str | None = None,
        destination_conn_id: str | None = None,
        requests_conn_id: str | None = None,
        inputs_conn_id: str | None = None,
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
        unreachable_timeout: float = DEFAULT_UNREACHABLE_TIMEOUT,
        shards: int = 1,
        shard: int = 0,
        wait_for_manifest: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.requests = requests
        self.destination = destination
        self.manifest = manifest
        self.destination_conn_id = destination_conn_id
        self.requests_conn_id = requests_conn_id
        self.inputs_conn_id = inputs_conn_id
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
        self.unreachable_timeout = unreachable_timeout_checked(unreachable_timeout)
        self.wait_for_manifest = max(0.0, float(wait_for_manifest))
        self.shards = int(shards)
        self.shard = int(shard)
        self._lease: lease.Lease | None = None
        self._ledger: Ledger | None = None
        self._deferred_until: float | None = None

    @cached_property
    def hook(self) -> VideoQueryHook:
        return VideoQueryHook(self.videoquery_conn_id, route=self.route, retry_policy=_CREATE_RETRY)

    @cached_property
    def inputs(self) -> ImageInputs:
        """The requests' images: checked up front, resolved (presigned…) at each create."""
        return ImageInputs(str(self.route or self.hook.config.route), self.inputs_conn_id)

    @cached_property
    def folder(self) -> ObjectStoragePath:
        return ObjectStoragePath(
            destination_uri(self.destination.strip().rstrip("/") + "/"), conn_id=self.destination_conn_id
        )

    @cached_property
    def manifest_path(self) -> ObjectStoragePath:
        """This batch's (or shard's) manifest: ``manifest=``, or ``manifest.jsonl`` in the destination;
        a shard's name carries its number (``manifest-002-of-004.jsonl``)."""
        base = self._base_manifest
        return base.with_name(manifest.sharded_name(base.name, self.shard, self.shards))

    @cached_property
    def _base_manifest(self) -> ObjectStoragePath:
        """The manifest's name before a shard's number goes into it."""
        if self.manifest:
            return ObjectStoragePath(destination_uri(self.manifest), conn_id=self.destination_conn_id)
        return self.folder / "manifest.jsonl"

    # -- entry points --------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        """A fresh start (first try, retry, rerun): merge with the manifest, verify, then the first wave."""
        # Before anything is paid for: the requests are usable, the destination can take the videos.
        requests = self._requests()
        self._check_folders()
        with self._leased(context):  # before the manifest is read: one run at a time works on it
            entries, others = self._load(requests, fresh=True)
            self._warn_shared(entries)
            self._check_requests(entries)
            self._remove_orphaned_parts(entries)
            self._verify_stored(entries)
            self._compact(entries, others)  # the merged requests become the manifest's snapshot
            folder = object_uri(self.folder)
            pointer = xcom.ledger_pointer(self._manifest_uri, folder, self.destination_conn_id)
            context["ti"].xcom_push(key=xcom.LEDGER_KEY, value=pointer)
            return self._wave(context, entries, others, {})

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger: record what finished, store it, create more, defer or finish."""
        requests = self._requests()
        with self._leased(context, resuming=True):
            entries, others = self._load(requests, fresh=False)
            return self._wave(context, entries, others, self._outcomes(event))

    def on_kill(self) -> None:
        """Killed (marked failed, cleared): let the next run have the manifest at once."""
        if self._lease is not None:
            self._lease.release()

    # -- the manifest's lease ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _leased(self, context: Context, resuming: bool = False) -> Iterator[lease.Lease]:
        """Hold the manifest's lease while the block runs (renewed in the background); across a
        deferral until the trigger's timeout plus :data:`_LEASE_AFTER_DEFERRAL`; released otherwise.
        ``resuming``: after a deferral, when this try held it already."""
        fs, path = self.manifest_path.fs, self.manifest_path.path
        if not lease.atomic_create_supported(fs):
            self.log.warning(
                "The manifest's store (%s) cannot create a file only if it is absent in one step: two "
                "runs starting at the same instant could both take its lease. Keep one run at a time.",
                self.manifest_path.protocol,
            )
        try:
            held = lease.acquire(fs, path, _owner(context, self), _LEASE_TTL, wait=self.wait_for_manifest)
        except lease.LeaseHeldError as err:
            holder = err.holder.describe() if err.holder else "another run"
            if resuming:
                raise VideoQueryError(
                    f"Batch {self.task_id!r}: while this task was deferred, its lease on the manifest "
                    f"{self._manifest_uri} expired and {holder} took it; this try stops without creating "
                    "or writing anything more. Every id it paid for is in the manifest, which that run "
                    "now works on: retry this task once it is done."
                ) from None
            raise VideoQueryError(
                f"Batch {self.task_id!r}: the manifest {self._manifest_uri} is in use by "
                f"{holder}; this run created nothing. "
                "Two batches over one manifest would pay twice: retry this task once that run is done "
                "(or set wait_for_manifest). If that run is gone for good, its lease expires at the time "
                f"above, or delete {object_uri(self.manifest_path)}.lease/ to free it now."
            ) from None
        self._lease, self._deferred_until = held, None
        self._ledger = Ledger(fs, path, self._manifest_uri, guard=self._check_lease)
        try:
            with held.kept_alive(_LEASE_TTL, _LEASE_BEAT):
                yield held
        except TaskDeferred:
            assert self._deferred_until is not None
            self._keep(lambda: held.hold_until(self._deferred_until or 0.0))
            raise
        except BaseException:
            held.release()
            raise
        else:
            held.release()
        finally:
            self._book.close()
            self._lease = self._ledger = None
            self.hook.close()

    def _keep(self, step: Callable[[], None]) -> None:
        """Run a step that needs the lease; a lost lease ends the try with what happened."""
        try:
            step()
        except lease.LeaseLostError as err:
            raise VideoQueryError(
                f"Batch {self.task_id!r}: {err} This try stopped without creating or writing anything "
                f"more; every id so far is in the manifest {self._manifest_uri}, which that run now works on."
            ) from None

    def _check_lease(self) -> None:
        if self._lease is not None:
            self._keep(self._lease.check)

    def _check_folders(self) -> None:
        """The destination (a folder: given with its '/', so a file in its place is refused) and the
        manifest's folder can be written."""
        folders = {object_uri(self.folder).rstrip("/") + "/", object_uri(self.manifest_path.parent) + "/"}
        for folder in sorted(folders):
            check_destination(folder, self.destination_conn_id)

    # -- the manifest --------------------------------------------------------------------------------

    def _requests(self) -> list[Entry]:
        """The requests (this shard's), validated and keyed (all of them, all problems at once)."""
        if not (self.shards >= 1 and 0 <= self.shard < self.shards):
            raise AirflowFailException(
                f"Batch {self.task_id!r}: shard {self.shard} of {self.shards} does not exist: shards must "
                "be at least 1 and shard between 0 and shards - 1 (map it over range(shards)). Nothing "
                "was created."
            )
        try:
            requests = manifest.parse_requests(self._request_items())
        except BatchInputError as err:
            raise AirflowFailException(f"Batch {self.task_id!r}: {err} Nothing was created.") from None
        if self.shards == 1:
            return requests
        return [r for r in requests if manifest.shard_of(r.key, self.shards) == self.shard]

    def _sibling_ledgers(self, requests: list[Entry], recorded: list[Entry]) -> list[Entry]:
        """What the destination's other ledgers (the unsharded manifest, other shardings) recorded for
        requests this ledger does not hold yet: read, never written (they have leases of their own)."""
        own = {entry.key for entry in recorded}
        missing = [request for request in requests if request.key not in own]
        parent, name = self.manifest_path.parent, self.manifest_path.name
        stem = name.split("-", 1)[0].rsplit(".", 1)[0] if self.shards > 1 else name.rsplit(".", 1)[0]
        if not missing:
            return []
        fs = self.manifest_path.fs
        fs.invalidate_cache(parent.path)
        names = sorted(p for p in fs.glob(f"{parent.path}/{stem}*.jsonl") if p != self.manifest_path.path)
        siblings = [
            ledger_file.read(fs, path, f"{object_uri(parent)}/{path.rsplit('/', 1)[-1]}") for path in names
        ]
        found = manifest.adopted(missing, siblings)
        if found:
            self.log.info(
                "Carried over %d request(s) the destination's other ledgers recorded (%s): their ids are "
                "reused, nothing is paid for again.",
                len(found),
                ", ".join(path.rsplit("/", 1)[-1] for path in names),
            )
        return found

    def _load(self, requests: list[Entry], fresh: bool) -> tuple[list[Entry], list[Entry]]:
        """This batch's entries (in request order) and the manifest's other keys (kept untouched)."""
        try:
            recorded = self._book.load()
            if fresh:
                recorded += self._sibling_ledgers(requests, recorded)
                return manifest.merge(requests, recorded, time.time(), self.retry_uncertain_creates)
        except BatchInputError as err:
            raise AirflowFailException(f"Batch {self.task_id!r}: {err} Nothing was created.") from None
        # Resuming, the manifest is exactly what this task wrote before it deferred.
        pairs, others = manifest.pair(requests, recorded)
        missing = [request.key for request, old in pairs if old is None]
        if missing:
            raise VideoQueryError(
                f"The manifest {self._manifest_uri} lost key(s) {missing[:5]} while the batch "
                "was waiting; was it replaced by another run? Clear the task to start over from it."
            )
        return [old for _, old in pairs if old is not None], others

    def _check_requests(self, entries: list[Entry]) -> None:
        """Refuse, before anything is created, every request still to be sent that its model family or
        its route would not accept, images included (all of them at once): the one check
        ``VideoCreateOperator`` runs too (``create_fields.check_create_request``, through the images)."""
        todo = [
            (f"Request {entry.key!r}", entry.request)
            for entry in entries
            if entry.video_task_id is None and entry.status is Status.PENDING  # to be sent
        ]
        if not todo:
            return
        unchecked: dict[str, str] = {}
        for warning in self.inputs.check(todo):
            unchecked.setdefault(warning.split(": ", 1)[-1], warning)  # once per model, not per request
        for warning in unchecked.values():
            self.log.warning(warning)

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
        return [(f"request #{number}", plain(item)) for number, item in enumerate(self.requests, start=1)]

    @cached_property
    def _manifest_uri(self) -> str:
        return object_uri(self.manifest_path)

    @property
    def _book(self) -> Ledger:
        """The manifest's ledger, open while this try holds the lease."""
        if self._ledger is None:
            raise RuntimeError("the batch's ledger is used outside the manifest's lease; this is a bug")
        return self._ledger

    def _write(self, changed: list[Entry]) -> None:
        """Make the changes of ``changed`` durable (one journal record or object: the cost does not
        grow with the batch)."""
        self._book.record(changed)

    def _compact(self, entries: list[Entry], others: list[Entry]) -> None:
        """Fold the journal into the manifest: it is rewritten whole with every entry."""
        self._book.compact([*entries, *others])

    def _target(self, entry: Entry) -> ObjectStoragePath:
        return self.folder / _file_name(entry)

    # -- a wave --------------------------------------------------------------------------------------

    def _wave(
        self,
        context: Context,
        entries: list[Entry],
        others: list[Entry],
        finished: dict[str, dict[str, Any]],
    ) -> str:
        """Waves until the batch is done: record what finished, store it, create more, then wait — on
        the worker while the wave's trigger would fire within :data:`_STAY_ON_WORKER` seconds, else in
        the triggerer."""
        while True:
            to_store, changed = self._record(_by_id(entries), finished)
            self._write(changed)
            if self._book.wants_compaction(len(entries) + len(others)):
                self._compact(entries, others)
            self._store(to_store)
            refused_until = self._create(entries, others)
            live = [entry for entry in entries if entry.status is Status.RUNNING]
            # Refused creates are tried again when live tasks finish, or after a pause when none is live.
            wake_at = refused_until if not live else None
            if not live and wake_at is None:
                self._compact(entries, others)  # the task's end: the manifest alone says it all
                return self._finish(context, entries)
            trigger = self._trigger(entries, live, wake_at)
            event = self._wait_here(trigger)
            if event is None:
                self._defer(trigger, live, entries)
            finished = self._outcomes(event)

    def _outcomes(self, event: object) -> dict[str, dict[str, Any]]:
        """The finished tasks of a wave's event; an error event (or anything else) raises."""
        if not isinstance(event, dict) or event.get("status") not in ("wave", EventStatus.ERROR.value):
            raise VideoQueryError(f"The batch's trigger fired an unexpected event {event!r}; this is a bug.")
        if event["status"] == EventStatus.ERROR.value:
            raise VideoQueryError(f"{event.get('message')} The manifest keeps every id: retry the task.")
        return dict(event.get("finished") or {})

    def _record(
        self, by_id: dict[str, list[Entry]], finished: dict[str, dict[str, Any]]
    ) -> tuple[list[Entry], list[Entry]]:
        """Apply the trigger's outcomes (to every entry of a task id; see :meth:`_warn_shared`); return
        the entries whose tasks succeeded (to store) and those that ended otherwise (changed)."""
        to_store: list[Entry] = []
        changed: list[Entry] = []
        refused: str | None = None
        for video_task_id, outcome in finished.items():
            for entry in by_id.get(video_task_id, []):
                if entry.status is Status.RUNNING:
                    refused = self._apply(entry, outcome, to_store) or refused
                    if entry.status is not Status.RUNNING:
                        changed.append(entry)
        if refused is not None:
            self._write(changed)
            raise VideoQueryAuthError(f"{refused} Every id so far is in the manifest {self._manifest_uri}.")
        return to_store, changed

    @staticmethod
    def _apply(entry: Entry, outcome: dict[str, Any], to_store: list[Entry]) -> str | None:
        """One task's outcome applied to ``entry``; the message when the gateway refused the key."""
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
                return message
        return None

    def _store(self, to_store: list[Entry]) -> None:
        """Store finished videos ``max_parallel_downloads`` at a time, recording them in the ledger as
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
            unsaved: list[Entry] = []
            pending, saved = set(jobs), started
            while pending:
                # With landings not yet written, wake up when they are due; else at the next landing.
                due = max(0.0, saved + _SAVE_STORED_EVERY - time.monotonic()) if unsaved else None
                done, pending = wait(pending, timeout=due, return_when=FIRST_COMPLETED)
                for job in done:
                    self._landed(jobs[job], job)
                    unsaved.append(jobs[job])
                if unsaved and time.monotonic() - saved >= _SAVE_STORED_EVERY:
                    self._write(unsaved)  # what landed so far survives a killed worker
                    unsaved, saved = [], time.monotonic()
        self._write(unsaved)
        self.log.info("Stored %d video(s) in %.1fs.", len(to_store), time.monotonic() - started)

    def _landed(self, entry: Entry, job: Future[StoredObject]) -> None:
        """Record one finished download in ``entry``: stored, or why not."""
        try:
            stored = job.result()
        except _StillRunning as err:  # a flapping status: wait for it again, on the same deadline
            entry.still_running()
            self.log.warning("%s; waiting for %r again.", err, entry.key)
            return
        except VideoTaskFailedError as err:  # it failed after all (a flapping status)
            entry.ended(Status.FAILED, str(err))
            return
        except VideoQueryError as err:
            entry.ended(Status.ERROR, str(err))
            self.log.warning("Could not store %r: %s", entry.key, err)
            return
        entry.stored(stored.uri, stored.size, stored.sha256)
        entry.extra["stored_at"] = time.time()

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
        if isinstance(outcome, VideoTask) and not outcome.status.is_terminal:
            raise _StillRunning(
                f"Video task {video_task_id!r} was reported succeeded, but re-reading it now says "
                f"{outcome.summary()}"
            )
        reported = VideoTask(id=video_task_id, status=TaskStatus.SUCCEEDED, raw_status=None)
        task = refreshed(reported, outcome, self.log)
        if not task.video_url:
            raise VideoDownloadError(f"Video task {task.id!r} succeeded but names no video URL.")
        return store_url(
            task.video_url,
            self._target(entry),
            settings,
            overwrite=self.overwrite or entry.replace,
            client=client,
            what=f"the video of {entry.key!r} (task {task.id!r})",
        )

    def _create(self, entries: list[Entry], others: list[Entry]) -> float | None:
        """Create pending requests until ``max_active`` are live; the manifest is written after each.

        Returns when to try again if the gateway kept refusing creates, else None.
        """
        live = sum(1 for entry in entries if entry.status is Status.RUNNING)
        pending = iter([entry for entry in entries if entry.status is Status.PENDING])
        known = {entry.video_task_id for entry in (*entries, *others) if entry.video_task_id}
        spacing = 1.0 / self.creates_per_second if self.creates_per_second > 0 else 0.0
        last = 0.0
        for entry in _take(pending, self.max_active - live):
            time.sleep(max(0.0, last + spacing - time.monotonic()))
            last = time.monotonic()
            try:
                retry_at = self._create_one(entry)
            finally:
                self._write([entry])  # durable before the next create, and before anything else
            if entry.video_task_id in known:  # the gateway answered with a task it had already
                self._warn_shared([*entries, *others], entry.video_task_id)
            elif entry.video_task_id is not None:
                known.add(entry.video_task_id)
            if retry_at is not None:
                return retry_at
        return None

    def _warn_shared(self, entries: list[Entry], video_task_id: str | None = None) -> None:
        """Say which keys share one video task id (a gateway that answers identical requests with the
        task it already has, or a hand-merged manifest): they share its wait, and each key gets a copy
        of its one video. ``video_task_id``: only that id (just created), else every one."""
        for task_id, keys in manifest.shared_ids(entries).items():
            if video_task_id in (None, task_id):
                self.log.warning(
                    "Keys %s share the video task %r (the gateway answered their creates with one task, "
                    "or the manifest was merged by hand): they wait for it together and each key gets "
                    "a copy of its one video. Make the requests differ to get separate videos.",
                    ", ".join(repr(key) for key in keys),
                    task_id,
                )

    def _create_one(self, entry: Entry) -> float | None:
        """Create one request; return when to try creates again if the gateway refuses them for now."""
        body = dict(entry.request)
        model, prompt = str(body.pop("model")), str(body.pop("prompt"))
        self._check_lease()  # never a create by a run that lost the manifest
        try:
            resolved = self.inputs.resolve(body, what=f"Request {entry.key!r}")  # presigned from now
            with resolved.redacting():
                task = self.hook.create_task(model, prompt, **resolved.fields)
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
        entry.extra["created_at"] = entry.waiting_since
        if task.status is TaskStatus.FAILED:
            entry.ended(Status.FAILED, task.error or "the gateway failed the task at once")
        return None

    def _trigger(self, entries: list[Entry], live: list[Entry], wake_at: float | None) -> VideoBatchTrigger:
        """The trigger that waits for this wave's live tasks (on the worker first, see :meth:`_wait_here`)."""
        tasks: dict[str, list[float]] = {}
        for entry in live:  # keys that share a task id share its wait (the first one's times)
            tasks.setdefault(
                str(entry.video_task_id), [float(entry.waiting_since or 0.0), self._deadline(entry)]
            )
        more = any(entry.status is Status.PENDING for entry in entries)
        counts = manifest.counts(entries)
        return VideoBatchTrigger(
            tasks=tasks,
            videoquery_conn_id=self.videoquery_conn_id,
            route=self.route,
            fire_after=max(1, math.ceil(len(tasks) * refill_share(len(entries), self.max_active)))
            if more
            else max(1, len(tasks)),
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
            unreachable_timeout=self.unreachable_timeout,
        )

    def _wait_here(self, trigger: VideoBatchTrigger) -> dict[str, Any] | None:
        """Run the wave's trigger on the worker for up to :data:`_STAY_ON_WORKER` seconds: its event if
        it fired by then (the next thing to do was seconds away), else None (defer)."""
        if _STAY_ON_WORKER <= 0:
            return None
        try:
            return asyncio.run(trigger.wait(give_up_after=_STAY_ON_WORKER))
        except Exception as err:
            raise VideoQueryError(
                f"Waiting for the batch on the worker stopped: {type(err).__name__}: {err}. The manifest "
                f"{self._manifest_uri} keeps every id: retry the task."
            ) from err

    def _defer(self, trigger: VideoBatchTrigger, live: list[Entry], entries: list[Entry]) -> None:
        """Wait in the triggerer; the trigger never fires sooner than :data:`_SAFE_HOLD` after it starts."""
        _, kwargs = trigger.serialize()
        latest = max([*(deadline for _, deadline in trigger.tasks.values()), trigger.wake_at or 0.0])
        timeout = max(0.0, latest - time.time()) + _DEFER_MARGIN
        self._deferred_until = time.time() + timeout + _LEASE_AFTER_DEFERRAL
        counts = manifest.counts(entries)
        self.log.info(
            "Waiting for %d live task(s) in the triggerer (%d stored, %d not created yet).",
            len(live),
            counts[Status.SUCCEEDED.value],
            counts[Status.PENDING.value],
        )
        self.defer(
            trigger=VideoBatchTrigger(**{**kwargs, "min_hold": _SAFE_HOLD}),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout),
        )

    def _deadline(self, entry: Entry) -> float:
        return float(entry.waiting_since or time.time()) + self.timeout

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage, when its provider is installed: the requests file in; the manifest and the
        destination folder out (one dataset for the folder, not one per video)."""
        inputs = [dataset_name(destination_uri(self.requests))] if isinstance(self.requests, str) else []
        return lineage(inputs, [self._manifest_uri, object_uri(self.folder)])

    # -- verifying and finishing ---------------------------------------------------------------------

    def _remove_orphaned_parts(self, entries: list[Entry]) -> None:
        """Remove the temporaries an earlier try killed mid-store left beside this ledger's videos:
        only a holder of the manifest's lease writes those names, so they are orphans whatever their
        age (one listing of a local folder; other stores never show a partial object)."""
        owned = {_file_name(entry) for entry in entries}
        removed = remove_stale_parts(self.folder, owned=owned)
        if removed:
            self.log.info("Removed %d temporary file(s) an earlier try left while storing.", len(removed))

    def _verify_stored(self, entries: list[Entry]) -> None:
        """Keep stored videos that still verify (size and sha256); store the others again.

        A video that is gone or differs is stored again from the gateway; one that differs is replaced
        only by a verified new download (written beside it, then moved over it), so an expired URL
        leaves it where it is. A video that cannot be read now is kept as recorded: a read error is
        not a mismatch.
        """
        stored = [entry for entry in entries if entry.status is Status.SUCCEEDED]
        if not stored:
            return
        with ThreadPoolExecutor(self.max_parallel_downloads) as pool:
            verdicts = list(pool.map(self._verdict, stored))
        now = time.time()
        again = 0
        for entry, verdict in zip(stored, verdicts, strict=True):
            if verdict is None:
                continue
            problem, present = verdict
            if present is None:  # unreadable: not a mismatch
                self.log.warning("Keeping %r as recorded, unverified: %s", entry.key, problem)
                continue
            self.log.warning("Storing %r again (task %r): %s", entry.key, entry.video_task_id, problem)
            entry.wait_again(now)
            entry.replace = present
            again += 1
        self.log.info("Kept %d stored video(s) that verify; %d to store again.", len(stored) - again, again)

    def _verdict(self, entry: Entry) -> tuple[str, bool | None] | None:
        """None when the stored video verifies; else what is wrong and whether an object is there
        (True: it differs, False: it is gone, None: it cannot be read now)."""
        target = self._target(entry)
        uri = object_uri(target)
        try:
            if not target.exists():
                return f"{uri} is gone", False
            size = target.stat().st_size
            if size != entry.bytes:
                return f"{uri} holds {size} bytes, the manifest says {entry.bytes}", True
            if sha256_of(target) != entry.sha256:
                return f"{uri} has another sha256 than the manifest", True
        except FileNotFoundError:
            return f"{uri} is gone", False
        except OSError as err:
            return f"{uri} cannot be read now ({type(err).__name__}: {err}); it is not stored again", None
        return None

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


def refill_share(total: int, max_active: int) -> float:
    """The share of live tasks that must finish before a wave that still has requests to create.

    A wave creates at most the tasks that finished, so a batch of ``total`` takes about
    ``total / (share * max_active)`` waves: a quarter keeps the gateway busy, and a larger share keeps
    that at most :data:`_MAX_WAVES` (or ``total / max_active``, the fewest possible) for a big batch.
    """
    wanted = total / (max(1, max_active) * _MAX_WAVES)
    return min(1.0, max(_REFILL_SHARE, wanted))


class _StillRunning(Exception):
    """Re-read before storing, a task the trigger saw succeed is running again (its status flapped)."""


def _file_name(entry: Entry) -> str:
    """The name of ``entry``'s video in the batch's folder: its key, made a safe file name, ``.mp4``."""
    return safe_file_name(entry.key)


def _by_id(entries: list[Entry]) -> dict[str, list[Entry]]:
    """The entries of each video task id (two keys may share one)."""
    by_id: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.video_task_id:
            by_id.setdefault(entry.video_task_id, []).append(entry)
    return by_id


def _owner(context: Context, operator: BaseOperator) -> lease.Owner:
    """The task instance (and try) the lease names; a context without one gets a name of its own."""
    ti = context.get("ti")
    run_id, map_index = getattr(ti, "run_id", None), getattr(ti, "map_index", None)
    return lease.Owner(
        dag_id=str(getattr(ti, "dag_id", None) or operator.dag_id),
        run_id=str(run_id) if run_id else f"unnamed-{uuid.uuid4().hex[:12]}",
        task_id=str(getattr(ti, "task_id", None) or operator.task_id),
        map_index=int(map_index) if map_index is not None else -1,
        try_number=int(getattr(ti, "try_number", None) or 1),
    )


def _take(items: Iterator[Entry], count: int) -> Iterator[Entry]:
    for _, item in zip(range(max(0, count)), items, strict=False):
        yield item


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{value} {name}" for name, value in counts.items() if value or name == "total")
