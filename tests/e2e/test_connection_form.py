"""The connection form in a real browser: Airflow's React UI, headless Chromium, a real API server.

Add Connection → type "Video Query" → the form shows our labels, placeholders and real defaults (not a
literal ``null``) → Save → the stored ``extra`` is exactly what the form sent, and the hook reads it as
the defaults → the row's Test button, the ``airflow connections test`` command, and a DAG run that uses
the saved connection against the emulator.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test-e2e`` installs them) and selenium (the
test extra). A screenshot of the filled form is kept in ``artifacts/`` (gitignored); its path is printed.
Run with ``VIDEOQUERY_E2E=1 .venv/bin/python -m pytest -m '' -s tests/e2e/test_connection_form.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_videoquery.hooks._http import GatewayConfig
from tests.e2e.airflow_cluster import AirflowCluster, Emulator, tail
from tests.e2e.pages import Page

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("VIDEOQUERY_E2E") != "1", reason="a real Airflow deployment: set VIDEOQUERY_E2E=1"
    ),
    pytest.mark.timeout(600),
]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CONN_ID = "videoquery_ui"
DAG_ID = "videoquery_ui_connection_e2e"
RUN_ID = "ui_run_1"

#: What an untouched form stores: the hook's defaults, and null (= not set) for the optional texts.
UNTOUCHED_EXTRA = {
    "route": "unified",
    "timeout": 60,
    "connect_timeout": 10,
    "extra_headers": None,
    "verify_ssl": True,
    "verify_download_ssl": True,
    "proxy": None,
    "allowed_download_hosts": None,
}
#: Airflow 3.3.2's API server refuses the row's Test for a connection with no port: the browser
#: sends ``port: 0`` and the masked password, the server reads 0 as another endpoint (apache/airflow#73298).
PORTLESS_TEST_REFUSAL = "The host or port to test differs from the stored connection."

DAG_SOURCE = f'''
"""The DAG of tests/e2e/test_connection_form.py: create and store a video with the UI-made connection."""
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_videoquery.operators.videoquery import VideoCreateOperator, VideoDownloadOperator

with DAG(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False) as dag:
    create = VideoCreateOperator(
        task_id="create", model="sora-2", prompt="a kite over a beach", videoquery_conn_id="{CONN_ID}"
    )
    VideoDownloadOperator(
        task_id="download",
        video_task_id=create.output,
        destination="{{{{ dag_run.conf['destination'] }}}}",
        videoquery_conn_id="{CONN_ID}",
        deferrable=True,
        poll_interval=2,
        timeout=300,
    )
'''


def test_the_connection_form_in_a_browser(tmp_path: Path, browser: Any) -> None:
    api_key = f"sk-ui-{secrets.token_hex(12)}"
    destination = tmp_path / "videos"
    with Emulator.run(tmp_path / "emulator.log", "--api-key", api_key, "--polls", "3") as emu:
        cluster = AirflowCluster.create(tmp_path / "airflow", {"AIRFLOW__CORE__TEST_CONNECTION": "Enabled"})
        (cluster.home / "dags" / f"{DAG_ID}.py").write_text(DAG_SOURCE)
        passed = False
        try:
            with cluster.running():
                form = ConnectionForm(browser, f"http://127.0.0.1:{cluster.api_port}")
                form.open_add_connection()
                form.check_fields()
                form.fill(CONN_ID, emu.url, api_key)
                for section, name in (("Standard Fields", "standard"), ("Extra Fields", "extra")):
                    shot = form.screenshot(section, ARTIFACTS / f"connection-form-{name}.png")
                    print(f"\nscreenshot of the connection form ({section}): {shot}")
                form.save(CONN_ID)

                stored = _stored_connection(cluster, CONN_ID)
                assert stored["conn_type"] == "videoquery"
                assert stored["host"] == emu.url
                assert stored["port"] is None
                assert stored["password"] == api_key
                assert stored["extra"] == UNTOUCHED_EXTRA
                untouched = GatewayConfig.from_connection(CONN_ID, emu.url, api_key, stored["extra"])
                assert untouched == GatewayConfig.from_connection(CONN_ID, emu.url, api_key, {})

                _check_test_button(form, api_key)
                checked = cluster.airflow("connections", "test", CONN_ID)
                assert "Connection success!" in checked, checked

                cluster.wait_for(lambda: cluster.dag_parsed(DAG_ID), 180, f"{DAG_ID} to be parsed")
                cluster.trigger(DAG_ID, RUN_ID, {"destination": f"file://{destination}/"})
                state = cluster.wait_for_run(DAG_ID, RUN_ID, 240)
            assert state == "success", cluster.task_states(DAG_ID, RUN_ID)
            created = cluster.xcom(DAG_ID, RUN_ID, "create")
            stored_file = destination / (created.replace(":", "_") + ".mp4")
            assert cluster.xcom(DAG_ID, RUN_ID, "download") == f"file://{stored_file}"
            assert stored_file.read_bytes()[4:8] == b"ftyp"
            passed = True
        finally:
            if not passed:
                print(cluster.diagnostics())
                print(f"==== emulator.log ====\n{tail(emu.log)}")


def _check_test_button(form: ConnectionForm, api_key: str) -> None:
    """The row's Test button: the gateway's own answer, or 3.3.2's refusal of portless connections."""
    body, status, detail, toast = form.test_row(CONN_ID)
    assert api_key not in json.dumps(body)  # the browser only ever holds the masked key
    if status == 400:
        assert body["password"] == "***"
        assert body["port"] == 0
        assert PORTLESS_TEST_REFUSAL in detail
        assert "Bad Request" in toast
        print("Test button: refused by this Airflow's API server (port 0 vs none; apache/airflow#73298)")
    else:
        assert status == 200, (status, detail)
        assert "accepted the API key" in toast, toast


