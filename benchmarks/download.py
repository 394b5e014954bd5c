"""Download: one generated video from the emulator into ``file://`` and into S3 (moto), against curl.

Every download runs in a fresh process that reports its wall time and its peak RSS above the RSS
it had after all imports (and, for S3, after the filesystem was set up): ``ru_maxrss`` after minus
``ru_maxrss`` before. Sides:

* ``curl``: ``curl -o`` from the same server to the same disk (the reference);
* ``curl+sha256``: the same, then ``openssl dgst -sha256`` of the file: curl doing what the provider
  does (it also hashes what it stores), for a like-for-like ratio (piping curl through ``tee`` into
  ``openssl`` measured slower here: ~420 against ~520 MB/s);
* ``provider``: the operator's real path, ``storage.store_url`` with ``DownloadSettings.for_gateway``
  (redirect checks, sha256; ``file://``: temporary + rename, S3: multipart upload of the final key);
* ``httpx-raw``: sync httpx ``iter_raw`` into a plain file (the Python floor, no checks);
* ``boto3``: ``upload_fileobj`` straight from the HTTP stream (the S3 floor).

Worker: ``python -m benchmarks.download --side provider --url URL --dest file:///tmp/x.mp4``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._common import (
    API_KEY,
    emit,
    peak_rss_bytes,
    raise_fd_limit,
    run_worker,
    scratch_dir,
    thread_cpu,
    thread_cpu_delta,
    worker_env,
)

MiB = 1024 * 1024
S3_REGION = "us-east-1"
S3_ACCESS_KEY = "bench-access-key"
S3_SECRET_KEY = "bench-secret-key"
S3_BUCKET = "videoquery-bench"
_CHUNK = MiB
_PEAK = "peak_rss_above_baseline_mb"


def video_url(base: str, size: int) -> str:
    return f"{base}/videos/_size-{size}.mp4"


def aws_connection(endpoint: str) -> str:
    import json

    extra = {"endpoint_url": endpoint, "region_name": S3_REGION}
    return json.dumps({"conn_type": "aws", "login": S3_ACCESS_KEY, "password": S3_SECRET_KEY, "extra": extra})


# -- worker sides ----------------------------------------------------------------------------------


def _provider(url: str, dest: str, gateway: str) -> Callable[[], int]:
    from airflow_provider_videoquery.hooks._http import GatewayConfig
    from airflow_provider_videoquery.storage import (
        DownloadSettings,
        new_client,
        resolve_destination,
        store_url,
    )

    settings = DownloadSettings.for_gateway(GatewayConfig.from_connection("bench", gateway, API_KEY, {}))
    conn_id = "aws_default" if dest.startswith("s3://") else None
    target = resolve_destination(dest, "bench", conn_id)
    target.fs  # noqa: B018 - set the filesystem up (s3fs, its session) before the baseline

    def go() -> int:
        with new_client(settings) as client:
            return store_url(url, target, settings, client=client).size

    return go


def _httpx_raw(url: str, dest: str, gateway: str) -> Callable[[], int]:
    import httpx

    path = dest.removeprefix("file://")

    def go() -> int:
        size = 0
        with (
            httpx.Client(timeout=60) as client,
            client.stream("GET", url) as response,
            open(path, "wb") as out,
        ):
            response.raise_for_status()
            for chunk in response.iter_raw(_CHUNK):
                size += out.write(chunk)
        return size

    return go


def _boto3(url: str, dest: str, gateway: str) -> Callable[[], int]:
    import urllib3

    bucket, _, key = dest.removeprefix("s3://").partition("/")
    s3 = _s3(os.environ["VIDEOQUERY_BENCH_S3_ENDPOINT"])
    http = urllib3.PoolManager()

    def go() -> int:
        response = http.request("GET", url, preload_content=False)
        try:
            s3.upload_fileobj(response, bucket, key)
        finally:
            response.release_conn()
        size: int = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        return size

    return go


_WORKER_SIDES = {"provider": _provider, "httpx-raw": _httpx_raw, "boto3": _boto3}


def measure(side: str, url: str, dest: str, gateway: str) -> dict[str, Any]:
    go = _WORKER_SIDES[side](url, dest, gateway)
    fsync_s = _time_fsync()
    baseline = peak_rss_bytes()
    threads = thread_cpu()
    started, cpu = time.perf_counter(), time.process_time()
    size = go()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "side": side,
        "bytes": size,
        "wall_s": wall,
        "cpu_s": cpu,
        "thread_cpu_s": thread_cpu_delta(threads, cpu),
        "fsync_s": fsync_s[0],
        "mb_per_s": size / wall / 1e6,
        "baseline_rss_mb": baseline / MiB,
        "peak_rss_above_baseline_mb": (peak_rss_bytes() - baseline) / MiB,
    }


def _time_fsync() -> list[float]:
    """Add up the seconds spent in ``os.fsync`` from now on (the durability the provider pays)."""
    spent = [0.0]
    real = os.fsync

    def fsync(fd: Any) -> None:
        started = time.perf_counter()
        try:
            real(fd)
        finally:
            spent[0] += time.perf_counter() - started

    os.fsync = fsync
    return spent


def curl(url: str, path: Path, timeout: float, checksum: bool = False) -> dict[str, Any]:
    """``curl -o``; with ``checksum``, then the file's sha256 (``openssl dgst``), as the provider does."""
    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sS", "--fail", "--noproxy", "*", "-o", str(path), url],
        check=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if checksum:
        # OpenSSL's sha256, as Python's hashlib uses (coreutils' sha256sum is ~4x slower here).
        command = ["openssl", "dgst", "-sha256", str(path)]
        subprocess.run(command, check=True, timeout=timeout, capture_output=True)
    wall = time.perf_counter() - started
    size = path.stat().st_size
    side = "curl+sha256" if checksum else "curl"
    return {"side": side, "bytes": size, "wall_s": wall, "mb_per_s": size / wall / 1e6}


