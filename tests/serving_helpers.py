"""Start the real serving stack (``dogbreed local-serve``) on loopback for a test, and stop it; with either front
(``DOGBREED_SERVER``: multi-model-server or native)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

from dogbreed.env import DOGBREED_SERVER
from dogbreed.serving.client import wait_until_correct
from dogbreed.serving.server import FRONTS

__all__ = ["FRONTS"]  # the fronts the HTTP, fuzz and load tests run against


def jpeg_bytes(color=(120, 80, 40), size=(128, 96)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def post(url: str, body: bytes, content_type: str | None = "image/jpeg", headers=None, timeout=60):
    """(status, parsed JSON or raw text, headers) for POST /invocations."""
    if content_type is None:
        return _post_without_content_type(url, body, headers or {}, timeout)
    request = urllib.request.Request(url.rstrip("/") + "/invocations", data=body, method="POST")
    if content_type is not None:
        request.add_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, hdrs = response.read(), response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, {k.lower(): v for k, v in exc.headers.items()}
    try:
        return status, json.loads(raw), hdrs
    except (json.JSONDecodeError, UnicodeDecodeError):
        return status, raw.decode("utf-8", "replace"), hdrs


def _post_without_content_type(url, body, headers, timeout):
    """urllib always adds a form content type; http.client sends none at all."""
    import http.client
    from urllib.parse import urlparse

    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Length": str(len(body)), **headers})
        response = connection.getresponse()
        raw, status = response.read(), response.status
        hdrs = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    try:
        return status, json.loads(raw), hdrs
    except (json.JSONDecodeError, UnicodeDecodeError):
        return status, raw.decode("utf-8", "replace"), hdrs


def get(url: str, path: str = "/ping", timeout=10):
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def probe_for(model: Path) -> tuple[bytes, int]:
    """A JPEG body and the top-1 class index the in-process model gives it: the answer that tells a server that
    classifies from one that merely answers 200. Of a few candidates, the one with the clearest top-1
    (the largest lead over the second), so that no rounding difference between the server and this
    process can flip it."""
    import random
    import tempfile

    from dogbreed.sample import draw_example
    from dogbreed.serving.archive import model_dir_from
    from dogbreed.serving.predictor import Predictor

    candidates = [jpeg_bytes()]
    for label in range(5):
        buffer = io.BytesIO()
        draw_example(label, 96, random.Random(label)).save(buffer, "JPEG", quality=90)
        candidates.append(buffer.getvalue())
    with tempfile.TemporaryDirectory(prefix="probe-model-") as scratch:
        predictor = Predictor(model_dir_from(Path(model), Path(scratch)))
        answers = [predictor.top_k([Image.open(io.BytesIO(body))], k=2)[0] for body in candidates]
    _lead, body, index = max((rows[0]["probability"] - rows[1]["probability"], body, rows[0]["index"])
                            for rows, body in zip(answers, candidates, strict=True))
    return body, index


def wait_ready(url: str, body: bytes, index: int, process=None, timeout: float = 180) -> float:
    """Ready = the first 200 from /invocations that carries ``index``, the in-process model's top-1 for ``body``
    (not /ping, not any 200). Returns the seconds it took."""
    from urllib.parse import urlsplit

    address = urlsplit(url)
    return wait_until_correct(address.hostname, address.port, body, index, process, timeout)


def wait_healthy(url: str, timeout: float = 60) -> None:
    """/ping 200: the mms front's launcher sees the first answers on its next check (about a second later)."""
    deadline, status = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            status = get(url, "/ping")[0]
        except OSError:
            status = None
        if status == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{url}/ping answered {status}, not 200, within {timeout:.0f} s of a correct answer")


