"""The ``mms`` front end to end (the real launcher, multi-model-server, its workers and the engine on loopback):

- a request head the edge accepts (up to 16 KB) reaches the worker, though netty takes 8 KB;
- ``GET /execution-parameters`` never advertises more than the edge accepts (SAGEMAKER_MAX_REQUEST_SIZE=6500000 is
  6 whole MB, not 7);
- JSON lines that never reach the model do not keep ``/ping`` 200 while the engine is wedged (SIGSTOP from outside).
"""

import json
import signal
import threading
import time

import psutil
import pytest

from dogbreed.env import DOGBREED_SERVE_ENGINE, SAGEMAKER_MAX_REQUEST_SIZE
from dogbreed.serving.settings import MIB, MODEL_ANSWERED_HEADER
from tests.conftest import free_port
from tests.serving_helpers import get, local_server, post, post_oversized, probe_for

pytestmark = pytest.mark.slow

MAX_REQUEST_SIZE = 6_500_000  # 6.2 MiB: rounded up, the front would advertise 7
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """(url, launcher process, JPEG body, its top-1 index): the mms front with its engine and two workers."""
    body, index = probe_for(trained["archive"])
    log = tmp_path_factory.mktemp("mms-truth") / "server.log"
    env = {DOGBREED_SERVE_ENGINE: "on", SAGEMAKER_MAX_REQUEST_SIZE: str(MAX_REQUEST_SIZE)}
    with local_server(trained["archive"], free_port(), log, workers=2, env=env, front="mms") as (url, process):
        yield url, process, body, index


def _ping(url: str) -> int | None:
    try:
        return get(url, "/ping", timeout=5)[0]
    except OSError:
        return None


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pad", [8_200, 15_000])
def test_a_head_the_edge_accepts_reaches_the_worker(server, pad):
    """netty answers a head over 8 KB "400 Invalid HTTP message"; the edge takes 16 KB and forwards only what the
    worker reads (the custom attributes among them: top_k=3 holds)."""
    url, _, body, index = server
    status, answer, headers = post(url, body, headers={"X-Pad": "p" * pad, CUSTOM_ATTRIBUTES: "top_k=3"})
    assert status == 200, answer
    assert answer["predictions"][0][0]["index"] == index and len(answer["predictions"][0]) == 3
    assert MODEL_ANSWERED_HEADER.lower() not in headers  # the worker's mark is the edge's alone


@pytest.mark.timeout(300)
def test_the_payload_advertised_is_accepted(server):
    url, _, _, _ = server
    status, raw = get(url, "/execution-parameters")
    advertised = json.loads(raw)["MaxPayloadInMB"]
    assert status == 200 and advertised == MAX_REQUEST_SIZE // MIB
    status, answer, _ = post(url, b"\xff" * (advertised * MIB))  # not a JPEG: refused, but not for its size
    assert status != 413 and status < 500, answer
    status, answer = post_oversized(url, MAX_REQUEST_SIZE + 1)  # refused by its length, before it is read
    assert status == 413, answer


class _Junk(threading.Thread):
    """POSTs ``{}`` as JSON lines once a second (every record refused: a 200 that never runs the model)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.statuses, self.stop = url, [], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.statuses.append(post(self.url, b"{}\n", content_type="application/jsonlines", timeout=30)[0])
            except OSError:
                self.statuses.append(None)


def _engine(process) -> psutil.Process:
    engines = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "dogbreed.serving.batcher" in " ".join(p.cmdline())]
    assert len(engines) == 1, engines
    return engines[0]


def _until(url: str, wanted: int, seconds: float) -> tuple[float, list]:
    start, seen = time.monotonic(), []
    while time.monotonic() - start < seconds:
        seen.append(_ping(url))
        if seen[-1] == wanted:
            return time.monotonic() - start, seen
        time.sleep(0.2)
    return time.monotonic() - start, seen


@pytest.mark.timeout(600)
def test_junk_json_lines_do_not_keep_ping_green_over_a_stopped_engine(server):
    """Without the junk /ping turns 503 about 20 s after the engine stops (a probe image times out after 15 s).
    The junk is answered 200 all along, by the workers alone: it must not count as the model answering."""
    url, process, body, index = server
    assert _ping(url) == 200
    engine, junk = _engine(process), _Junk(url)
    engine.send_signal(signal.SIGSTOP)
    try:
        junk.start()
        took, seen = _until(url, 503, 45)
        junk.stop.set()
        junk.join(60)
        assert seen[-1] == 503, f"/ping still {seen[-5:]} after {took:.0f} s of junk over a stopped engine"
        assert junk.statuses and all(status == 200 for status in junk.statuses), junk.statuses
    finally:
        junk.stop.set()
        engine.send_signal(signal.SIGCONT)
    took, seen = _until(url, 200, 180)
    assert seen[-1] == 200, seen[-5:]
    status, answer, _ = post(url, body, timeout=90)
    assert status == 200 and answer["predictions"][0][0]["index"] == index, answer
