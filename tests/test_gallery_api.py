"""The gallery's routes through Airflow's own api-server app (FastAPI TestClient) on a real Airflow DB.

One real run of example_videoquery_gallery (``dag.test()`` against the emulator: 6 videos through the
batch, one of them failed by the gateway, 1 through create → download) feeds every test: the JSON,
paging and the status filter, media with and without ``Range`` (bytes checked against the stored
sha256), signed links (Airflow 3.1's way), 401/403 through Airflow's auth manager, refused traversal and
foreign URIs, the page and its assets, the plugin's tabs and the "Videos" extra link.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_videoquery.emulator import Scenario, run_emulator
from airflow_provider_videoquery.ui import signing, source, urls
from tests.airflow_helpers import load_dag
from tests.conftest import API_KEY, connection_json
from tests.gallery.auth import HIDDEN_DAG

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DAG_ID = "example_videoquery_gallery"


@dataclass(frozen=True)
class Run:
    run_id: str
    folder: Path

    def api(self, suffix: str = "/videos", run_id: str | None = None) -> str:
        return f"/videoquery/api{urls.run_path(DAG_ID, run_id or self.run_id)}{suffix}"

    def task_api(self, task_id: str, map_index: str | int, suffix: str = "/videos") -> str:
        return f"/videoquery/api{urls.run_path(DAG_ID, self.run_id)}/tasks/{task_id}/{map_index}{suffix}"


@pytest.fixture(scope="module")
def gallery_run(airflow_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The example DAG, run once for the module: 6 batch videos (one failed) and 1 download."""
    folder = tmp_path_factory.mktemp("gallery")
    with run_emulator(api_key=API_KEY) as emu, pytest.MonkeyPatch.context() as patch:
        emu.set_default(Scenario(polls_to_complete=2))
        patch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emu.url, timeout=5))
        dag = load_dag(DAG_ID)
        batch = dag.get_task("batch")
        batch.creates_per_second, batch.poll_interval, batch.max_polls_per_second = 0, 0.05, 1000
        dag.get_task("download").poll_interval = 0.05
        dag_run = dag.test(run_conf={"folder": str(folder), "emulator_failure": True})
    assert str(dag_run.state) == "success"
    return Run(dag_run.run_id, folder)


