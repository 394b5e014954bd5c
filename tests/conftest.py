"""Shared test set-up: an isolated Airflow home, the emulator on 127.0.0.1, a connection pointing at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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
