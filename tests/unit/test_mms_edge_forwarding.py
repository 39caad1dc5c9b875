"""What the ``mms`` front's edge forwards to multi-model-server and what it takes back, over real HTTP on loopback:
the edge (uvicorn, :class:`MmsProxy`) in front of the stand-in of multi-model-server's APIs in test_mms_health.

- Only an answer the worker marks as its model's is a sign of life, and the mark never reaches the client."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from dogbreed.serving.edge import EdgeLimits, edge_server
from dogbreed.serving.mms_edge import Health, MmsProxy, Prober
from dogbreed.serving.settings import MODEL_ANSWERED_HEADER
from tests.conftest import free_port
from tests.unit.test_mms_health import mms  # noqa: F401 (the stand-in's fixture)

pytestmark = pytest.mark.timeout(60)

JPEG = b"\xff\xd8\xff\xe0 not decoded by the stand-in"


@pytest.fixture
def edge(mms):  # noqa: F811
    """(port, prober) of a ready mms front's edge forwarding to the stand-in."""
    prober = Prober(mms.server_address[1])
    app = MmsProxy(EdgeLimits(max_body_bytes=1 << 20), Health(None), prober, timeout_s=10)
    port = free_port()
    server = edge_server(app, "127.0.0.1", port, grace_s=1)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield port, prober
    server.should_exit = True
    thread.join(10)
    app.close()


def _post(port: int, headers: dict, body: bytes = JPEG) -> tuple[int, dict, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw)
    finally:
        connection.close()


def test_a_200_without_the_models_mark_is_no_sign_of_life(edge, mms):  # noqa: F811
    """A JSON-lines body whose every record is refused is answered 200 without the model: /ping must not count it,
    even where the client sends the mark itself."""
    port, prober = edge
    mms.through_model = False
    status, headers, _ = _post(port, {"Content-Type": "application/jsonlines", MODEL_ANSWERED_HEADER: "1"}, b"{}\n")
    assert status == 200 and prober.answered_at is None
    assert MODEL_ANSWERED_HEADER.lower() not in headers


def test_an_answer_the_model_gave_counts_and_its_mark_is_stripped(edge, mms):  # noqa: F811
    port, prober = edge
    status, headers, _ = _post(port, {"Content-Type": "image/jpeg"})
    assert status == 200 and prober.answered_at is not None and len(prober.recent_s) == 1
    assert MODEL_ANSWERED_HEADER.lower() not in headers
