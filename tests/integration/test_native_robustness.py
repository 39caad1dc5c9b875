"""The native front under faults and load, over real HTTP on loopback: the front's app around its real engines
(a small ResNet-18 on the CPU) in this process, so that a test can slow or break the forward pass from outside.

- a request that timed out is dropped before the forward pass, the engine's queue is bounded, and a busy but
  healthy engine keeps /ping 200;
- batches that all fail turn /ping 503 with the reason, and one success turns it back;
- settings out of range refuse the start; trickling bodies and idle connections cannot starve a good request;
- with two "GPUs" (CPU engines behind a mocked CUDA) requests spread over both engines, and each batches.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from dogbreed import env as envnames
from dogbreed.serving import batcher, handler, hardware, native, server
from dogbreed.serving.edge import EdgeLimits
from dogbreed.serving.engine import EngineClient, failure_path
from dogbreed.serving.errors import BadRequest
from dogbreed.serving.native_app import Model, NativeApp
from dogbreed.serving.native_engine import FAILED_BATCHES
from dogbreed.serving.settings import ServingSettings
from dogbreed.serving.supervisor import engine_listening
from tests.edge_server import ping, serving, tiny_model
from tests.serving_helpers import jpeg_bytes, post

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


def _settings(**environ) -> ServingSettings:
    base = {envnames.DOGBREED_SERVE_THREADS: "1", envnames.DOGBREED_SERVE_GRAPH: "eager"}
    return ServingSettings.from_environ({**base, **environ}, cores=2, gpus=0)


@contextlib.contextmanager
def _front(model_dir, tmp_path, settings: ServingSettings, request_threads: int = 8):
    """The native front's app, loaded (native.load: engines started, warm-up request through the handler)."""
    model = Model()
    native.load(model, model_dir, tmp_path, settings)
    assert model.reason is None, model.reason
    with serving(NativeApp(model, EdgeLimits.from_settings(settings), request_threads, settings)) as url:
        yield url, model.predictor


class _SlowForward:
    """Wraps an engine's forward: counts the images and batches it ran, after waiting ``delay_s`` or ``gate``."""

    def __init__(self, engine, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.original, self.delay_s, self.gate = engine.predictor.answer_tensors, delay_s, gate
        self.batches: list[int] = []

    def __call__(self, batch, k=5):
        if self.gate is not None:
            self.gate.wait(60)
        time.sleep(self.delay_s)
        self.batches.append(len(batch))
        return self.original(batch, k)


def _post_all(url: str, bodies: list[bytes], timeout=60) -> list[tuple]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda body: post(url, body, timeout=timeout), bodies))


