"""The ``mms`` front's /ping below HTTP's edge: :func:`why_not_ready` against a loopback stand-in of
multi-model-server's management and inference APIs (the answers 1.1.11 gives), and the supervising thread
(:class:`server._Watcher`) against a real child process that exits."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from dogbreed.serving import server
from dogbreed.serving.mms_edge import Health, Prober, why_not_ready
from dogbreed.serving.settings import MODEL_ANSWERED_HEADER


class _Mms(http.server.ThreadingHTTPServer):
    """``GET /models/model`` lists ``workers`` (their statuses); ``POST /invocations`` answers ``invocation``, a 200
    marked as our worker marks an answer its model gave where ``through_model`` (the request's headers in
    ``received``)."""

    def __init__(self):
        self.workers, self.invocation, self.posts = ["READY"], (200, b'{"predictions": []}'), 0
        self.through_model, self.received = True, []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 200 and self.server.through_model:
            self.send_header(MODEL_ANSWERED_HEADER, "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        workers = [{"id": str(i), "status": status} for i, status in enumerate(self.server.workers)]
        self._reply(200, json.dumps([{"modelName": "model", "workers": workers}]).encode())

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.posts += 1
        self.server.received.append({name.lower(): value for name, value in self.headers.items()})
        self._reply(*self.server.invocation)


@pytest.fixture
def mms():
    stand_in = _Mms()
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    stand_in.shutdown()
    stand_in.server_close()


def _port(mms) -> int:
    return mms.server_address[1]


def test_ready_workers_and_an_answered_probe_are_ready(mms):
    assert why_not_ready(None, _port(mms), Prober(_port(mms))) is None
    assert mms.posts == 1  # nothing answered lately: the probe went through a worker


def test_a_recent_answer_spares_the_probe(mms):
    prober = Prober(_port(mms))
    prober.note(200)
    assert why_not_ready(True, _port(mms), prober) is None and mms.posts == 0


def test_every_worker_busy_on_long_requests_is_still_ready_while_answers_come(mms):
    """With client requests in, an answer within twice the longest recent request is enough (at most the response
    timeout): a probe would queue behind them and turn /ping 503 on a server that answers. Idle, or past that
    window, the probe decides."""
    prober = Prober(_port(mms), busy_window_s=60)
    prober.end(200, prober.begin() - 12, True)  # a recent request took 12 s
    prober.begin()
    prober.answered_at = time.monotonic() - 20  # every worker busy for 20 s: within 2 x 12 s
    mms.invocation = (503, json.dumps({"code": 503, "message": "No worker is available"}).encode())
    assert why_not_ready(None, _port(mms), prober) is None and mms.posts == 0
    prober.answered_at = time.monotonic() - 30  # longer than twice any recent request
    assert "did not answer a probe request: 503" in why_not_ready(None, _port(mms), prober) and mms.posts == 1
    prober.end(504, time.monotonic(), False)
    prober.answered_at = time.monotonic() - 20  # idle: an answer 20 s old proves nothing now
    assert why_not_ready(None, _port(mms), prober) is not None and mms.posts == 2


def test_quick_requests_keep_the_busy_window_short_and_long_ones_within_the_timeout(mms):
    prober = Prober(_port(mms), busy_window_s=60)
    prober.end(200, prober.begin() - 0.05, True)
    prober.begin()
    assert prober.window_s() == 5  # requests of 50 ms: a server silent for 5 s is probed, as when idle
    prober.end(200, prober.begin() - 600, True)
    assert prober.window_s() == 60  # never past the response timeout


def test_only_answers_the_model_gave_are_a_sign_of_life(mms):
    """A 200 without the worker's mark (a JSON-lines body whose every record was refused: the model never ran)
    neither spares the probe nor sets how long requests take; one with it does."""
    prober = Prober(_port(mms), busy_window_s=60)
    prober.end(200, prober.begin() - 30, False)
    assert prober.answered_at is None and not prober.recent_s
    prober.end(200, prober.begin() - 0.1, True)
    assert prober.answered_at is not None and len(prober.recent_s) == 1


def test_a_probe_answered_without_the_model_is_not_ready(mms):
    mms.through_model = False
    why = why_not_ready(None, _port(mms), Prober(_port(mms)))
    assert "without its model" in why and MODEL_ANSWERED_HEADER in why


def test_a_loading_engine_is_not_ready_whatever_the_workers_say(mms):
    assert "engine is loading" in why_not_ready(False, _port(mms), Prober(_port(mms)))


def test_no_ready_worker_is_not_ready(mms):
    mms.workers = ["UNLOADING", "STOPPED"]
    assert why_not_ready(None, _port(mms), Prober(_port(mms))) == "no live multi-model-server worker"


def test_workers_listed_ready_that_do_not_answer_are_not_ready(mms):
    """multi-model-server 1.1.11 lists killed workers READY: only the probe tells."""
    mms.invocation = (503, json.dumps({"code": 503, "type": "ServiceUnavailableException",
                                       "message": "No worker is available to serve request"}).encode())
    why = why_not_ready(None, _port(mms), Prober(_port(mms)))
    assert why.startswith("multi-model-server did not answer a probe request: 503") and "No worker" in why


def test_a_management_api_that_does_not_answer_is_not_ready(mms):
    port = _port(mms)
    mms.shutdown()
    mms.server_close()
    assert "does not answer its management API" in why_not_ready(None, port, Prober(port))


def _watcher(process, supervisor, mms):
    edge = SimpleNamespace(should_exit=False)
    watcher = server._Watcher(process, supervisor, Health(), (_port(mms), Prober(_port(mms))), edge)
    watcher.wait_s = 0.1
    return watcher, edge


@pytest.mark.timeout(60)
def test_the_watcher_keeps_ping_current_and_stops_the_edge_when_mms_exits(mms):
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    watcher, edge = _watcher(process, None, mms)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        while watcher.health.reason is not None:  # multi-model-server starting, then ready
            thread.join(0.05)
        mms.workers = []
        while watcher.health.reason is None:
            thread.join(0.05)
        assert watcher.health.answer()[0] == 503 and not watcher.health.final
    finally:
        process.stdin.close()  # it exits 0 on its own: the front cannot go on
    thread.join(30)
    assert not thread.is_alive() and edge.should_exit and watcher.exit_code == 1
    assert watcher.health.final and "exited with 0" in watcher.health.reason


@pytest.mark.timeout(60)
def test_an_engine_that_cannot_come_back_is_final_and_stops_mms(mms):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    supervisor = SimpleNamespace(poll=lambda: "the model engine failed 3 starts: ModelError: bad weights", ready=False)
    watcher, edge = _watcher(process, supervisor, mms)
    watcher.run()
    assert watcher.exit_code == 1 and watcher.health.final and "bad weights" in watcher.health.reason
    assert process.poll() is not None  # its process group was stopped
