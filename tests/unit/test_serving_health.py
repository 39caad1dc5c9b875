"""What /ping is made of, without a server: the native engine's liveness, the multi-model-server front's health
and its error shape, and the default front."""

import json
import threading
import time
from types import SimpleNamespace

import pytest

from dogbreed.env import DOGBREED_SERVER
from dogbreed.serving import server
from dogbreed.serving.batcher import EngineHealth
from dogbreed.serving.mms_edge import Health, as_error_json
from dogbreed.serving.native_app import Model
from dogbreed.serving.native_engine import FAILED_BATCHES, InProcessPredictor


def _engine():
    return SimpleNamespace(health=EngineHealth())  # the batch thread's record; no model: only the health is under test


def _predictor(thread: threading.Thread, engines: int = 1) -> InProcessPredictor:
    predictor = InProcessPredictor.__new__(InProcessPredictor)
    predictor.engines, predictor.wait_s = [(_engine(), thread) for _ in range(engines)], 30.0
    return predictor


@pytest.fixture
def alive():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    yield thread
    stop.set()


def test_an_engine_thread_that_ended_is_unhealthy():
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert "stopped" in _predictor(thread).unhealthy()


def test_a_forward_pass_past_twice_the_wait_bound_is_a_stuck_engine_and_its_end_clears_it(alive):
    predictor = _predictor(alive)
    health = predictor.engines[0][0].health
    assert predictor.unhealthy() is None
    health.running_since = time.monotonic() - 59  # within twice the bound: a slow batch, not a wedge
    assert predictor.unhealthy() is None
    health.running_since = time.monotonic() - 61
    assert "stuck" in predictor.unhealthy() and "stuck" in predictor.unhealthy(failures=False)
    health.running_since = None
    assert predictor.unhealthy() is None


def test_batches_that_all_fail_turn_ping_503_and_one_success_clears_it(alive):
    predictor = _predictor(alive, engines=2)
    health = predictor.engines[1][0].health
    for _ in range(FAILED_BATCHES - 1):
        health.failed("RuntimeError: CUDA error: an illegal memory access was encountered")
    assert predictor.unhealthy() is None
    health.failed("RuntimeError: CUDA error: an illegal memory access was encountered")
    why = predictor.unhealthy()
    assert why.startswith("engine 1:") and "illegal memory access" in why and f"last {FAILED_BATCHES}" in why
    assert predictor.unhealthy(failures=False) is None  # a request still goes through: the next batch may succeed
    health.succeeded()
    assert predictor.unhealthy() is None


class _Unhealthy:
    def __init__(self, why):
        self.why, self.asked = why, []

    def unhealthy(self, failures=True):
        self.asked.append(failures)
        return self.why if failures else None


def test_the_native_fronts_ping_says_what_the_engine_says():
    """Fails where Model.not_ready ignores the predictor's unhealthy(): a wedged engine would stay 200."""
    model = Model()
    assert model.not_ready()[0] == 503  # loading
    model.predictor = _Unhealthy(None)
    assert model.not_ready() is None
    model.predictor = _Unhealthy("the model engine's last 3 batches failed")
    status, body, _ = model.not_ready()
    assert status == 503 and json.loads(body)["error"] == "the model engine's last 3 batches failed"
    assert model.not_ready(request=True) is None and model.predictor.asked == [True, False]


def test_health_is_healthy_only_without_a_reason_and_a_final_reason_sticks():
    health = Health()
    status, body, headers = health.answer()
    assert status == 503 and json.loads(body)["status"] == 503 and headers["retry-after"]
    health.set(None)
    assert health.answer() is None
    health.set("the model engine cannot load the model", final=True)
    health.set(None)
    status, body, headers = health.answer()
    assert status == 503 and "cannot load" in json.loads(body)["error"] and "retry-after" not in headers


def test_multi_model_servers_own_errors_get_the_documented_shape():
    mms = json.dumps({"code": 503, "type": "ServiceUnavailableException", "message": "No worker is available"})
    assert json.loads(as_error_json(503, mms.encode())) == {"error": "No worker is available", "status": 503}
    ours = json.dumps({"error": "bad image", "status": 400}).encode()
    assert as_error_json(400, ours) == ours
    assert json.loads(as_error_json(502, b"<html>bad gateway</html>"))["error"] == "<html>bad gateway</html>"


def test_the_native_front_is_the_default(monkeypatch):
    monkeypatch.delenv(DOGBREED_SERVER, raising=False)
    assert server.front() == "native"
    monkeypatch.setenv(DOGBREED_SERVER, "MMS")
    assert server.front() == "mms"


def test_only_an_answer_through_the_model_counts_as_a_sign_of_life_on_the_mms_front():
    from dogbreed.serving.mms_edge import Prober

    prober = Prober(backend_port=1)
    for status in (400, 413, 415, 503):  # refused before the model: a client sending garbage keeps /ping honest
        prober.note(status)
    assert prober.answered_at is None
    prober.note(200)
    assert prober.answered_at is not None
