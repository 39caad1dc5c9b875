"""``/ping`` tells the truth on both fronts: 200 only while a request sent now would be answered. Each fault is
injected from outside (SIGKILL to the workers or the engine, the model file destroyed) and ``/ping`` is watched
over time: 503 with the reason while the fault lasts, 200 again where the server recovers."""

import shutil
import signal
import time

import psutil
import pytest

from dogbreed.env import DOGBREED_SERVE_ENGINE
from tests.conftest import free_port
from tests.serving_helpers import get, local_server, post, probe_for

pytestmark = pytest.mark.slow


def _ping(url: str) -> tuple[int | None, str]:
    try:
        return get(url, "/ping", timeout=5)
    except OSError as exc:
        return None, exc.__class__.__name__


def _watch(url: str, until, seconds: float) -> list[tuple[float, int | None, str]]:
    """/ping every 50 ms until ``until(status, body)`` or ``seconds`` pass: every (time, status, body) seen."""
    seen, start = [], time.monotonic()
    while time.monotonic() - start < seconds:
        status, body = _ping(url)
        seen.append((time.monotonic() - start, status, body))
        if until(status, body):
            break
        time.sleep(0.05)
    return seen


def _children(pid: int, marker: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if marker in " ".join(p.cmdline())]


def _kill(processes) -> None:
    for victim in processes:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def _correct(url: str, body: bytes, index: int) -> bool:
    status, answer, _ = post(url, body, timeout=90)
    return status == 200 and answer["predictions"][0][0]["index"] == index


def _unhealthy_then_back(url: str, why: str, body: bytes, index: int) -> None:
    down = _watch(url, lambda status, text: status == 503 and why in text, 90)
    assert down[-1][1] == 503 and why in down[-1][2], down[-5:]
    back = _watch(url, lambda status, _: status == 200, 180)
    assert back[-1][1] == 200, back[-5:]
    assert _correct(url, body, index)  # the 200 was true: a request sent now is answered, correctly


@pytest.mark.timeout(900)
@pytest.mark.parametrize("engine", ["on", "off"])
def test_mms_killed_workers_turn_ping_503(trained, tmp_path, engine):
    """multi-model-server's own /ping says 200 with its workers killed, and it never brings them back (1.1.11:
    every request then hangs to its timeout); ours turns 503 with the reason, and stays there."""
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", workers=2, front="mms",
                      env={DOGBREED_SERVE_ENGINE: engine}) as (url, process):
        assert _ping(url)[0] == 200
        _kill(_children(process.pid, "model_service_worker"))
        down = _watch(url, lambda status, _: status == 503, 90)
        assert down[-1][1] == 503 and "multi-model-server" in down[-1][2], down[-5:]
        later = _watch(url, lambda status, _: status != 503, 5)
        assert all(status == 503 for _, status, _ in later), later


@pytest.mark.timeout(900)
def test_mms_a_killed_engine_turns_ping_503_until_it_is_back(trained, tmp_path):
    body, index = probe_for(trained["archive"])
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front="mms",
                      env={DOGBREED_SERVE_ENGINE: "on"}) as (url, process):
        assert _ping(url)[0] == 200
        _kill(_children(process.pid, "dogbreed.serving.batcher"))
        _unhealthy_then_back(url, "engine", body, index)


@pytest.mark.timeout(900)
def test_mms_a_destroyed_model_and_a_killed_engine_keep_ping_503_with_the_reason(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model)
    with local_server(model, free_port(), tmp_path / "server.log", front="mms",
                      env={DOGBREED_SERVE_ENGINE: "on"}) as (url, process):
        (model / "model.pth").write_bytes(b"destroyed")
        _kill(_children(process.pid, "dogbreed.serving.batcher"))
        seen = _watch(url, lambda status, text: status == 503 and "giving up" in text, 180)
        assert seen[-1][1] == 503 and "giving up" in seen[-1][2], seen[-5:]
        later = _watch(url, lambda status, _: status != 503, 5)
        assert all(status == 503 for _, status, _ in later), later  # it stays down, saying why
        status, answer, _ = post(url, b"\xff\xd8\xff", timeout=60)
        assert status == 503 and "giving up" in answer["error"]
        assert process.poll() is None


def test_native_a_destroyed_model_file_changes_nothing_the_model_is_in_memory(trained, tmp_path):
    """The native front holds its model in its own process: a file destroyed under it is no fault; /ping stays
    200, truthfully (the answers stay correct)."""
    model = tmp_path / "model"
    shutil.copytree(trained["model_dir"], model)
    body, index = probe_for(trained["archive"])
    with local_server(model, free_port(), tmp_path / "server.log", front="native") as (url, _):
        (model / "model.pth").write_bytes(b"destroyed")
        seen = _watch(url, lambda status, _: status != 200, 3)
        assert all(status == 200 for _, status, _ in seen)
        assert _correct(url, body, index)


def test_native_a_killed_server_answers_no_ping(trained, tmp_path):
    """The native front's engine is its own process: killed, nothing answers /ping (SageMaker replaces it)."""
    with local_server(trained["archive"], free_port(), tmp_path / "server.log", front="native") as (url, process):
        assert _ping(url)[0] == 200
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert _ping(url)[0] is None
