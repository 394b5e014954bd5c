"""Fixtures of the emulator's own tests: an emulator per test and a client that carries its key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from airflow_provider_videoquery.emulator import Emulator, run_emulator


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with run_emulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emu.api_key}", "Accept": "application/json"}
    with httpx.Client(base_url=emu.url, headers=headers, timeout=5.0) as c:
        yield c
