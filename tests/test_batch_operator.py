"""VideoBatchOperator under ``dag.test()`` against the emulator: paid once across retries and new runs
(counted at the emulator), partial failure stores the rest and names the others, JSONL input, bad input
refused before anything is paid, and the API key nowhere."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery import manifest
from airflow_provider_videoquery.emulator import Emulator, Fault, Limits, Scenario
from airflow_provider_videoquery.hooks._http import RetryPolicy
from airflow_provider_videoquery.triggers.batch import VideoBatchTrigger
from tests.airflow_helpers import assert_key_nowhere, load_dag, make_context, run_dag, use_dags_folder
from tests.batch_helpers import drive, manifest_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DAG_SOURCE = """
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from airflow_provider_videoquery.operators.batch import VideoBatchOperator

with DAG(
    dag_id="videoquery_batch_test",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    render_template_as_native_obj=True,
    params={"requests": Param([], type=["array", "string"]), "destination": Param("", type="string")},
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
) as dag:
    VideoBatchOperator(
        task_id="batch",
        requests="{{ params.requests }}",
        destination="{{ params.destination }}",
        max_active=4,
        creates_per_second=0,
        max_failed=1,
        poll_interval=0.05,
        max_polls_per_second=1000,
        max_polls_in_flight=4,
        timeout=60,
    )
"""


@pytest.fixture(scope="module")
def dags_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch-dags")
    (folder / "videoquery_batch_test.py").write_text(DAG_SOURCE)
    return folder


@pytest.fixture
def dag(dags_folder: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: str) -> Any:
    use_dags_folder(monkeypatch, dags_folder)
    return load_dag(dags_folder / "videoquery_batch_test.py")


@pytest.fixture(autouse=True)
def short_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deferred trigger's hold after it starts (60 s against Airflow's race) is 0.2 s here: ``dag.test()``
    runs the trigger in-process, right after the deferral was recorded, so there is no race to wait out."""
    from airflow_provider_videoquery.operators import batch

    monkeypatch.setattr(batch, "_SAFE_HOLD", 0.2)


