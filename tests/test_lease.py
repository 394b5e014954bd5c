"""The manifest lease alone, on a local disk, in memory and on S3 (moto on 127.0.0.1, which honours
``If-None-Match: *``): one holder at a time, taken over only when expired, released or held by an
earlier try, and runs racing for it told apart by the store itself."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_provider_videoquery import lease
from airflow_provider_videoquery.lease import LeaseHeldError, LeaseLostError, Owner

A = Owner("dag", "scheduled__1", "batch")
B = Owner("dag", "manual__2", "batch")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "memory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A filesystem and the path of a manifest on it."""
    if request.param == "local":
        yield fsspec.filesystem("file"), str(tmp_path / "videos" / "manifest.jsonl")
    elif request.param == "memory":
        path = f"/lease-test-{uuid.uuid4().hex[:8]}/manifest.jsonl"
        fs = fsspec.filesystem("memory")
        yield fs, path
        fs.rm(path.rsplit("/", 1)[0], recursive=True)
    else:
        from airflow.sdk import ObjectStoragePath

        bucket = request.getfixturevalue("s3_bucket")
        path = ObjectStoragePath(f"s3://{bucket}/videos/manifest.jsonl", conn_id="aws_default")
        yield path.fs, path.path


def test_one_holder_at_a_time_and_the_second_is_told_who(store: tuple[Any, str]) -> None:
    fs, path = store
    first = lease.acquire(fs, path, A, ttl=600)

    with pytest.raises(LeaseHeldError) as held:
        lease.acquire(fs, path, B, ttl=600)

    message = str(held.value)
    assert path in message
    assert "run 'scheduled__1'" in message
    assert "try 1" in message
    assert "until " in message
    first.check()  # still held


def test_a_released_lease_is_taken_at_once_and_generations_only_grow(store: tuple[Any, str]) -> None:
    fs, path = store
    first = lease.acquire(fs, path, A, ttl=600)
    first.release()

    second = lease.acquire(fs, path, B, ttl=600)

    assert second.generation == first.generation + 1
    holder = lease.current(fs, path)
    assert holder is not None
    assert holder.owner == B
    with pytest.raises(LeaseLostError, match="taken over by DAG 'dag', run 'manual__2'"):
        first.check()


def test_an_expired_lease_is_taken_over_and_its_old_holder_finds_out(store: tuple[Any, str]) -> None:
    fs, path = store
    clock = Clock()
    first = lease.acquire(fs, path, A, ttl=60, clock=clock)
    clock.now += 59
    with pytest.raises(LeaseHeldError):
        lease.acquire(fs, path, B, ttl=60, clock=clock)
    clock.now += 2

    second = lease.acquire(fs, path, B, ttl=60, clock=clock)

    second.check()
    with pytest.raises(LeaseLostError):
        first.check()
    with pytest.raises(LeaseLostError):
        first.renew(60)  # a late holder cannot renew itself back in


def test_a_later_try_of_the_same_task_takes_over_at_once_and_fences_the_orphan(
    store: tuple[Any, str],
) -> None:
    fs, path = store
    orphan = lease.acquire(fs, path, A, ttl=600)
    retry = Owner(A.dag_id, A.run_id, A.task_id, try_number=2)

    taken = lease.acquire(fs, path, retry, ttl=600)

    taken.check()
    with pytest.raises(LeaseLostError, match=r"try 2"):
        orphan.check()
    # … but an earlier try never takes it back.
    with pytest.raises(LeaseHeldError):
        lease.acquire(fs, path, A, ttl=600)


def test_the_same_try_resumed_in_a_new_process_adopts_it(store: tuple[Any, str]) -> None:
    fs, path = store
    before = lease.acquire(fs, path, A, ttl=600)

    resumed = lease.acquire(fs, path, A, ttl=600)

    assert resumed.generation == before.generation
    resumed.check()
    with pytest.raises(LeaseLostError):
        before.check()  # the deferred process's token is no longer the lease's


