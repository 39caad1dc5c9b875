"""The real serving stack on loopback, over real HTTP, with each front: multi-model-server + our handler, and the
native front (``DOGBREED_SERVER=native``: uvicorn in the engine's process, the same handler functions)."""

import base64
import io
import json
import os
import re
import signal
import socket
import time
import urllib.error
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from dogbreed.env import DOGBREED_NATIVE_PENDING
from dogbreed.serving import content_types as ct
from dogbreed.serving.predictor import Predictor
from tests.conftest import free_port
from tests.serving_helpers import FRONTS, assert_same_ranking, get, jpeg_bytes, local_server, post, post_oversized, probe_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=FRONTS)
def server(trained, tmp_path_factory, request):
    """(url, process, server log, front); multi-model-server's own logs, its access log among them, in LOGS beside it."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with local_server(trained["archive"], free_port(), log, env={"LOG_LOCATION": str(log.parent / LOGS)},
                      front=request.param) as (url, process):
        yield url, process, log, request.param


LOGS = "mms-logs"
# the edge's access log (uvicorn's), on both fronts: multi-model-server's own also holds the launcher's probes
ACCESS_LINE = re.compile(r'uvicorn\.access: \S+ - "POST /invocations HTTP/1\.[01]" (\d{3})\b')


def _answered(log: Path, front: str) -> list[int]:
    """The status of every /invocations answer in the edge's access log (in the server's log), in order."""
    return [int(m[1]) for m in ACCESS_LINE.finditer(log.read_text())] if log.is_file() else []


@pytest.fixture(scope="module")
def predictor(trained):
    return Predictor(trained["model_dir"])


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _test_images(sample_dir, n=2):
    paths = []
    for folder in sorted((sample_dir / "test").iterdir()):
        paths += sorted(folder.iterdir())[:n]
    return paths


def _classes(answer):
    return [[row["breed"] for row in rows] for rows in answer["predictions"]]


def test_the_decoding_workers_hold_no_torch(server):
    """multi-model-server's own worker processes: no torch library mapped into them (they decode with Pillow)."""
    url, process, _, front = server
    if front != "mms":
        pytest.skip("the native front has no worker processes (test_the_native_front_is_one_process)")
    for _ in range(8):  # every worker has decoded an image by now (round-robin)
        assert post(url, jpeg_bytes())[0] == 200
    workers = [p for p in psutil.Process(process.pid).children(recursive=True) if "model_service_worker" in " ".join(p.cmdline())]
    assert workers
    for worker in workers:
        mapped = sorted({Path(m.path).name for m in worker.memory_maps()})
        assert not [name for name in mapped if "torch" in name], (worker.pid, mapped)
        assert [name for name in mapped if "python" in name or "numpy" in name], mapped  # the check sees its libraries


def test_the_launcher_holds_no_torch_only_the_engine_does(server):
    """multi-model-server's launcher (the process that starts the JVM and supervises the engine) maps no torch
    library: it counts cores and GPUs without it. The engine, its child, holds the model."""
    url, process, _, front = server
    if front != "mms":
        pytest.skip("the native front's one process is the engine (test_the_native_front_is_one_process_with_no_jvm)")
    assert post(url, jpeg_bytes())[0] == 200
    launcher = psutil.Process(process.pid)
    mapped = sorted({Path(m.path).name for m in launcher.memory_maps()})
    assert not [name for name in mapped if "torch" in name], mapped
    assert [name for name in mapped if "python" in name], mapped  # the check sees its libraries
    engines = [p for p in launcher.children(recursive=True) if "dogbreed.serving.batcher" in " ".join(p.cmdline())]
    assert len(engines) == 1
    assert [name for name in {Path(m.path).name for m in engines[0].memory_maps()} if "libtorch" in name]


def test_the_native_front_is_one_process_with_no_jvm(server):
    """The native front: the model, the batching and HTTP in the one server process; no JVM, no workers."""
    url, process, _, front = server
    if front != "native":
        pytest.skip("multi-model-server runs a JVM and worker processes")
    for _ in range(4):
        assert post(url, jpeg_bytes())[0] == 200
    root = psutil.Process(process.pid)
    assert root.children(recursive=True) == []
    mapped = {Path(m.path).name for m in root.memory_maps()}
    assert [name for name in mapped if "torch" in name] and not [name for name in mapped if "libjvm" in name]


def test_ping(server):
    url, _, _, _ = server
    assert get(url, "/ping")[0] == 200


