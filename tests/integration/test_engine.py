"""The batching model engine: concurrent requests share forward passes, each keeps its own answer, and
the server restarts an engine that dies. Real processes, a real unix socket, real HTTP on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from PIL import Image

from dogbreed.serving.decoders import decode
from dogbreed.serving.engine import DEFAULT_WAIT_S, EngineClient
from dogbreed.serving.predictor import Predictor
from dogbreed.serving.server import RESPONSE_TIMEOUT_S as MMS_RESPONSE_TIMEOUT_S
from dogbreed.serving.supervisor import engine_listening
from tests.conftest import DOGS10, free_port
from tests.serving_helpers import get, jpeg_bytes, local_server, post

pytestmark = pytest.mark.slow



def _images(sample_dir, count):
    paths = sorted(p for folder in sorted((sample_dir / "test").iterdir()) for p in folder.iterdir())[:count]
    return [Image.open(p).convert("RGB") for p in paths]


@contextlib.contextmanager
def _engine(model_dir, tmp_path):
    """The engine process on a unix socket: (socket path, the precision it chose on this CPU)."""
    socket_path, log_path = tmp_path / "engine.sock", tmp_path / "engine.log"
    log = open(log_path, "w")
    engine = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.batcher", "--model-dir", str(model_dir),
                               "--socket", str(socket_path), "--max-batch", "8", "--threads", "2", "--log-level", "DEBUG"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not engine_listening(socket_path):
            assert engine.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        # The engine measured its own precision on this CPU (bf16 wins on some): compare it with the in-process
        # model at the same precision, or a bf16 engine would differ from an fp32 reference by more than rounding.
        chosen = re.findall(r"precision=(\w+) channels_last", log_path.read_text())
        assert chosen, "the engine did not log its precision"
        yield socket_path, chosen[-1]
    finally:
        engine.terminate()
        engine.wait(timeout=30)
        log.close()


def test_concurrent_requests_share_forward_passes_and_keep_their_own_answers(trained, sample_dir, tmp_path):
    with _engine(trained["model_dir"], tmp_path) as (socket_path, precision):
        local = Predictor(trained["model_dir"], precision=precision, graph="eager")
        images = _images(sample_dir, 8)
        expected = local.top_k(images, 3)
        answers: dict[int, list] = {}

        def client(index: int):
            link = EngineClient(str(socket_path))
            k = 1 + index % 3
            for _ in range(5):  # several rounds, so that requests meet in the engine's queue
                answers[index] = link.top_k(local.tensor([images[index]]), k)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        for index, image_answer in answers.items():
            k = 1 + index % 3
            assert len(image_answer) == 1 and len(image_answer[0]) == k  # its own k
            assert [a["breed"] for a in image_answer[0]] == [e["breed"] for e in expected[index][:k]]
            for got, want in zip(image_answer[0], expected[index][:k], strict=True):
                assert got["probability"] == pytest.approx(want["probability"], abs=1e-3)
        assert len(answers) == 8
        # one request of more images than the engine's --max-batch 8: run in chunks, answered in order
        many = _images(sample_dir, 12)
        got = EngineClient(str(socket_path)).top_k(local.tensor(many), 2)
        assert [[a["breed"] for a in row] for row in got] == [[e["breed"] for e in row] for row in local.top_k(many, 2)]
    batches = [line for line in (tmp_path / "engine.log").read_text().splitlines() if "requests," in line]
    assert batches, "no forward pass served more than one request"


def test_in_memory_requests_share_a_batch_and_each_callback_gets_its_own_answer(trained, sample_dir):
    """The engine's in-process API (the native front's): requests submitted while no batch runs go through one
    forward pass; each answer reaches its own callback; a request the model cannot take gets its error and the
    engine goes on."""
    from dogbreed.serving.batcher import Engine
    from dogbreed.serving.pixels import EvalCrop, read_meta

    engine = Engine(trained["model_dir"], max_batch=8, threads=2)
    local = Predictor(trained["model_dir"], precision=engine.predictor.acc.precision, graph="eager")
    crop = EvalCrop.from_meta(read_meta(trained["model_dir"]))
    images = _images(sample_dir, 6)
    answers: dict[int, dict] = {}
    done = threading.Semaphore(0)

    def callback(index):
        return lambda answer: (answers.__setitem__(index, answer), done.release())

    for index, image in enumerate(images):
        engine.submit(crop.batch([image]), 1 + index % 3, callback(index))
    threading.Thread(target=engine.run_batches, daemon=True).start()
    for _ in images:
        assert done.acquire(timeout=300)
    assert engine.batches == 1  # all six queued before the loop started: one forward pass
    expected = local.top_k(images, 3)
    for index, answer in answers.items():
        k = 1 + index % 3
        assert [a["breed"] for a in answer["predictions"][0]] == [e["breed"] for e in expected[index][:k]]
    engine.submit(crop.batch(images[:1])[:, :1], 2, callback(99))  # one channel: the model cannot take it
    assert done.acquire(timeout=300)
    engine.submit(crop.batch(images[:1]), 2, callback(100))
    assert done.acquire(timeout=300)
    assert "error" in answers[99] and "predictions" not in answers[99]
    assert [a["breed"] for a in answers[100]["predictions"][0]] == [e["breed"] for e in expected[0][:2]]


def test_a_request_larger_than_max_batch_runs_in_chunks_of_max_batch(trained, sample_dir):
    """The memory plan counts on forward passes of at most --max-batch images: one 12-image request must run as
    8 + 4, answered in order (the socket test above compares answers only, which one 12-image pass gives too)."""
    from dogbreed.serving.batcher import Engine
    from dogbreed.serving.pixels import EvalCrop, read_meta

    engine = Engine(trained["model_dir"], max_batch=8, threads=2)
    sizes, forward = [], engine.predictor.answer_tensors
    engine.predictor.answer_tensors = lambda batch, k: (sizes.append(len(batch)), forward(batch, k))[1]
    images = _images(sample_dir, 12)
    replies = []
    engine.submit(EvalCrop.from_meta(read_meta(trained["model_dir"])).batch(images), 2, replies.append)
    engine.run_batch()
    assert sizes == [8, 4]
    assert len(replies[0]["dog"]) == 12 and "explanations" not in replies[0]  # the verdicts of both chunks, in order
    local = Predictor(trained["model_dir"], precision=engine.predictor.acc.precision, graph="eager")
    assert [[a["breed"] for a in row] for row in replies[0]["predictions"]] == \
        [[e["breed"] for e in row] for row in local.top_k(images, 2)]


WORKER = """
import json, sys
from pathlib import Path
from dogbreed.serving import handler
model = handler.model_fn(sys.argv[1])
answers = [handler.predict_fn(handler.input_fn(Path(path).read_bytes(), "image/jpeg"), model)["predictions"][0]
           for path in sys.argv[2:]]
