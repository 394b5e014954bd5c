"""The batch manifest alone: requests validated before anything is paid, recorded ids reused on a rerun,
and a manifest replaced whole (local files and an object store)."""

from __future__ import annotations

import hashlib
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


def test_derived_keys_follow_the_content_only() -> None:
    """A list that gains a prompt at the top, loses one or is sorted keeps every other request's key."""
    prompts = [{"model": "m", "prompt": p} for p in ("a", "b", "c", "d", "e")]
    keys = {e.request["prompt"]: e.key for e in manifest.parse_requests(_items(*prompts))}

    changed = [{"model": "m", "prompt": "new"}, *reversed(prompts[1:])]  # new first, "a" gone, reversed
    again = {e.request["prompt"]: e.key for e in manifest.parse_requests(_items(*changed))}

    assert {p: again[p] for p in "bcde"} == {p: keys[p] for p in "bcde"}
    assert again["new"] not in keys.values()
    # Key order inside a request does not matter; any other change of content does.
    [same] = manifest.parse_requests(_items({"prompt": "a", "model": "m"}))
    [other] = manifest.parse_requests(_items({"model": "m", "prompt": "a", "duration": 10}))
    assert same.key == keys["a"]
    assert other.key != keys["a"]


def test_identical_requests_are_told_apart_by_their_occurrence() -> None:
    twice = {"model": "m", "prompt": "same"}
    first, second, other = manifest.parse_requests(_items(twice, dict(twice), {"model": "m", "prompt": "x"}))
    assert second.key == f"{first.key}-2"
    moved = manifest.parse_requests(_items({"model": "m", "prompt": "x"}, twice, dict(twice)))
    assert [e.key for e in moved] == [other.key, first.key, second.key]


def test_keys_that_differ_only_in_case_are_refused() -> None:
    clip = {"key": "Clip", "model": "sora-2", "prompt": "a"}
    with pytest.raises(BatchInputError, match=r"request #2: key 'clip' differs only in case from 'Clip'"):
        manifest.parse_requests(_items(clip, {**clip, "key": "clip"}))


def test_a_request_must_be_json() -> None:
    with pytest.raises(BatchInputError, match=r"request #1: the request is not JSON"):
        manifest.parse_requests(_items({"model": "m", "prompt": "p", "when": object()}))


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
    [merged], _ = manifest.merge([_entry("k", Status.PENDING)], [recorded], now=50.0)
    assert merged.status is expected
    assert merged.video_task_id == video_task_id
    assert (merged.waiting_since == 50.0) is fresh_wait
    if expected is Status.SUCCEEDED:
        assert (merged.uri, merged.bytes, merged.sha256) == ("file:///v/k.mp4", 10, "ab")


def test_uncertain_creates_are_sent_again_only_when_asked() -> None:
    recorded = [_entry("k", Status.UNCERTAIN)]
    [merged], _ = manifest.merge([_entry("k", Status.PENDING)], recorded, now=1.0, retry_uncertain=True)
    assert merged.status is Status.PENDING


def test_a_changed_request_for_a_paid_key_is_refused() -> None:
    recorded = [_entry("k", Status.RUNNING, "sora-2:task_1", prompt="old")]
    with pytest.raises(
        BatchInputError, match=r"Key 'k' was already created from another request.*sora-2:task_1"
    ):
        manifest.merge([_entry("k", Status.PENDING, prompt="new")], recorded, now=1.0)


def test_a_changed_request_that_was_never_paid_replaces_the_old_one() -> None:
    recorded = [_entry("k", Status.FAILED, prompt="old")]
    [merged], _ = manifest.merge([_entry("k", Status.PENDING, prompt="new")], recorded, now=1.0)
    assert merged.request["prompt"] == "new"
    assert merged.status is Status.PENDING


def test_keys_not_requested_stay_at_the_end_untouched() -> None:
    other = _entry("other", Status.RUNNING, "t9")
    merged, others = manifest.merge([_entry("k", Status.PENDING)], [other], now=99.0)
    assert [e.key for e in merged] == ["k"]
    assert others == [other]
    assert others[0].waiting_since == 1.0


def test_a_request_with_a_tuple_continues_its_recorded_json_copy() -> None:
    """The live request says ``("https://…",)``; its manifest line says ``[…]``: the same request."""
    request = {"key": "k", "model": "veo3.1", "prompt": "p", "images": ("https://cdn.example/a.png",)}
    [fresh] = manifest.parse_requests(_items(request))
    recorded = fresh.request | {}
    entry = Entry("k", recorded, "veo3.1:task_1", Status.RUNNING, waiting_since=1.0)
    [line] = manifest.loads(manifest.dumps([entry]).decode(), "m")
    [merged], _ = manifest.merge(manifest.parse_requests(_items(request)), [line], now=5.0)
    assert merged.video_task_id == "veo3.1:task_1"
    assert merged.request["images"] == ["https://cdn.example/a.png"]


def test_a_key_that_differs_only_in_case_from_a_recorded_one_is_refused() -> None:
    recorded = [_entry("clip", Status.SUCCEEDED, "t1")]
    with pytest.raises(BatchInputError, match=r"Key 'Clip' differs only in case from 'clip'"):
        manifest.merge([_entry("Clip", Status.PENDING)], recorded, now=1.0)


def _positional(index: int, request: dict[str, Any]) -> str:
    """The key 0.1.0 gave a request without one: its position and a digest of its content."""
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
    return f"{index:05d}-{digest[:10]}"


def test_a_manifest_with_0_1_0_positional_keys_is_honoured() -> None:
    """Entries 0.1.0 recorded under position-based keys are found by their request: none is paid again,
    each keeps its key (its file), identical requests in order; a new request first shifts nothing."""
    old = [{"model": "m", "prompt": p} for p in ("a", "b", "same", "same")]
    recorded = [
        Entry(_positional(n, r), dict(r), f"m:task_{n}", Status.SUCCEEDED, waiting_since=1.0)
        for n, r in enumerate(old)
    ]
    requests = manifest.parse_requests(_items({"model": "m", "prompt": "new"}, *old))

    merged, others = manifest.merge(requests, recorded, now=2.0)

    assert others == []
    assert merged[0].video_task_id is None  # the new one is created
    assert [(e.key, e.video_task_id) for e in merged[1:]] == [(r.key, r.video_task_id) for r in recorded]
    # Resuming pairs them the same way.
    pairs, _ = manifest.pair(requests, merged)
    assert [old.key if old else None for _, old in pairs] == [merged[0].key] + [r.key for r in recorded[0:]]


def test_a_positional_key_is_not_matched_to_a_request_with_its_own_key() -> None:
    request = {"model": "m", "prompt": "a"}
    recorded = [Entry(_positional(0, request), dict(request), "m:task_0", Status.SUCCEEDED)]
    merged, others = manifest.merge(manifest.parse_requests(_items({**request, "key": "a"})), recorded, 1.0)
    assert merged[0].video_task_id is None
    assert others == recorded


# -- reading and writing --------------------------------------------------------------------------------


def test_entries_round_trip_with_the_documented_fields() -> None:
    entry = _entry("k", Status.SUCCEEDED, "sora-2:task_1")
    entry.extra = {"note": "kept"}
    assert "replace" not in json.loads(manifest.dumps([entry]))  # written only when set
    entry.replace = True
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