def _drained(engine, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while engine.load() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_requests_that_timed_out_are_dropped_before_the_forward_pass(model_dir, tmp_path, monkeypatch):
    settings = _settings(**{envnames.DOGBREED_ENGINE_WAIT_S: "1", envnames.DOGBREED_SERVE_BATCH: "1"})
    with _front(model_dir, tmp_path, settings) as (url, predictor):
        engine = predictor.engines[0][0]
        slow = _SlowForward(engine, delay_s=0.6)
        monkeypatch.setattr(engine.predictor, "answer_tensors", slow)
        pings: list[int] = []
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                pings.append(ping(url)[0])
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            answers = _post_all(url, [jpeg_bytes((i * 20, 80, 40)) for i in range(8)])
            _drained(engine)
        finally:
            watching.set()
            watcher.join()
        answered = sum(status == 200 for status, _, _ in answers)
        timed_out = [body for status, body, _ in answers if status == 503]
        assert answered + len(timed_out) == 8 and len(timed_out) >= 3, answers
        assert all("no answer within 1 s" in body["error"] for body in timed_out)
        # each pass runs one request: those that stopped waiting never ran (at most one was taken as it timed out)
        assert answered <= len(slow.batches) <= answered + 1, (answered, slow.batches)
        # a queue older than the wait bound is a busy engine, not a stuck one: every pass ended within 2 x wait
        assert pings and set(pings) == {200}, pings


def test_the_engines_queue_is_bounded(model_dir, tmp_path, monkeypatch):
    settings = _settings(**{envnames.DOGBREED_ENGINE_WAIT_S: "1", envnames.DOGBREED_NATIVE_PENDING: "3",
                            envnames.DOGBREED_SERVE_BATCH: "1"})
    with _front(model_dir, tmp_path, settings) as (url, predictor):
        engine, gate = predictor.engines[0][0], threading.Event()
        held = _SlowForward(engine, gate=gate)
        monkeypatch.setattr(engine.predictor, "answer_tensors", held)
        try:
            first = _post_all(url, [jpeg_bytes()] * 3)  # one in the held pass, two queued: all three time out
            second = _post_all(url, [jpeg_bytes()] * 3)  # one place left of the three: two refused at once
        finally:
            gate.set()
        errors = [body["error"] for status, body, _ in first + second if status == 503]
        assert len(errors) == 6 and sum("no answer within 1 s" in error for error in errors) == 4, errors
        assert sum("queue is full" in error for error in errors) == 2, errors
        _drained(engine)
        assert held.batches == [1]  # the three that stopped waiting were dropped, unrun
        assert post(url, jpeg_bytes())[0] == 200


def test_the_wait_for_a_request_thread_counts_against_the_wait_bound(model_dir, tmp_path, monkeypatch):
    """Four requests, two request threads, a held engine: the two that waited for a thread get their 503 when their
    own bound is up, not a whole bound after a thread took them (which would outlast SageMaker's 60 s)."""
    settings = _settings(**{envnames.DOGBREED_ENGINE_WAIT_S: "2", envnames.DOGBREED_SERVE_BATCH: "1"})
    with _front(model_dir, tmp_path, settings, request_threads=2) as (url, predictor):
        engine, gate = predictor.engines[0][0], threading.Event()
        monkeypatch.setattr(engine.predictor, "answer_tensors", _SlowForward(engine, gate=gate))
        try:
            answers = _post_all(url, [jpeg_bytes()] * 4)
        finally:
            gate.set()
        errors = [body["error"] for status, body, _ in answers if status == 503]
        assert len(errors) == 4, answers
        assert all("within 2 s" in error for error in errors), errors
        assert sum("request thread" in error for error in errors) >= 2, errors  # the two without one
        _drained(engine)
        assert post(url, jpeg_bytes())[0] == 200


def test_a_request_no_thread_takes_within_the_wait_bound_gets_its_503_then(model_dir, tmp_path, monkeypatch):
    """One request thread, held in a decode (a big body's own work, which no engine bound times): the request
    queued behind it gets its 503 once the wait bound is up, not whenever the thread frees."""
    settings = _settings(**{envnames.DOGBREED_ENGINE_WAIT_S: "1"})
    with _front(model_dir, tmp_path, settings, request_threads=1) as (url, _):
        held, release, decode = threading.Event(), threading.Event(), handler.input_fn

        def slow_decode(body, content_type, context=None):
            if body == b"hold":
                held.set()
                release.wait(120)
                raise BadRequest("held")
            return decode(body, content_type, context)

        monkeypatch.setattr(handler, "input_fn", slow_decode)
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(post, url, b"hold")
            try:
                assert held.wait(60)
                status, body, headers = post(url, jpeg_bytes(), timeout=60)
            finally:
                release.set()
            assert holder.result()[0] == 400
        assert status == 503 and "no request thread was free within 1 s" in body["error"], body
        assert headers["retry-after"]
        assert post(url, jpeg_bytes())[0] == 200  # the cancelled request left nothing behind


def test_batches_that_all_fail_turn_ping_503_until_one_succeeds(model_dir, tmp_path, monkeypatch):
    with _front(model_dir, tmp_path, _settings()) as (url, predictor):
        engine = predictor.engines[0][0]
        assert ping(url)[0] == 200

        def broken(batch, k=5):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

        with monkeypatch.context() as patch:
            patch.setattr(engine.predictor, "answer_tensors", broken)
            for _ in range(FAILED_BATCHES):
                assert ping(url)[0] == 200  # a failing batch or two may be the request's own
                status, body, _ = post(url, jpeg_bytes())
                assert status == 500 and "illegal memory access" in body["error"]
            status, text = ping(url)
            assert status == 503 and "illegal memory access" in json.loads(text)["error"], text
            assert post(url, jpeg_bytes())[0] == 500  # still let through: the next batch may succeed
        status, body, _ = post(url, jpeg_bytes())  # the model answers again
        assert status == 200 and body["predictions"][0][0]["breed"] in ("akita", "beagle", "corgi")
        assert ping(url)[0] == 200


def test_accept_any_or_none_gets_the_answer_type_the_toolkits_variable_names(model_dir, tmp_path):
    settings = _settings(**{envnames.SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT: "application/jsonlines"})
    with _front(model_dir, tmp_path, settings) as (url, _):
        for headers in ({"Accept": "*/*"}, {}):
            status, line, answer_headers = post(url, jpeg_bytes(), headers=headers)  # one image: one line
            assert status == 200 and answer_headers["content-type"] == "application/jsonlines", (headers, line)
            assert line["predictions"][0][0]["breed"]
        status, body, answer_headers = post(url, jpeg_bytes(), headers={"Accept": "application/json"})
        assert status == 200 and answer_headers["content-type"] == "application/json" and body["predictions"]


@pytest.mark.parametrize("name, raw", [(envnames.DOGBREED_MAX_HEAD_BYTES, "0"), (envnames.DOGBREED_MAX_HEADERS, "ten"),
                                       (envnames.DOGBREED_READ_TIMEOUT_S, "-1"), (envnames.DOGBREED_NATIVE_PENDING, "0"),
                                       (envnames.DOGBREED_KEEP_ALIVE_S, "nan"), (envnames.DOGBREED_SERVE_BATCH, "0"),
                                       (envnames.DOGBREED_MAX_CONNECTIONS, "4")])
def test_a_setting_out_of_range_refuses_the_start_by_name(model_dir, tmp_path, monkeypatch, caplog, name, raw):
    monkeypatch.setenv(name, raw)
    port = _free_port()
    assert server.serve(model_dir, host="127.0.0.1", port=port, state_dir=tmp_path) == 2
    assert any(name in record.getMessage() and "refusing to start" in record.getMessage() for record in caplog.records)
    with socket.socket() as probe:  # nothing listens: it never started
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()


def _trickle(url: str, stop: threading.Event, results: list) -> None:
    """A client that sends a head announcing 1000 bytes, then one byte every 0.2 s."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
        try:
            while not stop.is_set():
                sock.sendall(b"x")
                time.sleep(0.2)
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    if sock.recv(4096, socket.MSG_PEEK):
                        break
                sock.settimeout(30)
            sock.settimeout(5)
            results.append(sock.recv(4096))
        except OSError as exc:
            results.append(exc)


def _until_answered(url: str, seconds: float) -> tuple[int | None, float]:
    start = time.monotonic()
    while True:
        try:
            status = post(url, jpeg_bytes(), timeout=30)[0]
        except OSError:  # refused (503 and closed) while the body was still being sent
            status = None
        if status == 200 or time.monotonic() - start > seconds:
            return status, time.monotonic() - start
        time.sleep(0.1)


def test_trickling_bodies_cannot_starve_a_good_request_past_the_read_timeout(model_dir, tmp_path):
    settings = _settings(**{envnames.DOGBREED_NATIVE_PENDING: "2", envnames.DOGBREED_READ_TIMEOUT_S: "2"})
    with _front(model_dir, tmp_path, settings) as (url, _):
        stop, results = threading.Event(), []
        tricklers = [threading.Thread(target=_trickle, args=(url, stop, results)) for _ in range(2)]
        for thread in tricklers:
            thread.start()
        time.sleep(0.5)  # both admitted: every slot is held
        try:
            assert post(url, jpeg_bytes())[0] == 503  # busy: refused before its body is read
            status, waited = _until_answered(url, 15)
        finally:
            stop.set()
            for thread in tricklers:
                thread.join(10)
        assert status == 200 and waited < settings.read_timeout_s + 3, (status, waited)
        assert all(isinstance(r, bytes) and r.startswith(b"HTTP/1.1 408") for r in results), results


def test_idle_connections_past_the_cap_are_refused_and_closed_after_the_keep_alive(model_dir, tmp_path):
    settings = _settings(**{envnames.DOGBREED_NATIVE_PENDING: "2", envnames.DOGBREED_MAX_CONNECTIONS: "3",
                            envnames.DOGBREED_KEEP_ALIVE_S: "1"})
    with _front(model_dir, tmp_path, settings) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
        try:
            time.sleep(0.2)
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                answer = extra.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b'"status": 503' in answer, answer
            status, waited = _until_answered(url, 10)
            assert status == 200 and waited < settings.keep_alive_s + 3, (status, waited)
            assert all(sock.recv(1) == b"" for sock in idle)  # closed by the server, unanswered
        finally:
            for sock in idle:
                sock.close()


@pytest.fixture
def two_gpus(monkeypatch) -> list:
    """CUDA mocked to show two GPUs; each engine's model built on the CPU. Yields the GPU ids the engines asked for."""
    asked = []
    build = batcher._predictor

    def on_the_cpu(model_dir, threads, cache, gpu_id=None, graph="auto"):
        asked.append(gpu_id)
        with mock.patch.object(torch.cuda, "is_available", lambda: False), \
                mock.patch.object(torch.cuda, "device_count", lambda: 0):
            return build(model_dir, threads, cache, graph=graph)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(batcher, "_predictor", on_the_cpu)
    return asked


def test_two_gpus_get_an_engine_each_and_requests_spread_over_them_in_batches(model_dir, tmp_path, monkeypatch,
                                                                              two_gpus):
    """Two "GPUs" that CUDA is mocked to show, each engine's model really on the CPU."""
    with _front(model_dir, tmp_path, _settings()) as (url, predictor):
        assert two_gpus == [0, 1] and len(predictor.engines) == 2
        slow = [_SlowForward(engine, delay_s=0.3) for engine, _ in predictor.engines]
        for engine, wrapper in zip((e for e, _ in predictor.engines), slow, strict=True):
            monkeypatch.setattr(engine.predictor, "answer_tensors", wrapper)
        answers = _post_all(url, [jpeg_bytes((i * 10, 80, 40)) for i in range(16)])
        assert all(status == 200 for status, _, _ in answers), answers
        images = [sum(wrapper.batches) for wrapper in slow]
        assert sum(images) == 16 and min(images) >= 4, images  # both engines took a share
        assert all(max(wrapper.batches) > 1 for wrapper in slow), [w.batches for w in slow]  # and each batched
        assert "2 engine(s)" in predictor.describe()


def _fake_gpus(monkeypatch, tmp_path, count: int) -> None:
    """A host whose driver lists ``count`` GPUs (nvidia-smi on PATH, no /proc folders) and whose torch has no CUDA."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    listing = "".join(f"GPU {i}: Tesla T4 (UUID: GPU-{i})\\n" for i in range(count))
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(hardware, "PROC_GPUS", tmp_path / "no-driver-folders")
    hardware.installed_gpus.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_gpu_host_whose_cuda_cannot_start_answers_ping_503_with_the_reason(model_dir, tmp_path, monkeypatch):
    _fake_gpus(monkeypatch, tmp_path, 2)
    try:
        model = Model()
        native.load(model, model_dir, tmp_path, _settings())
        with serving(NativeApp(model, EdgeLimits.from_settings(_settings()), 2, _settings())) as url:
            status, text = ping(url)
            assert status == 503 and "2 GPU(s) installed but CUDA cannot start" in json.loads(text)["error"]
            assert post(url, jpeg_bytes())[0] == 503
        allowed = _settings(**{envnames.DOGBREED_SERVE_CPU_FALLBACK: "true"})
        with _front(model_dir, tmp_path, allowed) as (url, predictor):  # served on the CPU, as asked
            assert ping(url)[0] == 200 and post(url, jpeg_bytes())[0] == 200
    finally:
        hardware.installed_gpus.cache_clear()


def test_the_mms_engine_process_refuses_a_gpu_host_without_cuda_with_the_reason(model_dir, tmp_path, monkeypatch):
    """The engine process itself (a real one): its reason goes where the supervisor reads it for /ping."""
    _fake_gpus(monkeypatch, tmp_path, 4)
    socket_path = tmp_path / "engine.sock"
    command = [sys.executable, "-m", "dogbreed.serving.batcher", "--model-dir", str(model_dir), "--socket",
               str(socket_path), "--threads", "1"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, refused.stderr[-2000:]
    assert "4 GPU(s) installed but CUDA cannot start" in failure_path(socket_path).read_text()


def test_the_mms_engine_process_spreads_the_workers_requests_over_one_engine_per_gpu(model_dir, monkeypatch, two_gpus):
    engines = [engine for engine, _ in batcher.start_engines(model_dir, 8, 2, None, 16)]
    assert two_gpus == [0, 1]
    slow = [_SlowForward(engine, delay_s=0.3) for engine in engines]
    for engine, wrapper in zip(engines, slow, strict=True):
        monkeypatch.setattr(engine.predictor, "answer_tensors", wrapper)
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a unix socket's path is short
        socket_path = Path(short) / "engine.sock"
        threading.Thread(target=batcher.serve_forever, args=(engines, socket_path), daemon=True).start()
        while not engine_listening(socket_path):
            time.sleep(0.05)
        pixels = np.zeros((1, 3, 64, 64), np.uint8)
        with ThreadPoolExecutor(12) as pool:  # twelve workers, each with its own connection
            answers = list(pool.map(lambda _: EngineClient(socket_path, wait_s=60).top_k(pixels, 2), range(12)))
    assert all(len(answer[0]) == 2 for answer in answers)
    images = [sum(wrapper.batches) for wrapper in slow]
    assert sum(images) == 12 and min(images) >= 3, images
    assert all(max(wrapper.batches) > 1 for wrapper in slow), [w.batches for w in slow]


def test_the_mms_engine_drops_a_request_whose_worker_stopped_waiting(model_dir, monkeypatch):
    """A worker past its wait bound (its 503 given) closes its connection: the engine process drops its pixels
    before the forward pass, as the native front's engine does, rather than run them for nobody."""
    (engine, _), = batcher.start_engines(model_dir, 8, 1, None, 16)
    gate = threading.Event()
    held = _SlowForward(engine, gate=gate)
    monkeypatch.setattr(engine.predictor, "answer_tensors", held)
    pixels = np.zeros((1, 3, 64, 64), np.uint8)
    with tempfile.TemporaryDirectory(dir="/tmp") as short, ThreadPoolExecutor(2) as pool:
        socket_path = Path(short) / "engine.sock"
        threading.Thread(target=batcher.serve_forever, args=([engine], socket_path), daemon=True).start()
        while not engine_listening(socket_path):
            time.sleep(0.05)
        first = pool.submit(EngineClient(socket_path, wait_s=60).top_k, pixels, 2)  # held in the forward pass
        while engine.health.running_since is None:  # taken into the held forward pass, not only queued
            time.sleep(0.01)
        with pytest.raises(Exception, match="no answer within"):  # queued behind it: gives up, closes
            EngineClient(socket_path, wait_s=0.5).top_k(pixels, 2)
        last = pool.submit(EngineClient(socket_path, wait_s=60).top_k, pixels, 2)
        time.sleep(0.3)  # queued too
        gate.set()
        assert len(first.result(60)[0]) == 2 and len(last.result(60)[0]) == 2
    assert held.batches == [1, 1], held.batches  # the first, then the last alone: the abandoned one never ran
