"""Local emulator of the AI-video gateway API (veo, sora-2, grok, vidu, OpenAI videos) for tests,
benchmarks and demos. See `run_emulator`, `Scenario` and `Fault`."""

from __future__ import annotations

from .app import create_app
from .media import generated_bytes, iter_video, sample_mp4, video_bytes
from .scenarios import FAULT_KINDS, ROUTES, Fault, Scenario, classify_status, family_for_model
from .server import Emulator, run_emulator
from .state import EmulatorState, RequestRecord

__all__ = [
    "FAULT_KINDS",
    "ROUTES",
    "Emulator",
    "EmulatorState",
    "Fault",
    "RequestRecord",
    "Scenario",
    "classify_status",
    "create_app",
    "family_for_model",
    "generated_bytes",
    "iter_video",
    "run_emulator",
    "sample_mp4",
    "video_bytes",
]
