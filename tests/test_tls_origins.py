"""``verify_ssl: false`` covers the gateway's own origin only: a video on any other host keeps its TLS
check unless ``verify_download_ssl: false`` says otherwise. One self-signed HTTPS emulator plays both the
gateway (``https://127.0.0.1:P``) and a "CDN" on another origin (``https://localhost:P``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario, run_emulator
from airflow_provider_videoquery.exceptions import VideoDownloadError
from airflow_provider_videoquery.operators.videoquery import VideoDownloadOperator
from tests.airflow_helpers import listing, make_context
from tests.conftest import API_KEY, connection_json
from tests.tls import self_signed_context

pytestmark = pytest.mark.timeout(60)

ON_GATEWAY = "veo3:tls-gateway-origin"
ON_CDN = "veo3:tls-other-origin"


@pytest.fixture
def tls_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    context = self_signed_context(tmp_path_factory.mktemp("tls"))
    with run_emulator(api_key=API_KEY, ssl_context=context) as emu:
        emu.add_task(ON_GATEWAY, Scenario(polls_to_complete=1, video_size=16 * 1024))
        cdn = f"https://localhost:{emu.port}/videos/_size-{16 * 1024}.mp4"
        emu.add_task(ON_CDN, Scenario(polls_to_complete=1, video_url=cdn))
        yield emu


def download(tmp_path: Path, video_task_id: str) -> str:
    fields: dict[str, Any] = {
        "task_id": "download",
        "video_task_id": video_task_id,
        "destination": f"file://{tmp_path}/out/",
        "deferrable": False,
        "timeout": 10,
        "download_attempts": 2,
        "download_retry_delay": 0.01,
    }
    return str(VideoDownloadOperator(**fields).execute(make_context()))  # type: ignore[arg-type]


def test_verify_ssl_false_does_not_reach_other_hosts(
    tls_gateway: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(tls_gateway.url, timeout=5, verify_ssl=False)
    )
    assert download(tmp_path, ON_GATEWAY).endswith(".mp4")  # the gateway's own origin: trusted as asked
    assert tls_gateway.count(route="video") == 1

    with pytest.raises(VideoDownloadError, match=r"localhost.*not accepted.*verify_download_ssl") as err:
        download(tmp_path, ON_CDN)
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert tls_gateway.count(route="video") == 1  # no handshake with the other origin completed
    assert listing(tmp_path / "out") == [f"{ON_GATEWAY.replace(':', '_')}.mp4"]


def test_verify_download_ssl_false_is_the_explicit_opt_out(
    tls_gateway: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT",
        connection_json(tls_gateway.url, timeout=5, verify_ssl=False, verify_download_ssl="false"),
    )
    assert download(tmp_path, ON_CDN).endswith(".mp4")
    assert tls_gateway.count(route="video") == 1
