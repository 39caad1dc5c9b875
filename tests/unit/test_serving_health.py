"""What /ping is made of, without a server: the native engine's liveness, the multi-model-server front's health
and its error shape, and the default front."""

import json
import threading
import time

from dogbreed.env import DOGBREED_SERVER
from dogbreed.serving import server
from dogbreed.serving.mms_edge import Health, as_error_json
from dogbreed.serving.native_engine import InProcessPredictor, Unanswered


def _predictor(thread: threading.Thread) -> InProcessPredictor:
    predictor = InProcessPredictor.__new__(InProcessPredictor)  # no model: only the health is under test
    predictor.thread, predictor.unanswered, predictor.wait_s = thread, Unanswered(), 30.0
    return predictor


def test_an_engine_thread_that_ended_is_unhealthy():
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    assert "stopped" in _predictor(thread).unhealthy()


def test_a_request_held_past_twice_the_wait_bound_is_a_stuck_engine_and_its_answer_clears_it():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        predictor = _predictor(thread)
        assert predictor.unhealthy() is None
        predictor.unanswered.add(1, time.monotonic() - 59)  # within twice the bound: a slow batch, not a wedge
        assert predictor.unhealthy() is None
        predictor.unanswered.add(2, time.monotonic() - 61)
        assert "stuck" in predictor.unhealthy()
        predictor.unanswered.remove(2)
        assert predictor.unhealthy() is None
    finally:
        stop.set()


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
