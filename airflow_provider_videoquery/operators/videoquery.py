"""VideoCreateOperator submits a video task; VideoDownloadOperator waits for it and stores the file."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import httpx
from airflow.providers.common.compat.sdk import BaseOperator, Context

from airflow_provider_videoquery.create_fields import check_create_request
from airflow_provider_videoquery.events import ensure_not_failed, task_from_event
from airflow_provider_videoquery.exceptions import (
    VideoCreateUncertainError,
    VideoDownloadError,
    VideoQueryTransientError,
)
from airflow_provider_videoquery.hooks._http import RetryPolicy, uncertain_error
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus, VideoTask, display_url
from airflow_provider_videoquery.storage import (
    DEFAULT_MAX_BYTES,
    ContentKind,
    DownloadSettings,
    StoredObject,
    check_destination,
    new_client,
    resolve_destination,
    store_url,
)
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from airflow_provider_videoquery.waiting import (
    DEFAULT_NOT_FOUND_GRACE,
    DEFER_MARGIN,
    Event,
    Watch,
    poll_interval_checked,
    refreshed,
    require_task_id,
)

#: Thumbnails are small; anything bigger than this is not one.
_THUMBNAIL_MAX_BYTES = 50 * 1024 * 1024


class VideoCreateOperator(BaseOperator):
    """Submit a new video task on the worker and return its id (XCom) for a sensor or download.

    The request is checked first (``model``, ``prompt``, and the fields of known model families:
    docs/create.md); a value the model does not accept fails at once with the accepted values, before
    anything is paid for. A create is paid for once: after a POST the gateway may have received without
    telling its id (timeout after sending, reset, 5xx, an answer without an id) the task fails at once,
    without Airflow retries, with :class:`~airflow_provider_videoquery.exceptions.VideoCreateUncertainError`
    saying what to look for at the gateway. On Airflow 3.3 the create is also recorded in the task's
    ``task_state_store`` (key ``videoquery_create``): a retry after a try that died mid-request fails the
    same way instead of paying again, and one after the create answered reuses its id (docs/create.md).
    The new id is pushed to XCom (key ``video_task_id``) as soon as the gateway returns it, before
    anything else can fail. A task the gateway rejects at once raises
    the non-retried :class:`~airflow_provider_videoquery.exceptions.VideoTaskFailedError`.

    :param model: e.g. ``veo3.1-fast``, ``sora-2``, ``grok-video-3`` (templated).
    :param prompt: what to generate (templated).
    :param videoquery_conn_id: the ``videoquery`` connection.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's route.
    :param extra_fields: more body fields, passed unchanged (``aspect_ratio``, ``images``, ``duration``,
        …; templated).
    :param retry_uncertain_creates: let Airflow retry (the task's ``retries``) a create the gateway may
        have received, accepting that a second video may be paid for.
    """

    template_fields: Sequence[str] = ("model", "prompt", "extra_fields")
    template_fields_renderers = {"extra_fields": "json", "prompt": "md"}
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        model: str,
        prompt: str,
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        extra_fields: dict[str, Any] | None = None,
        retry_uncertain_creates: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.prompt = prompt
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.extra_fields = extra_fields or {}
        self.retry_uncertain_creates = retry_uncertain_creates

    def execute(self, context: Context) -> str:
        hook = VideoQueryHook(self.videoquery_conn_id, route=self.route)
        ledger = _CreateLedger.of(context, self.log, self.retry_uncertain_creates)
        try:
            self._check(hook)
            earlier = ledger.begin(hook, self._uncertain(hook), self.prompt) if ledger is not None else None
            task = earlier if earlier is not None else self._create(hook, ledger)
        except VideoCreateUncertainError as err:
            if not self.retry_uncertain_creates:
                raise
            raise VideoQueryTransientError(
                f"{err.what} failed ({err.problem}) after the gateway may have received it; Airflow "
                f"may retry it (retry_uncertain_creates=True), which can pay for a second video. {err.check}"
            ) from err
        finally:
            hook.close()
        # The hook has logged the id; keep it in XCom before anything else can fail: it was paid for.
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="video_task_id", value=task.id)
        ensure_not_failed(task)
        return task.id

    def _create(self, hook: VideoQueryHook, ledger: _CreateLedger | None) -> VideoTask:
        """The create itself; the ledger (Airflow 3.3+) learns its id, or forgets the create once the
        outcome is known to be nothing (a refusal) or has been told (an uncertain create's message says
        what to check, and a clear after that creates again)."""
        try:
            task = hook.create_task(self.model, self.prompt, **self.extra_fields)
        except Exception:
            if ledger is not None:
                ledger.forget()
            raise
        if ledger is not None:
            ledger.created(task.id)
        return task

    def _uncertain(self, hook: VideoQueryHook) -> Callable[[str, datetime], VideoCreateUncertainError]:
        """The error for a create an earlier try sent without learning its id."""
        what = f"Creating a {self.model!r} video task at {hook.config.shown_url}"

        def error(problem: str, sent_at: datetime) -> VideoCreateUncertainError:
            return uncertain_error(what, problem, self.prompt, "at about", sent_at)

        return error

    def _check(self, hook: VideoQueryHook) -> None:
        """Refuse, before anything is paid for, a request its model family would not accept."""
        body = {**self.extra_fields, "model": self.model, "prompt": self.prompt}
        route = self.route or hook.config.route
        for warning in check_create_request(body, route=str(route), what=f"Task {self.task_id!r}"):
            self.log.warning(warning)


class _CreateLedger:
    """What this task's tries sent, in Airflow 3.3's ``task_state_store`` (kept across retries).

    Before the POST the ledger records "sending" (time, prompt); right after it, the new id. A retry
    that finds an id reuses it instead of paying again (unless the gateway failed that task); one that
    finds "sending" without an id knows an earlier try died mid-request (killed, timed out): that create
    is uncertain. When a try learns that nothing was made, or has told the user what to check, the entry
    goes, so a later clear creates again. On Airflow 3.1/3.2 there is no store, hence no ledger.
    """

    KEY = "videoquery_create"

    def __init__(self, store: Any, log: Any, retry_uncertain: bool) -> None:
        self.store = store
        self.log = log
        self.retry_uncertain = retry_uncertain

    @classmethod
    def of(cls, context: Context, log: Any, retry_uncertain: bool) -> _CreateLedger | None:
        store = context.get("task_state_store")  # Airflow 3.3+
        return cls(store, log, retry_uncertain) if store is not None else None

    def begin(
        self,
        hook: VideoQueryHook,
        uncertain: Callable[[str, datetime], VideoCreateUncertainError],
        prompt: str,
    ) -> VideoTask | None:
        """Before a create: the task an earlier try created (reuse it), or None once the create about to
        be sent is recorded; raises ``uncertain(…)`` when an earlier try's create is uncertain."""
        entry = self.store.get(self.KEY)
        if isinstance(entry, dict) and entry.get("video_task_id"):
            task = self._reused(hook, str(entry["video_task_id"]))
            if task is not None:
                return task
        elif isinstance(entry, dict) and entry.get("state") == "sending":
            sent_at = _parse_time(entry.get("sent_at"))
            problem = (
                f"an earlier try of this task sent it at {sent_at:%Y-%m-%d %H:%M:%S} UTC and ended "
                "before the gateway's answer was recorded: the worker was killed or the try timed out "
                "mid-request"
            )
            if not self.retry_uncertain:
                self.forget()  # the error says what to check; a clear after that creates again
                raise uncertain(problem, sent_at)
            self.log.warning("%s; retry_uncertain_creates=True: creating it again.", problem.capitalize())
        now = datetime.now(UTC).isoformat()
        self.store.set(self.KEY, {"state": "sending", "sent_at": now, "prompt": prompt[:200]})
        return None

    def _reused(self, hook: VideoQueryHook, video_task_id: str) -> VideoTask | None:
        try:
            task = hook.get_task(video_task_id)
        except Exception as err:  # the id is what was paid for: keep it, whatever this look says
            self.log.warning(
                "An earlier try of this task created video task %r; looking it up failed (%s), reusing "
                "it anyway: nothing is created again.",
                video_task_id,
                err,
            )
            return VideoTask(id=video_task_id, status=TaskStatus.QUEUED, raw_status=None)
        if task.status is TaskStatus.FAILED:
            self.log.warning(
                "An earlier try of this task created video task %r, which the gateway failed (%s): "
                "creating a new one.",
                video_task_id,
                task.error,
            )
            return None
        self.log.info(
            "An earlier try of this task created video task %r (recorded in the task's state store): "
            "reusing it, nothing is created again (%s).",
            video_task_id,
            task.summary(),
        )
        return task

    def created(self, video_task_id: str) -> None:
        try:
            self.store.set(self.KEY, {"state": "created", "video_task_id": video_task_id})
        except Exception as err:  # the id is in XCom and the log already; a retry then sees "sending"
            self.log.warning(
                "Could not record video task %r in the task's state store: %s", video_task_id, err
            )

    def forget(self) -> None:
        self.store.delete(self.KEY)


def _parse_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.now(UTC)


class VideoDownloadOperator(BaseOperator):
    """Wait for a video task if needed, then stream its MP4 into object storage; return the URI.

    The file streams chunk by chunk (memory stays flat) into a temporary object beside the target and
    is moved into place only once complete and verified (size, sha256, MP4 signature), so readers never
    see a partial file. A rerun whose target already holds the same bytes keeps it and succeeds. A video
    the gateway reports inline (``data:video/mp4;base64,…``) is decoded and stored the same way.

    Return value: the stored object's URI (``s3://bucket/key``, ``file:///…``; no connection id).
    XCom ``video``: ``{uri, video_url, bytes, sha256, content_type, video_task_id, thumbnail}``.
    Outlets: each ``Asset`` gets that dict as its event's extra; an ``AssetAlias`` gets an event for
    an ``Asset`` at the stored URI.

    :param video_task_id: the task to download (templated), e.g. ``{{ ti.xcom_pull('create') }}``.
    :param destination: a file URI, or a folder (ending in ``/``, or an existing one) where the file is
        named after the task id (templated), e.g. ``s3://bucket/videos/``, ``file:///data/videos/clip.mp4``
        or ``/data/videos/``. Checked before anything is waited for (``storage.check_destination``).
    :param destination_conn_id: the storage connection (e.g. ``aws_default``); it must exist. None: the
        store's default (for S3 boto3's own credentials, with a warning; never anonymous).
    :param videoquery_conn_id: the ``videoquery`` connection.
    :param route: ``unified``, ``vidu-native``, ``openai`` or ``new-api``; default: the connection's route.
    :param wait_for_completion: wait for an unfinished task; otherwise fail at once.
    :param deferrable: wait in the triggerer (True) or poll on the worker (False).
    :param poll_interval: seconds between status queries while waiting (at least 0.01 s).
    :param timeout: seconds to wait for the task to finish (the download itself is not limited).
    :param overwrite: replace an existing, different object at the destination.
    :param max_bytes: refuse files larger than this.
    :param include_thumbnail: also store the task's thumbnail next to the video (``<name>.thumbnail.jpg``).
    :param download_attempts: tries for transient download failures (resets, truncation, 5xx).
    :param download_retry_delay: base backoff in seconds between those tries.
    """

    template_fields: Sequence[str] = ("video_task_id", "destination")
    ui_color = "#e4ffe9"

    def __init__(
        self,
        *,
        video_task_id: str,
        destination: str,
        destination_conn_id: str | None = None,
        videoquery_conn_id: str = VideoQueryHook.default_conn_name,
        route: str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        overwrite: bool = False,
        max_bytes: int = DEFAULT_MAX_BYTES,
        include_thumbnail: bool = False,
        download_attempts: int = 5,
        download_retry_delay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.video_task_id = video_task_id
        self.destination = destination
        self.destination_conn_id = destination_conn_id
        self.videoquery_conn_id = videoquery_conn_id
        self.route = route
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval_checked(poll_interval, f"VideoDownloadOperator {self.task_id!r}")
        self.timeout = float(timeout)
        self.overwrite = overwrite
        self.max_bytes = int(max_bytes)
        self.include_thumbnail = include_thumbnail
        self.download_attempts = download_attempts
        self.download_retry_delay = download_retry_delay

    @cached_property
    def hook(self) -> VideoQueryHook:
        return VideoQueryHook(self.videoquery_conn_id, route=self.route)

    def execute(self, context: Context) -> str:
        check_destination(self.destination, self.destination_conn_id)  # before anything is waited for
        try:
            return self._execute(context)
        finally:
            self.hook.close()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        """Resume after the trigger: validate its event, read the task once more (fresh URL), download."""
        try:
            task = task_from_event(event, self.video_task_id)
            return self._store(context, refreshed(task, self._poll(), self.log))
        finally:
            self.hook.close()

    def _execute(self, context: Context) -> str:
        require_task_id(self.video_task_id, f"VideoDownloadOperator {self.task_id!r}")
        started = time.time()
        grace = DEFAULT_NOT_FOUND_GRACE if self.wait_for_completion else 0.0
        watch = Watch(self.video_task_id, started + self.timeout, started + grace, started, self.log)
        event = watch.after(self._poll(watch.deadline))
        if event is None:
            state = (
                watch.last.summary() if watch.last else f"video task {self.video_task_id!r}: not known yet"
            )
            if not self.wait_for_completion:
                raise VideoDownloadError(
                    f"Cannot download yet: {state}. Set wait_for_completion=True, or wait with a "
                    "VideoTaskSensor before this task."
                )
            if self.deferrable:
                self.log.info("Waiting in the triggerer: %s", state)
                self.defer(
                    trigger=VideoTaskTrigger(
                        video_task_id=self.video_task_id,
                        deadline=watch.deadline,
                        videoquery_conn_id=self.videoquery_conn_id,
                        route=self.route,
                        poll_interval=self.poll_interval,
                        not_found_deadline=watch.not_found_deadline,
                        started_at=started,
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=self.timeout + DEFER_MARGIN),
                )
            event = self._wait_here(watch)
        return self._store(context, watch.finished(event))

    # -- waiting ---------------------------------------------------------------------------------

    def _poll(self, deadline: float | None = None) -> VideoTask | Exception:
        """One status query; no backoff or ``Retry-After`` sleep inside it runs past ``deadline``."""
        try:
            return self.hook.get_task(self.video_task_id, self.route, deadline=deadline)
        except Exception as err:
            return err

    def _wait_here(self, watch: Watch) -> Event:
        """Poll on the worker (deferrable=False) until the watch ends the wait."""
        while True:
            expired = watch.expired()
            if expired is not None:
                return expired
            time.sleep(min(self.poll_interval, max(watch.deadline - time.time(), 0.0)))
            event = watch.after(self._poll(watch.deadline)) or watch.expired()
            if event is not None:
                return event

    # -- storing ---------------------------------------------------------------------------------

    def _store(self, context: Context, task: VideoTask) -> str:
        if not task.video_url:  # a succeeded VideoTask always has one; guard the invariant anyway
            raise VideoDownloadError(f"Video task {task.id!r} succeeded but names no video URL.")
        settings = DownloadSettings.for_gateway(
            self.hook.config,
            max_bytes=self.max_bytes,
            retry=RetryPolicy(max_attempts=self.download_attempts, base_delay=self.download_retry_delay),
        )
        target = resolve_destination(self.destination, self.video_task_id, self.destination_conn_id)
        with new_client(settings) as client:
            video = store_url(
                task.video_url,
                target,
                settings,
                overwrite=self.overwrite,
                client=client,
                what=f"the video of task {task.id!r}",
            )
            thumbnail = (
                self._store_thumbnail(task, video, settings, client) if self.include_thumbnail else None
            )
        metadata: dict[str, Any] = {
            "uri": video.uri,
            "video_url": display_url(task.video_url),
            "bytes": video.size,
            "sha256": video.sha256,
            "content_type": video.content_type,
            "video_task_id": task.id,
            "thumbnail": thumbnail.uri if thumbnail else None,
        }
        context["ti"].xcom_push(key="video", value=metadata)
        self._emit_asset_events(context, metadata)
        verb = "Kept the identical" if video.reused else "Stored the"
        self.log.info("%s video of task %r at %s", verb, task.id, video.uri)
        return video.uri

    def _store_thumbnail(
        self, task: VideoTask, video: StoredObject, settings: DownloadSettings, client: httpx.Client
    ) -> StoredObject | None:
        if not task.thumbnail_url:
            self.log.warning("Video task %r reports no thumbnail; storing the video only.", task.id)
            return None
        target = video.path.with_name(f"{video.path.stem}.thumbnail.jpg")
        thumb_settings = dataclasses.replace(settings, max_bytes=min(self.max_bytes, _THUMBNAIL_MAX_BYTES))
        return store_url(
            task.thumbnail_url,
            target,
            thumb_settings,
            kind=ContentKind.IMAGE,
            overwrite=self.overwrite,
            suffix_from_content=True,
            client=client,
            what=f"the thumbnail of task {task.id!r}",
        )

    def _emit_asset_events(self, context: Context, metadata: dict[str, Any]) -> None:
        """Attach the metadata to each outlet's asset event; an alias resolves to the stored URI."""
        from airflow.sdk import Asset, AssetAlias

        outlet_events = context.get("outlet_events")
        if outlet_events is None:
            return
        for outlet in self.outlets or ():
            if isinstance(outlet, AssetAlias):
                outlet_events[outlet].add(Asset(uri=metadata["uri"]), extra=metadata)
            elif isinstance(outlet, Asset):
                outlet_events[outlet].extra.update(metadata)


__all__ = ["VideoCreateOperator", "VideoDownloadOperator"]
