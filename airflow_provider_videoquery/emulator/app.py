"""The aiohttp application: gateway routes, video routes, admin routes, faults, auth, request log."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from aiohttp import web

from . import images, media
from .limits import Limits, Refusal
from .scenarios import API_ROUTES, Fault, Scenario, family_for_model
from .shapes import View, created_response, render, render_newapi
from .state import EmulatorState, RequestRecord, Task, TaskState, new_task_id

STATE_KEY = web.AppKey("emulator_state", EmulatorState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TASK_NOT_EXIST: dict[str, Any] = {"code": "task_not_exist", "message": "task_not_exist", "data": None}
# Per-request values shared between the middleware and the handlers (set at the start of every request).
_CUT: ContextVar[tuple[str, int] | None] = ContextVar("emulator_cut", default=None)
_TASK_ID: ContextVar[str | None] = ContextVar("emulator_task_id", default=None)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")
#: Seconds between the last byte of a cut body and the RST of a ``reset`` fault.
RESET_GRACE = 0.3


# ---- helpers ---------------------------------------------------------------------------------
def _request_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(8)


def api_error(status: int, message: str, code: str = "") -> web.Response:
    """new-api style error: ``{"error": {"message", "type": "new_api_error", "code"}}``."""
    text = f"{message} (request id: {_request_id()})"
    body = {"error": {"message": text, "type": "new_api_error", "code": code}}
    return web.json_response(body, status=status)


def _html(status: int, title: str) -> str:
    return (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )


def reported_video_url(base: str, host: str, task: Task) -> str:
    """The video URL a task reports once it has succeeded."""
    sc = task.scenario
    if sc.video_url is not None:
        return sc.video_url
    path = f"/videos/{task.video_name}.mp4"
    if sc.video_redirects > 0:
        path += f"?redirects={sc.video_redirects}"
    if sc.video_url_scheme:
        return f"{sc.video_url_scheme}://{host}{path}"
    return base + path


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _view(request: web.Request, task: Task, st: TaskState) -> View:
    video = thumb = None
    if st.show_video:
        if task.scenario.inline_video:
            video = media.video_data_uri(task.scenario.video_size)
        else:
            video = reported_video_url(_base(request), request.host, task)
        thumb = f"{_base(request)}/thumbnails/{task.video_name}.jpg"
    return View(task, st, video, thumb, time.time())


async def _json_body(request: web.Request) -> dict[str, Any]:
    """JSON object body, or a form (OpenAI's create takes multipart); raises ValueError."""
    if not request.can_read_body:
        return {}
    ctype = request.content_type
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}
    raw = await request.read()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE_KEY]


def _task_id_of(request: web.Request, route: str, state: EmulatorState) -> str | None:
    if route == "query":
        return request.query.get("id")
    if route in ("vidu_query", "newapi_query"):
        return request.match_info.get("task_id")
    if route in ("openai_query", "openai_content"):
        return request.match_info.get("video_id")
    if route in ("video", "thumbnail"):
        task = state.task_for_video(_stem(request.match_info.get("name", "")))
        return None if task is None else task.id
    return None


