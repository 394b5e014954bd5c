"""The connection's Test button: only a gateway's own JSON "unknown task" answer proves the API key.

The positive shapes come from the emulator (unified 400 ``task_not_exist``, vidu's 404) and a local server
answering OpenAI-style; the negative ones from a real local HTTP server playing a website, a bare 404, a
login redirect and an API router that does not know the path (the wrong base URL ``https://…/v1``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_videoquery.emulator import Emulator
from airflow_provider_videoquery.hooks.videoquery import VideoQueryHook
from tests.conftest import API_KEY, connection_json

pytestmark = pytest.mark.timeout(60)

Answer = tuple[int, dict[str, str], bytes]


class AnsweringServer:
    """A local HTTP server that gives every GET the same answer and records the paths asked for."""

    def __init__(self) -> None:
        self.answer: Answer = (200, {}, b"")
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.paths.append(self.path)
                status, headers, body = server.answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnsweringServer]:
    running = AnsweringServer()
    thread = threading.Thread(target=running.httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(running.url + "/v1", timeout=5))
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()
    thread.join(5)


def json_answer(status: int, body: object) -> Answer:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.mark.parametrize(("route", "code"), [("unified", "400"), ("vidu-native", "404"), ("openai", "400")])
def test_the_gateways_unknown_task_answer_proves_the_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, route: str, code: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_VIDEOQUERY_DEFAULT", connection_json(emulator.url, route=route))
    ok, message = VideoQueryHook().test_connection()
    assert ok, message
    assert "accepted the API key" in message
    assert f"HTTP {code}: task_not_exist" in message
    assert API_KEY not in message


def test_an_openai_style_not_found_error_proves_the_key(server: AnsweringServer) -> None:
    server.answer = json_answer(
        404,
        {
            "error": {
                "message": "Video with id 'videoquery-connection-test' not found.",
                "type": "invalid_request_error",
            }
        },
    )
    ok, message = VideoQueryHook(route="openai").test_connection()
    assert ok, message
    assert server.paths == ["/v1/v1/videos/videoquery-connection-test"]


NOT_A_GATEWAY = [
    pytest.param(
        (200, {"Content-Type": "text/html; charset=utf-8"}, b"<!doctype html><title>Welcome</title>"),
        ["HTTP 200 (text/html)", "an HTML page"],
        id="website-html-200",
    ),
    pytest.param(
        (404, {"Content-Type": "text/html"}, b"<html><body><h1>404 Not Found</h1></body></html>"),
        ["HTTP 404 (text/html)", "an HTML page"],
        id="html-404",
    ),
    pytest.param(
        (404, {"Content-Type": "text/plain"}, b"404 page not found"),
        ["HTTP 404 (text/plain)", "'404 page not found'", "not a video gateway's 'unknown task' answer"],
        id="bare-404",
    ),
    pytest.param(
        (302, {"Location": "/login?next=%2Fv1%2Fv1%2Fvideo%2Fquery"}, b""),
        ["HTTP 302", "a redirect to /login:", "login page"],
        id="login-redirect",
    ),
    pytest.param(
        json_answer(
            404,
            {"error": {"message": "Invalid URL (GET /v1/v1/video/query)", "type": "invalid_request_error"}},
        ),
        ["HTTP 404 (application/json)", "Invalid URL"],
        id="api-router-invalid-url",
    ),
    pytest.param(
        json_answer(404, {"detail": "Not Found"}),
        ["HTTP 404 (application/json)", "'Not Found'"],
        id="json-not-found",
    ),
]


@pytest.mark.parametrize(("answer", "said"), NOT_A_GATEWAY)
def test_anything_else_fails_saying_what_was_reached_and_what_to_fix(
    server: AnsweringServer, answer: Answer, said: list[str]
) -> None:
    server.answer = answer
    ok, message = VideoQueryHook().test_connection()
    assert not ok
    assert f"reached {server.url}/v1/v1/video/query " in message  # the URL, without the query string
    for words in [*said, "base URL", "without a path such as /v1"]:
        assert words in message
    assert API_KEY not in message
    assert server.paths == ["/v1/v1/video/query?id=videoquery-connection-test"]  # no redirect followed
