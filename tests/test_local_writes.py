"""Local files: durable before they are reported stored, and no orphaned temporaries piling up.

A host crash cannot be produced here, so durability is checked by its mechanism: the temporary's
descriptor is fsynced before the rename, the folder after it (``os.fsync``/``os.rename`` recorded).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator
from airflow_provider_videoquery.storage import sinks, store_url, writeback
from airflow_provider_videoquery.storage.sinks import PART_NAME, STALE_PART_AGE
from tests.test_storage import MiB, folder_of, listing, settings_for, target, video_task

pytestmark = pytest.mark.timeout(60)


def test_the_file_is_fsynced_before_the_rename_and_the_folder_after(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, ...]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: Any) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        events.append(("rename", str(src), str(dst)))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)

    stored = store_url(video_task(emulator), target(tmp_path), settings_for(emulator))

    final = str(folder_of(tmp_path) / stored.path.name)
    ours = [event for event in events if str(tmp_path) in event[1]]
    assert len(ours) == 3, events
    assert [event[0] for event in ours] == ["fsync", "rename", "fsync"]
    (_, synced), (_, moved_from, moved_to), (_, folder) = ours
    assert PART_NAME.fullmatch(Path(synced).name)
    assert (moved_from, moved_to) == (synced, final)
    assert folder == str(folder_of(tmp_path))
    assert Path(final).read_bytes() == emulator.expected_video("veo3.1-fast:1764522552-Ab3dE9fGh1")


def test_the_file_is_handed_to_the_kernel_for_write_out_as_it_is_written(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each finished stretch is written out while the download goes on, so the fsync has little left."""
    events: list[tuple[str, int, int]] = []
    real_start, real_fsync = writeback.start_writeback, os.fsync

    def start(fd: int, offset: int, length: int) -> bool:
        assert os.fstat(fd).st_size >= offset + length  # only bytes already handed to the file
        events.append(("writeback", offset, length))
        return real_start(fd, offset, length)

    def fsync(fd: Any) -> None:
        events.append(("fsync", 0, 0))
        real_fsync(fd)

    monkeypatch.setattr(writeback, "WRITEBACK_STEP", 2 * MiB)
    monkeypatch.setattr(writeback, "start_writeback", start)
    monkeypatch.setattr(os, "fsync", fsync)

    url = video_task(emulator, size=7 * MiB + 5)
    stored = store_url(url, target(tmp_path), settings_for(emulator))

    assert events[:4] == [
        ("writeback", 0, 2 * MiB),
        ("writeback", 2 * MiB, 2 * MiB),
        ("writeback", 4 * MiB, 2 * MiB),
        ("fsync", 0, 0),  # the rest (1 MiB + 5 bytes) is left to the fsync, which stays
    ]
    assert (folder_of(tmp_path) / stored.path.name).read_bytes() == emulator.expected_video(
        "veo3.1-fast:1764522552-Ab3dE9fGh1"
    )


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="sync_file_range is Linux's")
def test_start_writeback_reaches_the_kernel_on_linux(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with open(path, "wb") as out:
        out.write(b"x" * 65536)
        out.flush()
        assert writeback.start_writeback(out.fileno(), 0, 65536) is True
    assert writeback.start_writeback(-1, 0, 1) is False  # a hint the kernel refuses is just not given
    assert path.read_bytes() == b"x" * 65536


def _aged(path: Path, seconds: float, directory: bool = False) -> Path:
    if directory:
        path.mkdir()
    else:
        path.write_bytes(b"\x00" * 100)
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_orphaned_temporaries_are_removed_by_the_next_download_only_when_stale(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = folder_of(tmp_path)
    folder.mkdir()
    old, fresh = STALE_PART_AGE + 60, STALE_PART_AGE - 60
    _aged(folder / ".veo3.1-fast_x.mp4.part-0123456789ab", old)  # a killed worker's
    _aged(folder / ".another-task.mp4.part-abcdefabcdef", old)  # another task's, killed too
    _aged(folder / ".writing-now.mp4.part-aaaaaaaaaaaa", fresh)  # a concurrent download's
    _aged(folder / ".videoquery-probe-0123456789ab", old)  # a destination check's, killed mid-probe
    _aged(folder / ".notes.part-draft", old)  # not ours
    _aged(folder / "kept.mp4", old)  # a video
    _aged(folder / ".dir.mp4.part-bbbbbbbbbbbb", old, directory=True)  # not a file we wrote
    caplog.set_level(logging.INFO)

    stored = store_url(video_task(emulator), target(tmp_path), settings_for(emulator))

    assert listing(tmp_path) == sorted(
        [
            ".dir.mp4.part-bbbbbbbbbbbb",
            ".notes.part-draft",
            ".writing-now.mp4.part-aaaaaaaaaaaa",
            "kept.mp4",
            stored.path.name,
        ]
    )
    assert "a killed download left (last written 1.0 hours ago)" in caplog.text
    assert ".another-task.mp4.part-abcdefabcdef" in caplog.text


def test_a_folder_is_searched_for_stale_temporaries_once_per_interval_not_per_file(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch storing 1,000 files into one folder lists it once, not once per file."""
    store_url(
        video_task(emulator, size=4096, task_id="veo3.1-fast:one"),
        target(tmp_path, "veo3.1-fast:one"),
        settings_for(emulator),
    )
    leftover = _aged(folder_of(tmp_path) / ".killed.mp4.part-0123456789ab", STALE_PART_AGE + 60)

    store_url(
        video_task(emulator, size=4096, task_id="veo3.1-fast:two"),
        target(tmp_path, "veo3.1-fast:two"),
        settings_for(emulator),
    )
    assert leftover.exists()  # searched moments ago: not again

    monkeypatch.setattr(sinks, "SWEEP_EVERY", 0.0)  # the interval has passed
    store_url(
        video_task(emulator, size=4096, task_id="veo3.1-fast:three"),
        target(tmp_path, "veo3.1-fast:three"),
        settings_for(emulator),
    )
    assert not leftover.exists()


def _hash_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("videoquery-sha256")}


def test_files_are_hashed_by_shared_threads_not_one_started_per_file(
    emulator: Emulator, tmp_path: Path
) -> None:
    seen: list[set[int | None]] = []
    for n in range(3):
        task_id = f"veo3.1-fast:shared-{n}"
        url = video_task(emulator, size=4096, task_id=task_id)
        stored = store_url(url, target(tmp_path, task_id), settings_for(emulator))
        assert stored.sha256 == hashlib.sha256(emulator.expected_video(task_id)).hexdigest()
        seen.append(_hash_threads())
    assert 1 <= len(seen[0]) <= sinks.HASH_THREADS  # still there for the next file …
    assert seen[0] == seen[1] == seen[2]  # … which started none


def test_a_forked_child_hashes_with_threads_of_its_own(emulator: Emulator, tmp_path: Path) -> None:
    """The parent's hashing threads do not exist in a forked child (Airflow forks task processes)."""
    store_url(
        video_task(emulator, size=4096, task_id="veo3.1-fast:parent"),
        target(tmp_path, "veo3.1-fast:parent"),
        settings_for(emulator),
    )
    url = video_task(emulator, size=4096, task_id="veo3.1-fast:child")
    pid = os.fork()
    if pid == 0:  # the child: store, then leave at once (no pytest teardown)
        code = 1
        try:
            store_url(url, target(tmp_path, "veo3.1-fast:child"), settings_for(emulator))
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's download hung waiting for a hashing thread it does not have")
    assert os.waitstatus_to_exitcode(status) == 0
