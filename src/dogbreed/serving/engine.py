"""The model engine's wire protocol and the serving workers' side of it, without torch.

multi-model-server hands each worker one request at a time and cannot batch ``/invocations`` (it
registers start-up models with a batch size of 1). So on CPU hosts the workers only decode, resize and
crop (:mod:`.pixels`: Pillow and NumPy, no torch), and send uint8 pixels over a unix socket to one
process that holds the model (:mod:`.batcher`): while a forward pass runs, the requests that arrive
queue up, and the next pass takes all of them. A worker then costs a Python process with Pillow and
NumPy, not a copy of torch.

Frames on the socket: 4-byte big-endian length, then a JSON header line (shape, dtype, top_k, explain) and the raw
array (request), or a JSON answer (response: predictions, dog, and explanations where asked).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

import numpy as np
from sagemaker_inference.errors import BaseInferenceToolkitError

from .interface import EngineFed
from .settings import ServingSettings

DEFAULT_WAIT_S = ServingSettings.engine_wait_s  # under multi-model-server's 60 s response timeout, with room for a model load
RETRY_AFTER_S = 5
FAILED_BATCHES = 3  # batches failed in a row, none answered since: the model cannot answer (/ping 503)
DTYPES = ("uint8", "float32")
_LENGTH = struct.Struct(">I")


def failure_path(socket_path) -> Path:
    """Where an engine that cannot load its model writes why (the server shows it on /ping)."""
    return Path(f"{socket_path}.failure")


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


def encode_request(batch, top_k: int, explain: bool = False) -> bytes:
    """A NCHW batch: uint8 pixels (the workers') or float32 tensors already normalized (numpy or CPU torch);
    ``explain``: the answer also carries the top breed's heatmap (un-batched, in the engine)."""
    array = np.asarray(batch)
    if array.dtype.name not in DTYPES:
        array = array.astype(np.float32)
    array = np.ascontiguousarray(array)
    header = json.dumps({"shape": list(array.shape), "dtype": array.dtype.name, "top_k": int(top_k),
                         "explain": bool(explain)}).encode()
    return header + b"\n" + array.tobytes()


def decode_request(payload: bytes) -> tuple[np.ndarray, int, bool]:
    header, _, data = payload.partition(b"\n")
    meta = json.loads(header)
    dtype = meta.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"unexpected dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype).reshape(meta["shape"]), int(meta["top_k"]), meta.get("explain") is True


class EngineUnavailable(BaseInferenceToolkitError):
    """The model engine is down, restarting or too busy to answer within the bound: 503 with ``Retry-After``,
    the client may retry."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_S):
        super().__init__(503, message, message)
        self.retry_after = retry_after


class EngineClient:
    """A serving worker's link to the engine: one connection, reopened when the engine restarts. A request
    waits at most ``wait_s`` in all (connecting, reconnecting after a restart, waiting for the answer)."""

    def __init__(self, socket_path: Path, wait_s: float | None = None):
        self.socket_path = str(socket_path)
        self.wait_s = DEFAULT_WAIT_S if wait_s is None else wait_s
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

    def ask(self, payload: bytes, deadline: float | None = None) -> dict:
        """One request frame's answer: ``{"predictions", "dog"}`` (``"explanations"`` where asked) or ``{"error"}``,
        by ``deadline`` (time.monotonic(); by default ``wait_s`` from now)."""
        return self._ask(payload, time.monotonic() + self.wait_s if deadline is None else deadline)

    def top_k(self, batch, top_k: int) -> list:
        answer = self.ask(encode_request(batch, top_k))
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer["predictions"]


class RemotePredictor(EngineFed):
    """A serving worker's model when the engine process holds it: the forward pass there, batched with the other
    workers' requests."""

    def __init__(self, model_dir: Path, socket_path: str, wait_s: float | None = None):
        super().__init__(model_dir)
        self.client = EngineClient(socket_path, wait_s)
        self.socket_path = socket_path

    def _deadline(self) -> float:
        return time.monotonic() + self.client.wait_s

    def _ask(self, pixels, k: int, explain: bool, deadline: float) -> dict:
        return self.client.ask(encode_request(pixels, k, explain), deadline)

    def describe(self) -> str:
        return f"model in the batching engine at {self.socket_path}"
