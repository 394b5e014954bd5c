"""Local emulator of the AI-video gateway API (veo, sora-2, grok, vidu, OpenAI videos) for tests,
benchmarks and demos. See `run_emulator`, `Scenario`, `Fault` and `Limits`."""

from __future__ import annotations

from .app import create_app
from .limits import CreateCounts, Limits, key_fingerprint
from .media import generated_bytes, iter_video, sample_mp4, video_bytes
from .scenarios import FAULT_KINDS, ROUTES, Fault, Scenario, classify_status, family_for_model
from .server import Emulator, run_emulator
from .state import EmulatorState, RequestRecord

__all__ = [
    "FAULT_KINDS",
    "ROUTES",
    "CreateCounts",
    "Emulator",
    "EmulatorState",
    "Fault",
    "Limits",
    "RequestRecord",
    "Scenario",
    "classify_status",
    "create_app",
    "family_for_model",
    "generated_bytes",
    "iter_video",
    "key_fingerprint",
    "run_emulator",
    "sample_mp4",
    "video_bytes",
]
