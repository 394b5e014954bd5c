"""Security properties, each checked against the real emulator: where the API key may go, TLS
verification, which video URLs are fetched, and what destination names gateway data can produce.

What other modules already prove is referenced, not repeated: tests/test_storage.py (the key only to
the gateway's origin, bounded redirects, max_bytes, the allow-list at every hop) and tests/test_trigger.py
(trigger kwargs through serde without secrets).
"""

from __future__ import annotations

import inspect
import re
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.emulator import Emulator, Scenario, run_emulator
from airflow_provider_videoquery.exceptions import (
    VideoDownloadError,
    VideoQueryRequestError,
)
from airflow_provider_videoquery.hooks._http import GatewayConfig, RetryPolicy
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.models import TaskStatus
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator
from airflow_provider_videoquery.sensors.videoquery import VideoTaskSensor
from airflow_provider_videoquery.storage import (
    DownloadSettings,
    object_uri,
    resolve_destination,
    safe_file_name,
    store_url,
)
from airflow_provider_videoquery.triggers.videoquery import VideoTaskTrigger
from tests.airflow_helpers import (
    assert_key_nowhere,
    listing,
    load_dag,
    make_context,
    run_dag,
    use_dags_folder,
)
from tests.conftest import API_KEY, connection_json
from tests.tls import self_signed_context

pytestmark = pytest.mark.timeout(60)

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)
TASK = "veo3.1-fast:1764522552-Security01"


def download(tmp_path: Path, video_task_id: str = TASK, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """Run a non-deferrable download of a finished task into ``tmp_path/out/``; (uri, XCom video)."""
    context = make_context()
    fields: dict[str, Any] = {
        "task_id": "download",
        "video_task_id": video_task_id,
        "destination": f"file://{tmp_path}/out/",
        "deferrable": False,
        "poll_interval": 0.05,
        "timeout": 10,
        "download_attempts": 2,
        "download_retry_delay": 0.01,
    }
    uri = VideoDownloadOperator(**{**fields, **kwargs}).execute(context)  # type: ignore[arg-type]
    return uri, context["ti"].xcom["video"]


# -- the API key: only from the connection, masked, never in kwargs, events or reprs ---------------------


@pytest.mark.parametrize(
    "cls", [VideoQueryHook, VideoTaskTrigger, VideoTaskSensor, VideoCreateOperator, VideoDownloadOperator]
)
def test_no_constructor_takes_a_key(cls: type) -> None:
    names = set(inspect.signature(cls.__init__).parameters)
    assert not {n for n in names if re.search(r"key|token|secret|password|auth", n, re.IGNORECASE)}


def test_resolved_config_never_shows_the_key(emulator: Emulator) -> None:
    config = VideoQueryHook().config
    settings = DownloadSettings.for_gateway(config)
    assert config.api_key.get_secret_value() == API_KEY  # read from the connection's password
    assert_key_nowhere(
        repr(config), str(config), config.model_dump_json(), repr(config.model_dump()), repr(settings)
    )


@pytest.fixture
def fresh_masker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Airflow's secrets masker with no patterns yet (restored afterwards)."""
    try:
        from airflow.sdk.log import _secrets_masker
    except ImportError:  # Airflow < 3.2
        from airflow.sdk._shared.secrets_masker import _secrets_masker  # type: ignore[no-redef]

    masker = _secrets_masker()
    monkeypatch.setattr(masker, "patterns", set())
    monkeypatch.setattr(masker, "replacer", None)
    return masker


def test_key_is_registered_with_the_secrets_masker(emulator: Emulator, fresh_masker: Any) -> None:
    from airflow.sdk.log import redact

    line = f"Authorization: Bearer {API_KEY}"
    assert redact(line) == line  # nothing registered yet

    VideoQueryHook().config  # noqa: B018 - resolving the connection is the point

    assert re.escape(API_KEY) in fresh_masker.patterns
    assert redact(line) == "Authorization: Bearer ***"
    assert API_KEY not in str(redact({"headers": {"x": line}}))


async def test_async_lookup_registers_the_key_too(emulator: Emulator, fresh_masker: Any) -> None:
    from airflow.sdk.log import redact

    async with VideoQueryHook() as hook:
        await hook.aconfig()
    assert redact(API_KEY) == "***"


LEAK_DAG = '''
"""A careless task: logs the key it got from the videoquery connection."""
import logging
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook

with DAG(dag_id="videoquery_key_masking", schedule=None, start_date=datetime(2025, 1, 1)) as dag:

    @task
    def careless() -> None:
        key = VideoQueryHook().config.api_key.get_secret_value()
        logging.getLogger("airflow.task").info("careless log line: key=%s", key)

    careless()
'''


def worker_task_log(event: str, error: BaseException) -> str:
    """``event`` (with ``error``'s traceback) as a worker writes it to the task log file: through the
    processors the supervisor applies (JSON output, ``mask_logs`` included)."""
    import io

    import structlog
    from airflow.sdk.log import logging_processors

    out = io.BytesIO()
    logger = structlog.wrap_logger(
        structlog.BytesLogger(out), processors=list(logging_processors(json_output=True))
    )
    try:
        raise error
    except type(error):
        logger.exception(event)
    return out.getvalue().decode()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_key_resolved_in_a_task_is_redacted_from_task_logs(
    airflow_db: str,
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    fresh_masker: Any,
) -> None:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "videoquery_key_masking.py").write_text(LEAK_DAG)
    use_dags_folder(monkeypatch, folder)

    result = run_dag(load_dag(folder / "videoquery_key_masking.py"), capsys)

    assert result.states == {"careless": "success"}
    # The task's connection lookup registered the key with the masker of the task process...
    assert re.escape(API_KEY) in fresh_masker.patterns
    # ...so the worker's task log hides it, in the message and in a traceback. (dag.test() prints task
    # logs to the console without the supervisor's masking processors, so its raw output is no proof.)
    logs = result.output + caplog.text  # structlog lines reach stdout, stdlib ones the log capture
    line = next(line for line in logs.splitlines() if "careless log line" in line)
    logged = worker_task_log(line, RuntimeError(f"careless error: Bearer {API_KEY}"))
    assert "careless log line: key=***" in logged
    assert "careless error: Bearer ***" in logged
    assert_key_nowhere(logged, result.xcoms, result.rendered)


