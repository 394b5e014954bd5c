"""What a create request can be checked for before it is paid for: a model and a prompt, and for the
model families the gateways document (veo, sora-2, grok) field values those families accept.

Pure: no Airflow, no HTTP. `VideoCreateOperator` and the batch operator call `check_create_request`
before the POST. The rules are the unified route's create bodies (docs/create.md); other routes take
other bodies, so there only ``model`` and ``prompt`` are checked. A model no family claims passes with
one warning: new models appear every month.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_videoquery.exceptions import VideoCreateRequestError

#: The route whose create bodies the family rules describe (``POST /v1/video/create``).
CHECKED_ROUTE = "unified"


@dataclass(frozen=True)
class FamilyRules:
    """The fields one model family documents: accepted values, booleans, and how many images.
    ``name`` is how messages name the family (``*``: any suffix)."""

    name: str
    claims: Callable[[str], bool]
    choices: Mapping[str, tuple[str | int, ...]] = field(default_factory=dict)
    booleans: tuple[str, ...] = ()
    max_images: Callable[[str], int | None] = lambda model: None


def _veo_max_images(model: str) -> int | None:
    if model.endswith("-frames"):
        return 2  # first and last frame
    if model.endswith("-components"):
        return 3  # reference images
    return None


FAMILIES: tuple[FamilyRules, ...] = (
    FamilyRules(
        "veo*",
        lambda model: model.startswith("veo"),
        choices={"aspect_ratio": ("16:9", "9:16")},
        booleans=("enhance_prompt", "enable_upsample"),
        max_images=_veo_max_images,
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


def family_of(model: str) -> FamilyRules | None:
    """The rules for ``model`` (case-insensitive), or None for a model no family claims."""
    low = model.strip().lower()
    return next((family for family in FAMILIES if family.claims(low)), None)


def check_create_request(
    body: Mapping[str, Any], *, route: str | None = CHECKED_ROUTE, what: str = "The create request"
) -> list[str]:
    """Check a create body before it is sent; return warnings to log, or raise.

    Raises `VideoCreateRequestError` (not retried by Airflow) listing every problem and the accepted
    values. ``route``: the fields are checked on the unified route only (None = unified). ``what``
    names the request in the message (e.g. ``"Request 'clip-7' (line 12)"``).
    """
    problems = _missing(body)
    model = body.get("model")
    warnings: list[str] = []
    if not problems and (route or CHECKED_ROUTE) == CHECKED_ROUTE:
        assert isinstance(model, str)
        family = family_of(model)
        if family is None:
            known = ", ".join(f.name for f in FAMILIES)
            warnings.append(
                f"{what}: model {model!r} is not one whose fields the provider knows ({known}); "
                "its fields are sent unchecked."
            )
        else:
            problems = _field_problems(body, family, model.strip().lower())
    if problems:
        raise VideoCreateRequestError(
            f"{what} was not sent (nothing was paid for): {'; '.join(problems)}.", problems=problems
        )
    return warnings


def _missing(body: Mapping[str, Any]) -> list[str]:
    problems = []
    for name in ("model", "prompt"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if value is None else f"{value!r}"
            problems.append(f"{name} must be a non-empty text ({shown})")
    return problems


def _field_problems(body: Mapping[str, Any], family: FamilyRules, model: str) -> list[str]:
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
    images = body.get("images")
    if images is not None:
        if not isinstance(images, list | tuple) or not all(isinstance(i, str) and i.strip() for i in images):
            problems.append(f"images must be a list of image URLs, not {images!r}")
        else:
            limit = family.max_images(model)
            if limit is not None and len(images) > limit:
                problems.append(f"{model!r} takes at most {limit} images, got {len(images)}")
    return problems


def _accepted(value: Any, accepted: tuple[str | int, ...]) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str) and value.strip().isdigit() and any(isinstance(a, int) for a in accepted):
        return int(value) in accepted  # "10" for 10: what a templated field renders
    return value in accepted


__all__ = ["FAMILIES", "FamilyRules", "check_create_request", "family_of"]
