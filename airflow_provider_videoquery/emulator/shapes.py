"""Render one task's current state as each family's JSON, shaped like the seed pages
(veo = seed 001, sora-2 = seed 002, grok = seed 003, vidu native, OpenAI video object)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .scenarios import Family, Kind
from .state import Task, TaskState

RECAPTCHA_NOISE = (
    "[403] Request failed with status code 403 | Message: reCAPTCHA evaluation failed | Code: 403 | "
    "Status: PERMISSION_DENIED | Reason: PUBLIC_ERROR_SOMETHING_WENT_WRONG | "
    "Type: type.googleapis.com/google.rpc.ErrorInfo | URL: /v1/video:batchAsyncGenerateVideoStartImage"
)
UNSAFE_NOISE = (
    "your request contains unsafe prompt or images, such as porn, violence, minors etc., has been "
    "rejected by google, please change your prompt or images and try again"
)

#: The family's own status word for each kind (used when the scenario gives no explicit statuses).
STATUS_WORDS: dict[Family, dict[Kind, str]] = {
    "veo": {"queued": "pending", "running": "processing", "success": "completed", "failed": "failed"},
    "sora": {"queued": "pending", "running": "processing", "success": "completed", "failed": "failed"},
    "grok": {"queued": "pending", "running": "processing", "success": "completed", "failed": "failed"},
    "vidu": {"queued": "created", "running": "processing", "success": "success", "failed": "failed"},
    "openai": {"queued": "queued", "running": "in_progress", "success": "completed", "failed": "failed"},
    "newapi": {"queued": "QUEUED", "running": "IN_PROGRESS", "success": "SUCCESS", "failed": "FAILURE"},
}
#: new-api's Gemini/Vertex channels answer their own, lower-case words.
NEWAPI_GEMINI_WORDS: dict[Kind, str] = {
    "queued": "queued",
    "running": "processing",
    "success": "succeeded",
    "failed": "failed",
}


@dataclass(frozen=True)
class View:
    """Everything a renderer needs."""

    task: Task
    state: TaskState
    video_url: str | None  # None unless the state shows the video
    thumbnail_url: str | None
    now: float

    @property
    def status(self) -> str:
        return self.state.raw_status or STATUS_WORDS[self.task.family][self.state.kind]

    @property
    def terminal(self) -> bool:
        return self.state.kind in ("success", "failed")

    @property
    def failed(self) -> bool:
        return self.state.kind == "failed"

    @property
    def reason(self) -> str | None:
        return self.task.scenario.failure_reason if self.failed else None

    @property
    def prompt(self) -> str:
        return str(self.task.body.get("prompt", "make animate"))

    @property
    def created_ms(self) -> int:
        return int(self.task.created_at * 1000)

    @property
    def now_ms(self) -> int:
        return int(self.now * 1000)

    def hexid(self, salt: str, n: int = 32) -> str:
        return hashlib.sha256(f"{salt}:{self.task.id}".encode()).hexdigest()[:n]

    def uuid(self, salt: str) -> str:
        return str(uuid.UUID(hashlib.md5(f"{salt}:{self.task.id}".encode()).hexdigest()))


def _bare_id(task_id: str) -> str:
    return task_id.split(":", 1)[1] if ":" in task_id else task_id


def render_veo(v: View) -> dict[str, Any]:
    body = v.task.body
    images = list(body.get("images") or [])
    enhanced = f"A cinematic, richly detailed rendition of: {v.prompt}"
    media_status = {
        "queued": "MEDIA_GENERATION_STATUS_PENDING",
        "running": "MEDIA_GENERATION_STATUS_ACTIVE",
        "success": "MEDIA_GENERATION_STATUS_SUCCESSFUL",
        "failed": "MEDIA_GENERATION_STATUS_FAILED",
    }[v.state.kind]
    detail: dict[str, Any] = {
        "id": v.task.id,
        "req": {
            "model": v.task.model,
            "images": images,
            "prompt": v.prompt,
            "aspect_ratio": body.get("aspect_ratio", "16:9"),
            "enhance_prompt": bool(body.get("enhance_prompt", True)),
            "enable_upsample": bool(body.get("enable_upsample", True)),
        },
        "images": [{"url": u, "status": "completed", "mediaId": v.hexid(str(u), 40)} for u in images],
        "status": v.status,
        "running": not v.terminal,
        "video_url": v.video_url,
        "created_at": v.created_ms,
        "error_sleep": 5000,
        "max_retries": 3,
        "retry_count": 3 if v.terminal else 0,
        "completed_at": v.now_ms if v.terminal else None,
        "enhanced_prompt": enhanced,
        "status_update_time": v.now_ms,
        "video_generation_id": v.hexid("gen"),
        "needs_safe_enhancement": True,
        "video_generation_status": media_status,
    }
    if v.state.kind == "success":
        detail.update(
            {
                # Seed 001: a *completed* task still carries these error texts.
                "error_message": RECAPTCHA_NOISE,
                "video_generation_error": UNSAFE_NOISE,
                "video_media_id": v.hexid("media", 64),
                "upsample_status": "MEDIA_GENERATION_STATUS_SUCCESSFUL",
                "upsample_video_url": v.video_url,
                "upsample_generation_id": f"{v.uuid('upsample')}_upsampled",
            }
        )
    elif v.failed:
        detail.update({"error_message": v.reason, "video_generation_error": v.reason})
    return {
        "id": v.task.id,
        "detail": detail,
        "status": v.status,
        "video_url": v.video_url,
        "enhanced_prompt": enhanced,
        "status_update_time": v.now_ms,
    }


def render_sora(v: View) -> dict[str, Any]:
    body = v.task.body
    bare = _bare_id(v.task.id)
    portrait = body.get("orientation", "portrait") != "landscape"
    width, height = (352, 640) if portrait else (640, 352)
    inp = {
        "size": body.get("size", "small"),
        "model": "sy_ore",
        "images": list(body.get("images") or []),
        "prompt": v.prompt,
        "orientation": "portrait" if portrait else "landscape",
    }
    if v.state.kind == "success":
        url = v.video_url
        gen_id = f"gen_{v.hexid('gen', 26)}"
        path = {"path": url}
        detail: dict[str, Any] = {
            "id": bare,
            "url": url,
            "input": inp,
            "status": v.status,
            "gif_url": v.thumbnail_url,
            "draft_info": {
                "id": gen_id,
                "url": url,
                "kind": "sora_draft",
                "tags": [],
                "title": None,
                "width": width,
                "height": height,
                "prompt": v.prompt,
                "task_id": bare,
                "encodings": {
                    "md": path,
                    "gif": {"path": v.thumbnail_url},
                    "source": path,
                    "unfurl": None,
                    "source_wm": path,
                    "thumbnail": {"path": v.thumbnail_url},
                },
                "created_at": v.now,
                "generation_id": gen_id,
                "draft_reviewed": False,
                "generation_type": "",
                "downloadable_url": url,
            },
            "thumbnail_url": v.thumbnail_url,
        }
        return {
            "id": v.task.id,
            "width": width,
            "detail": detail,
            "height": height,
            "status": v.status,
            "video_url": url,
            "thumbnail_url": v.thumbnail_url,
            "status_update_time": v.now_ms,
        }
    pending_info: dict[str, Any] = {
        "id": bare,
        "seed": None,
        "type": "video_gen",
        "user": "user-emulator",
        "model": "sy_8",
        "title": "New Video",
        "width": width,
        "height": height,
        "prompt": v.prompt,
        "status": "failed" if v.failed else "processing",
        "n_frames": 450,
        "priority": 2,
        "operation": "simple_compose",
        "created_at": datetime.fromtimestamp(v.task.created_at, UTC).isoformat().replace("+00:00", "Z"),
        "n_variants": 1,
        "generations": [],
        "progress_pct": None if v.state.kind == "queued" else round(v.state.progress, 4),
        "failure_reason": v.reason,
        "moderation_result": {
            "code": None,
            "type": "passed",
            "task_id": bare,
            "is_output_rejection": False,
            "results_by_frame_index": {},
        },
        "needs_user_review": False,
        "queue_status_message": None,
        "progress_pos_in_queue": 3 if v.state.kind == "queued" else None,
        "num_unsafe_generations": 0,
        "estimated_queue_wait_time": None,
    }
    return {
        "id": v.task.id,
        "detail": {"id": bare, "input": inp, "status": v.status, "pending_info": pending_info},
        "status": v.status,
        "video_url": v.video_url,
        "status_update_time": v.now_ms,
    }


def render_grok(v: View) -> dict[str, Any]:
    body = v.task.body
    now_s = int(v.now)
    video_id = v.uuid("video")
    return {
        "id": v.task.id,
        "mode": "text",
        "type": "create",
        "error": v.reason or "",
        "model": v.task.model,
        "ratio": body.get("aspect_ratio", "3:2"),
        "prompt": v.prompt,
        "status": v.status,
        "post_id": video_id,
        "asset_id": video_id,
        "progress": round(v.state.progress * 100),
        "trace_id": v.hexid("trace"),
        "upscaled": False,
        "video_id": video_id,
        "video_url": v.video_url,
        "completed_at": now_s if v.terminal else None,
        "thumbnail_url": v.thumbnail_url,
        "video_file_id": v.uuid("file"),
        "thumbnail_file_id": v.uuid("thumb"),
        "status_update_time": now_s,  # seconds, like seed 003
        "upscale_on_complete": False,
    }


def render_vidu(v: View) -> dict[str, Any]:
    creations: list[dict[str, Any]] = []
    if v.video_url is not None:
        creations.append(
            {
                "id": str(int(v.hexid("creation", 12), 16)),
                "url": v.video_url,
                "cover_url": v.thumbnail_url,
                "watermarked_url": v.video_url,
            }
        )
    return {
        "id": _bare_id(v.task.id),
        "state": v.status,
        "err_code": v.reason or "",
        "credits": 20 if v.state.kind == "success" else 0,
        "payload": "",
        "progress": round(v.state.progress * 100),
        "model": v.task.model,
        "prompt": v.prompt,
        "created_at": datetime.fromtimestamp(v.task.created_at, UTC).isoformat(),
        "creations": creations,
    }


def render_openai(v: View) -> dict[str, Any]:
    body = v.task.body
    completed = v.state.kind == "success"
    return {
        "id": v.task.id,
        "object": "video",
        "model": v.task.model,
        "status": v.status,
        "progress": round(v.state.progress * 100),
        "created_at": int(v.task.created_at),
        "completed_at": int(v.now) if v.terminal else None,
        "expires_at": int(v.now) + 3600 if completed else None,
        "prompt": v.prompt,
        "seconds": str(body.get("seconds", "8")),
        "size": str(body.get("size", "720x1280")),
        "remixed_from_video_id": None,
        "error": {"code": "video_generation_failed", "message": v.reason} if v.failed else None,
    }


def render_newapi(v: View) -> dict[str, Any]:
    """new-api's own route: ``{"code": "success", "message": "", "data": <TaskDto or Gemini answer>}``."""
    shape = v.task.scenario.newapi_shape
    data = _newapi_gemini(v) if shape == "gemini" else _newapi_task_dto(v, legacy=shape == "legacy")
    return {"code": "success", "message": "", "data": data}