print(json.dumps({"answers": answers, "torch": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))}))
"""


def test_a_decoding_worker_imports_no_torch_and_answers_as_the_in_process_model(trained, sample_dir, tmp_path):
    """The handler as a worker of the engine runs it (model_fn, input_fn, predict_fn) on real photos where
    ../shared has them, and on the sample's images."""
    photos = sorted(DOGS10.glob("test/*/*.jpg"))[::5][:20] + sorted((sample_dir / "test").glob("*/*"))[:10]
    with _engine(trained["model_dir"], tmp_path) as (socket_path, precision):
        run = subprocess.run([sys.executable, "-c", WORKER, str(trained["model_dir"]), *map(str, photos)], capture_output=True,
                             text=True, timeout=300, env={**os.environ, "DOGBREED_ENGINE_SOCKET": str(socket_path)})
    assert run.returncode == 0, run.stderr
    worker = json.loads(run.stdout.strip().splitlines()[-1])
    assert worker["torch"] == []  # neither torch nor torchvision in the worker's sys.modules
    local = Predictor(trained["model_dir"], precision=precision, graph="eager")
    for path, got in zip(photos, worker["answers"], strict=True):
        images, _ = decode(path.read_bytes(), "image/jpeg", draft_size=local.draft_size)  # as the worker decodes
        want = local.top_k(images, 5)[0]
        assert got[0]["index"] == want[0]["index"], path  # the same top-1
        for row, reference in zip(got, want, strict=True):
            assert row["probability"] == pytest.approx(reference["probability"], abs=1e-3), path


def _engine_process(server_pid: int) -> psutil.Process:
    found = [p for p in psutil.Process(server_pid).children(recursive=True)
             if "dogbreed.serving.batcher" in " ".join(p.cmdline())]
    assert len(found) == 1, found
    return found[0]


def test_a_killed_engine_is_restarted_and_the_server_goes_on_classifying(trained, tmp_path):
    port = free_port()
    with local_server(trained["archive"], port, tmp_path / "server.log") as (url, process):
        victim = _engine_process(process.pid)
        victim.send_signal(signal.SIGKILL)
        # the request waits while the engine restarts (within the bound): answered normally, no 503
        status, body, _ = post(url, jpeg_bytes(), timeout=90)
        assert status == 200 and body["predictions"], (status, body)
        assert _engine_process(process.pid).pid != victim.pid
    log = (tmp_path / "server.log").read_text()
    assert "the model engine exited" in log
    assert "as measured before" in log and "no probe" in log  # the restart reused the first start's precision probe
    setups = re.findall(r"engine ready on .*?: (device=\S+ precision=\S+ channels_last=\d)", log)
    assert len(setups) == 2 and setups[0] == setups[1], setups  # the same precision and layout, not just the precision


def test_an_engine_that_cannot_come_back_gives_a_503_before_the_fronts_timeout_then_an_unhealthy_ping(trained, tmp_path):
    """The fault from outside: the model file is destroyed, then the engine killed; every restart fails to load."""
    model = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model)
    port, bound = free_port(), 8
    with local_server(model, port, tmp_path / "server.log", env={"DOGBREED_ENGINE_WAIT_S": str(bound)}) as (url, process):
        (model / "model.pth").write_bytes(b"destroyed")
        _engine_process(process.pid).send_signal(signal.SIGKILL)
        start = time.monotonic()
        status, body, headers = post(url, jpeg_bytes(), timeout=120)
        waited = time.monotonic() - start
        assert status == 503 and "engine" in body["error"], (status, body)
        assert int(headers["retry-after"]) > 0
        assert bound - 1 < waited < MMS_RESPONSE_TIMEOUT_S, waited  # it waited for the engine, then answered in time
        deadline, ping = time.monotonic() + 120, (None, "")
        while time.monotonic() < deadline and not (ping[0] == 503 and "failed to start" in ping[1]):  # 503 meanwhile
            try:
                ping = get(url, "/ping")
            except OSError:  # between the front's exit and the unhealthy server's start
                pass
            time.sleep(0.5)
        assert ping[0] == 503 and "failed to start 3 times" in ping[1], ping
        assert process.poll() is None  # up, saying why, not looping
    log = (tmp_path / "server.log").read_text()
    assert "restarting it in 0 s" in log and "restarting it in 1 s" in log and "restarting it in 2 s" in log  # backs off


def test_the_default_bound_is_shorter_than_the_fronts_timeout():
    assert 10 < DEFAULT_WAIT_S < MMS_RESPONSE_TIMEOUT_S  # room for an engine restart