@contextlib.contextmanager
def local_server(model: Path, port: int, log_path: Path, workers: int | None = None, ready: bool = True, env=None,
                 front: str = "mms"):
    probe = probe_for(model) if ready else None  # before the server starts: not on its cores during start-up
    env = {**(env or {}), DOGBREED_SERVER: front}
    command = [sys.executable, "-m", "dogbreed.cli", "local-serve", "--model", str(model), "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    log = open(log_path, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        if ready:
            wait_ready(url, *probe, process)
            wait_healthy(url)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def post_oversized(url: str, size: int, content_type: str = "image/jpeg", timeout=30) -> tuple[int, str]:
    """POST a body of ``size`` bytes over a raw socket, tolerating the server closing early.

    A server that refuses a body over its limit answers before reading it all; urllib then reports a
    reset instead of the answer. Returns (status, reason phrase + body)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port), timeout=timeout)
    try:
        head = (f"POST /invocations HTTP/1.1\r\nHost: {parsed.hostname}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head)
        chunk = b"\xff" * 65536
        sent = 0
        try:
            while sent < size:
                sock.sendall(chunk[: min(len(chunk), size - sent)])
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        sock.close()
    status_line, _, rest = data.partition(b"\r\n")
    parts = status_line.decode("latin-1").split(" ", 2)
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(parts[1]), (parts[2] if len(parts) > 2 else "") + " " + body.decode("utf-8", "replace")


class Load:
    """``concurrency`` threads posting the same JPEG until ``seconds`` pass (and at least ``minimum`` requests)."""

    def __init__(self, port: int, body: bytes, concurrency: int):
        self.port, self.body, self.concurrency = port, body, concurrency
        self.results: list[tuple[float, float, int]] = []  # (finished at, latency, status)
        self.lock = threading.Lock()

    def _worker(self, deadline: float, minimum: int, hard_deadline: float):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while True:
            now = time.time()
            with self.lock:
                done = len(self.results)
            if (now >= deadline and done >= minimum) or now >= hard_deadline:
                break
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body=self.body, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.lock:
                self.results.append((time.time(), time.perf_counter() - start, status))
        connection.close()

    def run(self, seconds: float, minimum: int = 0, hard_limit: float = 300):
        deadline, hard = time.time() + seconds, time.time() + hard_limit
        threads = [threading.Thread(target=self._worker, args=(deadline, minimum, hard)) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        return threads


def exchange_raw(url: str, data: bytes, timeout: float = 30) -> tuple[bytes, bool]:
    """Send raw bytes on a fresh connection and read until the server closes it or goes quiet: (every byte it sent
    back, whether it closed the connection). A server that resets the connection while the bytes are still being
    sent (it refused the head) may already have answered: read on."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=timeout)
    received, closed = b"", False
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while part := sock.recv(65536):
                received += part
            closed = True
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            pass
    finally:
        sock.close()
    return received, closed


def exchange(url: str, data: bytes, timeout: float = 30) -> tuple[int, dict, bytes, bool]:
    """:func:`exchange_raw`, read as its first answer: (status, headers, body, whether the server closed)."""
    received, closed = exchange_raw(url, data, timeout)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:]) if value}
    length = int(headers.get("content-length", len(body)))
    return int(lines[0].split(" ", 2)[1]), headers, body[:length], closed


def send(port: int, body: bytes, content_type: str | None, headers: dict | None = None, timeout=120):
    """(status, parsed JSON or raw bytes): the header names go out exactly as written (urllib would capitalize
    them), and no Content-Type at all where ``content_type`` is None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest("POST", "/invocations", skip_accept_encoding=True)
        for name, value in {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    try:
        return status, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return status, raw


# The served engine measures its own precision (bf16 where the CPU has it) and batches with other requests; the
# in-process model of a test measures its own: their probabilities agree to this much, not bit for bit.
PROBABILITY_ATOL = 0.02


def assert_same_ranking(got: list[list[dict]], want: list[list[dict]], atol: float = PROBABILITY_ATOL) -> None:
    """Two top-k answers agree: the same number of rows, the k-th probability within ``atol`` at each place, and
    the same breed at each place unless the two breeds there are a near-tie (their probabilities within ``atol``
    in the expected answer), which precision or batching may order either way."""
    assert len(got) == len(want), (got, want)
    for got_rows, want_rows in zip(got, want, strict=True):
        assert len(got_rows) == len(want_rows), (got_rows, want_rows)
        expected = {row["breed"]: row["probability"] for row in want_rows}
        for place, (mine, theirs) in enumerate(zip(got_rows, want_rows, strict=True)):
            assert abs(mine["probability"] - theirs["probability"]) <= atol, (place, got_rows, want_rows)
            if mine["breed"] != theirs["breed"]:
                tied = mine["breed"] not in expected or abs(expected[mine["breed"]] - theirs["probability"]) <= atol
                assert tied, (place, got_rows, want_rows)
