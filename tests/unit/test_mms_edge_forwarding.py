"""What the ``mms`` front's edge forwards to multi-model-server and what it takes back, over real HTTP on loopback:
the edge (uvicorn, :class:`MmsProxy`) in front of the stand-in of multi-model-server's APIs in test_mms_health.

- Only the headers the worker reads are forwarded (netty refuses a head over 8 KB that the edge accepts).
- Only an answer the worker marks as its model's is a sign of life, and the mark never reaches the client."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from dogbreed.serving.edge import EdgeLimits, edge_server
from dogbreed.serving.mms_edge import FORWARDED_VALUE_BYTES, Health, MmsProxy, Prober
from dogbreed.serving.settings import MODEL_ANSWERED_HEADER
from tests.conftest import free_port
from tests.unit.test_mms_health import mms  # noqa: F401 (the stand-in's fixture)

pytestmark = pytest.mark.timeout(60)

JPEG = b"\xff\xd8\xff\xe0 not decoded by the stand-in"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
# http.client adds these to every request it sends: the edge's own, not the client's
HTTP_CLIENTS_OWN = {"host", "content-length", "accept-encoding"}


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


def test_only_the_headers_the_worker_reads_are_forwarded(edge, mms):  # noqa: F811
    """A client's other headers (a pad of 12 KB: the edge takes 16 KB, netty 8 KB) never reach multi-model-server."""
    port, _ = edge
    sent = {"Content-Type": "image/jpeg", "Accept": "application/json", CUSTOM_ATTRIBUTES: "top_k=3",
            "X-Pad": "p" * 12_000, "Cookie": "a=b", "Expect": "100-continue", "Connection": "keep-alive"}
    status, _, _ = _post(port, sent)
    assert status == 200
    assert mms.received[-1].keys() - HTTP_CLIENTS_OWN == {"content-type", "accept", CUSTOM_ATTRIBUTES.lower()}
    assert mms.received[-1][CUSTOM_ATTRIBUTES.lower()] == "top_k=3"
    assert mms.received[-1]["content-type"] == "image/jpeg" and mms.received[-1]["accept"] == "application/json"


@pytest.mark.parametrize("name", ["Accept", "Content-Type", CUSTOM_ATTRIBUTES])
def test_a_forwarded_header_too_long_for_netty_is_a_431_with_its_name(edge, mms, name):  # noqa: F811
    port, _ = edge
    headers = {"Content-Type": "image/jpeg", name: "x" * (FORWARDED_VALUE_BYTES + 1)}
    status, _, answer = _post(port, headers)
    assert status == 431 and answer["status"] == 431 and name.lower() in answer["error"], answer
    assert mms.posts == 0  # refused at the edge
    assert _post(port, {"Content-Type": "image/jpeg", name: "x" * FORWARDED_VALUE_BYTES})[0] == 200


def test_a_200_without_the_models_mark_is_no_sign_of_life(edge, mms):  # noqa: F811
    """A JSON-lines body whose every record is refused is answered 200 without the model: /ping must not count it,
    even where the client sends the mark itself."""
    port, prober = edge
    mms.through_model = False
    status, headers, _ = _post(port, {"Content-Type": "application/jsonlines", MODEL_ANSWERED_HEADER: "1"}, b"{}\n")
    assert status == 200 and prober.answered_at is None
    assert MODEL_ANSWERED_HEADER.lower() not in mms.received[-1]  # a client's copy is not forwarded
    assert MODEL_ANSWERED_HEADER.lower() not in headers


def test_an_answer_the_model_gave_counts_and_its_mark_is_stripped(edge, mms):  # noqa: F811
    port, prober = edge
    status, headers, _ = _post(port, {"Content-Type": "image/jpeg"})
    assert status == 200 and prober.answered_at is not None and len(prober.recent_s) == 1
    assert MODEL_ANSWERED_HEADER.lower() not in headers