# -- the orchestrator --------------------------------------------------------------------------------


def run(
    emulator_url: str,
    file_size: int,
    s3_size: int | None,
    s3_endpoint: str | None,
    repeat: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """file:// (curl, provider, httpx-raw) and, with an endpoint, S3 (provider, boto3), best of ``repeat``."""
    if shutil.which("curl") is None:
        raise RuntimeError("curl is not installed: apt-get install curl")
    results: list[dict[str, Any]] = []
    work = scratch_dir()
    try:
        hashed_curl = ["curl+sha256"] if shutil.which("openssl") else []
        plans: list[tuple[str, int, list[str]]] = [
            ("file", file_size, ["curl", *hashed_curl, "provider", "httpx-raw"])
        ]
        if s3_endpoint is not None and s3_size is not None:
            plans.append(("s3", s3_size, ["curl", "provider", "boto3"]))
        for target, size, sides in plans:
            url = video_url(emulator_url, size)
            env = worker_env()
            if target == "s3":
                assert s3_endpoint is not None
                _make_bucket(s3_endpoint)
                env.update(
                    AIRFLOW_CONN_AWS_DEFAULT=aws_connection(s3_endpoint),
                    VIDEOQUERY_BENCH_S3_ENDPOINT=s3_endpoint,
                )
            best: dict[str, dict[str, Any]] = {}
            for round_ in range(repeat):
                for side in sides:
                    log(f"download: {side} {size / MiB:.0f} MiB to {target} (round {round_ + 1}) …")
                    result = _one(side, target, url, emulator_url, size, work, env)
                    result.update(target=target, side=side)
                    best[side] = _better(best.get(side), result)
            reference = best.get("curl", {}).get("mb_per_s")
            for result in best.values():
                if reference and result.get("mb_per_s"):
                    result["vs_curl"] = result["mb_per_s"] / reference
                results.append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _better(kept: dict[str, Any] | None, result: dict[str, Any]) -> dict[str, Any]:
    """The round with the best throughput, carrying the highest peak RSS of both rounds."""
    if kept is None:
        return result
    winner, other = (result, kept) if result.get("mb_per_s", 0) > kept.get("mb_per_s", 0) else (kept, result)
    if _PEAK in other:
        winner[_PEAK] = max(winner.get(_PEAK, 0), other[_PEAK])
    return winner


def _one(
    side: str, target: str, url: str, gateway: str, size: int, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    timeout = 120 + size / (5 * MiB)  # 5 MiB/s at the very least
    local = work / f"{side}.mp4"
    try:
        if side.startswith("curl"):
            result = curl(url, local, timeout, checksum=side == "curl+sha256")
        else:
            dest = f"s3://{S3_BUCKET}/{side}-{size}.mp4" if target == "s3" else f"file://{local}"
            args = ["--side", side, "--url", url, "--dest", dest, "--gateway", gateway]
            result = run_worker("benchmarks.download", args, env, timeout)
        if "error" not in result and result.get("bytes") != size:
            result["error"] = f"got {result.get('bytes')} bytes, expected {size}"
        return result
    except (subprocess.SubprocessError, OSError) as err:
        return {"side": side, "error": f"{type(err).__name__}: {err}"}
    finally:
        for leftover in work.iterdir():
            leftover.unlink(missing_ok=True)
        if target == "s3":
            _empty_bucket(env["VIDEOQUERY_BENCH_S3_ENDPOINT"])


def _s3(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name=S3_REGION,
    )


def _make_bucket(endpoint: str) -> None:
    s3 = _s3(endpoint)
    if S3_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=S3_BUCKET)


def _empty_bucket(endpoint: str) -> None:
    s3 = _s3(endpoint)
    for obj in s3.list_objects_v2(Bucket=S3_BUCKET).get("Contents", []):
        s3.delete_object(Bucket=S3_BUCKET, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=S3_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.download", description=__doc__)
    parser.add_argument("--side", choices=sorted(_WORKER_SIDES), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--gateway", required=True, help="the emulator's base URL (the trusted origin)")
    args = parser.parse_args(argv)
    raise_fd_limit()
    emit(measure(args.side, args.url, args.dest, args.gateway))
    return 0


if __name__ == "__main__":
    sys.exit(main())