@pytest.fixture(scope="module")
def client(gallery_run: Run) -> Iterator[Any]:
    """Airflow's api-server app (plugins from entry points), with an auth manager that hides one DAG."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.gallery.auth.OneDagHidden")
        purge_cached_app()
        with TestClient(create_app("core")) as test_client:
            yield test_client
    purge_cached_app()


def _token(role: str | None) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=f"u-{role}", role=role)))


def _bearer(role: str | None = "VIEWER") -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(role)}"}


def _cookie(client: Any, role: str = "VIEWER") -> None:
    """Sign in the way Airflow 3.2+'s UI is: the ``_token`` cookie (3.1.8's API accepts it too)."""
    client.cookies.set("_token", _token(role))


@pytest.fixture
def signed_out(client: Any) -> Iterator[Any]:
    client.cookies.clear()
    yield client
    client.cookies.clear()


def _items(client: Any, url: str, **params: Any) -> dict[str, Any]:
    answer = client.get(url, params=params, headers=_bearer())
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


# -- JSON -------------------------------------------------------------------------------------------


def test_the_run_lists_its_seven_videos_with_prompts_models_and_the_failure(
    signed_out: Any, gallery_run: Run
) -> None:
    body = _items(signed_out, gallery_run.api())
    assert body["counts"] == {"total": 7, "succeeded": 6, "failed": 1, "waiting": 0, "not_created": 0}
    assert body["problems"] == []
    keys = [(item["task_id"], item["key"]) for item in body["items"]]
    assert keys[:6] == [
        ("batch", k)
        for k in ("paper-boat", "red-fox", "lighthouse", "night-market", "balloon", "ridge-clouds")
    ]
    (download,) = (item for item in body["items"] if item["task_id"] == "download")
    assert download["map_index"] == 0
    assert (download["prompt"], download["model"]) == ("A kite over a beach, seen from below", "sora-2")
    assert download["thumbnail"].endswith(".thumbnail.jpg")
    assert download["poster_url"] is not None
    assert download["created_at"]
    assert download["stored_at"]
    failed = body["items"][2]
    assert (failed["status"], failed["state"], failed["model"]) == ("failed", "failed", "grok-video-3")
    assert "content policy" in failed["error"]
    assert failed["video_url"] is None
    fox = body["items"][1]
    assert fox["prompt"] == "A red fox crossing a snowy field at dawn"
    assert fox["uri"] == (gallery_run.folder / "batch" / "red-fox.mp4").as_uri()
    assert fox["bytes"] == (gallery_run.folder / "batch" / "red-fox.mp4").stat().st_size
    assert fox["created_at"] <= fox["stored_at"]
    assert fox["poster_url"] is None  # no thumbnail stored: the page shows the first frame
    assert all(item["video_url"] for item in body["items"] if item["status"] == "succeeded")


def test_paging_and_the_status_filter(signed_out: Any, gallery_run: Run) -> None:
    first = _items(signed_out, gallery_run.api(), limit=3)
    second = _items(signed_out, gallery_run.api(), limit=3, offset=3)
    last = _items(signed_out, gallery_run.api(), limit=3, offset=6)
    keys = [item["key"] for page in (first, second, last) for item in page["items"]]
    assert len(keys) == len(set(keys)) == 7
    assert (first["total"], len(first["items"]), len(last["items"])) == (7, 3, 1)

    failed = _items(signed_out, gallery_run.api(), status="failed")
    assert [item["key"] for item in failed["items"]] == ["lighthouse"]
    assert (failed["total"], failed["status"]) == (1, "failed")
    assert failed["counts"]["total"] == 7
    assert _items(signed_out, gallery_run.api(), status="waiting")["items"] == []
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        assert signed_out.get(gallery_run.api(), params=bad, headers=_bearer()).status_code == 422


def test_one_task_instance_and_the_map_index_in_every_form_the_ui_sends(
    signed_out: Any, gallery_run: Run
) -> None:
    (download,) = _items(signed_out, gallery_run.task_api("download", 0))["items"]
    assert download["task_id"] == "download"
    for index in ("-1", "%7BMAP_INDEX%7D"):  # 3.3.2 leaves {MAP_INDEX} as is for an unmapped task
        batch = _items(signed_out, gallery_run.task_api("batch", index))
        assert batch["counts"]["total"] == 6
        assert batch["map_index"] == -1
    assert _items(signed_out, gallery_run.task_api("create", 0))["items"] == []  # no video of its own
    # Airflow 3.1 puts the run id into the tab's URL unencoded: "+" and ":" as they are.
    raw = f"/videoquery/api/dags/{DAG_ID}/runs/{gallery_run.run_id}/videos"
    assert "+" in raw
    assert _items(signed_out, raw)["counts"]["total"] == 7
    for missing in (
        gallery_run.task_api("nope", -1),
        gallery_run.task_api("download", 5),
        gallery_run.task_api("download", "x"),
        gallery_run.api(run_id="manual__no_such_run"),
    ):
        assert signed_out.get(missing, headers=_bearer()).status_code == 404, missing


# -- media ------------------------------------------------------------------------------------------


#: What a browser sends for <video> (and what keeps Airflow 3.1's GZip middleware out of byte ranges).
IDENTITY = {"Accept-Encoding": "identity"}


def _item(client: Any, run: Run, key: str) -> dict[str, Any]:
    return next(item for item in _items(client, run.api())["items"] if item["key"] == key)


def test_media_streams_whole_and_by_range_matching_the_stored_sha256(
    signed_out: Any, gallery_run: Run
) -> None:
    _cookie(signed_out)
    answer = signed_out.get(gallery_run.api())
    assert answer.json()["media_links"] == "cookie"  # no bearer: plain links, the cookie goes along
    fox = next(item for item in answer.json()["items"] if item["key"] == "red-fox")
    url = fox["video_url"]
    assert url.startswith("/videoquery/api/")
    assert "signature" not in url

    whole = signed_out.get(url, headers=IDENTITY)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == fox["bytes"] == len(whole.content)
    assert hashlib.sha256(whole.content).hexdigest() == fox["sha256"]

    size, parts = fox["bytes"], []
    for start, end in ((0, 999), (1000, 2999), (3000, size + 500)):
        part = signed_out.get(url, headers={"Range": f"bytes={start}-{end}", **IDENTITY})
        assert part.status_code == 206
        last = min(end, size - 1)
        assert part.headers["content-range"] == f"bytes {start}-{last}/{size}"
        assert int(part.headers["content-length"]) == len(part.content) == last - start + 1
        parts.append(part.content)
    assert hashlib.sha256(b"".join(parts)).hexdigest() == fox["sha256"]
    tail = signed_out.get(url, headers={"Range": "bytes=-100", **IDENTITY})
    assert (tail.status_code, tail.content) == (206, whole.content[-100:])
    beyond = signed_out.get(url, headers={"Range": f"bytes={size}-", **IDENTITY})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"

    kite = next(item for item in answer.json()["items"] if item["task_id"] == "download")
    poster = signed_out.get(kite["poster_url"])
    assert poster.status_code == 200
    assert poster.headers["content-type"] == "image/jpeg"
    assert poster.content == Path(kite["thumbnail"].removeprefix("file://")).read_bytes()


def test_signed_links_play_without_credentials_until_they_expire(signed_out: Any, gallery_run: Run) -> None:
    """Airflow 3.1's UI sends its token as a header: the JSON then carries signed, expiring links."""
    body = _items(signed_out, gallery_run.api())
    assert body["media_links"] == "signed"
    assert body["links_expire_at"] - time.time() == pytest.approx(signing.LINK_SECONDS, abs=120)
    fox = next(item for item in body["items"] if item["key"] == "red-fox")
    url = fox["video_url"]
    assert url.startswith("/videoquery/signed/")
    assert f"expires={body['links_expire_at']}" in url

    played = signed_out.get(url, headers={"Range": "bytes=0-99", **IDENTITY})  # no cookie, no token
    assert played.status_code == 206
    assert len(played.content) == 100

    assert signed_out.get(url.replace("signature=", "signature=x")).status_code == 403
    balloon = url.replace("/red-fox?", "/balloon?")  # a signature is for one object only
    assert signed_out.get(balloon).status_code == 403
    from airflow.configuration import conf

    key = signing.media_key(conf.get("api", "secret_key"))
    parts = (DAG_ID, gallery_run.run_id, "batch", "-1", "video", "red-fox")
    past = int(time.time()) - 1
    expired = f"{url.split('?')[0]}?expires={past}&signature={signing.signature(key, parts, past)}"
    assert signed_out.get(expired).status_code == 403
    assert signed_out.get(url.split("?")[0]).status_code == 403  # no signature at all


