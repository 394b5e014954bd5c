"""A single create killed mid-POST is not paid again by Airflow's retry (Airflow 3.3's ``task_state_store``).

Real ``dag.test()`` retries against the emulator. The first try records "sending" before its POST and
the id right after: a retry that finds the id reuses it (unless the gateway failed that task); one that
finds "sending" without an id knows the first try died after its POST may have arrived, and fails as an
uncertain create instead of paying again. On Airflow 3.1/3.2 (no store) these tests are skipped: there
the behaviour is the hook's alone (docs/create.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import RunResult, assert_key_nowhere, load_dag, run_dag, use_dags_folder
from tests.conftest import connection_json

pytest.importorskip(
    "airflow.sdk.bases.resumablejobmixin", reason="task_state_store needs Airflow 3.3", exc_type=ImportError
)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator


class DiesAfterTheCreate(VideoCreateOperator):
    \"\"\"The first try is lost right after the gateway answered (a worker killed, an OOM, a bug).\"\"\"

    def execute(self, context):
        video_task_id = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("the worker died right after the create")
        return video_task_id


with DAG(dag_id="videoquery_create_state", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    {operator}(
        task_id="create",
        model="veo3.1-fast",
        prompt="A paper boat on a rainy street",
        retries=1,
        retry_delay=timedelta(0),
        retry_uncertain_creates={opt_in},
        {extra}
    )
"""


def run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    operator: str = "VideoCreateOperator",
    opt_in: bool = False,
    extra: str = "",
) -> RunResult:
    (tmp_path / "videoquery_create_state.py").write_text(
        DAG.format(operator=operator, opt_in=opt_in, extra=extra)
    )
    use_dags_folder(monkeypatch, tmp_path)
    return run_dag(load_dag(tmp_path / "videoquery_create_state.py"), capsys)


def test_a_try_killed_mid_post_is_not_paid_again_by_the_retry(
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The create is made at once and answered after 60 s; the try's own timeout (5 s: time enough to
    # send it on a busy machine) kills it first: Airflow's AirflowTaskTimeout, no error the hook sees.
    emulator.answer_creates_late(60.0, times=1)
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=60))

    result = run(tmp_path, monkeypatch, capsys, extra="execution_timeout=timedelta(seconds=5),")

    assert result.states == {"create": "failed"}
    assert "AirflowTaskTimeout" in result.output  # the first try died mid-request …
    assert emulator.creates().accepted == 1  # … and the retry did not pay again
    assert "VideoCreateUncertainError" in result.output
    assert "an earlier try of this task sent it at" in result.output
    assert "Check the gateway's task list" in result.output
    assert_key_nowhere(result.output)


def test_with_the_opt_in_the_retry_creates_again(
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.answer_creates_late(60.0, times=1)
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=60))

    result = run(tmp_path, monkeypatch, capsys, opt_in=True, extra="execution_timeout=timedelta(seconds=5),")

    assert result.states == {"create": "success"}
    assert emulator.creates().accepted == 2  # as the user asked: the uncertain one, then a new one
    assert "retry_uncertain_creates=True: creating it again" in result.output


def test_a_retry_after_the_create_reuses_its_id(
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run(tmp_path, monkeypatch, capsys, operator="DiesAfterTheCreate")

    assert result.states == {"create": "success"}
    assert "the worker died right after the create" in result.output
    assert emulator.creates().accepted == 1
    video_task_id = result.xcoms[("create", "return_value")]
    assert emulator.task(video_task_id) is not None
    assert result.xcoms[("create", "video_task_id")] == video_task_id
    assert f"An earlier try of this task created video task {video_task_id!r}" in result.output


def test_a_retry_creates_anew_when_the_gateway_failed_the_first_task(
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    emulator.set_default(Scenario(outcome="failed", polls_to_complete=1))

    result = run(tmp_path, monkeypatch, capsys, operator="DiesAfterTheCreate")

    assert emulator.creates().accepted == 2
    assert "which the gateway failed" in result.output
