"""VideoCreateOperator submits a video task; VideoDownloadOperator waits for it and stores the file."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import timedelta
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
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import VideoTask, display_url
from airflow_provider_videoquery.operators._gallery import lineage, video_details
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
from airflow_provider_videoquery.ui import xcom
from airflow_provider_videoquery.ui.links import VideosLink
from airflow_provider_videoquery.waiting import (
    DEFAULT_NOT_FOUND_GRACE,
    DEFER_MARGIN,
    Event,
    Watch,
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
    saying what to look for at the gateway. The new id is pushed to XCom (key ``video_task_id``) as soon
    as the gateway returns it, before anything else can fail. A task the gateway rejects at once raises
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
        try:
            self._check(hook)
            task = hook.create_task(self.model, self.prompt, **self.extra_fields)
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
            ti.xcom_push(key=xcom.REQUEST_KEY, value=xcom.video_request(task.id, self.model, self.prompt))
        ensure_not_failed(task)
        return task.id

    def _check(self, hook: VideoQueryHook) -> None:
        """Refuse, before anything is paid for, a request its model family would not accept."""
        body = {**self.extra_fields, "model": self.model, "prompt": self.prompt}
        route = self.route or hook.config.route
        for warning in check_create_request(body, route=str(route), what=f"Task {self.task_id!r}"):
            self.log.warning(warning)


class VideoDownloadOperator(BaseOperator):
    """Wait for a video task if needed, then stream its MP4 into object storage; return the URI.

    The file streams chunk by chunk (memory stays flat) into a temporary object beside the target and
    is moved into place only once complete and verified (size, sha256, MP4 signature), so readers never
    see a partial file. A rerun whose target already holds the same bytes keeps it and succeeds. A video
    the gateway reports inline (``data:video/mp4;base64,…``) is decoded and stored the same way.

    Return value: the stored object's URI (``s3://bucket/key``, ``file:///…``; no connection id).
    XCom ``video``: ``{uri, video_url, bytes, sha256, content_type, video_task_id, thumbnail, prompt,
    model, created_at, stored_at, conn_id}``; prompt, model and created_at come from the upstream
    ``VideoCreateOperator`` that returned the id (null for an id created elsewhere). The "Videos" extra
    link opens the task's gallery (docs/gallery.md).
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
    :param poll_interval: seconds between status queries while waiting.
    :param timeout: seconds to wait for the task to finish (the download itself is not limited).
    :param overwrite: replace an existing, different object at the destination.
    :param max_bytes: refuse files larger than this.
    :param include_thumbnail: also store the task's thumbnail next to the video (``<name>.thumbnail.jpg``).
    :param download_attempts: tries for transient download failures (resets, truncation, 5xx).
    :param download_retry_delay: base backoff in seconds between those tries.
    """

    template_fields: Sequence[str] = ("video_task_id", "destination")
    ui_color = "#e4ffe9"
    operator_extra_links = (VideosLink(),)

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
        self.poll_interval = float(poll_interval)
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
            **video_details(context, self, task.id, self.destination_conn_id, VideoCreateOperator),
        }
        self._stored_uri = video.uri
        context["ti"].xcom_push(key=xcom.VIDEO_KEY, value=metadata)
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

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage, when its provider is installed: the gateway's task in, the stored video out."""
        stored = getattr(self, "_stored_uri", None)
        if stored is None:
            return None
        return lineage([(self.hook.config.base_url, self.video_task_id)], [stored])

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
