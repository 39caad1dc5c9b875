"""The HTTP edge of both fronts, over raw sockets on loopback: only the serving contract on the port, the method
checked on every path, bounded heads (431), read timeouts (408), request smuggling refused, and every error
the JSON ``{"error": …, "status": …}``. The server answers correctly after all of it."""

import json
import time

import pytest

from dogbreed.env import DOGBREED_NATIVE_PENDING, DOGBREED_READ_TIMEOUT_S
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, exchange, exchange_raw, local_server, post, probe_for

pytestmark = pytest.mark.slow

READ_TIMEOUT_S = 3
PENDING = 2


@pytest.fixture(scope="module", params=FRONTS)
def server(trained, tmp_path_factory, request):
    """(url, process, JPEG body, its top-1 index, front): a server that gives a client 3 s to send its request
    and admits 2 /invocations at once."""
    body, index = probe_for(trained["archive"])
    log = tmp_path_factory.mktemp("edge") / "server.log"
    env = {DOGBREED_READ_TIMEOUT_S: str(READ_TIMEOUT_S), DOGBREED_NATIVE_PENDING: str(PENDING)}
    with local_server(trained["archive"], free_port(), log, env=env, front=request.param) as (url, process):
        yield url, process, body, index, request.param


def _is_error_json(status: int, headers: dict, body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return (headers.get("content-type", "").startswith("application/json") and set(answer) == {"error", "status"}
            and answer["status"] == status and len(answer["error"]) > 5)


def _request(method: str, target: str, extra: bytes = b"", body: bytes = b"") -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if method in ("POST", "PUT") else b""
    return b"%s %s HTTP/1.1\r\nHost: x\r\n%s%sConnection: close\r\n\r\n%s" % (
        method.encode(), target.encode(), length, extra, body)


def _answers_correctly(server) -> None:
    url, process, body, index, _ = server
    status, answer, _ = post(url, body)
    assert status == 200 and answer["predictions"][0][0]["index"] == index, answer
    assert process.poll() is None


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/invocations", "POST"), ("PUT", "/invocations", "POST"), ("DELETE", "/invocations", "POST"),
    ("POST", "/ping", "GET, HEAD"), ("PUT", "/ping", "GET, HEAD"), ("DELETE", "/ping", "GET, HEAD"),
    ("POST", "/", "GET, HEAD"), ("PUT", "/", "GET, HEAD"),
])
def test_the_method_is_checked_on_every_path(server, method, path, allowed):
    status, headers, body, _ = exchange(server[0], _request(method, path))
    assert status == 405 and _is_error_json(status, headers, body), body
    assert headers.get("allow") == allowed


