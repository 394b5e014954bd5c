"""The gallery's model alone: which cards a run has (a mapped download, a batch of 6 with one failed and
one not stored yet), paging, the status filter, and which URIs may be served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.ui import model, xcom
from airflow_provider_videoquery.ui.model import Card, Kind, Ledger, Status, TaskRecord

FOLDER = "s3://videos/run-1/batch/"
LEDGER = Ledger(manifest=f"{FOLDER}manifest.jsonl", destination=FOLDER, conn_id="aws_videos")
POINTER = xcom.ledger_pointer(LEDGER.manifest, FOLDER, "aws_videos")  # what the batch pushes


def _entry(key: str, status: manifest.Status, **fields: object) -> manifest.Entry:
    entry = manifest.Entry(key, {"model": "sora-2", "prompt": f"prompt of {key}"})
    if status is not manifest.Status.PENDING:
        entry.created(f"sora-2:task_{key}", 1_800_000_000.0)
        entry.extra["created_at"] = 1_800_000_000.0
    if status is manifest.Status.SUCCEEDED:
        entry.stored(f"{FOLDER}{key}.mp4", 4711, "ab" * 32)
        entry.extra["stored_at"] = 1_800_000_060.0
    elif status in (manifest.Status.FAILED, manifest.Status.TIMEOUT):
        entry.ended(status, f"the gateway failed {key}: unsafe prompt")
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


BATCH = [
    _entry("clip-0", manifest.Status.SUCCEEDED),
    _entry("clip-1", manifest.Status.SUCCEEDED),
    _entry("clip-2", manifest.Status.FAILED),
    _entry("clip-3", manifest.Status.SUCCEEDED),
    _entry("clip-4", manifest.Status.RUNNING),  # created, not stored yet
    _entry("clip-5", manifest.Status.PENDING),  # not created yet
]


def _video(index: int) -> dict[str, object]:
    uri = f"file:///data/videos/sora-2_task_{index}.mp4"
    return {
        "uri": uri,
        "bytes": 1000 + index,
        "sha256": "cd" * 32,
        "content_type": "video/mp4",
        "video_task_id": f"sora-2:task_{index}",
        "thumbnail": uri.replace(".mp4", ".thumbnail.jpg"),
        "prompt": f"mapped prompt {index}",
        "model": "sora-2",
        "created_at": "2026-12-02T10:00:00+00:00",
        "stored_at": "2026-12-02T10:01:00+00:00",
        "conn_id": None,
    }


RECORDS = [
    TaskRecord("batch", -1, "deferred", model.BATCH_OPERATOR, {xcom.LEDGER_KEY: POINTER}),
    TaskRecord("download", 1, "failed", model.DOWNLOAD_OPERATOR),
    TaskRecord("download", 0, "success", model.DOWNLOAD_OPERATOR, {xcom.VIDEO_KEY: _video(0)}),
    TaskRecord("download", 2, "deferred", model.DOWNLOAD_OPERATOR),
    TaskRecord("create", 0, "success", "VideoCreateOperator", {"return_value": "sora-2:task_0"}),
    TaskRecord("report", -1, None, "_PythonDecoratedOperator"),
]


def _reader(entries: Sequence[manifest.Entry]) -> model.LedgerReader:
    def read(ledger: Ledger) -> Sequence[manifest.Entry]:
        assert ledger == LEDGER
        return entries

    return read


def _cards() -> list[Card]:
    found = model.gallery(RECORDS, _reader(BATCH))
    assert found.problems == []
    return found.cards


def test_a_run_with_a_mapped_download_and_a_batch_gives_one_card_per_video() -> None:
    cards = _cards()
    assert [(c.task_id, c.map_index, c.key, c.status) for c in cards] == [
        ("batch", -1, "clip-0", Status.SUCCEEDED),
        ("batch", -1, "clip-1", Status.SUCCEEDED),
        ("batch", -1, "clip-2", Status.FAILED),
        ("batch", -1, "clip-3", Status.SUCCEEDED),
        ("batch", -1, "clip-4", Status.WAITING),
        ("batch", -1, "clip-5", Status.NOT_CREATED),
        ("download", 0, "sora-2_task_0", Status.SUCCEEDED),
        ("download", 1, "download[1]", Status.FAILED),
        ("download", 2, "download[2]", Status.WAITING),
    ]
    failed = cards[2]
    assert failed.error == "the gateway failed clip-2: unsafe prompt"
    assert (failed.prompt, failed.model, failed.video_task_id) == (
        "prompt of clip-2",
        "sora-2",
        "sora-2:task_clip-2",
    )
    assert failed.uri is None
    stored = cards[0]
    assert (stored.uri, stored.bytes, stored.sha256) == (f"{FOLDER}clip-0.mp4", 4711, "ab" * 32)
    assert (stored.created_at, stored.stored_at) == ("2027-01-15T08:00:00+00:00", "2027-01-15T08:01:00+00:00")
    assert stored.conn_id == "aws_videos"
    assert cards[4].video_task_id == "sora-2:task_clip-4"
    assert cards[5].video_task_id is None
    download = cards[6]
    assert download.to_json() == {
        "task_id": "download",
        "map_index": 0,
        "key": "sora-2_task_0",
        "source": "download",
        "status": "succeeded",
        "state": "succeeded",
        "prompt": "mapped prompt 0",
        "model": "sora-2",
        "error": None,
        "uri": "file:///data/videos/sora-2_task_0.mp4",
        "bytes": 1000,
        "sha256": "cd" * 32,
        "content_type": "video/mp4",
        "thumbnail": "file:///data/videos/sora-2_task_0.thumbnail.jpg",
        "video_task_id": "sora-2:task_0",
        "created_at": "2026-12-02T10:00:00+00:00",
        "stored_at": "2026-12-02T10:01:00+00:00",
    }
    assert "log" in str(cards[7].error)
    assert cards[8].error is None


def test_counts_cover_every_card_and_the_filter_and_pages_choose_among_them() -> None:
    cards = _cards()
    everything = model.page(cards, None, 0, 4)
    assert everything.counts == {"total": 9, "succeeded": 4, "failed": 2, "waiting": 2, "not_created": 1}
    assert everything.total == 9
    assert [c.key for c in everything.items] == ["clip-0", "clip-1", "clip-2", "clip-3"]
    assert [c.key for c in model.page(cards, None, 8, 4).items] == ["download[2]"]
    assert model.page(cards, None, 12, 4).items == []

    failed = model.page(cards, Status.FAILED, 0, 24)
    assert [c.key for c in failed.items] == ["clip-2", "download[1]"]
    assert failed.total == 2
    assert failed.counts == everything.counts  # the counts at the top do not follow the filter
    second = model.page(cards, Status.SUCCEEDED, 1, 2)
    assert [c.key for c in second.items] == ["clip-1", "clip-3"]
    assert second.total == 4


def test_a_10000_video_batch_is_paged() -> None:
    entries = [_entry(f"clip-{n:05d}", manifest.Status.SUCCEEDED) for n in range(10_000)]
    record = TaskRecord("batch", -1, "success", model.BATCH_OPERATOR, {xcom.LEDGER_KEY: POINTER})
    cards = model.gallery([record], _reader(entries)).cards
    chosen = model.page(cards, None, 9_990, 24)
    assert [c.key for c in chosen.items] == [f"clip-{n:05d}" for n in range(9_990, 10_000)]
    assert chosen.counts["succeeded"] == 10_000


def test_a_ledger_that_cannot_be_read_is_a_problem_not_an_error() -> None:
    def broken(ledger: Ledger) -> Sequence[manifest.Entry]:
        raise PermissionError("Access Denied")

    found = model.gallery(RECORDS, broken)
    assert [c.task_id for c in found.cards] == ["download", "download", "download"]
    assert found.problems == [
        f"batch: cannot read the manifest {LEDGER.manifest} (PermissionError: Access Denied)."
    ]


def test_tasks_that_store_no_videos_and_batches_not_started_give_no_cards() -> None:
    records = [
        TaskRecord("batch", -1, None, model.BATCH_OPERATOR),  # records its ledger first thing
        TaskRecord("download", -1, "skipped", model.DOWNLOAD_OPERATOR),
        TaskRecord("create", -1, "success", "VideoCreateOperator"),
    ]
    assert model.gallery(records, _reader([])).cards == []


# -- what may be served -----------------------------------------------------------------------------


def test_stored_videos_and_thumbnails_in_their_folder_may_be_served() -> None:
    cards = _cards()
    assert model.servable(cards[0], Kind.VIDEO) == f"{FOLDER}clip-0.mp4"
    assert model.servable(cards[0], Kind.THUMBNAIL) is None  # a batch stores no thumbnails
    assert model.servable(cards[2], Kind.VIDEO) is None  # failed: nothing stored
    download = cards[6]
    assert model.servable(download, Kind.VIDEO) == "file:///data/videos/sora-2_task_0.mp4"
    assert model.servable(download, Kind.THUMBNAIL) == "file:///data/videos/sora-2_task_0.thumbnail.jpg"


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",  # another folder
        "s3://videos/run-1/other/clip-0.mp4",  # a sibling folder
        "s3://other-bucket/run-1/batch/clip-0.mp4",  # another bucket, same path
        "s3://videos/run-1/batch/../../secrets/key.pem",  # traversal
        "s3://videos/run-1/batch/%2e%2e/%2E%2E/secrets/key.pem",  # traversal, encoded
        "s3://videos/run-1/batch/./clip-0.mp4",
        "s3://videos/run-1/batch/",  # the folder itself
        "s3://videos/run-1/batch/clip-0.mp4?versionId=1",
        "https://videos/run-1/batch/clip-0.mp4",  # never a web fetch on a browser's behalf
        "s3://videos/run-1/batch-2/clip-0.mp4",  # a prefix of the name, not of the folder
        "/run-1/batch/clip-0.mp4",  # no scheme
    ],
)
def test_a_ledger_line_pointing_elsewhere_is_not_served(uri: str) -> None:
    card = replace(_cards()[0], uri=uri)
    assert model.servable(card, Kind.VIDEO) is None


@pytest.mark.parametrize(
    "thumbnail",
    ["file:///etc/hostname", "file:///data/videos/../../etc/hostname", "http://169.254.169.254/latest"],
)
def test_a_download_thumbnail_outside_its_video_folder_is_not_served(thumbnail: str) -> None:
    card = replace(_cards()[6], thumbnail=thumbnail)
    assert model.servable(card, Kind.THUMBNAIL) is None
    assert model.servable(card, Kind.VIDEO) == "file:///data/videos/sora-2_task_0.mp4"


def test_a_download_video_uri_is_only_served_as_an_object_store_uri() -> None:
    card = replace(_cards()[6], uri="data:video/mp4;base64,AAAA", folder=None)
    assert model.servable(card, Kind.VIDEO) is None
    card = replace(_cards()[6], uri="file:///data/../etc/passwd", folder=None)
    assert model.servable(card, Kind.VIDEO) is None


# -- URLs -------------------------------------------------------------------------------------------


def test_tabs_and_links_carry_the_api_servers_base_path_and_encode_ids_as_path_segments() -> None:
    from airflow_provider_videoquery.ui import urls

    assert urls.tab_hrefs("/airflow/") == (
        "/airflow/videoquery/dags/{DAG_ID}/runs/{RUN_ID}",
        "/airflow/videoquery/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}/{MAP_INDEX}",
    )
    assert urls.tab_hrefs("/")[0] == "/videoquery/dags/{DAG_ID}/runs/{RUN_ID}"
    run = "manual__2026-12-02T17:00:00+00:00"
    assert urls.page_url("https://af.example.com/airflow/", "d", run, "t.g", 3) == (
        "https://af.example.com/airflow/videoquery/dags/d/runs/manual__2026-12-02T17%3A00%3A00%2B00%3A00/tasks/t.g/3"
    )
    assert urls.page_url("/", "d", "r") == "/videoquery/dags/d/runs/r"
    assert [urls.parse_map_index(v) for v in ("{MAP_INDEX}", "-1", "7", "-2", "x")] == [-1, -1, 7, None, None]