# -- TLS: verified by default, opt-out only through the connection ----------------------------------------


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1."""
    return self_signed_context(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_gateway(tls_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """The emulator over HTTPS with a self-signed certificate, as ``videoquery_default``."""
    with run_emulator(api_key=API_KEY, ssl_context=tls_context) as emu:
        assert emu.url.startswith("https://")
        emu.add_task(TASK, Scenario(polls_to_complete=1, video_size=64 * 1024))
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emu.url, timeout=5))
        yield emu


def _verify_off(monkeypatch: pytest.MonkeyPatch, emu: Emulator, value: Any) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emu.url, timeout=5, verify_ssl=value)
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every ``time.sleep`` the code under test asks for, recorded instead of slept: a backoff shows up
    here whatever the machine's load."""
    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


def test_tls_is_verified_by_default_on_every_client(
    tls_gateway: Emulator, tmp_path: Path, sleeps: list[float]
) -> None:
    hook = VideoQueryHook(retry_policy=FAST)
    assert hook.config.verify_ssl is True
    with pytest.raises(VideoQueryRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        hook.get_task(TASK)

    url = f"{tls_gateway.url}/videos/_size-1024.mp4"
    with pytest.raises(VideoDownloadError, match=r"TLS certificate was not accepted.*verify_ssl"):
        store_url(
            url,
            resolve_destination(f"file://{tmp_path}/out/", TASK),
            DownloadSettings.for_gateway(hook.config),
        )
    assert sleeps == []  # refused at once, not retried with backoff
    assert listing(tmp_path / "out") == []
    assert tls_gateway.requests == []  # no handshake completed: not a single HTTP request


async def test_tls_is_verified_by_default_in_the_triggerer(tls_gateway: Emulator) -> None:
    async with VideoQueryHook(retry_policy=FAST) as hook:
        with pytest.raises(VideoQueryRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            await hook.aget_task(TASK)
    assert tls_gateway.requests == []


def test_certificate_failure_is_permanent_in_the_hook(tls_gateway: Emulator, sleeps: list[float]) -> None:
    hook = VideoQueryHook(retry_policy=RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=0.2))
    with pytest.raises(VideoQueryRequestError, match=r"CERTIFICATE_VERIFY_FAILED.*verify_ssl"):
        hook.get_task(TASK)
    assert sleeps == []  # no backoff: retrying cannot fix a certificate


@pytest.mark.parametrize("value", [False, "false"])
async def test_verify_ssl_false_opts_out_for_a_self_signed_gateway(
    tls_gateway: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: Any
) -> None:
    _verify_off(monkeypatch, tls_gateway, value)

    async with VideoQueryHook(retry_policy=FAST) as hook:
        assert hook.config.verify_ssl is False
        assert (await hook.aget_task(TASK)).status is TaskStatus.SUCCEEDED
    sync_hook = VideoQueryHook(retry_policy=FAST)
    assert sync_hook.get_task(TASK).status is TaskStatus.SUCCEEDED
    sync_hook.close()
    uri, video = download(tmp_path)  # the operator's query and its download client

    assert uri == f"file://{tmp_path}/out/{safe_file_name(TASK)}"
    assert video["bytes"] == 64 * 1024
    assert tls_gateway.count(route="video") == 1


# -- video URLs: http(s) only, allow-listed hosts ----------------------------------------------------------


@pytest.mark.parametrize(
    "video_url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/video.mp4",
        "javascript:alert(1)",
        "data:text/html;base64,PGh0bWw+",  # inline files: only video/mp4 (tests/test_inline.py)
        "//127.0.0.1/videos/x.mp4",
        "http:///videos/x.mp4",
        "http://[::1/videos/x.mp4",
        "gopher://127.0.0.1:70/_GET",
    ],
)
def test_only_http_video_urls_are_fetched(emulator: Emulator, tmp_path: Path, video_url: str) -> None:
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_url=video_url))
    with pytest.raises(VideoDownloadError, match=r"only http\(s\)|invalid URL|not video/mp4") as err:
        download(tmp_path)
    assert TASK in str(err.value)
    assert emulator.count(route="video") == 0
    assert listing(tmp_path / "out") == []


