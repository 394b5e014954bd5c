"""A real S3 API for tests: moto's server on a free port of 127.0.0.1, reached as ``aws_default``.

tests/conftest.py registers the fixtures, once: a module that imported them itself would get its own
session fixture, and a server of its own. The server is started once per session: Airflow caches one
filesystem per (protocol, connection), so the endpoint behind ``aws_default`` must not change during
the run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.socket_guard import SocketGuard, guard_sockets

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass(frozen=True)
class MotoS3:
    endpoint_url: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def uploads(self, bucket: str) -> list[str]:
        """Keys of multipart uploads still open (an aborted partial write must leave none)."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return sorted(upload["Key"] for upload in answer.get("Uploads", []))

    def read(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _forget_airflow_stores() -> None:
    from airflow.sdk.io import store

    store._STORE_CACHE.clear()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    """moto's S3 on 127.0.0.1, set as the Airflow connection ``aws_default`` for the whole session."""
    pytest.importorskip("airflow.providers.amazon", reason="S3 needs the [s3] extra (amazon provider)")
    pytest.importorskip("s3fs", reason="S3 needs the [s3] extra (s3fs)")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    # moto's werkzeug access log is the store's own (on AWS, S3's server access log): it names every
    # URL asked for, presigned ones with their signature; it is not the worker's log, so keep it out.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_CONN_AWS_DEFAULT",)}
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": endpoint, "region_name": REGION},
        }
    )
    _forget_airflow_stores()
    try:
        yield MotoS3(endpoint)
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _forget_airflow_stores()


@pytest.fixture
def s3_bucket(moto_server: MotoS3) -> str:
    """A fresh, empty bucket on the moto server."""
    name = f"videos-{uuid.uuid4().hex[:12]}"
    moto_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[SocketGuard]:
    """No AWS credentials or endpoints from the environment, no instance metadata, nothing off-machine;
    Airflow's cached stores forgotten before and after (a store without a connection is cached too)."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    _forget_airflow_stores()
    yield guard_sockets(monkeypatch)
    _forget_airflow_stores()
