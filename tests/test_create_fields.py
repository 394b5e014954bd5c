"""The checks a create request passes before it is paid for (pure: no gateway, no Airflow run)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_videoquery.create_fields import check_create_request, family_of
from airflow_provider_videoquery.exceptions import VideoCreateRequestError, VideoQueryRequestError

VALID = [
    {"model": "veo3.1-fast", "prompt": "p", "aspect_ratio": "9:16", "enhance_prompt": True, "images": []},
    {"model": "veo3-pro-frames", "prompt": "p", "images": ["https://x/a.png", "https://x/b.png"]},
    {"model": "veo2-fast-components", "prompt": "p", "images": ["https://x/1", "https://x/2", "https://x/3"]},
    {"model": "veo3.1-4k", "prompt": "p", "images": [f"https://x/{i}" for i in range(5)]},
    {"model": "sora-2", "prompt": "p", "orientation": "landscape", "size": "large", "duration": 15},
    {"model": "sora-2", "prompt": "p", "duration": "10", "images": [], "watermark": False, "private": True},
    {"model": "sora-2-pro", "prompt": "p", "duration": 25, "size": "small"},
    {"model": "grok-video-3", "prompt": "p --mode=custom", "aspect_ratio": "1:1", "size": "720P"},
    {"model": "veo3.1-fast", "prompt": "p", "seed": 7, "anything_new": {"x": 1}},  # unknown fields pass
]


@pytest.mark.parametrize("body", VALID, ids=lambda b: f"{b['model']}-{len(b)}")
def test_valid_requests_of_known_families_pass_silently(body: dict[str, Any]) -> None:
    assert check_create_request(body) == []


INVALID = [
    ({"prompt": "p"}, "model must be a non-empty text (missing)"),
    ({"model": "  ", "prompt": "p"}, "model must be a non-empty text ('  ')"),
    ({"model": "veo3", "prompt": ""}, "prompt must be a non-empty text ('')"),
    ({"model": "veo3", "prompt": None}, "prompt must be a non-empty text (missing)"),
    (
        {"model": "veo3.1-fast", "prompt": "p", "aspect_ratio": "1:1"},
        "aspect_ratio '1:1' is not accepted by 'veo3.1-fast' (accepted: '16:9', '9:16')",
    ),
    (
        {"model": "veo3-pro-frames", "prompt": "p", "images": ["https://x/a", "https://x/b", "https://x/c"]},
        "'veo3-pro-frames' takes at most 2 images, got 3",
    ),
    (
        {"model": "veo2-fast-components", "prompt": "p", "images": [f"https://x/{n}" for n in range(4)]},
        "'veo2-fast-components' takes at most 3 images, got 4",
    ),
    ({"model": "veo3", "prompt": "p", "images": "https://x/a.png"}, "images must be a list of image URLs"),
    ({"model": "veo3", "prompt": "p", "enable_upsample": "yes"}, "enable_upsample must be true or false"),
    (
        {"model": "sora-2", "prompt": "p", "duration": 25},
        "duration 25 is not accepted by 'sora-2' (accepted: 10, 15)",
    ),
    (
        {"model": "sora-2-pro", "prompt": "p", "duration": 10},
        "duration 10 is not accepted by 'sora-2-pro' (accepted: 15, 25)",
    ),
    (
        {"model": "sora-2", "prompt": "p", "orientation": "square"},
        "orientation 'square' is not accepted by 'sora-2' (accepted: 'portrait', 'landscape')",
    ),
    (
        {"model": "sora-2", "prompt": "p", "size": "1080p"},
        "size '1080p' is not accepted by 'sora-2' (accepted: 'small', 'large')",
    ),
    ({"model": "sora-2", "prompt": "p", "duration": True}, "duration True is not accepted"),
    (
        {"model": "grok-video-3", "prompt": "p", "aspect_ratio": "16:9"},
        "aspect_ratio '16:9' is not accepted by 'grok-video-3' (accepted: '2:3', '3:2', '1:1')",
    ),
    (
        {"model": "grok-video-3", "prompt": "p", "size": "1080P"},
        "size '1080P' is not accepted by 'grok-video-3' (accepted: '720P')",
    ),
]


@pytest.mark.parametrize(("body", "problem"), INVALID, ids=[p for _, p in INVALID])
def test_invalid_requests_fail_with_the_accepted_values(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(VideoCreateRequestError) as caught:
        check_create_request(body, what="Task 'create'")
    err = caught.value
    assert problem in str(err)
    assert str(err).startswith("Task 'create' was not sent (nothing was paid for): ")
    assert isinstance(err, AirflowFailException)  # a wrong field stays wrong: no Airflow retry
    assert isinstance(err, VideoQueryRequestError)
    assert isinstance(err, ValueError)


def test_every_problem_is_listed_at_once() -> None:
    body = {"model": "grok-video-3", "prompt": "p", "aspect_ratio": "16:9", "size": "1080P"}
    with pytest.raises(VideoCreateRequestError) as caught:
        check_create_request(body)
    assert len(caught.value.problems) == 2


def test_unknown_model_passes_with_one_warning() -> None:
    warnings = check_create_request({"model": "kling-v2", "prompt": "p", "aspect_ratio": "21:9"})
    assert len(warnings) == 1
    assert "'kling-v2'" in warnings[0]
    assert "sent unchecked" in warnings[0]


def test_other_routes_check_model_and_prompt_only() -> None:
    # the OpenAI route's sora-2 takes its own fields (seconds, size "1280x720"): not the unified rules
    assert check_create_request({"model": "sora-2", "prompt": "p", "size": "1280x720"}, route="openai") == []
    with pytest.raises(VideoCreateRequestError, match="prompt must be"):
        check_create_request({"model": "sora-2", "prompt": ""}, route="openai")


@pytest.mark.parametrize(
    ("model", "family"),
    [("VEO3.1-fast", "veo*"), ("sora-2", "sora-2"), ("sora-2-pro", "sora-2-pro"), ("grok-video-3", "grok*")],
)
def test_family_of(model: str, family: str) -> None:
    rules = family_of(model)
    assert rules is not None
    assert rules.name == family


def test_sora_2_variants_are_not_guessed() -> None:
    assert family_of("sora-2-mini") is None