# -- auth -------------------------------------------------------------------------------------------


def test_no_credentials_401_and_no_read_access_to_the_dag_403(signed_out: Any, gallery_run: Run) -> None:
    fox = _item(signed_out, gallery_run, "red-fox")
    plain_media = fox["video_url"].replace("/videoquery/signed/", "/videoquery/api/").split("?")[0]
    for url in (gallery_run.api(), gallery_run.task_api("download", 0), plain_media):
        assert signed_out.get(url).status_code == 401, url
        assert signed_out.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code in (401, 403)
        assert signed_out.get(url, headers=_bearer(None)).status_code == 403, url  # signed in, no role

    hidden = f"/videoquery/api{urls.run_path(HIDDEN_DAG, gallery_run.run_id)}"
    for url in (f"{hidden}/videos", f"{hidden}/tasks/batch/-1/media/video/red-fox"):
        answer = signed_out.get(url, headers=_bearer("VIEWER"))
        assert answer.status_code == 403, url
        _cookie(signed_out)
        assert signed_out.get(url).status_code == 403, url
        signed_out.cookies.clear()
        assert signed_out.get(url, headers=_bearer("ADMIN")).status_code == 404  # allowed: no such run


# -- what may be served -----------------------------------------------------------------------------


def test_traversal_in_the_request_reaches_no_storage(signed_out: Any, gallery_run: Run) -> None:
    _cookie(signed_out)
    base = gallery_run.task_api("batch", -1, "/media")
    for tail in (
        "/video/..%2F..%2F..%2Fetc%2Fpasswd",
        "/video/%2e%2e",
        "/video/manifest",
        "/video/red-fox.mp4",
        "/..%2Fvideo/red-fox",
        "/manifest/red-fox",
        "/thumbnail/red-fox",  # a batch stores no thumbnails
        "/video/lighthouse",  # failed: nothing stored
    ):
        answer = signed_out.get(base + tail)
        assert answer.status_code == 404, (tail, answer.text)
    assert signed_out.get(f"{base}/video/{quote('/etc/passwd', safe='')}").status_code == 404