@pytest.mark.parametrize("variant", ["jpeg", "png", "grayscale", "rgba"])
def test_images_are_classified_as_the_in_process_model_does(server, predictor, sample_dir, variant):
    url, _, _, _ = server
    for path in _test_images(sample_dir):
        image = Image.open(path).convert("RGB")
        if variant == "jpeg":
            body, kind, _reference = path.read_bytes(), "image/jpeg", Image.open(path)
        elif variant == "png":
            body, kind, _reference = _encode(image, "PNG"), "image/png", image
        elif variant == "grayscale":
            gray = image.convert("L")
            body, kind, _reference = _encode(gray, "PNG"), "application/x-image", gray
        else:
            rgba = image.convert("RGBA")
            body, kind, _reference = _encode(rgba, "PNG"), "image/png", rgba
        status, answer, headers = post(url, body, kind)
        assert status == 200, answer
        assert headers.get("content-type", "").startswith("application/json")
        expected = predictor.top_k([Image.open(io.BytesIO(body))], k=5)
        assert_same_ranking(answer["predictions"], expected)
        assert len(answer["predictions"][0]) == 5
        probs = [r["probability"] for r in answer["predictions"][0]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_json_batch_and_top_k(server, predictor, sample_dir):
    url, _, _, _ = server
    paths = _test_images(sample_dir, n=1)
    body = json.dumps({"instances": [base64.b64encode(p.read_bytes()).decode() for p in paths], "top_k": 2}).encode()
    status, answer, _ = post(url, body, "application/json")
    assert status == 200, answer
    expected = predictor.top_k([Image.open(p) for p in paths], k=2)
    assert_same_ranking(answer["predictions"], expected)


def test_top_k_from_the_custom_attributes_header(server, sample_dir):
    url, _, _, _ = server
    path = _test_images(sample_dir, n=1)[0]
    status, answer, _ = post(url, path.read_bytes(), "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=3"})
    assert status == 200 and len(answer["predictions"][0]) == 3


def test_numpy_input(server, predictor, sample_dir):
    url, _, _, _ = server
    path = _test_images(sample_dir, n=1)[0]
    array = np.asarray(Image.open(path).convert("RGB"))
    buffer = io.BytesIO()
    np.save(buffer, array)
    status, answer, _ = post(url, buffer.getvalue(), "application/x-npy")
    assert status == 200, answer
    assert _classes(answer)[0][0] == predictor.top_k([Image.fromarray(array)], 1)[0][0]["breed"]