def test_holding_across_a_deferral_moves_the_expiry(store: tuple[Any, str]) -> None:
    fs, path = store
    clock = Clock()
    held = lease.acquire(fs, path, A, ttl=60, clock=clock)
    held.hold_until(clock.now + 7200)
    clock.now += 3600
    with pytest.raises(LeaseHeldError):
        lease.acquire(fs, path, B, ttl=60, clock=clock)
    holder = lease.current(fs, path)
    assert holder is not None
    assert holder.expires_at == held.expires_at


def test_runs_racing_for_the_lease_get_exactly_one_holder(tmp_path: Path) -> None:
    """Six runs at one instant on a local disk (a hard link is atomic). On S3 the store's conditional
    PUT decides (next test); moto checks it without a lock, so a race against moto proves nothing."""
    fs, path = fsspec.filesystem("file"), str(tmp_path / "manifest.jsonl")
    owners = [Owner("dag", f"run_{n}", "batch") for n in range(6)]
    start, won, refused = threading.Barrier(len(owners)), [], []

    def take(owner: Owner) -> None:
        start.wait()
        try:
            won.append(lease.acquire(fs, path, owner, ttl=600))
        except LeaseHeldError:
            refused.append(owner)

    threads = [threading.Thread(target=take, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(won) == 1
    assert len(refused) == len(owners) - 1
    won[0].check()


def test_the_store_refuses_to_create_a_generation_twice(store: tuple[Any, str]) -> None:
    """What the race comes down to: creating the next generation fails for the second run (S3: the
    moto server honours ``If-None-Match: *`` as S3 does)."""
    fs, path = store
    first = lease.Lease(fs, path, A, 1, "token-a", 2e9)
    second = lease.Lease(fs, path, B, 1, "token-b", 2e9)
    assert first._create()
    assert not second._create()
    holder = lease.current(fs, path)
    assert holder is not None
    assert holder.token == "token-a"


def test_a_second_run_waits_a_bounded_time_for_the_lease(store: tuple[Any, str]) -> None:
    fs, path = store
    clock = Clock()
    first = lease.acquire(fs, path, A, ttl=600, clock=clock)
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        clock.now += seconds
        if len(polls) == 3:
            first.release()

    second = lease.acquire(fs, path, B, ttl=600, wait=30, poll=5, clock=clock, sleep=sleep)
    assert second.owner == B
    assert polls == [5, 5, 5]

    polls.clear()
    with pytest.raises(LeaseHeldError):
        lease.acquire(fs, path, A, ttl=600, wait=12, poll=5, clock=clock, sleep=sleep)
    assert polls == [5, 5, 2]  # gave up after the bounded wait


def test_kept_alive_renews_while_the_worker_works(store: tuple[Any, str]) -> None:
    fs, path = store
    held = lease.acquire(fs, path, A, ttl=600)
    first = held.expires_at
    renewed = threading.Event()
    original = held.renew

    def renew(ttl: float) -> None:
        original(ttl)
        renewed.set()

    held.renew = renew  # type: ignore[method-assign]
    with held.kept_alive(ttl=600, every=0.01):
        assert renewed.wait(30)
    holder = lease.current(fs, path)
    assert holder is not None
    assert holder.expires_at >= first
    held.check()


def test_a_lease_file_edited_by_hand_counts_as_released(tmp_path: Path) -> None:
    fs, path = fsspec.filesystem("file"), str(tmp_path / "manifest.jsonl")
    lease.acquire(fs, path, A, ttl=600)
    only = next((tmp_path / "manifest.jsonl.lease").iterdir())
    only.write_text("not json")
    taken = lease.acquire(fs, path, B, ttl=600)
    assert taken.generation == 2
    assert [p.name for p in (tmp_path / "manifest.jsonl.lease").iterdir()] == ["000000000002.json"]


def test_atomic_create_is_known_for_local_files_and_s3() -> None:
    assert lease.atomic_create_supported(fsspec.filesystem("file"))
    assert lease.atomic_create_supported(fsspec.filesystem("memory"))