def test_a_ledger_or_xcom_naming_a_foreign_object_is_refused(
    signed_out: Any, gallery_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "LEDGER_TTL", 0.0)  # read the ledger as it is now
    _cookie(signed_out)
    manifest = gallery_run.folder / "batch" / "manifest.jsonl"
    original = manifest.read_text()
    lines = [json.loads(line) for line in original.splitlines()]
    lines[1]["uri"] = "file:///etc/passwd"  # red-fox
    lines[0]["uri"] = (gallery_run.folder / "batch" / ".." / "single" / "x.mp4").as_uri()  # paper-boat
    video = _video_xcom(gallery_run)
    try:
        manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
        _set_video_xcom(gallery_run, {**video, "thumbnail": "file:///etc/hostname"})
        items = {item["key"]: item for item in signed_out.get(gallery_run.api()).json()["items"]}
        assert items["red-fox"]["video_url"] is None
        assert items["paper-boat"]["video_url"] is None
        kite = next(item for item in items.values() if item["task_id"] == "download")
        assert kite["poster_url"] is None
        assert kite["video_url"] is not None
        base = gallery_run.task_api("batch", -1, "/media/video")
        for key in ("red-fox", "paper-boat"):
            answer = signed_out.get(f"{base}/{key}")
            assert answer.status_code == 403, answer.text
            assert "passwd" not in answer.text
        poster = signed_out.get(gallery_run.task_api("download", 0, f"/media/thumbnail/{kite['key']}"))
        assert poster.status_code == 403
    finally:
        manifest.write_text(original)
        _set_video_xcom(gallery_run, video)


def _video_xcom(run: Run) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == DAG_ID, XComModel.run_id == run.run_id, XComModel.key == "video"
            )
        ).one()
        value: dict[str, Any] = XComModel.deserialize_value(row)
        return value


def _set_video_xcom(run: Run, value: dict[str, Any]) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(
            update(XComModel)
            .where(XComModel.dag_id == DAG_ID, XComModel.run_id == run.run_id, XComModel.key == "video")
            .values(value=XComModel.serialize_value(value))
        )


# -- the page, the tabs, the extra link -------------------------------------------------------------


