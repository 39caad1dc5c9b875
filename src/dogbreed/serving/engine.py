"""One model process that batches the requests of all serving workers (CPU hosts).

multi-model-server hands each worker one request at a time and cannot batch ``/invocations`` (it
registers start-up models with a batch size of 1). So on CPU hosts the workers only decode and
preprocess (the training package's preprocessing), and send the tensors over a unix socket to this
process, which holds the one model: while a forward pass runs, the requests that arrive queue up,
and the next pass takes all of them (up to ``DOGBREED_SERVE_BATCH``). A lone request waits for nothing.
On this 2-core CPU a ResNet50 forward costs 41 ms per image alone and 31 ms per image in a batch of 4.

Frames on the socket: 4-byte big-endian length, then a JSON header line and the raw float32 tensor
(request) or a JSON answer (response).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import torch
from sagemaker_inference.errors import BaseInferenceToolkitError

from ..common import configure_logging
from ..models import read_meta
from ..presets import Preprocessing
from .predictor import ModelInputs, Predictor

log = logging.getLogger("dogbreed.engine")

DEFAULT_BATCH = 8
FILL_WAIT_S = 0.01  # longest wait for the rest of a round of concurrent requests
_LENGTH = struct.Struct(">I")
DOGBREED_ENGINE_WAIT_S = "DOGBREED_ENGINE_WAIT_S"  # the longest a request waits for the engine (then a 503)
DEFAULT_WAIT_S = 30.0  # under multi-model-server's 60 s response timeout, with room for a model load
RETRY_AFTER_S = 5


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_read_exactly(sock, _LENGTH.size))
    return _read_exactly(sock, length)


def encode_request(tensor: torch.Tensor, top_k: int) -> bytes:
    array = np.ascontiguousarray(tensor.numpy(), dtype=np.float32)
    header = json.dumps({"shape": list(array.shape), "top_k": int(top_k)}).encode()
    return header + b"\n" + array.tobytes()


def decode_request(payload: bytes) -> tuple[torch.Tensor, int]:
    header, _, data = payload.partition(b"\n")
    meta = json.loads(header)
    array = np.frombuffer(data, dtype=np.float32).reshape(meta["shape"])
    return torch.from_numpy(array.copy()), int(meta["top_k"])


class Engine:
    """Holds the model; answers the tensors of every connection, in batches."""

    def __init__(self, model_dir: Path, socket_path: Path, max_batch: int, threads: int):
        self.predictor = Predictor(model_dir, threads=threads)
        self.predictor.warm_up()
        self.socket_path, self.max_batch = Path(socket_path), max(1, max_batch)
        self.pending: queue.Queue = queue.Queue()
        self.batches = 0
        self.recent: collections.deque = collections.deque([1], maxlen=4)  # requests in the last batches

    def serve_forever(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.socket_path))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        log.info("engine ready on %s: %s, batches of up to %d", self.socket_path, self.predictor.describe(), self.max_batch)
        while True:
            self._run_batch()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=self._read, args=(connection, threading.Lock()), daemon=True).start()

    def _read(self, connection: socket.socket, lock: threading.Lock) -> None:
        try:
            while True:
                tensor, top_k = decode_request(read_frame(connection))
                self.pending.put((connection, lock, tensor, top_k))
        except (ConnectionError, OSError, ValueError) as exc:  # a worker went away (or sent garbage): drop it
            log.debug("connection closed: %s", exc)
            connection.close()

    def _run_batch(self) -> None:
        work = [self.pending.get()]
        images = len(work[0][2])
        # Under concurrency the requests of one round do not arrive together (each is decoded first): wait a
        # few ms for as many as the recent batches held. A lone client's batches hold one: it never waits.
        expected = max(self.recent)
        deadline = time.monotonic() + FILL_WAIT_S
        while images < self.max_batch:
            try:
                if len(work) < expected:
                    item = self.pending.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self.pending.get_nowait()
            except queue.Empty:
                break
            work.append(item)
            images += len(item[2])
        self.recent.append(len(work))
        try:
            rows = self.predictor.top_k_tensors(torch.cat([item[2] for item in work]), max(item[3] for item in work))
            answers, start = [], 0
            for _, _, tensor, top_k in work:
                answers.append({"predictions": [row[:top_k] for row in rows[start : start + len(tensor)]]})
                start += len(tensor)
        except Exception as exc:  # a failure answers every request of the batch, and the engine goes on
            log.exception("batch of %d failed", len(work))
            answers = [{"error": f"{exc.__class__.__name__}: {exc}"}] * len(work)
        self.batches += 1
        if len(work) > 1:
            log.debug("batch %d: %d requests, %d images", self.batches, len(work), images)
        for (connection, lock, _, _), answer in zip(work, answers, strict=True):
            try:
                with lock:
                    send_frame(connection, json.dumps(answer).encode())
            except OSError:
                log.debug("a worker left before its answer")


class EngineUnavailable(BaseInferenceToolkitError):
    """The model engine is down, restarting or too busy to answer within the bound: 503 with ``Retry-After``,
    the client may retry."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S):
        super().__init__(503, message, message)
        self.retry_after = retry_after


