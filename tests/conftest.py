"""Shared test set-up: an isolated Airflow home, the emulator on 127.0.0.1, a connection pointing at it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3 import moto_server, no_ambient_aws, s3_bucket  # noqa: F401 - fixtures: registered once

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Airflow reads its configuration at import: isolate it before anything imports airflow.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="videoquery-tests-airflow-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME}/airflow.db"
os.environ.pop("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", None)

API_KEY = "sk-test-4f8e2b9c1d7a6e5f"


def connection_json(url: str, api_key: str = API_KEY, **extra: object) -> str:
    return json.dumps({"conn_type": "videoquery", "host": url, "password": api_key, "extra": extra})


def pytest_unconfigure(config: pytest.Config) -> None:
    """The isolated Airflow home (metadata DB, logs) goes with the run: one was left in /tmp per run."""
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh emulator on a free port of 127.0.0.1, set as ``videoquery_default``."""
    from airflow_provider_videoquery.emulator import run_emulator

    with run_emulator(api_key=API_KEY) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emu.url, timeout=5))
        yield emu


@pytest.fixture(scope="session")
def airflow_db() -> str:
    """A migrated SQLite metadata DB for ``dag.test()``; made once per run."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env={**os.environ},
        timeout=300,
    )
    return _AIRFLOW_HOME


@pytest.fixture
def sync_connection_apis_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the sync connection lookups fail when called on an event loop, as in a real triggerer.

    Off the loop (a worker thread: what ``common.compat`` does on Airflow < 3.3.2) they still work.
    """
    import asyncio

    from airflow.providers.common.compat.sdk import BaseHook, Connection

    def guarded(original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return original(*args, **kwargs)
            raise AssertionError("a sync connection API was called on the event loop")

        return call

    get_connection = BaseHook.get_connection.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(BaseHook, "get_connection", classmethod(guarded(get_connection)))
    if hasattr(Connection, "get"):
        monkeypatch.setattr(Connection, "get", classmethod(guarded(Connection.get.__func__)))
    extra = Connection.extra_dejson
    monkeypatch.setattr(Connection, "extra_dejson", property(guarded(extra.fget)))


@pytest.fixture
def trigger_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The video task ids of every ``VideoTaskTrigger.run()`` started during the test, in order."""
    from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger

    started: list[str] = []
    original_run = VideoTaskTrigger.run

    def spy_run(self: VideoTaskTrigger) -> Any:
        started.append(self.video_task_id)
        return original_run(self)

    monkeypatch.setattr(VideoTaskTrigger, "run", spy_run)
    return started
