"""An attacker on the inference port: multi-model-server's management API (register a model from a URL, unload it,
list the workers) must not be there, on either front. The server keeps answering correctly afterwards."""

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port
from tests.serving_helpers import FRONTS, get, local_server, post, probe_for

pytestmark = pytest.mark.slow

MANAGEMENT_CALLS = [
    ("GET", "/models"),
    ("GET", "/models/model"),
    ("PUT", "/models/model?min_worker=0&synchronous=true"),
    ("DELETE", "/models/model"),
    ("DELETE", "/models/model/1.0"),
]


class _Recorder(BaseHTTPRequestHandler):
    """Serves a would-be model archive and remembers every request that reached it."""

    hits: list = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def archive_host():
    handler = type("Recorder", (_Recorder,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    server.shutdown()


def _call(url: str, method: str, path: str) -> int:
    request = urllib.request.Request(url + path, method=method, data=b"" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(600)
@pytest.mark.parametrize("front", FRONTS)
def test_management_api_is_not_on_the_inference_port(trained, tmp_path, archive_host, front):
    host, hits = archive_host
    body, index = probe_for(trained["archive"])
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front=front) as (url, _):
        register = (f"/models?url={host}/evil.mar&model_name=evil&handler=evil:handle&initial_workers=1"
                    "&synchronous=true")
        assert _call(url, "POST", register) in (404, 405)
        for method, path in MANAGEMENT_CALLS:
            assert _call(url, method, path) in (404, 405), (method, path)
        assert hits == [], f"the server fetched {hits}"
        status, answer, _ = post(url, body)  # the model is still there and answers
        assert status == 200 and answer["predictions"][0][0]["index"] == index
        assert get(url)[0] == 200
