"""What a create request can be checked for before it is paid for: a model and a prompt, for the
model families the gateways document (veo, sora-2, grok) field values those families accept, and on
every route its images (which fields, forms, types, sizes and counts: ``ROUTE_IMAGES``).

Pure: no Airflow, no HTTP. `VideoCreateOperator` and the batch operator call `check_create_request`
before the POST. The field rules are the unified route's create bodies (docs/create.md); other routes
take other bodies, so there only ``model``, ``prompt`` and the images are checked. A model no family
claims passes with one warning: new models appear every month.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_videoquery.exceptions import VideoCreateRequestError
from airflow_provider_videoquery.images.checks import Inspector, image_problems
from airflow_provider_videoquery.images.rules import MB, ImageField, ImageForm, RouteImages

#: The route whose create bodies the family rules describe (``POST /v1/video/create``).
CHECKED_ROUTE = "unified"


@dataclass(frozen=True)
class FamilyRules:
    """The fields one model family documents: accepted values, booleans, and how many images.
    ``name`` is how messages name the family (``*``: any suffix); ``images_by_suffix`` maps a model
    name's ending to the most images such a model takes."""

    name: str
    claims: Callable[[str], bool]
    choices: Mapping[str, tuple[str | int, ...]] = field(default_factory=dict)
    booleans: tuple[str, ...] = ()
    images_by_suffix: Mapping[str, int] = field(default_factory=dict)

    def max_images(self, model: str) -> int | None:
        """The most images ``model`` takes; None when the family documents no limit for it."""
        return next((n for suffix, n in self.images_by_suffix.items() if model.endswith(suffix)), None)


FAMILIES: tuple[FamilyRules, ...] = (
    FamilyRules(
        "veo*",
        lambda model: model.startswith("veo"),
        choices={"aspect_ratio": ("16:9", "9:16")},
        booleans=("enhance_prompt", "enable_upsample"),
        images_by_suffix={"-frames": 2, "-components": 3},  # first and last frame; reference images
    ),
    FamilyRules(
        "sora-2",
        lambda model: model == "sora-2",
        choices={"orientation": ("portrait", "landscape"), "size": ("small", "large"), "duration": (10, 15)},
        booleans=("watermark", "private"),
    ),
    FamilyRules(
        "sora-2-pro",
        lambda model: model == "sora-2-pro",
        choices={"orientation": ("portrait", "landscape"), "size": ("small", "large"), "duration": (15, 25)},
        booleans=("watermark", "private"),
    ),
    FamilyRules(
        "grok*",
        lambda model: model.startswith("grok"),
        choices={"aspect_ratio": ("2:3", "3:2", "1:1"), "size": ("720P",)},
    ),
)


#: How each route takes images (docs/create.md, "Images"). Limits marked *inferred* are not published
#: for that route; they are what the provider refuses so that a create is not paid for in vain.
ROUTE_IMAGES: Mapping[str, RouteImages] = {
    # veo, sora-2, grok: image URLs the gateway fetches; a stored object is presigned.
    "unified": RouteImages(
        fields=(ImageField(("images",), many=True),),
        forms=(ImageForm.URL,),
        max_bytes=50 * MB,  # inferred
    ),
    # Vidu's own API: a URL or a base64 data URI (decoded under 10 MB), each image at most 50 MB,
    # aspect ratio under 4:1 either way; reference-to-video takes up to 7 images.
    "vidu-native": RouteImages(
        fields=(ImageField(("images",), many=True),),
        forms=(ImageForm.DATA, ImageForm.URL),
        max_bytes=50 * MB,
        max_inline_bytes=10 * MB,
        max_images=7,
        max_aspect=4.0,
    ),
    # OpenAI's POST /v1/videos: input_reference is one uploaded file (multipart) whose pixel size is
    # the video's size (default 720x1280).
    "openai": RouteImages(
        fields=(ImageField(("input_reference",)),),
        forms=(ImageForm.UPLOAD,),
        max_bytes=50 * MB,  # inferred
        size_field="size",
        default_size="720x1280",
    ),
    # new-api's TaskSubmitReq: image, images and input_reference are strings (URL or data URI) its
    # adaptors pass on; some adaptors read first/last frames from metadata.
    "new-api": RouteImages(
        fields=(
            ImageField(("image",)),
            ImageField(("images",), many=True),
            ImageField(("input_reference",)),
            ImageField(("metadata", "image_tail")),
            ImageField(("metadata", "first_frame_image")),
            ImageField(("metadata", "last_frame_image")),
        ),
        forms=(ImageForm.URL, ImageForm.DATA),
        max_bytes=50 * MB,  # inferred
        max_inline_bytes=10 * MB,  # inferred
    ),
}


