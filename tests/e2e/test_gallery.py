"""The gallery in a real browser: a real api-server, scheduler, dag-processor and triggerer run
example_videoquery_gallery against the emulator (6 videos through the batch, one failed by the gateway,
1 through create → download); headless Chromium signs in as a viewer, opens the run's "Videos" tab and
sees 7 cards (the failed one with its reason), plays one, checks the posters, opens a task's tab and
the task's "Videos" extra link, and the dark theme.

Screenshots go to ``artifacts/`` (gitignored; their paths are printed). Needs Debian's ``chromium`` and
``chromium-driver`` (``make test-e2e`` installs them) and selenium (the test extra).
Run with ``VIDEOQUERY_E2E=1 .venv/bin/python -m pytest -m '' -s tests/e2e/test_gallery.py``; with
``.venv-lowest/bin/python`` (and selenium installed there) the same test runs on Airflow 3.1.8.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.airflow_cluster import AirflowCluster, Emulator, tail
from tests.e2e.pages import WAIT, Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_E2E") != "1", reason="a real Airflow deployment: set VIDEOQUERY_E2E=1"
    ),
    pytest.mark.timeout(600),
]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
EXAMPLE = REPO / "example_dags" / "example_videoquery_gallery.py"
DAG_ID = "videoquery_gallery_e2e"
RUN_ID = "gallery_run_1"
VIEWER, PASSWORD = "viewer", f"pw-{secrets.token_hex(6)}"


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def _dag_source() -> str:
    """The example DAG itself, built with a 1 s poll interval for the emulator."""
    source = EXAMPLE.read_text()
    last = 'dag = gallery_dag("example_videoquery_gallery")\n'
    assert source.endswith(last)
    return source[: -len(last)] + f'dag = gallery_dag("{DAG_ID}", poll_interval=1)\n'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[AirflowCluster, Path]]:
    api_key = f"sk-gallery-{secrets.token_hex(8)}"
    folder = tmp_path / "videos"
    with Emulator.run(tmp_path / "emulator.log", "--api-key", api_key, "--seconds", "12") as emu:
        passwords = tmp_path / "passwords.json"
        passwords.write_text(json.dumps({VIEWER: PASSWORD}))
        cluster = AirflowCluster.create(
            tmp_path / "airflow",
            {
                "AIRFLOW_CONN_VIDEOQUERY_DEFAULT": json.dumps(
                    {"conn_type": "videoquery", "host": emu.url, "password": api_key}
                ),
                # A real sign-in, as a viewer: the tabs and the gallery need no more than read access.
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{VIEWER}:viewer",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            },
        )
        (cluster.home / "dags" / f"{DAG_ID}.py").write_text(_dag_source())
        passed = False
        try:
            with cluster.running():
                cluster.wait_for(lambda: cluster.dag_parsed(DAG_ID), 180, f"{DAG_ID} to be parsed")
                assert not cluster.import_errors(), cluster.import_errors()
                cluster.trigger(DAG_ID, RUN_ID, {"folder": str(folder), "emulator_failure": True})
                state = cluster.wait_for_run(DAG_ID, RUN_ID, 300)
                assert state == "success", cluster.task_states(DAG_ID, RUN_ID)
                yield cluster, folder
            passed = True
        finally:
            if not passed:
                print(cluster.diagnostics())
                print(f"==== emulator.log ====\n{tail(emu.log)}")


def test_the_videos_tab_shows_and_plays_the_runs_videos(
    cluster: tuple[AirflowCluster, Path], browser: Any
) -> None:
    deployment, folder = cluster
    version = _airflow_version()
    ui = Gallery(browser, deployment_url(deployment))
    ui.sign_in(VIEWER, PASSWORD)

    # The run's page → its "Videos" tab: an iframe with the gallery.
    ui.open_tab(f"/dags/{DAG_ID}/runs/{RUN_ID}")
    cards = ui.cards(7)
    counts = ui.counts()
    assert counts == {"all": 7, "succeeded": 6, "failed": 1, "waiting": 0, "not_created": 0}, counts
    failed = [card for card in cards if card["status"] == "failed"]
    assert [card["key"] for card in failed] == ["lighthouse"]
    assert "content policy" in failed[0]["text"], failed[0]
    assert {card["key"] for card in cards} >= {"paper-boat", "red-fox", "night-market", "balloon"}
    download = next(card for card in cards if card["text"].count("download[0]"))
    assert "A kite over a beach" in download["text"]
    assert "sora-2" in download["text"]

    ui.wait_for_posters()
    mode = ui.links_mode()
    _assert_played(ui.play("red-fox"))
    shot = ui.screenshot(ARTIFACTS / f"gallery-{version}-run-tab.png")
    print(f"\nAirflow {version}: the run's Videos tab ({mode} media links): {shot}")
    ui.leave_frame()

    # The dark theme: Airflow's own choice, read from its local storage.
    browser.execute_script("localStorage.setItem('theme', 'dark')")
    ui.open_tab(f"/dags/{DAG_ID}/runs/{RUN_ID}")
    ui.cards(7)
    assert ui.theme() == "dark"
    shot = ui.screenshot(ARTIFACTS / f"gallery-{version}-run-tab-dark.png")
    print(f"the run's Videos tab, dark theme: {shot}")
    ui.leave_frame()
    browser.execute_script("localStorage.setItem('theme', 'light')")

    # A task's tab: the mapped download (map index 0) has one card.
    ui.open_tab(f"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/download/mapped/0")
    (only,) = ui.cards(1)
    assert "A kite over a beach" in only["text"]
    ui.wait_for_posters()
    shot = ui.screenshot(ARTIFACTS / f"gallery-{version}-task-tab.png")
    print(f"the download task's Videos tab: {shot}")
    ui.leave_frame()
    ui.open_tab(f"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/batch")
    assert len(ui.cards(6)) == 6
    ui.leave_frame()

    # The "Videos" extra link of the batch task: the gallery as a page of its own.
    link = ui.follow_extra_link(f"/dags/{DAG_ID}/runs/{RUN_ID}/tasks/batch")
    expected = f"/videoquery/dags/{DAG_ID}/runs/{quote(RUN_ID, safe='')}/tasks/batch/-1"
    assert link.endswith(expected), link
    assert len(ui.cards(6)) == 6
    assert browser.current_url.endswith(expected)
    played = ui.play("balloon")
    _assert_played(played)
    shot = ui.screenshot(ARTIFACTS / f"gallery-{version}-extra-link.png")
    print(f"the batch task's Videos extra link: {link} -> {shot}")

    # A UI that keeps its token in local storage and sends it as a header (Airflow 3.0's did; 3.1.8
    # and 3.3 use the login cookie): without the cookie the page uses that token, and <video>/<img>
    # get signed, expiring links.
    token = ui.api_token(VIEWER, PASSWORD)
    browser.delete_cookie("_token")
    browser.execute_script("localStorage.setItem('token', arguments[0])", token)
    browser.get(f"{deployment_url(deployment)}/videoquery/dags/{DAG_ID}/runs/{RUN_ID}")
    ui.cards(7)
    assert ui.links_mode() == "signed"
    ui.wait_for_posters()
    _assert_played(ui.play("red-fox"))
    shot = ui.screenshot(ARTIFACTS / f"gallery-{version}-signed-links.png")
    print(f"without the login cookie, with a token in local storage (signed media links): {shot}")
    browser.execute_script("localStorage.removeItem('token')")

    # What was shown is what was stored.
    stored = sorted(p.name for p in (folder / "batch").glob("*.mp4"))
    keys = ("paper-boat", "red-fox", "night-market", "balloon", "ridge-clouds")
    assert stored == sorted(f"{key}.mp4" for key in keys)


def deployment_url(deployment: AirflowCluster) -> str:
    return f"http://127.0.0.1:{deployment.api_port}"


def _assert_played(played: dict[str, Any]) -> None:
    """The video had a frame to show (readyState >= 2, HAVE_CURRENT_DATA) and its time advanced."""
    assert played["readyState"] >= 2, played
    assert played["after"] > played["before"], played


class Gallery(Page):
    """Airflow's UI and the gallery in it, as a user clicks them (selectors read off the live pages)."""

    def sign_in(self, username: str, password: str) -> None:
        self.driver.get(f"{self.base_url}/")
        self._find("//input[@name='username']").send_keys(username)
        self._find("//input[@name='password']").send_keys(password)
        self._find("//button[@type='submit']", clickable=True).click()
        self._find("//button[normalize-space(.)='Browse'] | //a[normalize-space(.)='Dags']")

    def open_tab(self, page: str) -> None:
        """Open ``page`` of the UI, click its "Videos" tab and enter the tab's frame."""
        self.driver.get(f"{self.base_url}{page}")
        self._find("//*[(self::a or self::button) and normalize-space(.)='Videos']", clickable=True).click()
        frame = self._find("//iframe[@title='Videos']")
        self.driver.switch_to.frame(frame)

    def leave_frame(self) -> None:
        self.driver.switch_to.default_content()

    def cards(self, count: int) -> list[dict[str, Any]]:
        script = (
            "return [...document.querySelectorAll('article.card')].map(c => "
            "({key: c.dataset.key, status: c.dataset.status, text: c.innerText}))"
        )
        self.wait.until(lambda d: len(d.execute_script(script)) == count)
        cards: list[dict[str, Any]] = self.driver.execute_script(script)
        return cards

    def counts(self) -> dict[str, int]:
        script = (
            "return Object.fromEntries([...document.querySelectorAll('#counts .count')].map(b => "
            "[b.dataset.status, Number(b.querySelector('.count-number').textContent)]))"
        )
        counts: dict[str, int] = self.driver.execute_script(script)
        return counts

    def theme(self) -> str:
        return str(self.driver.execute_script("return document.documentElement.dataset.theme"))

    def links_mode(self) -> str:
        """Which media links the page got: 'signed' (3.1: token header) or 'cookie' (3.2+)."""
        url = str(self.driver.execute_script("return document.querySelector('video').getAttribute('src')"))
        return "signed" if "/videoquery/signed/" in url else "cookie"

    def wait_for_posters(self) -> None:
        """Every card's poster: the stored thumbnail loaded as an image, or the first frame's metadata."""
        script = """
        const done = arguments[arguments.length - 1];
        const videos = [...document.querySelectorAll('video')];
        Promise.all(videos.map(v => v.poster
            ? new Promise(ok => { const i = new Image(); i.onload = () => ok(i.naturalWidth);
                                  i.onerror = () => ok(0); i.src = v.poster; })
            : new Promise(ok => {
                const check = () => v.readyState >= 1 ? ok(v.videoWidth) : setTimeout(check, 100);
                check(); })))
          .then(widths => done(widths));
        """
        self.driver.set_script_timeout(WAIT)
        widths = self.driver.execute_async_script(script)
        assert widths, "no video on the page"
        assert all(width > 0 for width in widths), widths

    def play(self, key: str) -> dict[str, Any]:
        """Play one card's video (muted) and report its readyState and currentTime before and after."""
        script = """
        const done = arguments[arguments.length - 1];
        const video = document.querySelector(`article[data-key="${arguments[0]}"] video`);
        video.muted = true;
        video.play().then(() => {
          const before = video.currentTime;
          setTimeout(() => done({readyState: video.readyState, before, after: video.currentTime,
                                 error: video.error && video.error.message}), 1000);
        }, err => done({readyState: video.readyState, before: 0, after: 0, error: String(err)}));
        """
        self.driver.set_script_timeout(WAIT)
        result: dict[str, Any] = self.driver.execute_async_script(script, key)
        return result

    def api_token(self, username: str, password: str) -> str:
        """A JWT from Airflow's token endpoint, fetched by the page (same origin)."""
        script = """
        const done = arguments[arguments.length - 1];
        fetch('/auth/token', {method: 'POST', headers: {'Content-Type': 'application/json'},
                              body: JSON.stringify({username: arguments[0], password: arguments[1]})})
          .then(r => r.json()).then(body => done(body.access_token), err => done(String(err)));
        """
        self.driver.set_script_timeout(WAIT)
        token = str(self.driver.execute_async_script(script, username, password))
        assert token.count(".") == 2, token  # a JWT
        return token

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)  # the last frame painted
        self.driver.save_screenshot(str(path))
        return path

    def follow_extra_link(self, page: str) -> str:
        """Click the task's "Videos" extra link (its Details tab lists extra links); return its href."""
        self.driver.get(f"{self.base_url}{page}/details")
        anchor = self._find(
            "//a[normalize-space(.)='Videos' and contains(@href, '/videoquery/')]", clickable=True
        )
        href = str(anchor.get_attribute("href"))
        before = set(self.driver.window_handles)
        anchor.click()  # 3.3 opens an extra link in the same tab, 3.1 in a new one
        opened = set(self.driver.window_handles) - before
        if opened:
            self.driver.switch_to.window(opened.pop())
        return href