def _stem(name: str) -> str:
    for ext in (".mp4", ".jpg"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


# ---- bytes with Range and cuts ----------------------------------------------------------------
def parse_range(header: str, total: int) -> tuple[int, int] | None:
    """``[start, end)`` for a single ``bytes=`` range, or None if unsatisfiable/unsupported."""
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if first == "":
        if last == "" or int(last) == 0:
            return None
        return max(total - int(last), 0), total
    start = int(first)
    end = total if last == "" else min(int(last) + 1, total)
    if start >= total or end <= start:
        return None
    return start, end


async def _kill(request: web.Request, mode: str) -> None:
    """Close the connection mid-body: ``reset`` = TCP RST, ``truncate`` = clean FIN."""
    transport = request.transport
    if transport is None:
        return
    if mode == "reset":
        # An RST discards whatever the client has not read yet: give it time to read what was sent
        # (a cold client — first imports, first filesystem — may take a while before its first read).
        await asyncio.sleep(RESET_GRACE)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def serve_video(request: web.Request, size: int | None) -> web.StreamResponse:
    """Stream the video for ``size`` (None = sample.mp4) honouring ``Range: bytes=…``."""
    total = media.video_length(size)
    headers = {
        "Content-Type": "video/mp4",
        "Accept-Ranges": "bytes",
        "ETag": f'"emu-{size if size is not None else "sample"}"',
        "Cache-Control": "private, max-age=3600",
    }
    start, end, status = 0, total, 200
    range_header = request.headers.get("Range")
    if range_header:
        parsed = parse_range(range_header, total)
        if parsed is None:
            return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
        start, end = parsed
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = end - start
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    cut = _CUT.get()
    limit = end if cut is None else min(end, start + max(cut[1], 0), max(end - 1, start))
    for chunk in media.iter_video(size, start, limit):
        await resp.write(chunk)
    if cut is not None:
        await _kill(request, cut[0])
    else:
        await resp.write_eof()
    return resp


async def _cut_body(request: web.Request, resp: web.Response, mode: str, after: int) -> web.StreamResponse:
    """Send ``resp``'s headers with its full Content-Length but only part of its body, then kill."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    send = after if 0 < after < len(body) else len(body) // 2
    out = web.StreamResponse(status=resp.status, headers={"Content-Type": resp.content_type})
    out.content_length = len(body)
    await out.prepare(request)
    if send:
        await out.write(body[:send])
    await _kill(request, mode)
    return out


# ---- faults ----------------------------------------------------------------------------------
def _fault_error_response(fault: Fault, route: str) -> web.Response:
    status = fault.status
    if fault.body is not None:
        body = fault.body
        ctype = fault.content_type
        if ctype is None and body:
            ctype = "application/json" if body.lstrip()[:1] in ("{", "[") else "text/html"
    elif route in ("video", "thumbnail") or status >= 500:
        body = _html(status, _reason(status))
        ctype = fault.content_type or "text/html"
    elif status == 429:
        body = json.dumps(
            {
                "error": {
                    "message": f"rate limit exceeded, please try again later (request id: {_request_id()})",
                    "type": "new_api_error",
                    "code": "rate_limit_exceeded",
                }
            },
            ensure_ascii=False,
        )
        ctype = fault.content_type or "application/json"
    elif status == 404 and route in API_ROUTES:
        body = json.dumps(TASK_NOT_EXIST)
        ctype = fault.content_type or "application/json"
    else:
        msg = "invalid token" if status == 401 else _reason(status).lower()
        text = f"{msg} (request id: {_request_id()})"
        body = json.dumps({"error": {"message": text, "type": "new_api_error", "code": ""}})
        ctype = fault.content_type or "application/json"
    headers = dict(fault.headers)
    if ctype:
        headers["Content-Type"] = ctype
    return web.Response(status=status, body=body.encode(), headers=headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def apply_fault(
    fault: Fault, request: web.Request, route: str, proceed: Callable[[], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    kind = fault.kind
    if kind == "http_error":
        return _fault_error_response(fault, route)
    if kind == "slow_headers":
        await asyncio.sleep(fault.delay)
        return await proceed()
    if kind == "late_answer":
        resp = await proceed()
        await asyncio.sleep(fault.delay)
        return resp
    if kind == "malformed_json":
        return web.Response(body=b'{"id": "x", "sta', headers={"Content-Type": "application/json"})
    if kind == "html_video":
        page = (
            "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>Something went wrong</h1>"
            "<p>The file you requested is temporarily unavailable. Please try again later.</p></body></html>"
        )
        return web.Response(status=200, text=page, content_type="text/html")
    if kind == "redirect_loop":
        return web.Response(status=302, headers={"Location": str(request.rel_url)})
    if kind == "redirect_scheme":
        return web.Response(status=302, headers={"Location": fault.location})
    if kind == "redirect":
        target = request.rel_url.update_query({"_hop": "1"})
        return web.Response(status=302, headers={"Location": str(target)})
    # reset / truncate
    _CUT.set((kind, fault.after_bytes))
    resp = await proceed()
    if resp.prepared or not isinstance(resp, web.Response):
        return resp
    return await _cut_body(request, resp, kind, fault.after_bytes)


# ---- middleware ------------------------------------------------------------------------------
def _bearer(request: web.Request) -> str:
    """The API key the request carries ("" when none)."""
    return request.headers.get("Authorization", "").removeprefix("Bearer ").strip()


def _auth_ok(request: web.Request, api_key: str | None) -> bool:
    if api_key is None:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode())


@web.middleware
async def emulator_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or "unknown"
    if route.startswith("admin_"):
        return await handler(request)
    state = _state(request)
    started = time.time()
    _CUT.set(None)
    _TASK_ID.set(_task_id_of(request, route, state))
    hopped = "_hop" in request.query
    fault = None if route == "unknown" else state.pick_fault(route, _TASK_ID.get(), hopped)
    status = 500

    async def proceed() -> web.StreamResponse:
        if route in API_ROUTES and not _auth_ok(request, state.api_key):
            return api_error(401, "invalid token")
        return await handler(request)

    try:
        resp = await (apply_fault(fault, request, route, proceed) if fault is not None else proceed())
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        state.record(
            RequestRecord(
                method=request.method,
                path=request.path,
                route=route,
                task_id=_TASK_ID.get(),
                status=status,
                time=started,
                fault=None if fault is None else fault.kind,
            )
        )


# ---- gateway routes --------------------------------------------------------------------------
async def _create(request: web.Request, route: str, default_model: str) -> web.StreamResponse:
    state = _state(request)
    try:
        body = await _json_body(request)
        overrides = body.pop("emulator", None)
        scenario = state.default
        if overrides is not None:
            if not isinstance(overrides, dict):
                raise ValueError('"emulator" must be an object')
            scenario = Scenario.from_dict(overrides, base=state.default)
    except (ValueError, TypeError) as exc:
        return api_error(400, f"invalid request: {exc}", "invalid_request")
    model = str(body.get("model") or default_model)
    if not model:
        return api_error(400, "model is required", "invalid_request")
    received = await images.receive(request, route, body)  # fetched, decoded or read, like a gateway
    if received.refusal is not None:
        return api_error(400, received.refusal, "invalid_request")
    scenario = received.scenario(scenario)
    if route == "vidu_create":
        family = scenario.family or "vidu"
        task_id = new_task_id("vidu", model)
    elif route == "openai_create":
        family = scenario.family or "openai"
        task_id = new_task_id("openai", model)
    elif route == "newapi_create":
        family = scenario.family or "newapi"
        task_id = new_task_id("newapi", model)
    else:
        family = scenario.family or family_for_model(model)
        task_id = new_task_id(family if family in ("veo", "sora", "grok") else "veo", model)
    key = _bearer(request)
    refused = state.admit_create(key)
    if refused is not None:
        return _limit_refusal(*refused)
    task = state.add_task(task_id, scenario, model=model, family=family, body=received.body)
    task.images = received.images
    state.note_create(key, task.id)
    _TASK_ID.set(task.id)
    return web.json_response(created_response(task, route))


def _limit_refusal(reason: Refusal, headers: dict[str, str]) -> web.Response:
    """429 for a create beyond the key's limits, in new-api's words; nothing was created."""
    if reason == "live_cap":
        message = "too many unfinished tasks for this key, wait for some to finish"
        code = "task_limit_exceeded"
    else:
        message, code = "rate limit exceeded, please try again later", "rate_limit_exceeded"
    resp = api_error(429, message, code)
    resp.headers.update(headers)
    return resp


async def handle_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "create", "")


async def handle_vidu_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "vidu_create", "viduq1")


async def handle_openai_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "openai_create", "sora-2")


async def _query(request: web.Request, task_id: str | None, missing_status: int) -> web.StreamResponse:
    result = None if not task_id else _state(request).advance(task_id)
    if result is None:
        return web.json_response(TASK_NOT_EXIST, status=missing_status)
    task, st = result
    return web.json_response(render(_view(request, task, st)))


async def handle_query(request: web.Request) -> web.StreamResponse:
    return await _query(request, request.query.get("id"), 400)


async def handle_vidu_query(request: web.Request) -> web.StreamResponse:
    return await _query(request, request.match_info["task_id"], 404)


async def handle_openai_query(request: web.Request) -> web.StreamResponse:
    return await _query(request, request.match_info["video_id"], 400)


async def handle_newapi_create(request: web.Request) -> web.StreamResponse:
    return await _create(request, "newapi_create", "veo3.1-fast")


async def handle_newapi_query(request: web.Request) -> web.StreamResponse:
    task_id = request.match_info["task_id"]
    result = _state(request).advance(task_id)
    if result is None:
        return web.json_response(TASK_NOT_EXIST, status=400)
    task, st = result
    if task.polls <= task.scenario.newapi_null_polls:
        return web.json_response({"code": "success", "data": None})
    return web.json_response(render_newapi(_view(request, task, st)))


def _openai_error(message: str, code: str) -> web.Response:
    """A 400 in OpenAI's error shape."""
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}, status=400
    )