def _malformed_requests():
    good = jpeg_bytes()
    png = io.BytesIO()
    Image.new("RGB", (50, 50)).save(png, "PNG")
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, "PNG")  # tiny file, 900 megapixels
    npy_obj = io.BytesIO()
    np.save(npy_obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    npy_bad_shape = io.BytesIO()
    np.save(npy_bad_shape, np.zeros((5, 5, 7), dtype=np.uint8))
    return [
        ("empty body", b"", "image/jpeg", {}),
        ("truncated jpeg", good[: len(good) // 3], "image/jpeg", {}),
        ("jpeg header only", good[:20], "image/jpeg", {}),
        ("bytes that are no image", os.urandom(2048), "image/jpeg", {}),
        ("text as png", b"hello world", "image/png", {}),
        ("truncated png", png.getvalue()[:60], "image/png", {}),
        ("text as x-image", b"not an image at all", "application/x-image", {}),
        ("png bytes as webp", png.getvalue()[:40], "image/webp", {}),
        ("truncated bmp", b"BM" + b"\x00" * 30, "image/bmp", {}),
        ("gif header only", b"GIF89a\x01\x00", "image/gif", {}),
        ("tiff header only", b"II*\x00\x08\x00\x00\x00", "image/tiff", {}),
        ("unsupported content type", good, "text/csv", {}),
        ("another unsupported type", good, "application/octet-stream", {}),
        ("no content type", good, None, {}),
        ("malformed json", b'{"image": ', "application/json", {}),
        ("json without image", b'{"foo": 1}', "application/json", {}),
        ("json bad base64", b'{"image": "@@@not base64@@@"}', "application/json", {}),
        ("json base64 of garbage", json.dumps({"image": base64.b64encode(b"garbage").decode()}).encode(), "application/json", {}),
        ("json empty instances", b'{"instances": []}', "application/json", {}),
        ("json wrong type", b'"just a string"', "application/json", {}),
        ("json number image", b'{"image": 42}', "application/json", {}),
        ("json bad top_k", json.dumps({"image": base64.b64encode(good).decode(), "top_k": "many"}).encode(),
         "application/json", {}),
        ("json zero top_k", json.dumps({"image": base64.b64encode(good).decode(), "top_k": 0}).encode(), "application/json", {}),
        ("json too many images", json.dumps({"instances": [base64.b64encode(good).decode()] * 65}).encode(),
         "application/json", {}),
        ("invalid utf-8 json", b"\xff\xfe\x00garbage", "application/json", {}),
        ("npy garbage", b"\x93NUMPY garbage", "application/x-npy", {}),
        ("npy object array", npy_obj.getvalue(), "application/x-npy", {}),
        ("npy bad channels", npy_bad_shape.getvalue(), "application/x-npy", {}),
        ("jsonlines empty", b"", "application/jsonlines", {}),  # a bad record is an error line: 200 (test_serving_batch)
        ("jsonlines blank lines only", b"\n  \n\n", "application/jsonlines", {}),
        ("decompression bomb", bomb.getvalue(), "image/png", {}),
        ("unacceptable accept", good, "image/jpeg", {"Accept": "text/csv"}),
        ("bad top_k attribute", good, "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": "top_k=abc"}),
        # top_k that a cast would take silently (or a 500 from int(inf)): JSON 1e999 is infinity, true is 1, 2.9 is 2
        *[(f"json top_k {raw}", b'{"image": "%s", "top_k": %s}' % (base64.b64encode(good), raw.encode()), "application/json", {})
          for raw in ("1e999", "true", "2.9", "-1e999", "3.0", '"2.9"', "[3]")],
        *[(f"top_k={raw} attribute", good, "image/jpeg", {"X-Amzn-SageMaker-Custom-Attributes": f"top_k={raw}"})
          for raw in ("1e999", "true", "2.9", "inf", "")],
    ]


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server, predictor, sample_dir):
    url, process, log, front = server
    cases = _malformed_requests()
    # the corpus: hostile bodies for every content type the endpoint reads, no case a repeat of another
    hostile_types = {ct.base(kind) for _, _, kind, _ in cases if kind}
    assert set(ct.REQUEST_TYPES) <= hostile_types, f"no hostile case for {sorted(set(ct.REQUEST_TYPES) - hostile_types)}"
    assert len({(body, kind, tuple(sorted(headers.items()))) for _, body, kind, headers in cases}) == len(cases)
    before = len(_answered(log, front))
    wrong = []
    for name, body, kind, headers in cases:
        status, answer, _ = post(url, body, kind, headers)
        # the handler's error JSON, whichever front answers: {"error": the reason, "status": the HTTP status}
        same_json = isinstance(answer, dict) and set(answer) == {"error", "status"} and answer["status"] == status
        if not (400 <= status < 500 and same_json and len(str(answer["error"])) > 5):
            wrong.append(f"{name}: {status} {str(answer)[:200]}")
    assert not wrong, "answered other than 4xx with a reason:\n" + "\n".join(wrong)
    # all cases answered, by the server's own count: one 4xx in its access log per hostile request sent
    deadline = time.time() + 15
    while len(_answered(log, front)) - before < len(cases) and time.time() < deadline:
        time.sleep(0.2)
    answered = _answered(log, front)[before:]
    assert len(answered) == len(cases) and all(400 <= status < 500 for status in answered), answered
    # over the 6 MB payload limit: the front refuses it before reading it all (raw socket)
    status, message = post_oversized(url, 7 * 1024 * 1024)
    assert status == 413 and "Too Large" in message
    assert process.poll() is None
    assert get(url, "/ping")[0] == 200
    path = _test_images(sample_dir, n=1)[0]
    status, answer, _ = post(url, path.read_bytes(), "image/jpeg")
    assert status == 200
    assert _classes(answer)[0] == [r["breed"] for r in predictor.top_k([Image.open(path)], 5)[0]]


@pytest.mark.parametrize("front", FRONTS)
def test_a_corrupt_model_gives_an_unhealthy_ping_with_the_reason(tmp_path, trained, front):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "model.json").write_text((trained["model_dir"] / "model.json").read_text())
    (broken / "model.pth").write_bytes(b"not a state dict")
    with local_server(broken, free_port(), tmp_path / "log.txt", ready=False, front=front) as (url, process):
        deadline, status, body = time.time() + 90, None, ""
        # the front answers while the engine tries to load: 503 "loading", then 503 with the reason
        while time.time() < deadline and not (status == 503 and "model.pth" in body):
            try:
                status, body = get(url, "/ping")
            except OSError:
                pass
            time.sleep(0.3)
        assert status == 503 and "model.pth" in body
        assert process.poll() is None  # it stays up, saying why, instead of crash-looping
    assert "cannot serve the model" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("front", FRONTS)