def _newapi_task_dto(v: View, legacy: bool) -> dict[str, Any]:
    created, now = int(v.task.created_at), int(v.now)
    success = v.state.kind == "success"
    dto: dict[str, Any] = {
        "id": int(v.hexid("row", 6), 16),
        "created_at": created,
        "updated_at": now,
        "task_id": v.task.id,
        "platform": "54",
        "user_id": 1,
        "group": "default",
        "channel_id": 1,
        "quota": 0,
        "action": "generate",
        "status": v.state.raw_status or STATUS_WORDS["newapi"][v.state.kind],
        # Older new-api versions carry the video URL here on success and leave result_url empty.
        "fail_reason": v.reason or (v.video_url if legacy and success else "") or "",
        "submit_time": created,
        "start_time": created + 1 if v.state.kind != "queued" else 0,
        "finish_time": now if v.terminal else 0,
        "progress": f"{round(v.state.progress * 100)}%",
        "properties": {"input": v.prompt, "upstream_model_name": v.task.model},
        # The upstream's own answer, passed through (not what the client should read).
        "data": {"id": v.hexid("upstream", 24), "status": v.state.kind, "model": v.task.model},
    }
    if v.video_url is not None and not legacy:
        dto["result_url"] = v.video_url
    return dto


def _newapi_gemini(v: View) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": v.task.id,
        "status": v.state.raw_status or NEWAPI_GEMINI_WORDS[v.state.kind],
    }
    if v.video_url is not None:
        data["url"] = v.video_url
        data["format"] = "mp4"
        data["metadata"] = {"duration": 8.0, "fps": 24, "width": 1280, "height": 720, "seed": 20231234}
    if v.failed:
        data["error"] = {"code": 400, "message": v.reason}
    return data


RENDERERS = {
    "veo": render_veo,
    "sora": render_sora,
    "grok": render_grok,
    "vidu": render_vidu,
    "openai": render_openai,
    "newapi": render_newapi,
}


def render(v: View) -> dict[str, Any]:
    return RENDERERS[v.task.family](v)


def created_response(task: Task, route: str, now: float | None = None) -> dict[str, Any]:
    """What a create call answers, for the create route named ``route`` (see `scenarios.ROUTES`)."""
    now = time.time() if now is None else now
    if route == "newapi_create":
        return {
            "id": task.id,
            "task_id": task.id,
            "object": "video",
            "model": task.model,
            "status": "queued",
            "progress": 0,
            "created_at": int(now),
        }
    if route == "openai_create":
        return render_openai(View(task, TaskState(None, "queued", 0.0, False), None, None, now))
    if route == "vidu_create":
        return {
            "id": task.id,
            "task_id": task.id,
            "state": "created",
            "model": task.model,
            "prompt": str(task.body.get("prompt", "")),
            "credits": 0,
            "created_at": datetime.fromtimestamp(task.created_at, UTC).isoformat(),
        }
    return {"id": task.id, "status": "pending", "status_update_time": int(now * 1000)}
