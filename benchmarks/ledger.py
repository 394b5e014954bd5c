"""The batch's bookkeeping per create, at N requests: the ledger against a whole-manifest rewrite.

For each N and store (a local disk; S3 through moto on 127.0.0.1), a manifest of N entries is written,
then ``creates`` creates are recorded one by one as the batch does: one ``Ledger.record`` each (the
ledger), or one ``manifest.write`` of all N entries each (what 0.1.0 did after every create). Reported:
wall and CPU per create, the compaction (folding the journal into the manifest) amortized over the
creates that trigger it, the journal's PUTs and bytes per create on S3, and one full read of the ledger
(what every resume of the batch costs).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks._common import scratch_dir

S3_BUCKET = "bench-ledger"


def _entries(n: int) -> list[Any]:
    from airflow_provider_videoquery.manifest import Entry

    return [
        Entry(
            f"{i:06d}-3f9a0c1b2d",
            {
                "model": "sora-2",
                "prompt": f"a paper boat drifting down a rainy street, take {i}",
                "duration": 10,
            },
        )
        for i in range(n)
    ]


def _timed(work: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def _place(store: str, n: int, s3_endpoint: str | None) -> tuple[Any, str, str, Callable[[], None]]:
    """(fs, path, uri, cleanup) of a fresh manifest location on ``store``."""
    from airflow.sdk import ObjectStoragePath

    if store == "local":
        folder = scratch_dir()
        uri = f"file://{folder}/manifest.jsonl"
        where = ObjectStoragePath(uri)
        return where.fs, where.path, uri, lambda: shutil.rmtree(folder, ignore_errors=True)
    assert s3_endpoint is not None
    uri = f"s3://{S3_BUCKET}/n{n}-{time.time_ns()}/manifest.jsonl"
    where = ObjectStoragePath(uri, conn_id="aws_default")
    where.fs.invalidate_cache()
    return where.fs, where.path, uri, lambda: None


def run_one(store: str, n: int, creates: int, rewrites: int, s3_endpoint: str | None) -> list[dict[str, Any]]:
    from airflow_provider_videoquery import ledger, manifest

    fs, path, uri, cleanup = _place(store, n, s3_endpoint)
    try:
        entries = _entries(n)
        book = ledger.Ledger(fs, path, uri)
        compact_wall, compact_cpu = _timed(lambda: book.compact(entries))
        manifest_bytes = len(manifest.dumps(entries))

        def record_all() -> None:
            for entry in entries[:creates]:
                entry.created(f"sora-2:task_{entry.key}", time.time())
                book.record([entry])

        wall, cpu = _timed(record_all)
        journal = ledger.journal_path(path)
        if store == "local":
            puts, journal_bytes = 0, os.path.getsize(journal)
        else:
            fs.invalidate_cache(journal)
            names = fs.find(journal)
            puts, journal_bytes = len(names), sum(fs.size(name) for name in names)
        read_wall, read_cpu = _timed(lambda: ledger.read(fs, path, uri))
        book.close()
        # A fold rewrites the manifest once the journal holds about a quarter of it (a few hundred
        # objects on S3): spread over the changes between two folds.
        folds_every = max(1, _changes_between_folds(store, n))
        ledger_row = {
            "store": store,
            "side": "ledger",
            "n": n,
            "creates": creates,
            "ms_per_create": wall / creates * 1000,
            "cpu_ms_per_create": cpu / creates * 1000,
            "fold_ms_per_create": compact_wall / folds_every * 1000,
            "ms_per_create_amortized": (wall / creates + compact_wall / folds_every) * 1000,
            "puts_per_create": puts / creates if store != "local" else None,
            "bytes_per_create": journal_bytes / creates,
            "read_s": read_wall,
            "read_cpu_s": read_cpu,
            "manifest_mb": manifest_bytes / 1e6,
            "fold_s": compact_wall,
            "fold_cpu_s": compact_cpu,
        }

        def rewrite_all() -> None:
            for entry in entries[creates : creates + rewrites]:
                entry.created(f"sora-2:task_{entry.key}", time.time())
                manifest.write(fs, path, entries)

        rwall, rcpu = _timed(rewrite_all)
        rewrite_row = {
            "store": store,
            "side": "rewrite (0.1.0)",
            "n": n,
            "creates": rewrites,
            "ms_per_create": rwall / rewrites * 1000,
            "cpu_ms_per_create": rcpu / rewrites * 1000,
            "ms_per_create_amortized": rwall / rewrites * 1000,
            "puts_per_create": 1.0 if store != "local" else None,
            "bytes_per_create": manifest_bytes,
            "manifest_mb": manifest_bytes / 1e6,
        }
        return [ledger_row, rewrite_row]
    finally:
        cleanup()


def _changes_between_folds(store: str, n: int) -> int:
    from airflow_provider_videoquery.ledger import Ledger

    probe = Ledger.__new__(Ledger)
    probe.local, probe.journaled = store == "local", 0
    while not probe.wants_compaction(n):
        probe.journaled += 1
    return probe.journaled


def run(
    sizes: list[int],
    s3_endpoint: str | None,
    log: Callable[[str], None],
    creates: int = 1000,
    rewrites: int = 3,
) -> list[dict[str, Any]]:
    """Every N on a local disk, and on S3 when ``s3_endpoint`` is given."""
    results: list[dict[str, Any]] = []
    stores = ["local"] + (["s3"] if s3_endpoint else [])
    with _aws_default(s3_endpoint):
        for store in stores:
            for n in sizes:
                log(f"ledger: {store}, N={n} …")
                try:
                    results += run_one(store, n, min(creates, n), rewrites, s3_endpoint)
                except Exception as err:  # one broken side must not hide the others
                    results.append(
                        {"store": store, "side": "ledger", "n": n, "error": f"{type(err).__name__}: {err}"}
                    )
    return results


@contextlib.contextmanager
def _aws_default(endpoint: str | None) -> Iterator[None]:
    """``aws_default`` pointed at moto (and the bucket made) for the block; as it was afterwards."""
    from airflow.sdk.io import store

    saved = os.environ.get("AIRFLOW_CONN_AWS_DEFAULT")
    try:
        if endpoint:
            _s3_ready(endpoint)
        yield
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW_CONN_AWS_DEFAULT", None)
        else:
            os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = saved
        store._STORE_CACHE.clear()


def _s3_ready(endpoint: str) -> None:
    """``aws_default`` pointed at moto, and the bucket made."""
    import boto3
    from airflow.sdk.io import store

    from benchmarks.download import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, aws_connection

    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = aws_connection(endpoint)
    store._STORE_CACHE.clear()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
    )
    client.create_bucket(Bucket=S3_BUCKET)
