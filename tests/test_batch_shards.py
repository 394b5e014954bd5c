"""Shards: one request list split over mapped VideoBatchOperator tasks by the keys' digests, each shard
with its own ledger; every video paid for once, also when the batch is split anew half way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.emulator import Emulator, Scenario
from tests.airflow_helpers import load_dag, run_dag, use_dags_folder
from tests.batch_helpers import manifest_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DAG_SOURCE = """
from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(
    dag_id="videoquery_shards_test",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    render_template_as_native_obj=True,
    params={"requests": Param([], type=["array", "string"]), "destination": Param("", type="string"),
            "shards": Param(1, type="integer")},
) as dag:
    VideoBatchOperator.partial(
        task_id="batch",
        requests="{{ params.requests }}",
        destination="{{ params.destination }}",
        shards=SHARDS,
        max_active=4,
        creates_per_second=0,
        poll_interval=0.05,
        max_polls_per_second=1000,
        timeout=60,
    ).expand(shard=list(range(SHARDS)))
"""


def _dag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: int) -> Any:
    folder = tmp_path / f"dags-{shards}"
    folder.mkdir()
    path = folder / "videoquery_shards_test.py"
    path.write_text(DAG_SOURCE.replace("SHARDS", str(shards)))
    use_dags_folder(monkeypatch, folder)
    return load_dag(path)


def _requests(count: int) -> list[dict[str, Any]]:
    return [{"model": "sora-2", "prompt": f"a paper boat, take {n}"} for n in range(count)]


def _ledgers(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return {path.name: manifest_lines(out, path.name) for path in sorted(out.glob("manifest*.jsonl"))}


def test_a_key_belongs_to_one_shard_whatever_the_list() -> None:
    keys = [f"clip-{n}" for n in range(200)]
    shards = {key: manifest.shard_of(key, 4) for key in keys}
    assert {manifest.shard_of(key, 4) for key in reversed(keys)} == set(range(4))
    assert all(manifest.shard_of(key, 4) == shard for key, shard in shards.items())
    assert manifest.shard_of("Clip-1", 4) == manifest.shard_of("clip-1", 4)  # one file on any store
    assert manifest.sharded_name("manifest.jsonl", 2, 4) == "manifest-002-of-004.jsonl"
    assert manifest.sharded_name("manifest.jsonl", 0, 1) == "manifest.jsonl"


def test_four_shards_pay_each_video_once_each_in_its_own_ledger(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: str,
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=512))
    out = tmp_path / "videos"
    dag = _dag(tmp_path, monkeypatch, 4)

    result = run_dag(dag, capsys, requests=_requests(24), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert emulator.count(route="create") == 24
    ledgers = _ledgers(out)
    assert sorted(ledgers) == [f"manifest-{i:03d}-of-004.jsonl" for i in range(4)]
    keys = [key for lines in ledgers.values() for key in lines]
    assert len(keys) == len(set(keys)) == 24  # each key in exactly one ledger
    for name, lines in ledgers.items():
        shard = int(name.split("-")[1])
        assert all(manifest.shard_of(key, 4) == shard for key in lines)
        assert {line["status"] for line in lines.values()} == {"succeeded"}
    assert len(list(out.glob("*.mp4"))) == 24


def test_a_batch_split_anew_pays_nothing_again(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: str,
) -> None:
    """Unsharded, then 3 shards, then 2 with more requests: only the new requests are created; what the
    other ledgers recorded is carried over (and the stored videos kept)."""
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=512))
    out = tmp_path / "videos"

    first = run_dag(_dag(tmp_path, monkeypatch, 1), capsys, requests=_requests(10), destination=str(out))
    assert first.run.state == DagRunState.SUCCESS, first.output[-3000:]
    assert emulator.count(route="create") == 10
    videos = {path.name: path.stat().st_mtime_ns for path in out.glob("*.mp4")}

    again = run_dag(_dag(tmp_path, monkeypatch, 3), capsys, requests=_requests(10), destination=str(out))
    assert again.run.state == DagRunState.SUCCESS, again.output[-3000:]
    assert emulator.count(route="create") == 10  # all ten carried over from manifest.jsonl
    assert emulator.count(route="video") == 10  # and kept: nothing downloaded again
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.mp4")} == videos

    more = run_dag(_dag(tmp_path, monkeypatch, 2), capsys, requests=_requests(14), destination=str(out))
    assert more.run.state == DagRunState.SUCCESS, more.output[-3000:]
    assert emulator.count(route="create") == 14  # the four new requests only
    latest = {**_ledgers(out)["manifest-000-of-002.jsonl"], **_ledgers(out)["manifest-001-of-002.jsonl"]}
    assert len(latest) == 14
    assert {line["status"] for line in latest.values()} == {"succeeded"}


def test_a_shard_that_does_not_exist_is_refused_before_anything(
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: str,
) -> None:
    from airflow.utils.state import DagRunState

    path = tmp_path / "dags" / "bad.py"
    path.parent.mkdir()
    path.write_text(DAG_SOURCE.replace("SHARDS", "2").replace("list(range(2))", "[0, 2]"))
    use_dags_folder(monkeypatch, path.parent)

    result = run_dag(load_dag(path), capsys, requests=_requests(4), destination=str(tmp_path / "v"))

    assert result.run.state == DagRunState.FAILED
    assert "shard 2 of 2 does not exist" in result.output
    assert emulator.count(route="create") <= 2  # shard 0 may run; shard 2 sends nothing
