"""The image checks before a create is paid for: each image of a request against its route's rules.

Pure: an *inspector* (given by the caller) reads a stored object's first bytes; everything else —
the forms a route takes, counts, ``data:`` URIs, types by magic bytes, sizes, pixel sizes — is decided
here, for :func:`~airflow_provider_videoquery.create_fields.check_create_request`. Every problem is a
sentence naming the field and the image (by URI, never a signature or a payload) and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from airflow_provider_videoquery.images.refs import (
    ImageRef,
    RefKind,
    classify,
    decode_data_uri,
    shown_data,
)
from airflow_provider_videoquery.images.rules import ImageForm, RouteImages, megabytes
from airflow_provider_videoquery.images.sniff import ImageFacts, facts, is_image

#: Reads what a stored image is (``need_pixels``: its pixel size is wanted too), or says why it cannot
#: (``"does not exist"``, ``"cannot be read with connection 'x': …"``).
Inspector = Callable[[ImageRef, bool], ImageFacts | str]

_TYPE_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


def references(body: Mapping[str, Any], rules: RouteImages) -> tuple[list[ImageRef], list[str]]:
    """The image references of ``body`` in the route's fields, and problems with their shape."""
    refs: list[ImageRef] = []
    problems: list[str] = []
    for image_field, value in rules.values(body):
        if image_field.many:
            if not isinstance(value, list | tuple):
                problems.append(
                    f"{image_field.name} must be a list of image URLs or other image references, "
                    f"not {_short(value)}"
                )
                continue
            items = [(f"{image_field.name}[{index}]", item) for index, item in enumerate(value)]
        elif isinstance(value, list | tuple):
            problems.append(f"{image_field.name} takes one image, not a list of {len(value)}")
            continue
        else:
            items = [(image_field.name, value)]
        for where, item in items:
            ref = classify(where, item)
            if isinstance(ref, str):
                problems.append(ref)
            else:
                refs.append(ref)
    return refs, problems


def image_problems(
    body: Mapping[str, Any],
    rules: RouteImages,
    route: str,
    *,
    family_limit: tuple[str, int] | None = None,
    inspect: Inspector | None = None,
) -> list[str]:
    """Every problem with the images of ``body`` on ``route``. ``family_limit``: (model, most images
    that model takes). Without ``inspect`` stored objects are checked for their form only."""
    refs, problems = references(body, rules)
    given = sum(len(v) if f.many and isinstance(v, list | tuple) else 1 for f, v in rules.values(body))
    if family_limit is not None and given > family_limit[1]:
        problems.append(f"{family_limit[0]!r} takes at most {family_limit[1]} images, got {given}")
    elif rules.max_images is not None and given > rules.max_images:
        problems.append(f"the {route} route takes at most {rules.max_images} images per request, got {given}")
    for ref in refs:
        problems.extend(_ref_problems(ref, rules, route, body, inspect))
    return problems


def _ref_problems(
    ref: ImageRef, rules: RouteImages, route: str, body: Mapping[str, Any], inspect: Inspector | None
) -> list[str]:
    where = f"{ref.where} {ref.shown}"
    if ref.kind is RefKind.URL:
        if ImageForm.URL in rules.forms:
            return []  # the gateway fetches it; nothing here can read it first
        return [f"{where} is a URL; the {route} route takes {_takes(rules)}"]
    if ref.kind is RefKind.DATA:
        if ImageForm.DATA not in rules.forms and ImageForm.UPLOAD not in rules.forms:
            return [f"{ref.where} is a data: URI; the {route} route takes {_takes(rules)}"]
        try:
            decoded = decode_data_uri(ref.uri)
        except ValueError as err:
            return [f"{ref.where} {err}"]
        found = facts(decoded.data, len(decoded.data))
        declared = decoded.media_type.replace("image/jpg", "image/jpeg")
        if is_image(found.kind) and declared != found.media_type:
            return [f"{where} says {decoded.media_type} but its bytes are {found.label}"]
        sent = ImageForm.DATA if ImageForm.DATA in rules.forms else ImageForm.UPLOAD
        return facts_problems(ref, found, rules, route, body, sent)
    if rules.stored_form(ref.protocol, None) is None:
        return [_unreachable(ref, rules, route)]
    if inspect is None:
        return []
    found_or_why = inspect(ref, rules.needs_pixels)
    if isinstance(found_or_why, str):
        return [f"{where} {found_or_why}"]
    form = rules.stored_form(ref.protocol, found_or_why.size)
    if form is None:
        assert rules.max_inline_bytes is not None
        return [
            f"{where} is {megabytes(found_or_why.size)}; the {route} route takes inline images under "
            f"{megabytes(rules.max_inline_bytes)}, and only S3 and GCS objects can be sent as presigned "
            "URLs: put it in S3 or GCS, or make it smaller"
        ]
    return facts_problems(ref, found_or_why, rules, route, body, form)