def _stored_connection(cluster: AirflowCluster, conn_id: str) -> dict[str, Any]:
    """The connection row, decrypted with the cluster's Fernet key."""
    from cryptography.fernet import Fernet

    fernet = Fernet(cluster.env["AIRFLOW__CORE__FERNET_KEY"].encode())
    rows = cluster.query(
        "SELECT conn_type, host, port, password, is_encrypted, extra, is_extra_encrypted "
        "FROM connection WHERE conn_id = ?",
        conn_id,
    )
    assert rows, f"no connection {conn_id!r} was stored"
    conn_type, host, port, password, encrypted, extra, extra_encrypted = rows[0]
    if encrypted and password:
        password = fernet.decrypt(password.encode()).decode()
    if extra_encrypted and extra:
        extra = fernet.decrypt(extra.encode()).decode()
    return {
        "conn_type": conn_type,
        "host": host,
        "port": port,
        "password": password,
        "extra": json.loads(extra) if extra else {},
    }


class ConnectionForm(Page):
    """The admin pages of Airflow's UI, as a user clicks them (selectors read off the live page)."""

    def _dialog(self) -> str:
        return "//*[@role='dialog']"

    def open_connections(self) -> None:
        # The first visit signs in (all users are admins here) and may land on the home page.
        self.driver.get(f"{self.base_url}/")
        self._find("//button[normalize-space(.)='Admin']")
        self.driver.get(f"{self.base_url}/connections")

    def open_add_connection(self) -> None:
        self.open_connections()
        self._find("//button[normalize-space(.)='Add Connection']", clickable=True).click()
        self._find(f"{self._dialog()}//input[@name='connection_id']")

    def _choose_type(self, hook_name: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self._find(f"{self._dialog()}//input[@role='combobox']", clickable=True)
        box.send_keys("Video Query")
        self._find(f"//*[@role='option' and normalize-space(.)='{hook_name}']")
        box.send_keys(Keys.ENTER)
        self._find(f"{self._dialog()}//*[normalize-space(.)='{hook_name}']")

    def _label_for(self, text: str) -> Any:
        return self._find(f"{self._dialog()}//label[normalize-space(.)='{text}']")

    def _open_section(self, title: str) -> None:
        button = self._find(f"{self._dialog()}//button[normalize-space(.)='{title}']", clickable=True)
        if button.get_attribute("aria-expanded") != "true":
            button.click()

    def check_fields(self) -> None:
        """Our labels and placeholders, hidden fields gone, and every extra field at its real default."""
        from selenium.webdriver.common.by import By

        self._choose_type("Video Query (AI video gateway)")
        self._open_section("Standard Fields")
        host = self.driver.find_element(By.XPATH, f"{self._dialog()}//input[@name='host']")
        password = self.driver.find_element(By.XPATH, f"{self._dialog()}//input[@name='password']")
        assert host.get_attribute("placeholder") == "https://yunwu.ai"
        assert password.get_attribute("placeholder") == "sk-…"
        assert password.get_attribute("type") == "password"
        self._label_for("Base URL")
        self._label_for("API key")
        for hidden in ("port", "login", "schema"):
            assert not self.driver.find_elements(By.XPATH, f"{self._dialog()}//input[@name='{hidden}']")

        self._open_section("Extra Fields")
        for label in (
            "Default route",
            "Read timeout (s)",
            "Connect timeout (s)",
            "Extra headers (JSON)",
            "Verify TLS certificates",
            "Verify TLS of video hosts",
            "Proxy URL",
            "Allowed download hosts",
        ):
            self._label_for(label)
        route = self._find(f"{self._dialog()}//*[@id='element_route']")
        assert route.text == "unified", route.text  # the real default, where a literal "null" was
        for name, value in (("timeout", "60"), ("connect_timeout", "10")):
            field = self.driver.find_element(By.XPATH, f"{self._dialog()}//input[@name='element_{name}']")
            assert field.get_attribute("value") == value, (name, field.get_attribute("value"))
        for name in ("verify_ssl", "verify_download_ssl"):
            switch = self.driver.find_element(By.XPATH, f"{self._dialog()}//input[@name='element_{name}']")
            assert switch.is_selected(), name
        for name in ("extra_headers", "proxy", "allowed_download_hosts"):
            field = self.driver.find_element(By.XPATH, f"{self._dialog()}//input[@name='element_{name}']")
            assert field.get_attribute("value") == ""
        dialog = self._find(self._dialog()).text
        assert "null" not in dialog, dialog
        assert "Turn off only for a self-signed gateway you trust." in dialog

    def fill(self, conn_id: str, host: str, api_key: str) -> None:
        from selenium.webdriver.common.by import By

        conn_id_input = f"{self._dialog()}//input[@name='connection_id']"
        self.driver.find_element(By.XPATH, conn_id_input).send_keys(conn_id)
        self._open_section("Standard Fields")
        self._find(f"{self._dialog()}//input[@name='host']").send_keys(host)
        self._find(f"{self._dialog()}//input[@name='password']").send_keys(api_key)

    def screenshot(self, section: str, path: Path) -> Path:
        """The dialog with one section open (it shows one at a time)."""
        self._open_section(section)
        time.sleep(0.5)  # the accordion's opening animation
        path.parent.mkdir(parents=True, exist_ok=True)
        self._find(self._dialog()).screenshot(str(path))
        return path

    def save(self, conn_id: str) -> None:
        self._find(f"{self._dialog()}//button[normalize-space(.)='Save']", clickable=True).click()
        self._find(f"//table//*[normalize-space(.)='{conn_id}']")

    def test_row(self, conn_id: str) -> tuple[dict[str, Any], int, str, str]:
        """Click the row's Test button; return what the browser sent, the answer, and the toast."""
        self.open_connections()
        self.driver.get_log("performance")  # drop what came before
        row = f"//tr[.//*[normalize-space(.)='{conn_id}']]"
        self._find(f"{row}//button[@aria-label='Test Connection']", clickable=True).click()
        toast = self._find("//*[@data-scope='toast' and @data-part='root']").text
        body, status, request_id = None, 0, ""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                if params["request"]["url"].endswith("/api/v2/connections/test"):
                    body, request_id = json.loads(params["request"]["postData"]), params["requestId"]
            elif message["method"] == "Network.responseReceived" and params["requestId"] == request_id:
                status = params["response"]["status"]
        assert body is not None, "the browser sent no connection test"
        assert status, "the connection test got no answer"
        answer = self.driver.execute_cdp_cmd("Network.getResponseBody", {"requestId": request_id})
        return body, status, answer["body"], toast