async def handle_openai_content(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    peeked = state.peek(request.match_info["video_id"])
    if peeked is None:
        return web.json_response(TASK_NOT_EXIST, status=400)
    task, st = peeked
    if st.kind != "success" and task.last_kind != "success":
        return _openai_error(f"Video is not ready yet, current status: {st.kind}", "video_not_ready")
    # OpenAI's ``variant``: the video (default) or its thumbnail; the emulator has no spritesheet.
    variant = request.query.get("variant", "video")
    if variant == "thumbnail":
        return web.Response(body=media.thumbnail_jpg(), content_type="image/jpeg")
    if variant != "video":
        return _openai_error(
            f"Invalid value for 'variant': {variant!r} (video or thumbnail here).", "invalid_value"
        )
    if task.scenario.video_redirects > 0 or task.scenario.video_url is not None:
        location = reported_video_url(_base(request), request.host, task)
        return web.Response(status=302, headers={"Location": location})
    return await serve_video(request, task.scenario.video_size)


# ---- file routes (no auth, like signed CDN URLs) ---------------------------------------------
async def handle_video(request: web.Request) -> web.StreamResponse:
    redirects = request.query.get("redirects", "")
    if redirects.isdigit() and int(redirects) > 0:
        left = int(redirects) - 1
        target = request.rel_url.with_query(None if left == 0 else {"redirects": str(left)})
        return web.Response(status=302, headers={"Location": str(target)})
    stem = _stem(request.match_info["name"])
    size: int | None
    task = _state(request).task_for_video(stem)
    if task is not None:
        size = task.scenario.video_size
    elif stem == "_sample":
        size = None
    elif stem.startswith("_size-") and stem[6:].isdigit():
        size = int(stem[6:])
    else:
        return web.Response(status=404, text=_html(404, "Not Found"), content_type="text/html")
    return await serve_video(request, size)


async def handle_thumbnail(request: web.Request) -> web.StreamResponse:
    if _state(request).task_for_video(_stem(request.match_info["name"])) is None:
        return web.Response(status=404, text=_html(404, "Not Found"), content_type="text/html")
    return web.Response(body=media.thumbnail_jpg(), content_type="image/jpeg")


# ---- admin routes (no auth) ------------------------------------------------------------------
def _items(data: Any, key: str) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get(key), list):
        data = data[key]
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(i, dict) for i in items):
        raise ValueError("expected a JSON object or a list of objects")
    return items


