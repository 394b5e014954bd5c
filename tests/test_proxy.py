"""Proxies: the sync hook, the async (triggerer) hook and downloads follow the same rules, proven through
a real recording forward proxy on 127.0.0.1 (tests/proxy.py).

``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` from the environment, or the connection's
``proxy`` extra (which wins over the environment's proxies; ``NO_PROXY`` still exempts hosts). Loopback is
not exempt by default, so these tests really go through the proxy.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario, run_emulator
from airflow_provider_videoquery.hooks._http import GatewayConfig, RetryPolicy, proxy_for
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus
from airflow_provider_videoquery.storage import DownloadSettings, resolve_destination, store_url
from tests.conftest import API_KEY, connection_json
from tests.proxy import RecordingProxy, run_proxy
from tests.tls import self_signed_context

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
TASK = "veo3:proxied-1"
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def clean_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    with run_proxy() as running:
        yield running


def all_three_paths(emu: Emulator, tmp_path: Path) -> None:
    """A sync query, an async query and a download of the task's video, each checked to succeed."""
    import asyncio

    emu.add_task(TASK, Scenario(polls_to_complete=1, video_size=32 * 1024))
    sync_hook = VideoQueryHook(retry_policy=FAST)
    task = sync_hook.get_task(TASK)
    sync_hook.close()
    assert task.status is TaskStatus.SUCCEEDED
    assert task.video_url is not None

    async def query() -> TaskStatus:
        async with VideoQueryHook(retry_policy=FAST) as async_hook:
            return (await async_hook.aget_task(TASK)).status

    assert asyncio.run(query()) is TaskStatus.SUCCEEDED
    stored = store_url(
        task.video_url,
        resolve_destination(f"file://{tmp_path}/out/", TASK),
        DownloadSettings.for_gateway(VideoQueryHook().config, retry=FAST),
    )
    assert stored.size == 32 * 1024


def test_environment_proxy_carries_every_path(
    emulator: Emulator, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    all_three_paths(emulator, tmp_path)

    gets = proxy.targets("GET")
    queries = [t for t in gets if t.startswith(f"{emulator.url}/v1/video/query?id=veo3")]
    assert len(queries) == 2  # the worker's sync hook and the triggerer's async hook
    assert [t for t in gets if "/videos/" in t] == [emulator.video_url_for(TASK)]  # the download
    assert emulator.count(route="query") == 2


def test_no_proxy_is_respected_by_every_path(
    emulator: Emulator, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    all_three_paths(emulator, tmp_path)
    assert proxy.seen == []
    assert emulator.count(route="query") == 2


def test_the_connection_proxy_extra_carries_every_path(
    emulator: Emulator, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the explicit extra wins over this
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5, proxy=proxy.url)
    )
    all_three_paths(emulator, tmp_path)
    assert len(proxy.targets("GET")) == 3


def test_proxy_credentials_in_the_extra_reach_the_proxy_on_every_path(
    emulator: Emulator, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with_credentials = proxy.url.replace("http://", "http://user:s3cret@")
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, timeout=5, proxy=with_credentials)
    )
    all_three_paths(emulator, tmp_path)
    assert proxy.auths == ["Basic " + base64.b64encode(b"user:s3cret").decode()] * 3


def test_https_goes_through_a_connect_tunnel(
    proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    context: ssl.SSLContext = self_signed_context(tmp_path)
    with run_emulator(api_key=API_KEY, ssl_context=context) as tls:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv(
            "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(tls.url, timeout=5, verify_ssl=False)
        )
        all_three_paths(tls, tmp_path)
        assert proxy.targets() == [f"127.0.0.1:{tls.port}"] * 3
        assert set(proxy.targets("CONNECT")) == {f"127.0.0.1:{tls.port}"}


@pytest.mark.parametrize(
    ("url", "explicit", "env", "expected"),
    [
        ("https://gw.example.com/v1", None, {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128"),
        ("http://gw.example.com/v1", None, {"HTTPS_PROXY": "http://p:1"}, None),
        ("http://gw.example.com/v1", None, {"ALL_PROXY": "http://p:1"}, "http://p:1"),
        ("https://gw.example.com", "http://mine:8080", {"HTTPS_PROXY": "http://p:1"}, "http://mine:8080"),
        ("https://gw.example.com", "http://mine:8080", {"NO_PROXY": "example.com"}, None),
        ("https://cdn.example.com", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, None),
        ("https://example.com", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ample.com"}, "http://p:1"),
        ("https://10.1.2.3:8443", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://gw.io:8443", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "gw.io:443"}, "http://p:1"),
        ("https://gw.io:8443", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "gw.io:8443"}, None),
        ("https://anything", None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None),
    ],
)
def test_proxy_rules(
    monkeypatch: pytest.MonkeyPatch, url: str, explicit: str | None, env: dict[str, str], expected: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url, explicit) == expected


def test_the_proxy_keys_the_shared_client(monkeypatch: pytest.MonkeyPatch) -> None:
    def resolved() -> GatewayConfig:
        return GatewayConfig.from_connection(
            "c", "https://gw.example.com", API_KEY, {"proxy": "u:pw@proxy:3128"}
        )

    config = resolved()
    assert config.proxy == "http://u:pw@proxy:3128"
    assert config.client_key == (True, "http://u:pw@proxy:3128")
    assert "pw@" not in repr(config)  # a proxy's credentials are as secret as the key
    monkeypatch.setenv("NO_PROXY", "gw.example.com")
    # Read once per resolved connection, not per request: the next lookup sees the new rules.
    assert config.client_key == (True, "http://u:pw@proxy:3128")
    assert resolved().client_key == (True, None)
