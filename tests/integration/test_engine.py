"""The batching model engine: concurrent requests share forward passes, each keeps its own answer, and
the server restarts an engine that dies. Real processes, a real unix socket, real HTTP on loopback."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from PIL import Image

from dogbreed.serving.engine import EngineClient
from dogbreed.serving.predictor import Predictor
from tests.conftest import free_port
from tests.serving_helpers import jpeg_bytes, local_server, post

pytestmark = pytest.mark.slow


def _images(sample_dir, count):
    paths = sorted(p for folder in sorted((sample_dir / "test").iterdir()) for p in folder.iterdir())[:count]
    return [Image.open(p).convert("RGB") for p in paths]


def test_concurrent_requests_share_forward_passes_and_keep_their_own_answers(trained, sample_dir, tmp_path):
    socket_path = tmp_path / "engine.sock"
    log = open(tmp_path / "engine.log", "w")
    engine = subprocess.Popen([sys.executable, "-m", "dogbreed.serving.engine", "--model-dir", str(trained["model_dir"]),
                               "--socket", str(socket_path), "--max-batch", "8", "--threads", "2", "--log-level", "DEBUG"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        local = Predictor(trained["model_dir"], graph="eager")
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
        # The engine measured its own precision on this CPU (bf16 wins on some): compare it with the in-process
        # model at the same precision, or a bf16 engine would differ from an fp32 reference by more than rounding.
        chosen = re.findall(r"precision=(\w+) channels_last", (tmp_path / "engine.log").read_text())
        assert chosen, "the engine did not log its precision"
        expected = Predictor(trained["model_dir"], precision=chosen[-1], graph="eager").top_k(images, 3)
        for index, image_answer in answers.items():
            k = 1 + index % 3
            assert len(image_answer) == 1 and len(image_answer[0]) == k  # its own k
            assert [a["breed"] for a in image_answer[0]] == [e["breed"] for e in expected[index][:k]]
            for got, want in zip(image_answer[0], expected[index][:k], strict=True):
                assert got["probability"] == pytest.approx(want["probability"], abs=1e-3)
        assert len(answers) == 8
    finally:
        engine.terminate()
        engine.wait(timeout=30)
        log.close()
    batches = [line for line in (tmp_path / "engine.log").read_text().splitlines() if "requests," in line]
    assert batches, "no forward pass served more than one request"


def _engine_process(server_pid: int) -> psutil.Process:
    found = [p for p in psutil.Process(server_pid).children(recursive=True) if "dogbreed.serving.engine" in " ".join(p.cmdline())]
    assert len(found) == 1, found
    return found[0]


def test_a_killed_engine_is_restarted_and_the_server_goes_on_classifying(trained, tmp_path):
    port = free_port()
    with local_server(trained["archive"], port, tmp_path / "server.log") as (url, process):
        victim = _engine_process(process.pid)
        victim.send_signal(signal.SIGKILL)
        statuses, deadline = [], time.time() + 120
        while time.time() < deadline:
            status, body, _ = post(url, jpeg_bytes())
            statuses.append(status)
            if status == 200 and len(statuses) > 1:
                break
            assert status in (200, 503), (status, body)  # the engine's absence is a 503, not a 500
            time.sleep(0.5)
        assert statuses[-1] == 200, statuses
        assert _engine_process(process.pid).pid != victim.pid
    assert "the model engine exited" in (tmp_path / "server.log").read_text()