def test_the_page_and_its_assets_need_no_credentials_and_carry_no_data(
    signed_out: Any, gallery_run: Run
) -> None:
    page = signed_out.get(f"/videoquery{urls.run_path(DAG_ID, gallery_run.run_id)}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert gallery_run.api() in page.text
    assert "red-fox" not in page.text  # the cards come from the JSON route, behind Airflow's checks
    task_page = signed_out.get(
        f"/videoquery{urls.run_path(DAG_ID, gallery_run.run_id)}/tasks/batch/%7BMAP_INDEX%7D"
    )
    assert task_page.status_code == 200
    assert "/tasks/batch/-1/videos" in task_page.text
    for asset, kind in (("gallery.js", "javascript"), ("gallery.css", "text/css"), ("icon.svg", "image/svg")):
        answer = signed_out.get(f"/videoquery/static/{asset}")
        assert answer.status_code == 200
        assert kind in answer.headers["content-type"]
    assert "http" not in signed_out.get("/videoquery/static/gallery.js").text  # no CDN, nothing remote


def test_the_plugin_adds_a_videos_tab_to_runs_and_task_instances(signed_out: Any) -> None:
    answer = signed_out.get("/api/v2/plugins", headers=_bearer("ADMIN"))
    assert answer.status_code == 200
    (plugin,) = (p for p in answer.json()["plugins"] if p["name"] == "videoquery_gallery")
    assert plugin["source"].startswith("airflow-provider-videoquery==")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/videoquery"]
    views = {view["destination"]: view for view in plugin["external_views"]}
    assert views["dag_run"]["name"] == views["task_instance"]["name"] == "Videos"
    assert views["dag_run"]["href"] == "/videoquery/dags/{DAG_ID}/runs/{RUN_ID}"
    assert (
        views["task_instance"]["href"]
        == "/videoquery/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}/{MAP_INDEX}"
    )
    assert views["dag_run"]["url_route"] != views["task_instance"]["url_route"]  # Airflow drops duplicates


def test_the_download_and_batch_extra_link_opens_their_gallery(signed_out: Any, gallery_run: Run) -> None:
    run = quote(gallery_run.run_id, safe="")
    for task_id, index in (("download", 0), ("batch", -1)):
        url = f"/api/v2/dags/{DAG_ID}/dagRuns/{run}/taskInstances/{task_id}/links"
        answer = signed_out.get(url, params={"map_index": index}, headers=_bearer())
        assert answer.status_code == 200, answer.text
        link = answer.json()["extra_links"]["Videos"]
        assert link == f"/videoquery{urls.run_path(DAG_ID, gallery_run.run_id)}/tasks/{task_id}/{index}"
        assert signed_out.get(link).status_code == 200


def test_ledgers_and_videos_on_s3_are_read_and_streamed_by_range(moto_server: Any, s3_bucket: str) -> None:
    """The api-server side against a real S3 API: a batch's ledger read through its connection, and a
    stored video streamed by range from the bucket."""
    from airflow_provider_videoquery import manifest
    from airflow_provider_videoquery.emulator import sample_mp4
    from airflow_provider_videoquery.ui import media, model, xcom

    data = sample_mp4()
    folder = f"s3://{s3_bucket}/batch/"
    entry = manifest.Entry("clip", {"model": "sora-2", "prompt": "a clip"})
    entry.created("sora-2:task_1", time.time())
    entry.stored(f"{folder}clip.mp4", len(data), hashlib.sha256(data).hexdigest())
    s3 = moto_server.client()
    s3.put_object(Bucket=s3_bucket, Key="batch/clip.mp4", Body=data)
    s3.put_object(Bucket=s3_bucket, Key="batch/manifest.jsonl", Body=manifest.dumps([entry]))
    pointer = xcom.ledger_pointer(f"{folder}manifest.jsonl", folder, "aws_default")
    record = model.TaskRecord("batch", -1, "success", model.BATCH_OPERATOR, {xcom.LEDGER_KEY: pointer})

    (card,) = model.gallery([record], source.read_ledger).cards
    uri = model.servable(card, model.Kind.VIDEO)
    assert uri == f"{folder}clip.mp4"
    path = source.storage_path(uri, card.conn_id)
    assert int(path.fs.info(path.path)["size"]) == len(data)
    span = media.parse_range("bytes=1000-", len(data))
    assert span is not None
    head = b"".join(media.iter_bytes(path.fs, path.path, 0, 1000))
    rest = b"".join(media.iter_bytes(path.fs, path.path, span.start, span.length))
    assert hashlib.sha256(head + rest).hexdigest() == card.sha256


def test_the_plugin_is_left_out_of_the_provider_info_and_the_package_init() -> None:
    """Airflow imports the package's __init__ while loading its config: importing Airflow there (or
    listing the plugin in provider info as well as the entry point) breaks that or reports it twice."""
    import subprocess
    import sys

    from airflow_provider_videoquery import get_provider_info

    assert "plugins" not in get_provider_info()
    probe = (
        "import sys, airflow_provider_videoquery\n"
        "print(sorted(m for m in sys.modules if m.startswith('airflow.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[]"