@pytest.fixture
def trigger_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The serialized kwargs of every VideoBatchTrigger the batch waited with (on the worker or deferred)."""
    seen: list[dict[str, Any]] = []
    run, wait = VideoBatchTrigger.run, VideoBatchTrigger.wait

    def spy_run(self: VideoBatchTrigger) -> Any:
        seen.append(self.serialize()[1])
        return run(self)

    def spy_wait(self: VideoBatchTrigger, give_up_after: float) -> Any:
        seen.append(self.serialize()[1])
        return wait(self, give_up_after)

    monkeypatch.setattr(VideoBatchTrigger, "run", spy_run)
    monkeypatch.setattr(VideoBatchTrigger, "wait", spy_wait)
    return seen


def _requests(count: int, **per_key: dict[str, Any]) -> list[dict[str, Any]]:
    requests = [{"key": f"clip-{n}", "model": "sora-2", "prompt": f"take {n}"} for n in range(count)]
    for request in requests:
        if request["key"] in per_key:
            request["emulator"] = per_key[request["key"]]
    return requests


def _succeeds(dag: Any, capsys: pytest.CaptureFixture[str], requests: Any, out: Path) -> Any:
    """A ``dag.test()`` run of the batch that must succeed; its result."""
    from airflow.utils.state import DagRunState

    result = run_dag(dag, capsys, requests=requests, destination=str(out))
    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    return result


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    return manifest_lines(folder)


def _videos(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.mp4"))


def test_a_retry_pays_nothing_again_and_stores_what_the_first_try_could_not(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trigger_kwargs: list[Any],
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=2, video_size=4096))
    # Three downloads fail for good on the first try: more than max_failed=1, so the task fails and
    # Airflow retries it; the retry must poll the recorded ids again, not create new tasks.
    emulator.add_fault(Fault("http_error", route="video", status=404, times=3))
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(7), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert "did not succeed (max_failed=1)" in result.output  # the first try failed …
    assert emulator.count(route="create") == 7  # … and the retry created nothing
    entries = _manifest(out)
    assert {e["status"] for e in entries.values()} == {"succeeded"}
    assert _videos(out) == [f"clip-{n}.mp4" for n in range(7)]
    for key, entry in entries.items():
        data = (out / f"{key}.mp4").read_bytes()
        assert data == emulator.expected_video(entry["video_task_id"])
        assert entry["bytes"] == len(data)
        assert entry["uri"] == f"file://{out}/{key}.mp4"
    assert result.xcoms[("batch", "return_value")] == f"file://{out}/manifest.jsonl"
    assert result.xcoms[("batch", "summary")]["succeeded"] == 7
    # max_active=4: never more than four live tasks handed to one trigger; kwargs are ids and times.
    assert trigger_kwargs
    assert max(len(kwargs["tasks"]) for kwargs in trigger_kwargs) <= 4
    for kwargs in trigger_kwargs:
        assert all(isinstance(times, list) and len(times) == 2 for times in kwargs["tasks"].values())
        assert len(json.dumps(kwargs)) < 2000
    assert_key_nowhere(result.output, result.xcoms, (out / "manifest.jsonl").read_text(), trigger_kwargs)


def test_a_new_run_over_the_manifest_keeps_what_verifies_and_pays_for_nothing(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=3000))
    out = tmp_path / "videos"
    _succeeds(dag, capsys, _requests(5), out)
    downloads = emulator.count(route="video")
    (out / "clip-1.mp4").unlink()
    (out / "clip-2.mp4").write_bytes(b"\0" * 3000)  # same size, other bytes
    kept = (out / "clip-3.mp4").stat().st_mtime_ns

    # One more request joins the batch in the new run.
    second = run_dag(dag, capsys, requests=_requests(6), destination=str(out))

    assert second.run.state == DagRunState.SUCCESS, second.output[-3000:]
    assert emulator.count(route="create") == 6  # only the new request was paid for
    assert emulator.count(route="video") == downloads + 3  # the lost, the corrupted and the new one
    assert (out / "clip-3.mp4").stat().st_mtime_ns == kept
    entries = _manifest(out)
    for key in ("clip-1", "clip-2"):
        assert (out / f"{key}.mp4").read_bytes() == emulator.expected_video(entries[key]["video_task_id"])
    assert {e["status"] for e in entries.values()} == {"succeeded"}
    assert "Kept 5 stored video(s) that verify" not in second.output
    assert "Kept 3 stored video(s) that verify; 2 to store again" in second.output


def test_a_crash_before_an_id_is_written_re_pays_that_one_create_only(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worst moment: the gateway answered a create, the worker dies before the ledger has its id."""
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery.ledger import Ledger

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    original, records = Ledger.record, []

    def record(self: Ledger, entries: Any) -> None:
        records.append(len(entries))
        if len(records) == 3:  # the record of the third create's id
            raise SystemExit("the worker died")
        original(self, entries)

    monkeypatch.setattr(Ledger, "record", record)
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(5), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert emulator.count(route="create") == 6  # five requests, one create paid twice: the one in flight
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}


