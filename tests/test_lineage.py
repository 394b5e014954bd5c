"""OpenLineage facets of the download and batch operators: the gateway's task in, the stored object out
(a batch: its requests file in, its manifest and destination folder out, never one dataset per video).
The OpenLineage provider is imported only when asked: without it the operators work and answer None."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Scenario
from airflow_provider_videoquery.operators.batch import VideoBatchOperator
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from tests.airflow_helpers import make_context

TASK = "sora-2:task_lineage01"


def _stored_download(tmp_path: Path) -> VideoDownloadOperator:
    operator = VideoDownloadOperator(
        task_id="download", video_task_id=TASK, destination=f"file://{tmp_path}/out/", poll_interval=0.05
    )
    operator.execute(make_context())
    return operator


def test_the_download_reads_the_gateway_task_and_writes_the_stored_video(
    emulator: Any, tmp_path: Path
) -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    lineage = _stored_download(tmp_path).get_openlineage_facets_on_complete(None)

    assert [(d.namespace, d.name) for d in lineage.inputs] == [(emulator.url, TASK)]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("file", f"{tmp_path}/out/sora-2_task_lineage01.mp4")
    ]


def test_the_batch_reads_its_requests_and_writes_one_manifest_and_one_folder() -> None:
    pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
    operator = VideoBatchOperator(
        task_id="batch",
        requests="s3://prompts/today.jsonl",
        destination="s3://videos/today",
    )
    lineage = operator.get_openlineage_facets_on_complete(None)

    assert [(d.namespace, d.name) for d in lineage.inputs] == [("s3://prompts", "today.jsonl")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("s3://videos", "today/manifest.jsonl"),
        ("s3://videos", "today"),
    ]
    inline = VideoBatchOperator(task_id="b", requests=[{"model": "m", "prompt": "p"}], destination="/data/v")
    assert inline.get_openlineage_facets_on_complete(None).inputs == []


def test_without_the_openlineage_provider_there_are_no_facets_and_nothing_fails(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)  # import fails
    emulator.add_task(TASK, Scenario(polls_to_complete=1))
    operator = _stored_download(tmp_path)
    assert operator.get_openlineage_facets_on_complete(None) is None
    batch = VideoBatchOperator(task_id="batch", requests="/data/p.jsonl", destination="/data/videos")
    assert batch.get_openlineage_facets_on_complete(None) is None