def test_sigterm_stops_the_server_and_its_workers(trained, tmp_path, front):
    with local_server(trained["archive"], free_port(), tmp_path / "log.txt", front=front) as (url, process):
        group = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        names = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in group)
        if front == "mms":
            assert "ModelServer" in names and "model_service_worker" in names  # frontend and a worker
        start = time.time()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.time() - start < 30
    time.sleep(0.5)
    assert not [pid for pid in group if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]



def _watch_ping(url: str, body: bytes, index: int, timeout: float = 180) -> tuple[list, dict]:
    """Poll /ping from the first moment the port answers until it says 200; then ask /invocations at once.
    Returns (every /ping answer before the 200 as (status, Retry-After, JSON), whether that answer was right)."""
    from urllib.request import urlopen

    early, deadline = [], time.time() + timeout
    while time.time() < deadline:
        try:
            with urlopen(url + "/ping", timeout=10):
                break  # 200
        except urllib.error.HTTPError as exc:
            early.append((exc.code, exc.headers.get("Retry-After"), json.loads(exc.read())))
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    status, answer, _ = post(url, body, headers={"X-Amzn-SageMaker-Custom-Attributes": "top_k=1"})
    assert status == 200, answer
    return early, answer["predictions"][0][0]["index"] == index


@pytest.mark.parametrize("front", FRONTS)
def test_ping_is_503_until_a_correct_answer_is_possible(trained, tmp_path, front):
    """The front listens before the model is loaded, says 503 (with Retry-After) meanwhile, and its first 200 on
    /ping means /invocations answers right at once (multi-model-server's own /ping says 200 before its engine
    loads: the mms front's edge answers /ping itself)."""
    body, index = probe_for(trained["archive"])
    with local_server(trained["archive"], free_port(), tmp_path / "log.txt", ready=False, front=front) as (url, process):
        early, correct = _watch_ping(url, body, index)
        assert correct
        assert early, "no 503 while the model loaded: the front did not listen before loading"
        assert all(status == 503 and retry and answer["status"] == 503 for status, retry, answer in early), early[:3]
        assert post(url, body)[0] == 200 and process.poll() is None


def test_native_sigterm_while_the_model_loads_exits_0(trained, tmp_path):
    with local_server(trained["archive"], free_port(), tmp_path / "log.txt", ready=False, front="native") as (url, process):
        deadline = time.time() + 120
        while time.time() < deadline and get_status(url) != 503:  # listening, still loading
            time.sleep(0.05)
        assert get_status(url) == 503
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def get_status(url: str) -> int | None:
    try:
        return get(url, "/ping", timeout=5)[0]
    except OSError:
        return None


class HeldRequest:
    """A POST whose body is half sent: the native front has admitted it and waits for the rest."""

    def __init__(self, url: str, body: bytes):
        from urllib.parse import urlsplit

        address = urlsplit(url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=60)
        self.rest = body[len(body) // 2 :]
        self.sock.sendall(f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: "
                          f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body[: len(body) // 2])

    def finish(self) -> int:
        """Send the rest; the answer's status."""
        self.sock.sendall(self.rest)
        answer = b""
        while part := self.sock.recv(65536):
            answer += part
        self.sock.close()
        return int(answer.split(b" ", 2)[1])


def _refused_while_held(url: str, body: bytes) -> tuple[int, str | None, dict]:
    """Post until the front refuses (the held requests may reach it after the first posts): (status, Retry-After,
    JSON) of the refusal. A front with no bound serves every post until the deadline."""
    deadline = time.time() + 60
    while time.time() < deadline:
        status, answer, headers = post(url, body, timeout=30)
        if status != 200:
            return status, headers.get("retry-after"), answer
    pytest.fail("the native front never refused a request past its bound")


def test_native_refuses_requests_past_its_bound_and_stops_at_once_when_full(trained, tmp_path):
    """The native front holds at most DOGBREED_NATIVE_PENDING requests (read, queued or running); past it a 503
    with Retry-After, as multi-model-server's full job queue, before the body is read; then it serves on. SIGTERM
    with the bound full still exits 0."""
    body, index = probe_for(trained["archive"])
    with local_server(trained["archive"], free_port(), tmp_path / "log.txt", front="native",
                      env={DOGBREED_NATIVE_PENDING: "2"}) as (url, process):
        held = [HeldRequest(url, body), HeldRequest(url, body)]
        status, retry, answer = _refused_while_held(url, body)
        assert status == 503 and retry and answer["status"] == 503 and "busy" in answer["error"]
        assert [request.finish() for request in held] == [200, 200]
        status, answer, _ = post(url, body)
        assert status == 200 and answer["predictions"][0][0]["index"] == index
        held = [HeldRequest(url, body), HeldRequest(url, body)]
        assert _refused_while_held(url, body)[0] == 503
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        for request in held:
            request.sock.close()