def _video_elsewhere(emulator: Emulator, monkeypatch: pytest.MonkeyPatch, allowed: str | list[str]) -> None:
    """The task's video on another origin than the gateway's (localhost instead of 127.0.0.1), with
    ``allowed`` as the connection's ``allowed_download_hosts``."""
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_size=64 * 1024))
    elsewhere = emulator.video_url_for(TASK).replace("127.0.0.1", "localhost")
    emulator.add_task(TASK, Scenario(polls_to_complete=1, video_size=64 * 1024, video_url=elsewhere))
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIDEOQUERY_DEFAULT",
        connection_json(emulator.url, timeout=5, allowed_download_hosts=allowed),
    )


@pytest.mark.parametrize("allowed", ["cdn.example.com", "*.example.com, other.example.org"])
def test_allow_list_from_the_connection_refuses_other_hosts(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allowed: str
) -> None:
    _video_elsewhere(emulator, monkeypatch, allowed)
    with pytest.raises(VideoDownloadError, match="host 'localhost' is not in the connection's allowed"):
        download(tmp_path)
    assert emulator.count(route="video") == 0
    assert listing(tmp_path / "out") == []


def test_allow_listed_host_is_fetched(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _video_elsewhere(emulator, monkeypatch, ["cdn.example.com", "LOCALHOST"])
    uri, video = download(tmp_path)
    assert video["bytes"] == 64 * 1024
    assert emulator.count(route="video") == 1
    assert_key_nowhere(uri, video)


# -- destination names from gateway data ---------------------------------------------------------------


HOSTILE_IDS = [
    "../../etc/passwd",
    "s3://other-bucket/x",
    "a:b",
    "..",
    "...",
    "./.hidden",
    "..\\..\\windows\\system32",
    "/absolute/path",
    "file:///etc/shadow",
    "x" * 5000,
    "a" * 149 + ".b",  # the cut at 150 chars lands right after a dot
    "видео:задача/1",
    "视频",
    "🎬\u202etxt.exe",
    "\uff0e\uff0e\uff0fescape",  # fullwidth "../"
    "nul\x00byte\nnewline",
    "%2e%2e%2fencoded",
]


@pytest.mark.parametrize("video_task_id", [*HOSTILE_IDS, ""], ids=lambda s: repr(s[:24]))
def test_destination_names_are_safe(video_task_id: str, tmp_path: Path) -> None:
    name = safe_file_name(video_task_id)
    assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.mp4", name), name
    assert ".." not in name
    assert len(name) <= 160
    local = resolve_destination(f"file://{tmp_path}/out/", video_task_id)
    assert object_uri(local) == f"file://{tmp_path}/out/{name}"
    s3 = resolve_destination("s3://bucket/videos/", video_task_id, conn_id="aws_default")
    assert object_uri(s3) == f"s3://bucket/videos/{name}"


@pytest.mark.parametrize("video_task_id", HOSTILE_IDS, ids=lambda s: repr(s[:24]))
def test_hostile_task_ids_stay_inside_the_destination(
    emulator: Emulator, tmp_path: Path, video_task_id: str
) -> None:
    emulator.add_task(video_task_id, Scenario(polls_to_complete=1, video_size=4096), model="veo3.1-fast")

    uri, video = download(tmp_path, video_task_id)

    name = safe_file_name(video_task_id)
    assert uri == f"file://{tmp_path}/out/{name}"
    assert video["video_task_id"] == video_task_id
    # Exactly one file, inside out/, and nothing anywhere else under tmp_path.
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == [f"out/{name}"]


def test_gateway_config_rejects_non_http_base_urls() -> None:
    with pytest.raises(VideoQueryRequestError, match="must be http"):
        GatewayConfig.from_connection("c", "file:///etc/passwd", API_KEY, {})
