"""The gallery's HTTP routes, a FastAPI app that the plugin mounts on the api-server at ``/videoquery``.

* ``/dags/{dag}/runs/{run}`` and ``…/tasks/{task}/{map_index}``: the page (an HTML shell, no data);
* ``/api/…/videos``: the cards as JSON, paged, filtered by status (Airflow's own access checks);
* ``/api/…/media/{video|thumbnail}/{key}``: the stored object, with ``Range`` (the same checks);
* ``/signed/…/media/…``: the same object for a signed, expiring link (Airflow 3.1: see :mod:`.signing`).

A request names ids only (DAG, run, task, map index, card key), never a path: what is served is a URI
that the task instance's XCom or ledger names, and that :func:`.model.servable` allows.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from airflow_provider_videoquery.ui import media, model, page, signing, source, urls

#: Cards per page unless asked otherwise, and at most (a 10,000-video batch pages).
PAGE_SIZE = 24
MAX_PAGE_SIZE = 200
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def read_access() -> list[Any]:
    """Airflow's own checks for reading a DAG's task instances and XComs (401 / 403 / pass).

    ``requires_access_dag`` is an api-server module, not a public API: if a future Airflow moves it,
    every data route answers 503 rather than serving without a check.
    """
    try:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
        from airflow.api_fastapi.core_api.security import requires_access_dag
    except ImportError as err:
        reason = f"{type(err).__name__}: {err}"

        def refuse() -> None:
            raise HTTPException(503, f"The gallery cannot check access on this Airflow ({reason}).")

        return [Depends(refuse)]
    return [
        Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)),
        Depends(requires_access_dag("GET", DagAccessEntity.XCOM)),
    ]


def _secret_key() -> bytes:
    from airflow.configuration import conf

    return signing.media_key(conf.get("api", "secret_key"))


def _map_index(value: str) -> int:
    index = urls.parse_map_index(value)
    if index is None:
        raise HTTPException(404, f"{value!r} is not a map index.")
    return index


def _status(value: str | None) -> model.Status | None:
    if value in (None, "", "all"):
        return None
    try:
        return model.Status(value)
    except ValueError:
        allowed = ", ".join(status.value for status in model.Status)
        raise HTTPException(422, f"status must be one of {allowed} (or all), not {value!r}.") from None


def _records(dag_id: str, run_id: str, task_id: str | None, map_index: int | None) -> list[model.TaskRecord]:
    from airflow.utils.session import create_session

    with create_session() as session:
        if not source.run_exists(session, dag_id, run_id):
            raise HTTPException(404, f"DAG {dag_id!r} has no run {run_id!r}.")
        records = source.task_records(session, dag_id, run_id, task_id, map_index)
    if task_id is not None and not records:
        shown = task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"
        raise HTTPException(404, f"Run {run_id!r} of DAG {dag_id!r} has no task instance {shown}.")
    return records


class _Links:
    """Media links for one answer: plain (the login cookie authenticates them) or signed."""

    def __init__(self, request: Request, dag_id: str, run_id: str) -> None:
        self.root = request.scope.get("root_path", "")
        self.dag_id, self.run_id = dag_id, run_id
        # A bearer header means a client that cannot send it with <video src> (Airflow 3.1's UI).
        self.signed = request.headers.get("authorization", "").lower().startswith("bearer ")
        self.expires = int(time.time()) + signing.LINK_SECONDS if self.signed else None
        self.key = _secret_key() if self.signed else b""

    def media(self, card: model.Card, kind: model.Kind) -> str | None:
        if model.servable(card, kind) is None:
            return None
        path = urls.media_path(self.dag_id, self.run_id, card.task_id, card.map_index, kind.value, card.key)
        if self.expires is None:
            return f"{self.root}/api{path}"
        parts = (self.dag_id, self.run_id, card.task_id, str(card.map_index), kind.value, card.key)
        sig = signing.signature(self.key, parts, self.expires)
        return f"{self.root}/signed{path}?expires={self.expires}&signature={sig}"


def _videos(
    request: Request,
    dag_id: str,
    run_id: str,
    task_id: str | None,
    map_index: int | None,
    status: str | None,
    offset: int,
    limit: int,
) -> dict[str, Any]:
    chosen = _status(status)
    found = model.gallery(_records(dag_id, run_id, task_id, map_index), source.read_ledger)
    result = model.page(found.cards, chosen, offset, limit)
    links = _Links(request, dag_id, run_id)
    items = [
        {
            **card.to_json(),
            "video_url": links.media(card, model.Kind.VIDEO),
            "poster_url": links.media(card, model.Kind.THUMBNAIL),
        }
        for card in result.items
    ]
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "status": chosen.value if chosen else None,
        "counts": result.counts,
        "total": result.total,
        "offset": result.offset,
        "limit": result.limit,
        "media_links": "signed" if links.signed else "cookie",
        "links_expire_at": links.expires,
        "problems": found.problems,
        "items": items,
    }


def _serve(
    request: Request, dag_id: str, run_id: str, task_id: str, map_index: int, kind: str, key: str
) -> StreamingResponse:
    try:
        what = model.Kind(kind)
    except ValueError:
        raise HTTPException(404, f"No media {kind!r}: video or thumbnail.") from None
    cards = model.gallery(_records(dag_id, run_id, task_id, map_index), source.read_ledger).cards
    card = model.find(cards, key)
    if card is None:
        raise HTTPException(404, f"Task {task_id!r} of run {run_id!r} has no video {key!r}.")
    uri = model.servable(card, what)
    if uri is None:
        if (card.uri if what is model.Kind.VIDEO else card.thumbnail) is None:
            raise HTTPException(404, f"Video {key!r} has no stored {what.value} ({card.state}).")
        raise HTTPException(403, f"The {what.value} of {key!r} is not an object its task stored there.")
    path = source.storage_path(uri, card.conn_id)
    try:
        size = int(path.fs.info(path.path)["size"])
    except FileNotFoundError:
        raise HTTPException(404, f"The stored {what.value} of {key!r} is gone from {uri}.") from None
    try:
        span = media.parse_range(request.headers.get("range"), size)
    except media.Unsatisfiable:
        raise HTTPException(416, f"{size} bytes", headers={"Content-Range": f"bytes */{size}"}) from None
    name = _SAFE_NAME.sub("_", uri.rsplit("/", 1)[-1]) or "video"
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=300",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{name}"',
    }
    if card.sha256 and what is model.Kind.VIDEO:
        headers["ETag"] = f'"{card.sha256}"'
    start, length, code = 0, size, 200
    if span is not None:
        start, length, code = span.start, span.length, 206
        headers["Content-Range"] = span.content_range
    headers["Content-Length"] = str(length)
    recorded = card.content_type if what is model.Kind.VIDEO else None
    return StreamingResponse(
        media.iter_bytes(path.fs, path.path, start, length),
        status_code=code,
        headers=headers,
        media_type=media.content_type(uri, recorded),
    )


def _page(request: Request, dag_id: str, run_id: str, task_id: str | None, map_index: int) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    airflow_root = root.removesuffix(urls.PREFIX)
    scope_path = (
        urls.run_path(dag_id, run_id)
        if task_id is None
        else urls.task_path(dag_id, run_id, task_id, map_index)
    )
    if task_id is None:
        title = f"Videos of {dag_id} / {run_id}"
    else:
        shown = task_id if map_index < 0 else f"{task_id}[{map_index}]"
        title = f"Videos of {shown} in {dag_id} / {run_id}"
    config = {
        "api": f"{root}/api{scope_path}/videos",
        "page_size": PAGE_SIZE,
        "scope": {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index},
        "run_gallery": f"{root}{urls.run_path(dag_id, run_id)}" if task_id is not None else None,
        "airflow_run": f"{airflow_root}/dags/{urls.segment(dag_id)}/runs/{urls.segment(run_id)}",
    }
    return HTMLResponse(page.render(title, config, f"{root}/static"), headers={"Cache-Control": "no-store"})


def create_app() -> FastAPI:
    """The gallery's app; its data routes check access through Airflow's auth manager."""
    app = FastAPI(title="Video gallery (airflow-provider-videoquery)", openapi_url=None)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    access = read_access()
    paging: dict[str, Any] = {"ge": 0}
    run = "/dags/{dag_id}/runs/{run_id}"
    task = run + "/tasks/{task_id}/{map_index}"
    media_route = task + "/media/{kind}/{key}"

    @app.get(run, response_class=HTMLResponse, include_in_schema=False)
    def run_page(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
        return _page(request, dag_id, run_id, None, -1)

    @app.get(task, response_class=HTMLResponse, include_in_schema=False)
    def task_page(request: Request, dag_id: str, run_id: str, task_id: str, map_index: str) -> HTMLResponse:
        return _page(request, dag_id, run_id, task_id, _map_index(map_index))

    @app.get("/api" + run + "/videos", dependencies=access)
    def run_videos(
        request: Request,
        dag_id: str,
        run_id: str,
        status: str | None = None,
        offset: int = Query(0, **paging),
        limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    ) -> dict[str, Any]:
        return _videos(request, dag_id, run_id, None, None, status, offset, limit)

    @app.get("/api" + task + "/videos", dependencies=access)
    def task_videos(
        request: Request,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str,
        status: str | None = None,
        offset: int = Query(0, **paging),
        limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    ) -> dict[str, Any]:
        index = _map_index(map_index)
        return _videos(request, dag_id, run_id, task_id, index, status, offset, limit)

    @app.get("/api" + media_route, dependencies=access)
    def task_media(
        request: Request, dag_id: str, run_id: str, task_id: str, map_index: str, kind: str, key: str
    ) -> StreamingResponse:
        return _serve(request, dag_id, run_id, task_id, _map_index(map_index), kind, key)

    @app.get("/signed" + media_route)
    def signed_media(
        request: Request,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str,
        kind: str,
        key: str,
        expires: int = 0,
        signature: str = "",
    ) -> StreamingResponse:
        index = _map_index(map_index)
        parts = (dag_id, run_id, task_id, str(index), kind, key)
        if not signing.valid(_secret_key(), parts, expires, signature, time.time()):
            raise HTTPException(403, "This media link is not valid or has expired: reload the gallery.")
        return _serve(request, dag_id, run_id, task_id, index, kind, key)

    return app