def test_head_ping_is_a_ping_without_a_body(server):
    status, headers, body, _ = exchange(server[0], _request("HEAD", "/ping"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.parametrize("request_bytes", [
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /%ff%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET ../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"BREW /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /ping HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS hello on the plain port
], ids=["options-star", "management-path", "bad-percent", "non-ascii", "relative", "unknown-method", "http-9.9",
        "tls-hello"])
def test_odd_requests_get_a_4xx_in_json(server, request_bytes):
    status, headers, body, _ = exchange(server[0], request_bytes)
    assert 400 <= status < 500 and _is_error_json(status, headers, body), (status, body[:300])


def test_an_8_mib_header_is_refused_with_431_before_it_is_read(server):
    huge = b"X-Big: " + b"a" * (8 << 20) + b"\r\n"
    start = time.monotonic()
    status, headers, body, closed = exchange(server[0], _request("GET", "/ping", huge))
    assert status == 431 and _is_error_json(status, headers, body) and closed
    assert time.monotonic() - start < 10
    _answers_correctly(server)


def test_too_many_headers_get_431(server):
    many = b"".join(b"X-H%d: 1\r\n" % i for i in range(300))
    status, headers, body, closed = exchange(server[0], _request("GET", "/ping", many))
    assert status == 431 and _is_error_json(status, headers, body) and closed


def test_a_head_that_never_ends_gets_408_at_the_read_timeout(server):
    start = time.monotonic()
    status, headers, body, closed = exchange(server[0], b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Ty",
                                             timeout=READ_TIMEOUT_S + 20)
    assert status == 408 and _is_error_json(status, headers, body) and closed
    assert READ_TIMEOUT_S - 0.5 < time.monotonic() - start < READ_TIMEOUT_S + 10


def test_a_body_that_never_arrives_gets_408_at_the_read_timeout(server):
    start = time.monotonic()
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n"
    status, headers, body, closed = exchange(server[0], head + b"\xff\xd8", timeout=READ_TIMEOUT_S + 20)
    assert status == 408 and _is_error_json(status, headers, body) and closed
    assert READ_TIMEOUT_S - 0.5 < time.monotonic() - start < READ_TIMEOUT_S + 10


def test_an_unsupported_content_type_gets_415_in_json(server):
    status, headers, body, _ = exchange(server[0], _request("POST", "/invocations", b"Content-Type: text/csv\r\n", b"1,2"))
    assert status == 415 and _is_error_json(status, headers, body), body


def test_an_oversized_body_gets_413_in_json_before_it_is_read(server):
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 7340032\r\n\r\n"
    status, headers, body, _ = exchange(server[0], head)
    assert status == 413 and _is_error_json(status, headers, body), body


def test_request_smuggling_is_refused_and_the_connection_closed(server):
    """Content-Length and Transfer-Encoding together: a 400, and the request hidden in the body is never answered."""
    hidden = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
    smuggled = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s" % (5 + len(hidden), hidden))
    status, headers, body, closed = exchange(server[0], smuggled)
    assert status == 400 and _is_error_json(status, headers, body) and closed
    received, _ = exchange_raw(server[0], smuggled)  # the whole stream: no second answer after the 400's body
    assert received.count(b"HTTP/1.1 ") == 1 and b"Healthy" not in received, received[:500]


@pytest.mark.parametrize("request_bytes", [
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffff\r\n",
    b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nabcd\r\n",
    b"GET /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
], ids=["chunk-size-junk", "chunk-size-overflow", "chunk-without-crlf", "te-identity"])
def test_a_malformed_body_gets_its_400_not_a_silent_close(server, request_bytes):
    status, headers, body, closed = exchange(server[0], request_bytes, timeout=READ_TIMEOUT_S + 20)
    assert status == 400 and _is_error_json(status, headers, body) and closed, body
    _answers_correctly(server)


def test_an_upgrade_request_with_a_body_is_refused_not_answered_for_an_empty_body(server):
    url, _, jpeg, _, _ = server
    upgrade = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s"
               % (len(jpeg), jpeg))
    status, headers, body, closed = exchange(url, upgrade, timeout=READ_TIMEOUT_S + 20)
    assert status == 400 and _is_error_json(status, headers, body) and closed, body
    assert "Upgrade" in json.loads(body)["error"]
    plain = exchange(url, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", timeout=10)
    assert plain[0] == 200  # no body: served as plain HTTP/1.1
    _answers_correctly(server)


def test_a_bad_pipelined_head_is_never_sent_as_the_answer_to_the_request_before_it(server):
    """Request 1 is good and still running when request 2's head is refused (too many headers): the 431 would be
    read as request 1's answer. The connection closes instead; request 1 gets its real answer or none."""
    url, _, jpeg, index, _ = server
    good = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s"
            % (len(jpeg), jpeg))
    bad = b"GET /ping HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(300)) + b"\r\n"
    received, closed = exchange_raw(url, good + bad, timeout=READ_TIMEOUT_S + 30)
    assert closed and not received.startswith(b"HTTP/1.1 431"), received[:300]
    if received:  # request 1's own answer
        assert received.startswith(b"HTTP/1.1 200") and b'"index": %d' % index in received, received[:300]
    _answers_correctly(server)


@pytest.mark.parametrize("path", ["/ping", "/nowhere", "/execution-parameters"])
def test_a_body_nobody_reads_closes_the_connection_after_the_answer(server, path):
    """Answered without reading the body: a client trickling a long body would else hold the connection (and a
    place under the connection cap) past every timeout."""
    head = b"GET %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nx" % path.encode()
    start = time.monotonic()
    status, headers, body, closed = exchange(server[0], head, timeout=READ_TIMEOUT_S + 20)
    assert status in (200, 404) and headers.get("connection") == "close" and closed, (status, headers)
    assert time.monotonic() - start < READ_TIMEOUT_S + 10


class _Slow:
    """A client that sends its head and half its body, then nothing."""

    def __init__(self, url: str, body: bytes):
        import socket
        from urllib.parse import urlsplit

        address = urlsplit(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=READ_TIMEOUT_S + 30)
        self.sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                          b"\r\n%s" % (len(body), body[: len(body) // 2]))

    def status(self) -> int:
        received = b""
        while part := self.sock.recv(65536):
            received += part
        self.sock.close()
        return int(received.split(b" ", 2)[1])


def test_slow_clients_hold_the_pending_cap_only_until_their_read_timeout(server):
    url, _, body, index, _ = server
    slow = [_Slow(url, body) for _ in range(PENDING)]
    time.sleep(0.5)  # both admitted, waiting for their bodies
    status, answer, headers = post(url, body)
    assert status == 503 and headers.get("retry-after") and answer["status"] == 503, answer
    assert [client.status() for client in slow] == [408] * PENDING  # released at the read timeout
    _answers_correctly(server)
