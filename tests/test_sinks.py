"""Downloads into object stores other than local files and S3 (GCS, Azure, …): the writer-thread path.

``memory://`` is fsspec's real in-memory filesystem. The buffered store below stands in for stores whose
files upload in parts and must be aborted (``AbstractBufferedFile``: gcsfs, adlfs, …): none of those
servers runs on this machine, and a failing part upload is not something they can be made to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest
from airflow.sdk.io import attach
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from airflow_provider_videoquery.emulator import Fault
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.storage import resolve_destination, store_url
from tests.test_storage import TASK, MiB, settings_for, video_task

pytestmark = pytest.mark.timeout(60)


class _BufferedStore(AbstractFileSystem):  # type: ignore[misc]
    """Objects appear only when their upload is committed (on close), as on GCS; parts can fail."""

    protocol = "buffered"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reset()

    def reset(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.parts_started: list[str] = []
        self.aborted: list[str] = []
        self.fail_after_parts: int | None = None

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, **kwargs: Any) -> Any:
        return _BufferedFile(self, path, mode, block_size=5 * MiB, **kwargs)

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        if path not in self.objects:
            raise FileNotFoundError(path)
        return {"name": path, "size": len(self.objects[path]), "type": "file"}

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> list[Any]:
        prefix = self._strip_protocol(path).rstrip("/") + "/"
        names = [name for name in self.objects if name.startswith(prefix)]
        return [self.info(name) for name in names] if detail else names

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        pass

    def _rm(self, path: str) -> None:
        del self.objects[self._strip_protocol(path)]

    def mv(self, path1: str, path2: str, **kwargs: Any) -> None:
        self.objects[self._strip_protocol(path2)] = self.objects.pop(self._strip_protocol(path1))

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:
        return self.objects[self._strip_protocol(path)][start:end]


class _BufferedFile(AbstractBufferedFile):  # type: ignore[misc]
    fs: _BufferedStore

    def _initiate_upload(self) -> None:
        self._parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        store = self.fs
        if store.fail_after_parts is not None and len(self._parts) >= store.fail_after_parts:
            raise OSError("the store refused a part (503 Service Unavailable)")
        store.parts_started.append(self.path)
        self._parts.append(self.buffer.getvalue())
        if final:
            store.objects[self.path] = b"".join(self._parts)
        return True

    def discard(self) -> None:
        self.fs.aborted.append(self.path)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.objects[self.path][start:end]


@pytest.fixture
def memory_store() -> Iterator[MemoryFileSystem]:
    fs = attach("memory", fs=MemoryFileSystem()).fs  # Airflow keeps the first store attached per scheme
    fs.store.clear()  # and fsspec's memory store is one per process
    yield fs
    fs.store.clear()


@pytest.fixture
def buffered_store() -> Any:
    fsspec.register_implementation("buffered", _BufferedStore, clobber=True)
    store = attach("buffered", fs=_BufferedStore(skip_instance_cache=True)).fs
    store.reset()
    return store


def test_memory_store_gets_the_exact_video_and_no_temporary(emulator: Any, memory_store: Any) -> None:
    url = video_task(emulator, size=3 * MiB)
    stored = store_url(url, resolve_destination("memory://bucket/videos/", TASK), settings_for(emulator))

    expected = emulator.expected_video(TASK)
    assert stored.sha256 == hashlib.sha256(expected).hexdigest()
    assert memory_store.cat_file(stored.path.path) == expected
    assert list(memory_store.store) == [stored.path.path]  # the temporary object was moved away


def test_memory_store_keeps_nothing_when_the_download_fails(emulator: Any, memory_store: Any) -> None:
    url = video_task(emulator, size=3 * MiB)
    emulator.add_fault(Fault("truncate", route="video", times=10, after_bytes=MiB + 1))
    with pytest.raises(VideoDownloadError, match="still failed after 3 attempts"):
        store_url(url, resolve_destination("memory://bucket/videos/", TASK), settings_for(emulator))
    assert list(memory_store.store) == []


def test_buffered_store_commits_only_the_complete_object(emulator: Any, buffered_store: Any) -> None:
    url = video_task(emulator, size=12 * MiB)
    stored = store_url(url, resolve_destination("buffered://bucket/videos/", TASK), settings_for(emulator))

    assert buffered_store.objects == {stored.path.path: emulator.expected_video(TASK)}
    assert len(buffered_store.parts_started) >= 2  # uploaded in parts, by the writer thread
    assert buffered_store.aborted == []


def test_buffered_store_part_failure_aborts_and_leaves_nothing(emulator: Any, buffered_store: Any) -> None:
    buffered_store.fail_after_parts = 1
    url = video_task(emulator, size=12 * MiB)
    with pytest.raises(VideoDownloadError, match=r"at buffered://bucket/videos/.*refused a part") as err:
        store_url(url, resolve_destination("buffered://bucket/videos/", TASK), settings_for(emulator))
    assert isinstance(err.value.__cause__, OSError)

    assert buffered_store.objects == {}
    assert len(buffered_store.aborted) == 1  # the upload was aborted, never committed by close()
