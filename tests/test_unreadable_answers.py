"""A create whose answer cannot be read is an uncertain create: the gateway took the POST and may have
made (and billed) the video. A real gateway on 127.0.0.1 answers 200 with ``Content-Encoding: gzip`` and a
body that is not gzip: the single create fails without Airflow retries, the batch records ``uncertain``
and neither sends the create again. A query with such an answer is a clear response error."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_videoquery.exceptions import VideoCreateUncertainError, VideoQueryResponseError
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator
from tests.airflow_helpers import assert_key_nowhere, load_dag, make_context, run_dag, use_dags_folder
from tests.conftest import connection_json
from tests.gateway import Handler, ScriptedGateway, scripted_gateway

pytestmark = pytest.mark.timeout(120)

CREATED = json.dumps({"id": "veo3.1-fast:made-and-billed", "status": "pending"})


def not_gzip(handler: Handler) -> None:
    """Every answer claims gzip but is plain JSON: httpx cannot decode it (a DecodingError)."""
    handler.send(200, CREATED, {"Content-Encoding": "gzip"})


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGateway]:
    with scripted_gateway(not_gzip) as running:
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(running.url, timeout=5))
        yield running


def test_an_undecodable_create_answer_is_an_uncertain_create(gateway: ScriptedGateway) -> None:
    operator = VideoCreateOperator(task_id="create", model="veo3.1-fast", prompt="A fox in the snow")

    with pytest.raises(VideoCreateUncertainError) as caught:
        operator.execute(make_context())

    assert isinstance(caught.value, AirflowFailException)  # Airflow does not retry it
    assert "DecodingError" in str(caught.value)
    assert "Check the gateway's task list" in str(caught.value)
    assert_key_nowhere(str(caught.value))
    assert gateway.count("POST") == 1


def test_an_undecodable_query_answer_is_a_response_error(gateway: ScriptedGateway) -> None:
    hook = VideoQueryHook()
    try:
        with pytest.raises(VideoQueryResponseError, match=r"could not be read.*DecodingError"):
            hook.get_task("veo3.1-fast:made-and-billed")
    finally:
        hook.close()


def test_an_undecodable_answer_in_the_triggerer_is_a_response_error_too(gateway: ScriptedGateway) -> None:
    """The triggerer's sender (aiohttp underneath) names it the same way, on one line, and does not
    retry it: the body will not decode any better the next time."""

    async def query() -> None:
        async with VideoQueryHook() as hook:
            await hook.aget_task("veo3.1-fast:made-and-billed")

    with pytest.raises(VideoQueryResponseError, match=r"could not be read \(DecodingError: .*gzip") as caught:
        asyncio.run(query())
    assert "\n" not in str(caught.value)
    assert gateway.count("GET") == 1


RETRY_DAG = """
from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator

with DAG(dag_id="videoquery_undecodable", schedule=None, start_date=datetime(2025, 1, 1)) as dag:
    VideoCreateOperator(
        task_id="create", model="veo3.1-fast", prompt="A fox", retries=2, retry_delay=timedelta(0)
    )
"""


@pytest.mark.integration
def test_airflow_retries_do_not_pay_again_for_an_undecodable_answer(
    airflow_db: str,
    gateway: ScriptedGateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "videoquery_undecodable.py").write_text(RETRY_DAG)
    use_dags_folder(monkeypatch, tmp_path)

    result = run_dag(load_dag(tmp_path / "videoquery_undecodable.py"), capsys)

    assert result.states == {"create": "failed"}
    assert gateway.count("POST") == 1
    assert "VideoCreateUncertainError" in result.output


@pytest.mark.integration
def test_the_batch_records_an_undecodable_create_as_uncertain_and_never_resends_it(
    airflow_db: str, gateway: ScriptedGateway, tmp_path: Path
) -> None:
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    out = tmp_path / "videos"
    requests = [{"key": "clip", "model": "veo3.1-fast", "prompt": "A fox"}]
    for _try in range(2):  # the first try, then a retry over the same manifest
        operator = VideoBatchOperator(task_id="batch", requests=requests, destination=str(out))
        with pytest.raises(AirflowFailException, match="clip"):
            operator.execute(make_context())

    assert gateway.count("POST") == 1
    (entry,) = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert entry["status"] == "uncertain"
    assert "DecodingError" in entry["error"]


# -- a gzip bomb: the answer is size-capped as it is decompressed, before it is decoded ------------------
BOMB = 512 * 1024 * 1024  # what the gateway's gzip body inflates to (about 0.5 MB on the wire)
CAP = 1024 * 1024


@pytest.fixture
def bomb(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGateway]:
    with scripted_gateway(lambda handler: handler.gzip_bomb(BOMB)) as running:
        monkeypatch.setenv(
            "AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(running.url, timeout=5, max_answer_bytes=CAP)
        )
        yield running


async def aget_and_close(hook: VideoQueryHook, video_task_id: str) -> object:
    async with hook:
        return await hook.aget_task(video_task_id)


@pytest.mark.parametrize("call", ["get_task", "aget_task", "create_task"])
def test_a_gzip_bomb_stops_at_the_cap_without_taking_the_memory(bomb: ScriptedGateway, call: str) -> None:
    hook = VideoQueryHook()
    calls: dict[str, Callable[[], object]] = {
        "get_task": lambda: hook.get_task("veo3.1-fast:bomb"),
        "aget_task": lambda: asyncio.run(aget_and_close(hook, "veo3.1-fast:bomb")),
        "create_task": lambda: hook.create_task("veo3.1-fast", "A fox"),
    }
    # A create's answer the gateway may have acted on is uncertain (not retried); a query's is an error.
    expected = VideoCreateUncertainError if call == "create_task" else VideoQueryResponseError
    tracemalloc.start()
    try:
        with pytest.raises(expected) as caught:
            calls[call]()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        hook.close()

    # Held at most the cap plus what one network read inflates to (deflate: ~1000x of 64 KiB); the
    # whole answer would be 512 MiB, twice that while joined.
    assert peak < 200 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    print(f"FIGURE gzip bomb {call}: peak {peak / 2**20:.1f} MiB traced for a {BOMB >> 20} MiB answer")
    assert f"larger than max_answer_bytes={CAP}" in str(caught.value)
    assert bomb.count() == 1