def wait_bound() -> float:
    """The longest a request waits for the engine (down, restarting or busy): shorter than the front's own
    response timeout (multi-model-server's is 60 s), so that the client gets a 503 it can retry, not a timeout."""
    return float(os.environ.get(DOGBREED_ENGINE_WAIT_S) or DEFAULT_WAIT_S)


class EngineClient:
    """A serving worker's link to the engine: one connection, reopened when the engine restarts. A request
    waits at most ``wait_s`` in all (connecting, reconnecting after a restart, waiting for the answer)."""

    def __init__(self, socket_path: Path, wait_s: float | None = None):
        self.socket_path = str(socket_path)
        self.wait_s = wait_bound() if wait_s is None else wait_s
        self.sock: socket.socket | None = None

    def _connect(self, deadline: float) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                return sock
            except OSError as exc:
                sock.close()
                if time.monotonic() + 0.1 > deadline:
                    raise EngineUnavailable(f"the model engine is not ready (waited {self.wait_s:.0f} s): {exc}") from exc
                time.sleep(0.1)

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def _ask(self, payload: bytes, deadline: float) -> dict:
        while True:  # reconnect while the engine restarts, up to the deadline
            try:
                if self.sock is None:
                    self.sock = self._connect(deadline)
                self.sock.settimeout(max(0.1, deadline - time.monotonic()))
                send_frame(self.sock, payload)
                return json.loads(read_frame(self.sock))
            except TimeoutError as exc:  # the answer may still come: this connection is out of step now
                self._drop()
                raise EngineUnavailable(f"the model engine gave no answer within {self.wait_s:.0f} s") from exc
            except (ConnectionError, OSError) as exc:
                self._drop()
                if time.monotonic() + 0.1 > deadline:
                    raise EngineUnavailable(f"the model engine went away: {exc}") from exc
                time.sleep(0.1)

    def top_k(self, batch, top_k: int) -> list:
        answer = self._ask(encode_request(batch, top_k), time.monotonic() + self.wait_s)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["predictions"]


class RemotePredictor(ModelInputs):
    """A serving worker's model when the engine holds it (:class:`Engine`): the same preprocessing, here;
    the forward pass there, batched with the other workers' requests."""

    def __init__(self, model_dir: Path, socket_path: str):
        torch.set_num_threads(1)  # decoding only: the engine has the cores
        meta = read_meta(Path(model_dir))
        super().__init__(meta, Preprocessing.from_json(meta))
        self.client = EngineClient(socket_path)
        self.socket_path = socket_path

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        return self.client.top_k(self.tensor(images), k)  # the engine's Predictor bounds k

    def warm_up(self, rounds: int = 1) -> None:
        """The preprocessing only: the engine warms its own model, and may still be loading it."""
        self.tensor([self.blank_image()])

    def describe(self) -> str:
        return f"model in the batching engine at {self.socket_path}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The model process that batches the serving workers' requests")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs every batch of more than one request")
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level.upper())
    Engine(args.model_dir, args.socket, args.max_batch, args.threads).serve_forever()


if __name__ == "__main__":
    main()