def family_of(model: str) -> FamilyRules | None:
    """The rules for ``model`` (case-insensitive), or None for a model no family claims."""
    low = model.strip().lower()
    return next((family for family in FAMILIES if family.claims(low)), None)


def check_create_request(
    body: Mapping[str, Any],
    *,
    route: str | None = CHECKED_ROUTE,
    what: str = "The create request",
    inspect: Inspector | None = None,
) -> list[str]:
    """Check a create body before it is sent; return warnings to log, or raise.

    Raises `VideoCreateRequestError` (not retried by Airflow) listing every problem and the accepted
    values. ``route``: the fields are checked on the unified route only (None = unified); the images
    on every route (``ROUTE_IMAGES``). ``what`` names the request in the message (e.g.
    ``"Request 'clip-7' (line 12)"``). ``inspect`` reads stored images (exists, type, size, pixels);
    without it they are checked for their form only.
    """
    problems = _missing(body)
    model = body.get("model")
    route = route or CHECKED_ROUTE
    warnings: list[str] = []
    if not problems and route == CHECKED_ROUTE:
        assert isinstance(model, str)
        family = family_of(model)
        if family is None:
            known = ", ".join(f.name for f in FAMILIES)
            warnings.append(
                f"{what}: model {model!r} is not one whose fields the provider knows ({known}); "
                "its fields are sent unchecked."
            )
        else:
            problems = _field_problems(body, family)
    _refuse(what, problems + _image_problems(body, route, inspect))
    return warnings


def check_images(
    body: Mapping[str, Any],
    *,
    route: str | None = CHECKED_ROUTE,
    what: str = "The create request",
    inspect: Inspector | None = None,
) -> None:
    """Check only the images of a create body (:func:`check_create_request` checks them too, with the
    other fields): raise `VideoCreateRequestError` listing every problem."""
    _refuse(what, _image_problems(body, route or CHECKED_ROUTE, inspect))


def _image_problems(body: Mapping[str, Any], route: str, inspect: Inspector | None) -> list[str]:
    """The image problems of ``body`` on ``route``, with the model's own image count on the unified route."""
    images = ROUTE_IMAGES.get(route)
    if images is None:
        return []
    model = str(body.get("model") or "").strip().lower()
    family = family_of(model) if route == CHECKED_ROUTE else None
    limit = family.max_images(model) if family is not None else None
    family_limit = None if limit is None else (model, limit)
    return image_problems(body, images, route, family_limit=family_limit, inspect=inspect)


def _refuse(what: str, problems: list[str]) -> None:
    if problems:
        raise VideoCreateRequestError(
            f"{what} was not sent (nothing was paid for): {'; '.join(problems)}.", problems=problems
        )


def _missing(body: Mapping[str, Any]) -> list[str]:
    problems = []
    for name in ("model", "prompt"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if value is None else f"{value!r}"
            problems.append(f"{name} must be a non-empty text ({shown})")
    return problems


def _field_problems(body: Mapping[str, Any], family: FamilyRules) -> list[str]:
    model = str(body.get("model")).strip().lower()
    problems = []
    for name, accepted in family.choices.items():
        value = body.get(name)
        if value is not None and not _accepted(value, accepted):
            listed = ", ".join(repr(a) for a in accepted)
            problems.append(f"{name} {value!r} is not accepted by {model!r} (accepted: {listed})")
    for name in family.booleans:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            problems.append(f"{name} must be true or false, not {value!r}")
    return problems


def _accepted(value: Any, accepted: tuple[str | int, ...]) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str) and value.strip().isdigit() and any(isinstance(a, int) for a in accepted):
        return int(value) in accepted  # "10" for 10: what a templated field renders
    return value in accepted


__all__ = ["FAMILIES", "ROUTE_IMAGES", "FamilyRules", "check_create_request", "check_images", "family_of"]
