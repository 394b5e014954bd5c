"""The batch ledger alone: changes durable one by one without rewriting the manifest, one way to read
manifest + journal, and compaction that a crash at any point leaves readable (local disk and S3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery import ledger, manifest
from airflow_provider_videoquery.ledger import Ledger
from airflow_provider_videoquery.manifest import BatchInputError, Entry, Status
from tests.s3 import MotoS3


def _entries(n: int) -> list[Entry]:
    return [Entry(f"clip-{i:03d}", {"model": "sora-2", "prompt": f"prompt {i}"}) for i in range(n)]


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str, str]:
    """(fs, path, uri) of a manifest on a local disk or on S3 (moto on 127.0.0.1)."""
    from airflow.sdk import ObjectStoragePath

    if request.param == "local":
        uri = f"file://{tmp_path}/videos/manifest.jsonl"
        path = ObjectStoragePath(uri)
    else:
        bucket = request.getfixturevalue("s3_bucket")
        uri = f"s3://{bucket}/videos/manifest.jsonl"
        path = ObjectStoragePath(uri, conn_id="aws_default")
    return path.fs, path.path, uri


def _started(place: tuple[Any, str, str], n: int = 5) -> tuple[Ledger, list[Entry]]:
    fs, path, uri = place
    book = Ledger(fs, path, uri)
    entries = _entries(n)
    book.compact(entries)
    return book, entries


def test_a_recorded_change_is_read_back_without_rewriting_the_manifest(place: tuple[Any, str, str]) -> None:
    fs, path, uri = place
    book, entries = _started(place)
    snapshot = fs.cat_file(path)

    entries[1].created("sora-2:task_1", 100.0)
    book.record([entries[1]])
    entries[3].created("sora-2:task_3", 101.0)
    entries[3].stored("s3://b/clip-003.mp4", 42, "ab" * 32)
    book.record([entries[3]])

    assert fs.cat_file(path) == snapshot  # the manifest is not touched by a change
    back = ledger.read(fs, path, uri)
    assert [e.key for e in back] == [e.key for e in entries]
    assert back[1].video_task_id == "sora-2:task_1"
    assert back[1].status is Status.RUNNING
    assert back[3].status is Status.SUCCEEDED
    assert (back[3].uri, back[3].bytes) == ("s3://b/clip-003.mp4", 42)
    assert back[3].request == entries[3].request  # the request stays the manifest's
    assert back[0].status is Status.PENDING


def test_compaction_folds_the_journal_into_the_manifest(place: tuple[Any, str, str]) -> None:
    fs, path, uri = place
    book, entries = _started(place)
    entries[0].created("sora-2:task_0", 1.0)
    book.record([entries[0]])
    book.compact(entries)

    assert manifest.read(fs, path, uri)[0].video_task_id == "sora-2:task_0"
    fs.invalidate_cache(ledger.journal_path(path))
    assert not fs.exists(ledger.journal_path(path)) or not fs.find(ledger.journal_path(path))
    assert ledger.read(fs, path, uri)[0].video_task_id == "sora-2:task_0"


def test_a_crash_between_the_manifest_write_and_the_journal_drop_reads_the_same(
    place: tuple[Any, str, str],
) -> None:
    fs, path, uri = place
    book, entries = _started(place)
    entries[2].created("sora-2:task_2", 1.0)
    book.record([entries[2]])
    entries[2].ended(Status.FAILED, "moderation")  # a later change of the same entry
    book.record([entries[2]])
    # The fold wrote the manifest, then the worker died before the journal was dropped …
    manifest.write(fs, path, entries)
    # … and the entry changed again after the fold (a stale journal must not undo it).
    entries[2].wait_again(5.0)
    manifest.write(fs, path, entries)

    [back] = [e for e in ledger.read(fs, path, uri) if e.key == "clip-002"]
    assert back.status is Status.RUNNING
    assert back.waiting_since == 5.0


def test_a_journal_dropped_halfway_reads_the_same(s3_bucket: str, moto_server: MotoS3) -> None:
    from airflow.sdk import ObjectStoragePath

    uri = f"s3://{s3_bucket}/v/manifest.jsonl"
    where = ObjectStoragePath(uri, conn_id="aws_default")
    book, entries = _started((where.fs, where.path, uri))
    for state in ("sora-2:a", "sora-2:b", "sora-2:c"):
        entries[0].created(state, 1.0)
        book.record([entries[0]])
    manifest.write(where.fs, where.path, entries)
    # Only the newest journal object was deleted before the crash: two older ones remain.
    objects = moto_server.keys(s3_bucket, "v/manifest.jsonl.journal/")
    assert len(objects) == 3
    moto_server.client().delete_object(Bucket=s3_bucket, Key=objects[-1])

    assert ledger.read(where.fs, where.path, uri)[0].video_task_id == "sora-2:c"


def test_sequence_numbers_go_on_in_a_new_ledger(place: tuple[Any, str, str]) -> None:
    fs, path, uri = place
    book, entries = _started(place)
    entries[0].created("sora-2:first", 1.0)
    book.record([entries[0]])
    book.close()

    again = Ledger(fs, path, uri)  # a retry, on another worker
    mine = again.load()
    mine[0].created("sora-2:second", 2.0)
    again.record([mine[0]])

    assert ledger.read(fs, path, uri)[0].video_task_id == "sora-2:second"


def test_a_record_cut_short_by_a_crash_is_dropped_and_the_next_one_kept(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    path = str(tmp_path / "manifest.jsonl")
    book, entries = _started((fs, path, path))
    entries[0].created("sora-2:whole", 1.0)
    book.record([entries[0]])
    book.close()
    with open(ledger.journal_path(path), "ab") as journal:
        journal.write(b'{"key": "clip-001", "video_task_id": "sora-2:cut", "ledger_s')  # no newline

    again = Ledger(fs, path, path)
    back = again.load()
    assert back[0].video_task_id == "sora-2:whole"
    assert back[1].video_task_id is None
    back[2].created("sora-2:after", 2.0)
    again.record([back[2]])
    again.close()

    final = ledger.read(fs, path, path)
    assert [e.video_task_id for e in final[:3]] == ["sora-2:whole", None, "sora-2:after"]


def test_a_damaged_line_inside_the_journal_is_an_error(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    path = str(tmp_path / "manifest.jsonl")
    _started((fs, path, path))
    with open(ledger.journal_path(path), "wb") as journal:
        journal.write(b"not json\n")
    with pytest.raises(BatchInputError, match=r"journal line 1 is not valid JSON"):
        ledger.read(fs, path, path)


def test_a_change_for_a_key_the_manifest_lacks_is_an_error(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    path = str(tmp_path / "manifest.jsonl")
    book, entries = _started((fs, path, path))
    entries[0].created("sora-2:x", 1.0)
    book.record([entries[0]])
    manifest.write(fs, path, entries[1:])  # replaced by hand
    with pytest.raises(BatchInputError, match=r"key 'clip-000', which the manifest .* does not hold"):
        ledger.read(fs, path, path)


def test_a_local_change_is_one_appended_line(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("file")
    path = str(tmp_path / "manifest.jsonl")
    book, entries = _started((fs, path, path), n=1000)
    size = os.path.getsize(path)
    for entry in entries[:10]:
        entry.created(f"sora-2:{entry.key}", 1.0)
        book.record([entry])
    lines = Path(ledger.journal_path(path)).read_bytes().splitlines()
    assert len(lines) == 10
    assert max(len(line) for line in lines) < 400  # the change, not the request or the batch
    assert os.path.getsize(path) == size


def test_on_an_object_store_a_change_is_one_small_object(s3_bucket: str, moto_server: MotoS3) -> None:
    from airflow.sdk import ObjectStoragePath

    uri = f"s3://{s3_bucket}/v/manifest.jsonl"
    where = ObjectStoragePath(uri, conn_id="aws_default")
    book, entries = _started((where.fs, where.path, uri), n=1000)
    for entry in entries[:5]:
        entry.created(f"sora-2:{entry.key}", 1.0)
        book.record([entry])
    objects = moto_server.keys(s3_bucket, "v/manifest.jsonl.journal/")
    assert len(objects) == 5
    assert all(len(moto_server.read(s3_bucket, key)) <= 4096 for key in objects)


@pytest.mark.parametrize(
    ("local", "total", "records", "wanted"),
    [
        (True, 100, 256, False),
        (True, 100, 257, True),
        (True, 100_000, 25_000, False),
        (True, 100_000, 25_001, True),
        (False, 100, 65, True),
        (False, 100_000, 500, False),
        (False, 100_000, 501, True),
    ],
)
def test_compaction_is_wanted_once_the_journal_is_a_share_of_the_manifest(
    local: bool, total: int, records: int, wanted: bool
) -> None:
    book = Ledger.__new__(Ledger)
    book.local, book.journaled = local, records
    assert book.wants_compaction(total) is wanted