async def admin_tasks(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    try:
        items = _items(await request.json(), "tasks")
        created = []
        for item in items:
            scenario = Scenario.from_dict(dict(item.get("scenario") or {}), base=state.default)
            task = state.add_task(str(item["id"]), scenario, model=item.get("model"), body=item.get("body"))
            created.append(
                {
                    "id": task.id,
                    "family": task.family,
                    "video_url": reported_video_url(_base(request), request.host, task),
                }
            )
    except (ValueError, TypeError, KeyError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    return web.json_response(created[0] if len(created) == 1 else {"tasks": created})


async def admin_faults(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    try:
        faults = [Fault.from_dict(item) for item in _items(await request.json(), "faults")]
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    for fault in faults:
        state.add_fault(fault)
    return web.json_response({"added": len(faults)})


async def admin_stats(request: web.Request) -> web.StreamResponse:
    return web.json_response(_state(request).stats(request.query.get("task_id")))


async def admin_requests(request: web.Request) -> web.StreamResponse:
    limit = int(request.query.get("limit", "1000"))
    records = _state(request).records()[-limit:] if limit > 0 else []
    return web.json_response({"requests": [r.__dict__ for r in records]})


async def admin_reset(request: web.Request) -> web.StreamResponse:
    _state(request).reset()
    return web.json_response({"ok": True})


async def admin_limits(request: web.Request) -> web.StreamResponse:
    """Set the per-key create limits (fields not given keep their current value)."""
    state = _state(request)
    try:
        data = await request.json()
        state.limits = Limits.from_dict(data if isinstance(data, dict) else {}, base=state.limits)
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    return web.json_response(state.limits.to_dict())


async def admin_default(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    try:
        data = await request.json()
        state.default = Scenario.from_dict(data if isinstance(data, dict) else {})
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=400)
    return web.json_response(state.default.to_dict())


def create_app(state: EmulatorState | None = None) -> web.Application:
    """The emulator's aiohttp application (serve it with any aiohttp runner)."""
    app = web.Application(middlewares=[emulator_middleware], client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state or EmulatorState()
    r = app.router
    r.add_post("/v1/video/create", handle_create, name="create")
    r.add_get("/v1/video/query", handle_query, name="query")
    r.add_post("/vidu-native/video/generations", handle_vidu_create, name="vidu_create")
    r.add_get("/vidu-native/video/generations/{task_id}", handle_vidu_query, name="vidu_query")
    r.add_post("/v1/videos", handle_openai_create, name="openai_create")
    r.add_get("/v1/videos/{video_id}", handle_openai_query, name="openai_query")
    r.add_get("/v1/videos/{video_id}/content", handle_openai_content, name="openai_content")
    r.add_post("/v1/video/generations", handle_newapi_create, name="newapi_create")
    r.add_get("/v1/video/generations/{task_id}", handle_newapi_query, name="newapi_query")
    r.add_get("/videos/{name}", handle_video, name="video")
    r.add_get("/thumbnails/{name}", handle_thumbnail, name="thumbnail")
    r.add_post("/_emulator/tasks", admin_tasks, name="admin_tasks")
    r.add_post("/_emulator/faults", admin_faults, name="admin_faults")
    r.add_get("/_emulator/stats", admin_stats, name="admin_stats")
    r.add_get("/_emulator/requests", admin_requests, name="admin_requests")
    r.add_post("/_emulator/reset", admin_reset, name="admin_reset")
    r.add_post("/_emulator/default", admin_default, name="admin_default")
    r.add_post("/_emulator/limits", admin_limits, name="admin_limits")
    return app