def facts_problems(
    ref: ImageRef,
    found: ImageFacts,
    rules: RouteImages,
    route: str,
    body: Mapping[str, Any],
    form: ImageForm,
) -> list[str]:
    """What makes an image with these facts unfit for ``route`` when sent as ``form``."""
    where = f"{ref.where} {ref.shown}"
    if not is_image(found.kind):
        return [f"{where} is not an image: its bytes are {found.label}{_named(ref)}"]
    if found.kind not in rules.types:
        return [f"{where} is {found.label}; the {route} route takes {_types(rules)}"]
    problems = []
    if rules.max_bytes is not None and found.size > rules.max_bytes:
        problems.append(
            f"{where} is {megabytes(found.size)}; the {route} route takes images up to "
            f"{megabytes(rules.max_bytes)}"
        )
    inline_limit = rules.max_inline_bytes
    if form is ImageForm.DATA and inline_limit is not None and found.size >= inline_limit:
        problems.append(
            f"{where} decodes to {megabytes(found.size)}; the {route} route takes data: URIs under "
            f"{megabytes(inline_limit)}: give a storage URI instead (S3 and GCS objects go as URLs)"
        )
    if rules.max_aspect is not None and found.width and found.height:
        ratio = max(found.width, found.height) / min(found.width, found.height)
        if ratio >= rules.max_aspect:
            problems.append(
                f"{where} is {found.pixels} pixels, an aspect ratio of {ratio:.2f}:1; the {route} route "
                f"takes images between 1:{rules.max_aspect:g} and {rules.max_aspect:g}:1 (exclusive)"
            )
    expected = rules.expected_pixels(body)
    if expected is not None:
        wanted = f"{expected[0]}x{expected[1]}"
        given = "" if body.get(rules.size_field or "") else " by default"
        if found.pixels is None:
            problems.append(
                f"{where}: its pixel size could not be read from its header, and the {route} route needs "
                f"it to be exactly the request's {rules.size_field} ({wanted}{given})"
            )
        elif (found.width, found.height) != expected:
            problems.append(
                f"{where} is {found.pixels} pixels; the {route} route needs it to be exactly the "
                f"request's {rules.size_field} {wanted}{given}: crop or resize it first, or change "
                f"{rules.size_field}"
            )
    return problems


def _unreachable(ref: ImageRef, rules: RouteImages, route: str) -> str:
    """Why a stored image cannot go to a route that takes URLs only."""
    if ref.kind is RefKind.LOCAL:
        return (
            f"{ref.where} {ref.shown} is on the worker's disk, which the gateway cannot reach; the {route} "
            f"route takes {_takes(rules)}: put the image in S3 or GCS (the provider presigns it) or give "
            "an https:// URL"
        )
    return (
        f"{ref.where} {ref.shown}: the {route} route takes {_takes(rules)}, and the provider presigns "
        f"s3:// and gs:// objects only, not {ref.protocol}://; give an https:// URL"
    )


def _takes(rules: RouteImages) -> str:
    forms = set(rules.forms)
    if forms == {ImageForm.UPLOAD}:
        return "the image as an uploaded file (give a storage URI, a path or a data: URI)"
    if forms == {ImageForm.URL}:
        return "image URLs only (S3 and GCS objects are presigned)"
    return "image URLs or data:image/…;base64 URIs (S3 and GCS objects, and local files, are converted)"


def _types(rules: RouteImages) -> str:
    names = [_TYPE_NAMES.get(kind, kind.upper()) for kind in rules.types]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _named(ref: ImageRef) -> str:
    if ref.kind is RefKind.DATA:
        return ""
    suffix = PurePosixPath(ref.shown).suffix.lower()
    return f" (its name ends in {suffix})" if suffix in _IMAGE_SUFFIXES else ""


def _short(value: Any) -> str:
    if isinstance(value, str) and value[:5].lower() == "data:":
        return shown_data(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "…"


__all__ = ["Inspector", "facts_problems", "image_problems", "references"]
