"""The batch manifest alone: requests validated before anything is paid, recorded ids reused on a rerun,
and a manifest replaced whole (local files and an object store)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.manifest import BatchInputError, Entry, Status


def _items(*requests: Any) -> list[tuple[str, Any]]:
    return [(f"request #{n}", r) for n, r in enumerate(requests, start=1)]


# -- requests -----------------------------------------------------------------------------------------


def test_a_malformed_line_is_named_by_its_number() -> None:
    text = ['{"model": "sora-2", "prompt": "a"}', "", '{"model": "sora-2", "prompt": }']
    with pytest.raises(BatchInputError, match=r"prompts.jsonl line 3 is not valid JSON"):
        manifest.parse_jsonl(text, "prompts.jsonl")


def test_blank_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    items = manifest.parse_jsonl([b'{"a": 1}\n', b"\n", b'{"b": 2}\n'], "f")
    assert items == [("f line 1", {"a": 1}), ("f line 3", {"b": 2})]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"prompt": "a fox"}, r"request #1: 'model' is missing or empty"),
        ({"model": "sora-2"}, r"request #1: 'prompt' is missing or empty"),
        ({"model": "sora-2", "prompt": "  "}, r"'prompt' is missing or empty"),
        (["sora-2", "a fox"], r"request #1: a request must be a JSON object, got list"),
        ({"model": "sora-2", "prompt": "a", "key": "../x"}, r"key '../x' must be 1-150 letters"),
        ({"model": "sora-2", "prompt": "a", "key": ".hidden"}, r"key '.hidden'"),
        ({"model": "sora-2", "prompt": "a", "key": 7}, r"key 7 must be"),
    ],
)
def test_unusable_requests_are_refused(request_: Any, message: str) -> None:
    with pytest.raises(BatchInputError, match=message):
        manifest.parse_requests(_items(request_))


def test_duplicate_keys_are_refused_naming_both() -> None:
    first = {"key": "clip", "model": "sora-2", "prompt": "a"}
    with pytest.raises(BatchInputError, match=r"request #2: key 'clip' is already used by request #1"):
        manifest.parse_requests(_items(first, {**first, "prompt": "b"}))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BatchInputError, match=r"2 request\(s\) cannot be used") as caught:
        manifest.parse_requests(_items({"model": "m"}, {"model": "m", "prompt": "ok"}, {"prompt": "p"}))
    assert "request #1" in str(caught.value)
    assert "request #3" in str(caught.value)


def test_an_empty_batch_is_refused() -> None:
    with pytest.raises(BatchInputError, match="no requests"):
        manifest.parse_requests([])


def test_requests_keep_every_create_field_but_the_key() -> None:
    [entry] = manifest.parse_requests(
        _items({"key": "k1", "model": "veo3.1", "prompt": "p", "aspect_ratio": "9:16", "images": []})
    )
    assert entry.key == "k1"
    assert entry.request == {"model": "veo3.1", "prompt": "p", "aspect_ratio": "9:16", "images": []}
    assert entry.status is Status.PENDING


def test_derived_keys_are_stable_and_follow_position_and_content() -> None:
    a, b = {"model": "m", "prompt": "a"}, {"model": "m", "prompt": "b"}
    keys = [e.key for e in manifest.parse_requests(_items(a, b))]
    assert keys == [e.key for e in manifest.parse_requests(_items(dict(a), dict(b)))]
    assert keys[0].startswith("00000-")
    assert keys[1].startswith("00001-")
    # The same prompt at another position, or another prompt at the same position: another key.
    assert manifest.parse_requests(_items(b, a))[1].key != keys[0]
    assert manifest.parse_requests(_items({"model": "m", "prompt": "c"}))[0].key != keys[0]


# -- merging --------------------------------------------------------------------------------------------


def _entry(key: str, status: Status, video_task_id: str | None = None, prompt: str = "p") -> Entry:
    entry = Entry(key, {"model": "sora-2", "prompt": prompt}, video_task_id, status, waiting_since=1.0)
    if status is Status.SUCCEEDED:
        entry.uri, entry.bytes, entry.sha256 = f"file:///v/{key}.mp4", 10, "ab"
    return entry


@pytest.mark.parametrize(
    ("status", "video_task_id", "expected", "fresh_wait"),
    [
        (Status.SUCCEEDED, "t", Status.SUCCEEDED, False),
        (Status.RUNNING, "t", Status.RUNNING, True),
        (Status.TIMEOUT, "t", Status.RUNNING, True),
        (Status.ERROR, "t", Status.RUNNING, True),
        (Status.FAILED, "t", Status.FAILED, False),
        (Status.UNCERTAIN, None, Status.UNCERTAIN, False),
        (Status.FAILED, None, Status.PENDING, False),
        (Status.ERROR, None, Status.PENDING, False),
        (Status.PENDING, None, Status.PENDING, False),
    ],
)
def test_a_rerun_reuses_every_recorded_id(
    status: Status, video_task_id: str | None, expected: Status, fresh_wait: bool
) -> None:
    recorded = _entry("k", status, video_task_id)
    [merged] = manifest.merge([_entry("k", Status.PENDING)], [recorded], now=50.0)
    assert merged.status is expected
    assert merged.video_task_id == video_task_id
    assert (merged.waiting_since == 50.0) is fresh_wait
    if expected is Status.SUCCEEDED:
        assert (merged.uri, merged.bytes, merged.sha256) == ("file:///v/k.mp4", 10, "ab")


def test_uncertain_creates_are_sent_again_only_when_asked() -> None:
    recorded = [_entry("k", Status.UNCERTAIN)]
    [merged] = manifest.merge([_entry("k", Status.PENDING)], recorded, now=1.0, retry_uncertain=True)
    assert merged.status is Status.PENDING


def test_a_changed_request_for_a_paid_key_is_refused() -> None:
    recorded = [_entry("k", Status.RUNNING, "sora-2:task_1", prompt="old")]
    with pytest.raises(
        BatchInputError, match=r"Key 'k' was already created from another request.*sora-2:task_1"
    ):
        manifest.merge([_entry("k", Status.PENDING, prompt="new")], recorded, now=1.0)


def test_a_changed_request_that_was_never_paid_replaces_the_old_one() -> None:
    recorded = [_entry("k", Status.FAILED, prompt="old")]
    [merged] = manifest.merge([_entry("k", Status.PENDING, prompt="new")], recorded, now=1.0)
    assert merged.request["prompt"] == "new"
    assert merged.status is Status.PENDING


def test_keys_not_requested_stay_at_the_end_untouched() -> None:
    other = _entry("other", Status.RUNNING, "t9")
    merged = manifest.merge([_entry("k", Status.PENDING)], [other], now=99.0)
    assert [e.key for e in merged] == ["k", "other"]
    assert merged[1].waiting_since == 1.0


# -- reading and writing --------------------------------------------------------------------------------


def test_entries_round_trip_with_the_documented_fields() -> None:
    entry = _entry("k", Status.SUCCEEDED, "sora-2:task_1")
    entry.extra = {"note": "kept"}
    line = json.loads(manifest.dumps([entry]))
    assert {"key", "model", "video_task_id", "status", "uri", "bytes", "sha256", "error"} <= line.keys()
    assert line["model"] == "sora-2"
    assert line["note"] == "kept"
    assert manifest.loads(manifest.dumps([entry]).decode(), "m") == [entry]


def test_a_line_that_is_no_entry_is_named() -> None:
    with pytest.raises(BatchInputError, match=r"m line 2: not a manifest entry"):
        manifest.loads('{"key": "a", "request": {}}\n{"status": "succeeded"}\n', "m")


def test_outcomes_clear_what_an_earlier_outcome_left() -> None:
    entry = _entry("k", Status.SUCCEEDED, "t")
    entry.ended(Status.ERROR, "gone")
    assert (entry.status, entry.uri, entry.bytes, entry.sha256, entry.error) == (
        Status.ERROR,
        None,
        None,
        None,
        "gone",
    )
    entry.wait_again(7.0)
    assert (entry.status, entry.error, entry.waiting_since, entry.video_task_id) == (
        Status.RUNNING,
        None,
        7.0,
        "t",
    )


def test_counts() -> None:
    entries = [
        _entry("a", Status.SUCCEEDED, "1"),
        _entry("b", Status.FAILED, "2"),
        _entry("c", Status.PENDING),
    ]
    tally = manifest.counts(entries)
    assert tally["total"] == 3
    assert (tally["succeeded"], tally["failed"], tally["pending"], tally["timeout"]) == (1, 1, 1, 0)


def test_local_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "out" / "manifest.jsonl")
    manifest.write(fs, path, [_entry("a", Status.PENDING)])
    inode_before = os.stat(path).st_ino
    manifest.write(fs, path, [_entry("a", Status.PENDING), _entry("b", Status.PENDING)])
    assert [e.key for e in manifest.read(fs, path, "m")] == ["a", "b"]
    assert os.stat(path).st_ino != inode_before  # a new file renamed over the old one, not rewritten in place
    assert os.listdir(tmp_path / "out") == ["manifest.jsonl"]


def test_readers_never_see_a_half_written_manifest(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "manifest.jsonl")
    entries = [_entry(f"k{n}", Status.PENDING, prompt="x" * 2000) for n in range(300)]
    manifest.write(fs, path, entries[:1])
    stop, seen = threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            seen.append(len(manifest.read(fs, path, "m")))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for size in (300, 1, 300, 1, 300):
            manifest.write(fs, path, entries[:size])
    finally:
        stop.set()
        thread.join()
    assert seen
    assert set(seen) <= {1, 300}


def test_object_store_write_is_one_put() -> None:
    fs = fsspec.filesystem("memory")
    path = "/batch-test/manifest.jsonl"
    assert manifest.read(fs, path, "m") == []
    manifest.write(fs, path, [_entry("a", Status.PENDING)])
    assert [e.key for e in manifest.read(fs, path, "m")] == ["a"]
    assert fs.ls("/batch-test", detail=False) == [path]
    fs.rm(path)