def test_a_worker_killed_mid_wave_keeps_the_videos_stored_before_and_fetches_only_the_rest(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The manifest records stored videos as they land, not once the whole wave is stored."""
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery.operators import batch

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    monkeypatch.setattr(batch, "_SAVE_STORED_EVERY", 0.0)  # every landing is written at once
    out = tmp_path / "videos"
    original, calls, at_the_kill = batch.store_url, [], {}

    def store_url(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1].name)
        if len(calls) <= 4 and args[1].name == "clip-2.mp4":  # first try: dies once the others landed
            for _ in range(200):
                at_the_kill.update(_manifest(out))
                if sum(e["status"] == "succeeded" for e in at_the_kill.values()) == 3:
                    break
                time.sleep(0.05)
            raise SystemExit("the worker died")
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "store_url", store_url)

    result = run_dag(dag, capsys, requests=_requests(4), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    # The manifest held the three videos stored before the worker died, while it was still storing …
    assert {k for k, e in at_the_kill.items() if e["status"] == "succeeded"} == {"clip-0", "clip-1", "clip-3"}
    # … so the retry fetched only the one it had not stored.
    assert sorted(calls) == ["clip-0.mp4", "clip-1.mp4", "clip-2.mp4", "clip-2.mp4", "clip-3.mp4"]
    assert emulator.count(route="video") == 4
    assert emulator.count(route="create") == 4
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}
    assert _videos(out) == [f"clip-{n}.mp4" for n in range(4)]


def test_a_retry_removes_the_temporaries_its_killed_try_left_and_no_others(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker killed mid-store leaves ``.clip-2.mp4.part-…`` beside the videos. It is fresh, so a plain
    download leaves it for an hour (it might be a concurrent writer's); the batch's retry holds the
    manifest's lease, the only writer of its own names: it removes that one at once, never another's."""
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery.operators import batch

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    out = tmp_path / "videos"
    out.mkdir()
    foreign = out / ".someone-elses.mp4.part-aaaaaaaaaaaa"  # a name outside this batch: not ours
    foreign.write_bytes(b"another writer's bytes")
    original, killed = batch.store_url, []

    def store_url(*args: Any, **kwargs: Any) -> Any:
        if args[1].name == "clip-2.mp4" and not killed:  # the first try dies mid-write
            killed.append(out / ".clip-2.mp4.part-0123456789ab")
            killed[0].write_bytes(b"half a video")
            raise SystemExit("the worker died")
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "store_url", store_url)

    result = run_dag(dag, capsys, requests=_requests(4), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert killed
    assert not killed[0].exists()
    assert foreign.read_bytes() == b"another writer's bytes"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [foreign.name]
    assert _videos(out) == [f"clip-{n}.mp4" for n in range(4)]
    assert emulator.count(route="create") == 4


def test_partial_failure_stores_the_rest_then_fails_naming_the_others(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    emulator.set_default(Scenario(polls_to_complete=2, video_size=2048))
    failing = {"outcome": "failed", "failure_reason": "The prompt was rejected by moderation"}
    out = tmp_path / "videos"

    result = run_dag(
        dag, capsys, requests=_requests(6, **{"clip-1": failing, "clip-4": failing}), destination=str(out)
    )

    assert result.run.state == DagRunState.FAILED
    assert result.states["batch"] == TaskInstanceState.FAILED
    assert emulator.count(route="create") == 6  # a gateway failure is final: not retried, not re-created
    assert _videos(out) == ["clip-0.mp4", "clip-2.mp4", "clip-3.mp4", "clip-5.mp4"]
    assert "2 of 6 video(s) did not succeed (max_failed=1)" in result.output
    assert "clip-1 (failed, task sora-2:" in result.output
    assert "clip-4 (failed, task sora-2:" in result.output
    entries = _manifest(out)
    assert entries["clip-1"]["status"] == "failed"
    assert "rejected by moderation" in entries["clip-1"]["error"]
    assert entries["clip-0"]["status"] == "succeeded"
    assert_key_nowhere(result.output, (out / "manifest.jsonl").read_text())


def test_an_uncertain_create_is_recorded_and_never_sent_again(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    # The gateway may have taken these two creates: a 500 after the POST arrived.
    emulator.add_fault(Fault("http_error", route="create", status=500, times=2, skip=1))
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(4), destination=str(out))

    assert result.run.state == DagRunState.FAILED
    assert emulator.count(route="create") == 4  # no retry re-sent the two uncertain creates
    entries = _manifest(out)
    assert [e["status"] for e in entries.values()] == ["succeeded", "uncertain", "uncertain", "succeeded"]
    assert "Check the gateway's task list" in entries["clip-1"]["error"]
    assert "clip-1 (uncertain" in result.output
    assert _videos(out) == ["clip-0.mp4", "clip-3.mp4"]


def test_the_gateways_live_task_cap_and_rate_limit_are_ridden_out(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.utils.state import DagRunState

    # The key may have two unfinished tasks and create 5 a second; the batch asks for four at once.
    emulator.set_limits(Limits(max_live_tasks=2, create_rate=5, create_burst=1, retry_after=0.05))
    emulator.set_default(Scenario(polls_to_complete=3, video_size=1024))
    waits: list[float | None] = []
    original = RetryPolicy.delay

    def delay(self: RetryPolicy, attempt: int, retry_after: float | None = None) -> float:
        waits.append(retry_after)
        return min(original(self, attempt, retry_after), 0.1)

    monkeypatch.setattr(RetryPolicy, "delay", delay)
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(6), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    creates = emulator.creates()
    assert creates.accepted == 6  # each video paid for once …
    assert creates.over_live_cap > 0  # … though the gateway refused creates beyond its cap
    assert 0.05 in waits  # the refusals' Retry-After was read
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}
    assert "uncertain" not in (out / "manifest.jsonl").read_text()


def test_signed_video_urls_are_read_again_on_the_worker_and_logged_nowhere(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState

    signed = {"video_url": f"{emulator.url}/videos/_sample.mp4?se=2026-12-06&sig=SIGNATURE-Zx81"}
    emulator.set_default(Scenario(polls_to_complete=2))
    out = tmp_path / "videos"

    result = run_dag(
        dag,
        capsys,
        requests=_requests(3, **dict.fromkeys(["clip-0", "clip-2"], signed)),
        destination=str(out),
    )

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert _videos(out) == ["clip-0.mp4", "clip-1.mp4", "clip-2.mp4"]
    assert (out / "clip-0.mp4").read_bytes() == (out / "clip-1.mp4").read_bytes()
    assert "SIGNATURE-Zx81" not in result.output
    recorded = [{k: v for k, v in e.items() if k != "request"} for e in _manifest(out).values()]
    assert "SIGNATURE-Zx81" not in json.dumps(recorded)  # (the requests carry it only to set up the emulator)


def test_jsonl_requests(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1500))
    source = tmp_path / "prompts.jsonl"
    source.write_text(
        '{"model": "veo3.1-fast", "prompt": "a fox", "aspect_ratio": "9:16"}\n\n'
        '{"model": "grok-video-3", "prompt": "a boat", "key": "boat"}\n'
    )
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=source.as_uri(), destination=f"{out.as_uri()}/")

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    entries = _manifest(out)
    assert list(entries)[1] == "boat"
    fox = next(iter(entries))
    assert fox == manifest.derived_key({"model": "veo3.1-fast", "prompt": "a fox", "aspect_ratio": "9:16"})
    assert _videos(out) == sorted([f"{fox}.mp4", "boat.mp4"])
    assert emulator.task(entries[fox]["video_task_id"]).body["aspect_ratio"] == "9:16"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            '{"model": "sora-2", "prompt": "a"}\n{"model": "sora-2", "prompt": "b"\n',
            r"line 2 is not valid JSON",
        ),
        (
            '{"model": "sora-2", "prompt": "a", "key": "x"}\n{"model": "m", "prompt": "b", "key": "x"}\n',
            "already",
        ),
        ('{"model": "sora-2"}\n', r"line 1: 'prompt' is missing"),
        (
            '{"model": "sora-2", "prompt": "a", "key": "Clip"}\n'
            '{"model": "sora-2", "prompt": "b", "key": "clip"}\n',
            r"line 2: key 'clip' differs only in case from 'Clip'",
        ),
    ],
)
def test_bad_input_fails_before_anything_is_paid(
    emulator: Emulator, tmp_path: Path, lines: str, message: str
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    source = tmp_path / "prompts.jsonl"
    source.write_text(lines)
    operator = VideoBatchOperator(task_id="batch", requests=str(source), destination=str(tmp_path / "out"))
    with pytest.raises(AirflowFailException, match=message):
        operator.execute(make_context())
    assert emulator.count() == 0
    assert not (tmp_path / "out").exists()


def test_an_unusable_destination_fails_before_anything_is_paid(emulator: Emulator, tmp_path: Path) -> None:
    from airflow_provider_videoquery.exceptions import VideoDownloadError
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    (tmp_path / "a-file").write_text("in the way")
    operator = VideoBatchOperator(
        task_id="batch", requests=_requests(2), destination=str(tmp_path / "a-file" / "videos")
    )
    with pytest.raises(VideoDownloadError, match="a-file"):
        operator.execute(make_context())
    assert emulator.count() == 0


def _keyless(*prompts: str) -> list[dict[str, Any]]:
    return [{"model": "sora-2", "prompt": prompt} for prompt in prompts]


def test_a_prompt_added_at_the_top_pays_for_itself_only(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys without an explicit ``key`` follow the content: the other five are not created again."""
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    out = tmp_path / "videos"
    prompts = [f"take {n}" for n in range(5)]
    _succeeds(dag, capsys, _keyless(*prompts), out)

    second = run_dag(dag, capsys, requests=_keyless("a new first take", *prompts), destination=str(out))

    assert second.run.state == DagRunState.SUCCESS, second.output[-3000:]
    assert emulator.count(route="create") == 6
    assert len(_videos(out)) == 6
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}


def test_a_manifest_written_by_0_1_0_with_positional_keys_is_honoured(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0.1.0 derived keys from the position (``00003-<digest>``): its paid ids are found by their request."""
    import hashlib

    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    out = tmp_path / "videos"
    out.mkdir()
    old = _keyless("take 0", "take 1", "take 2")
    lines = []
    for n, request in enumerate(old):
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
        task_id = f"sora-2:task_old_{n}"
        emulator.add_task(task_id, Scenario(polls_to_complete=1, video_size=1024))
        lines.append(
            {"key": f"{n:05d}-{digest[:10]}", "model": "sora-2", "video_task_id": task_id}
            | {"status": "running", "uri": None, "bytes": None, "sha256": None, "error": None}
            | {"waiting_since": time.time(), "request": request}
        )
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    result = run_dag(dag, capsys, requests=[*_keyless("a new take"), *reversed(old)], destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert emulator.count(route="create") == 1  # the new request only
    entries = _manifest(out)
    for line in lines:
        assert entries[line["key"]]["video_task_id"] == line["video_task_id"]
        assert entries[line["key"]]["status"] == "succeeded"
        assert (out / f"{line['key']}.mp4").read_bytes() == emulator.expected_video(line["video_task_id"])
    assert len(entries) == 4


def test_a_request_with_a_tuple_is_not_refused_on_the_rerun(emulator: Emulator, tmp_path: Path) -> None:
    """The manifest records the request as JSON (a list); the rerun's live request holds a tuple."""
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    requests = [{"key": "k", "model": "veo3.1", "prompt": "p", "images": ("https://cdn.example/a.png",)}]

    def run() -> Any:
        operator = VideoBatchOperator(
            task_id="batch", requests=requests, destination=str(tmp_path), poll_interval=0.05
        )
        return drive(operator)

    run()
    run()

    assert emulator.count(route="create") == 1
    assert _manifest(tmp_path)["k"]["status"] == "succeeded"


def test_create_fields_are_checked_for_every_request_before_anything_is_paid(
    emulator: Emulator, tmp_path: Path
) -> None:
    """What VideoCreateOperator refuses, the batch refuses too: every such request listed, none sent."""
    from airflow_provider_videoquery.exceptions import VideoCreateRequestError
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    requests = [
        {"key": "fine", "model": "sora-2", "prompt": "a cow", "duration": 10},
        {"key": "boat", "model": "grok-video-3", "prompt": "a boat", "aspect_ratio": "16:9", "size": "1080P"},
        {"key": "long", "model": "sora-2", "prompt": "a fox", "duration": 12},
    ]
    operator = VideoBatchOperator(task_id="batch", requests=requests, destination=str(tmp_path / "out"))

    with pytest.raises(VideoCreateRequestError) as caught:
        drive(operator)

    message = str(caught.value)
    assert "2 of 3 request(s) refused before anything was created" in message
    assert "Request 'boat': aspect_ratio '16:9' is not accepted by 'grok-video-3'" in message
    assert "size '1080P'" in message
    assert "Request 'long': duration 12" in message
    assert "'fine'" not in message
    assert emulator.count() == 0
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


@pytest.mark.parametrize("where", ["destination", "manifest"])
def test_a_file_where_the_folder_should_be_fails_before_anything_is_paid(
    emulator: Emulator, tmp_path: Path, where: str
) -> None:
    """The same clear error as the download operator gives, not a bare FileExistsError from the manifest."""
    from airflow_provider_videoquery.exceptions import VideoDownloadError
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    (tmp_path / "a-file").write_text("in the way")
    folders = {"destination": str(tmp_path / "out"), "manifest": None}
    folders[where] = str(tmp_path / "a-file") + ("/manifest.jsonl" if where == "manifest" else "")
    operator = VideoBatchOperator(
        task_id="batch",
        requests=_requests(2),
        destination=str(folders["destination"]),
        manifest=folders["manifest"],
    )
    with pytest.raises(VideoDownloadError, match=r"a-file.*a part of the path is a file, not a folder"):
        drive(operator)
    assert emulator.count() == 0
    assert (tmp_path / "a-file").read_text() == "in the way"


def test_a_stored_video_that_cannot_be_read_is_kept_not_deleted(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read error while verifying is not a mismatch: the paid video stays (its URL may have expired)."""
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery.operators import batch

    emulator.set_default(Scenario(polls_to_complete=1, video_size=2048))
    out = tmp_path / "videos"
    _succeeds(dag, capsys, _requests(3), out)
    before = (out / "clip-1.mp4").read_bytes()
    downloads = emulator.count(route="video")
    emulator.add_fault(Fault("http_error", route="video", status=410))  # the signed URLs have expired
    original = batch.sha256_of

    def sha256_of(path: Any) -> str:
        if path.name == "clip-1.mp4":
            raise OSError(5, "Input/output error")  # a flaky mount, a throttled store
        return original(path)

    monkeypatch.setattr(batch, "sha256_of", sha256_of)

    second = run_dag(dag, capsys, requests=_requests(3), destination=str(out))

    assert second.run.state == DagRunState.SUCCESS, second.output[-3000:]
    assert (out / "clip-1.mp4").read_bytes() == before
    assert emulator.count(route="video") == downloads  # nothing fetched again
    assert _manifest(out)["clip-1"]["status"] == "succeeded"
    assert "Keeping 'clip-1' as recorded, unverified" in second.output


def test_a_stored_video_that_differs_is_replaced_only_by_a_verified_new_one(
    dag: Any, emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never deleted first: while its URL answers 410 the old object stays; once it answers, the new
    verified file replaces it (the manifest remembers that this object is the batch's own)."""
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(polls_to_complete=1, video_size=2048))
    out = tmp_path / "videos"
    _succeeds(dag, capsys, _requests(3), out)
    (out / "clip-1.mp4").write_bytes(b"\0" * 2048)  # same size, other bytes
    emulator.add_fault(Fault("http_error", route="video", status=410, times=1))

    second = run_dag(dag, capsys, requests=_requests(3), destination=str(out))

    assert (out / "clip-1.mp4").read_bytes() == b"\0" * 2048  # still there, untouched
    line = _manifest(out)["clip-1"]
    assert line["status"] == "error"
    assert line["replace"] is True
    assert second.run.state == DagRunState.SUCCESS, second.output[-3000:]  # max_failed=1

    third = run_dag(dag, capsys, requests=_requests(3), destination=str(out))

    assert third.run.state == DagRunState.SUCCESS, third.output[-3000:]
    line = _manifest(out)["clip-1"]
    assert line["status"] == "succeeded"
    assert "replace" not in line
    assert (out / "clip-1.mp4").read_bytes() == emulator.expected_video(line["video_task_id"])
    assert emulator.count(route="create") == 3
    assert not [p.name for p in out.iterdir() if ".part" in p.name]


def test_a_status_that_flaps_back_to_processing_is_waited_for_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    """completed → processing → completed: the re-read before storing sees processing; the entry goes
    back to waiting (not ``error``) and is stored once the task is completed again."""
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    flapping = {"statuses": ["completed", "processing", "completed"], "video_size": 1024}
    operator = VideoBatchOperator(
        task_id="batch",
        requests=_requests(3, **{"clip-0": flapping, "clip-2": flapping}),
        destination=str(tmp_path),
        max_failed=0,
        creates_per_second=0,
        poll_interval=0.05,
        max_polls_per_second=1000,
    )

    drive(operator)

    entries = _manifest(tmp_path)
    assert {e["status"] for e in entries.values()} == {"succeeded"}
    assert emulator.count(route="create") == 3
    for key in ("clip-0", "clip-2"):
        assert emulator.polls(entries[key]["video_task_id"]) >= 3  # seen completed, processing, completed
        assert (tmp_path / f"{key}.mp4").read_bytes() == emulator.expected_video(
            entries[key]["video_task_id"]
        )


def _running_line(key: str, task_id: str, prompt: str) -> dict[str, Any]:
    return {
        "key": key,
        "model": "sora-2",
        "video_task_id": task_id,
        "status": "running",
        "waiting_since": time.time(),
        "request": {"model": "sora-2", "prompt": prompt},
    }


def test_two_keys_with_one_video_task_id_in_the_manifest_both_get_it_without_looping(
    emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hand-merged manifest names one task for two keys: both wait for it and both store its video
    (0.1.0 mapped the id to one entry: the other stayed running and every wave fired at once, forever)."""
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    emulator.add_task("sora-2:task_shared", Scenario(polls_to_complete=2, video_size=1024))
    lines = [_running_line("a", "sora-2:task_shared", "one"), _running_line("b", "sora-2:task_shared", "two")]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    requests = [
        {"key": "a", "model": "sora-2", "prompt": "one"},
        {"key": "b", "model": "sora-2", "prompt": "two"},
    ]
    operator = VideoBatchOperator(
        task_id="batch", requests=requests, destination=str(tmp_path), poll_interval=0.05
    )

    drive(operator, max_deferrals=5)

    entries = _manifest(tmp_path)
    assert [entries[k]["status"] for k in "ab"] == ["succeeded", "succeeded"]
    video = emulator.expected_video("sora-2:task_shared")
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes() == video
    assert emulator.count(route="create") == 0
    assert "Keys 'a', 'b' share the video task 'sora-2:task_shared'" in capsys.readouterr().out


def test_a_gateway_that_answers_identical_creates_with_one_task_does_not_loop(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real gateway in front of the emulator de-duplicates identical create bodies (answers the second
    with the first one's id): the two keys share that task and both are stored."""
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator
    from tests.conftest import connection_json

    emulator.set_default(Scenario(polls_to_complete=2, video_size=1024))
    with _deduplicating_gateway(emulator.url) as url:
        monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(url, timeout=5))
        twice = {"model": "sora-2", "prompt": "the same take"}
        operator = VideoBatchOperator(
            task_id="batch",
            requests=[dict(twice), dict(twice), {"model": "sora-2", "prompt": "another"}],
            destination=str(tmp_path),
            poll_interval=0.05,
            creates_per_second=0,
        )
        drive(operator, max_deferrals=5)

    entries = list(_manifest(tmp_path).values())
    assert [e["status"] for e in entries] == ["succeeded"] * 3
    assert entries[0]["video_task_id"] == entries[1]["video_task_id"] != entries[2]["video_task_id"]
    assert emulator.count(route="create") == 2  # the gateway made two tasks for three creates
    assert (tmp_path / f"{entries[0]['key']}.mp4").read_bytes() == (
        tmp_path / f"{entries[1]['key']}.mp4"
    ).read_bytes()
    assert "share the video task" in capsys.readouterr().out


@contextlib.contextmanager
def _deduplicating_gateway(upstream: str) -> Iterator[str]:
    """An HTTP gateway on 127.0.0.1 that forwards to ``upstream`` but answers a create whose body it saw
    before with the answer it gave then (some gateways de-duplicate identical requests)."""
    import http.server
    import threading

    import httpx

    answers: dict[bytes, bytes] = {}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self, body: bytes | None) -> None:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")
            }
            with lock:
                known = answers.get(body) if body is not None and self.path == "/v1/video/create" else None
            if known is not None:
                status, data = 200, known
            else:
                answer = httpx.request(
                    self.command, upstream + self.path, content=body, headers=headers, timeout=10
                )
                status, data = answer.status_code, answer.content
                if body is not None and self.path == "/v1/video/create" and status == 200:
                    with lock:
                        answers[body] = data
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            self._forward(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The serialized kwargs of every VideoBatchTrigger the batch deferred to (run in the triggerer)."""
    seen: list[dict[str, Any]] = []
    run = VideoBatchTrigger.run

    def spy_run(self: VideoBatchTrigger) -> Any:
        seen.append(self.serialize()[1])
        return run(self)

    monkeypatch.setattr(VideoBatchTrigger, "run", spy_run)
    return seen


def test_waits_of_a_few_seconds_stay_on_the_worker(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    trigger_kwargs: list[Any],
    deferred: list[Any],
) -> None:
    """Each wave's next step is a second away: the worker waits for it itself and never defers, so no
    trigger can fire seconds after a deferral (Airflow's state-mismatch race)."""
    from airflow.utils.state import DagRunState

    emulator.set_default(Scenario(seconds_to_complete=0.5, video_size=1024))
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(9), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert deferred == []
    assert len(trigger_kwargs) >= 3  # max_active=4: at least three waves, each waited on the worker
    assert emulator.count(route="create") == 9
    assert _videos(out) == [f"clip-{n}.mp4" for n in range(9)]


def test_a_longer_wait_defers_to_a_trigger_that_holds_before_firing(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    deferred: list[Any],
) -> None:
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery.operators import batch

    monkeypatch.setattr(batch, "_STAY_ON_WORKER", 0.3)  # the videos take longer than that
    emulator.set_default(Scenario(seconds_to_complete=1.5, video_size=1024))
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(4), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert deferred
    assert {kwargs["min_hold"] for kwargs in deferred} == {batch._SAFE_HOLD}
    assert emulator.count(route="create") == 4
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}


def test_one_slow_video_does_not_hold_up_storing_and_recording_the_others(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first video answer of a wave is slow to start: the wave's other videos are stored and in the
    manifest while that one is still on its way."""
    import threading

    from airflow_provider_videoquery.operators import batch
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator

    monkeypatch.setattr(batch, "_SAVE_STORED_EVERY", 0.0)  # every landing is written at once
    emulator.set_default(Scenario(polls_to_complete=1, video_size=1024))
    emulator.add_fault(Fault("slow_headers", route="video", times=1, delay=2.0))  # under the 5 s timeout
    operator = VideoBatchOperator(
        task_id="batch",
        requests=_requests(4),
        destination=str(tmp_path),
        max_active=4,
        creates_per_second=0,
        poll_interval=0.05,
        max_polls_per_second=1000,
        max_parallel_downloads=4,
        progress_interval=600,
    )
    done = threading.Event()
    thread = threading.Thread(target=lambda: (drive(operator), done.set()))
    thread.start()
    seen: list[int] = []
    try:
        while not done.is_set() and len(seen) < 2000:
            if (tmp_path / "manifest.jsonl").exists():
                seen.append(sum(e["status"] == "succeeded" for e in _manifest(tmp_path).values()))
            time.sleep(0.01)
    finally:
        thread.join(timeout=60)

    assert 3 in seen  # the three quick ones were recorded while the slow one was still coming
    assert {e["status"] for e in _manifest(tmp_path).values()} == {"succeeded"}
    assert emulator.count(route="video") == 4


def test_the_lease_is_held_across_a_deferral_and_a_resume_that_lost_it_stops(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the batch is deferred another run is refused, naming it; the resumed try adopts its lease.
    Had the lease expired and another run taken it, the resume stops and creates nothing more."""
    import asyncio

    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_videoquery import lease
    from airflow_provider_videoquery.exceptions import VideoQueryError
    from airflow_provider_videoquery.operators import batch
    from airflow_provider_videoquery.operators.batch import VideoBatchOperator
    from tests.batch_helpers import batch_context

    monkeypatch.setattr(batch, "_STAY_ON_WORKER", 0.0)  # defer after every wave
    emulator.set_default(Scenario(polls_to_complete=2, video_size=1024))

    def operator() -> Any:
        return VideoBatchOperator(
            task_id="batch",
            requests=_requests(4),
            destination=str(tmp_path),
            max_active=2,
            poll_interval=0.05,
        )

    first, context = operator(), batch_context("scheduled__1")
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(context)
    with pytest.raises(
        VideoQueryError, match=r"is in use by DAG 'videoquery_batch_test', run 'scheduled__1'"
    ):
        operator().execute(batch_context("manual__1"))
    assert emulator.count(route="create") == 2

    event = asyncio.run(deferred.value.trigger.run().__anext__()).payload
    with pytest.raises(TaskDeferred) as again:  # resumed: stored what finished, created more, deferred
        first.execute_complete(context, event)
    made = emulator.count(route="create")
    assert made > 2

    # The lease outlives the deferral only so long: a run after its expiry takes the manifest …
    late = lease.Owner("videoquery_batch_test", "manual__2", "batch")
    path = str(tmp_path / "manifest.jsonl")
    lease.acquire(first.manifest_path.fs, path, late, ttl=600, clock=lambda: time.time() + 10**6)
    event = asyncio.run(again.value.trigger.run().__anext__()).payload
    # … and the resumed try stops at once, without writing the manifest or creating anything.
    before = (tmp_path / "manifest.jsonl").read_bytes()
    with pytest.raises(VideoQueryError, match=r"while this task was deferred, its lease .* run 'manual__2'"):
        first.execute_complete(context, event)
    assert (tmp_path / "manifest.jsonl").read_bytes() == before
    assert emulator.count(route="create") == made


def test_each_create_is_one_journal_record_not_a_manifest_rewrite(
    dag: Any,
    emulator: Emulator,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger's cost per create does not grow with the batch: an id goes to the journal (one
    record), and the manifest is rewritten whole only at the start and the end (and when the journal
    has grown to a share of it)."""
    from airflow.utils.state import DagRunState

    from airflow_provider_videoquery import manifest
    from airflow_provider_videoquery.ledger import Ledger

    emulator.set_default(Scenario(polls_to_complete=1, video_size=256))
    rewrites: list[int] = []
    records: list[int] = []
    write, record = manifest.write, Ledger.record

    def counted_write(fs: Any, path: str, entries: Any) -> None:
        entries = list(entries)
        rewrites.append(len(entries))
        write(fs, path, entries)

    def counted_record(self: Ledger, entries: Any) -> None:
        records.append(len(entries))
        record(self, entries)

    monkeypatch.setattr(manifest, "write", counted_write)
    monkeypatch.setattr(Ledger, "record", counted_record)
    out = tmp_path / "videos"

    result = run_dag(dag, capsys, requests=_requests(40), destination=str(out))

    assert result.run.state == DagRunState.SUCCESS, result.output[-3000:]
    assert emulator.count(route="create") == 40
    assert records.count(1) >= 40  # one record of one entry after each create
    assert 2 <= len(rewrites) <= 3  # the start and the end (0.1.0: once per create, 40+)
    assert {e["status"] for e in _manifest(out).values()} == {"succeeded"}
    assert not (out / "manifest.jsonl.journal").exists()  # folded in at the end


@pytest.mark.parametrize(
    ("total", "max_active", "share"),
    [(10, 20, 0.25), (1_000, 20, 0.25), (10_000, 1000, 0.25), (100_000, 20, 1.0), (100_000, 1000, 0.5)],
)
def test_a_big_batch_fires_on_a_larger_share_so_its_waves_stay_few(
    total: int, max_active: int, share: float
) -> None:
    from airflow_provider_videoquery.operators.batch import refill_share

    assert refill_share(total, max_active) == share
    waves = total / (share * max_active)
    assert waves <= max(200, total / max_active)
