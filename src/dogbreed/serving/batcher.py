"""The model engine: one process that holds the model and batches the requests of all serving workers.

The workers send uint8 pixels (:mod:`.engine` is the protocol and their side); here they become float and
normalized (the training package's :meth:`~dogbreed.presets.Preprocessing.normalize_batch`), and while a
forward pass runs, the requests that arrive queue up: the next pass takes all of them (up to
``DOGBREED_SERVE_BATCH``). A lone request waits for nothing. On this 2-core CPU a ResNet50 forward costs
41 ms per image alone and 31 ms per image in a batch of 4.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import functional as F

from ..common import configure_logging
from ..models import read_meta
from . import heap
from .engine import FAILED_BATCHES, decode_request, failure_path, read_frame, send_frame
from .errors import RequestError
from .hardware import NoCuda, cuda_refusal, visible_gpus, warn_if_cuda_is_missing
from .precision_cache import cache_key, cached_setup, remember_setup
from .predictor import Predictor
from .settings import DEFAULT_BATCH, GRAPH_MODES

log = logging.getLogger("dogbreed.engine")

FILL_WAIT_S = 0.01  # longest wait for the rest of a round of concurrent requests


def _predictor(model_dir: Path, threads: int, precision_cache: Path | None, gpu_id: int | None = None,
               graph: str = "auto") -> Predictor:
    """The model in the set-up measured before on this device, CPU, torch, model and thread count, else measured now."""
    meta = read_meta(model_dir)
    key = cache_key(torch.__version__, meta["arch"], int(meta["input_size"]), threads, device=_device_name(gpu_id))
    cached = cached_setup(precision_cache, key)
    if cached:
        log.info("precision %s, channels_last=%d as measured before (%s in %s): no probe", *cached, key, precision_cache)
        return Predictor(model_dir, precision=cached[0], threads=threads, channels_last=cached[1], gpu_id=gpu_id,
                         graph=graph)
    predictor = Predictor(model_dir, precision="auto", threads=threads, gpu_id=gpu_id, graph=graph)
    remember_setup(precision_cache, key, predictor.acc.precision, predictor.acc.channels_last)
    return predictor


def _device_name(gpu_id: int | None = None) -> str:
    """The device the engine's model goes to (accel.pick's: the first GPU where CUDA works), as the precision
    cache keys it: a cache shared by a CPU host and a GPU host of the same CPU model must not mix their choices."""
    available = torch.cuda.is_available()
    warn_if_cuda_is_missing(available)
    return f"cuda:{torch.cuda.get_device_name(gpu_id or 0)}" if available else "cpu"


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system: loading, probing and freezing freed the eager weights, the
    probe's copies and the trace's buffers (about 200 MB for a ResNet50), and glibc keeps freed pages mapped
    until told. The steady state's activations are allocated again on the first batches and stay."""
    gc.collect()
    heap.trim()


Answer = Callable[[dict], None]  # called once per request, on the batch thread: {"predictions": ...} or {"error": ...}
Wanted = Callable[[], bool]  # False once the request stopped waiting (its 503 is sent): its pixels skip the forward pass


def _always() -> bool:
    return True


class EngineHealth:
    """What the batch thread did last, for ``/ping``: when the running forward pass began (None between passes),
    how many batches in a row failed and why the last one did. Written by the batch thread only."""

    def __init__(self):
        self.running_since: float | None = None
        self.failures, self.last_error, self.last_success = 0, None, None

    def succeeded(self) -> None:
        self.failures, self.last_success = 0, time.monotonic()

    def failed(self, reason: str) -> None:
        self.failures, self.last_error = self.failures + 1, reason


class Engine:
    """Holds the model on one device; answers requests in batches. Requests come from this process (:meth:`submit`,
    then :meth:`run_batches` on a thread of its own: the native front) or from the workers' unix socket
    (:func:`serve_forever`: the multi-model-server front)."""

    def __init__(self, model_dir: Path, max_batch: int, threads: int, precision_cache: Path | None = None,
                 max_queued: int = 64, gpu_id: int | None = None, graph: str = "auto"):
        self.predictor = _predictor(Path(model_dir), threads, precision_cache, gpu_id, graph)
        self.predictor.warm_up()
        release_freed_memory()
        self.max_batch = max(1, max_batch)
        # (answer, uint8 NCHW pixels or float32 tensors, top_k, wanted, explain). Bounded: each entry holds its
        # pixels, and a request that stopped waiting leaves them here until the batch thread drops them.
        self.pending: queue.Queue = queue.Queue(maxsize=max(1, max_queued))
        self.batches = 0
        self.recent: collections.deque = collections.deque([1], maxlen=4)  # requests in the last batches
        self.health = EngineHealth()
        self.queued_images, self.running_images = 0, 0  # for load(); the count changes under the lock
        self._counting = threading.Lock()

    def submit(self, pixels, top_k: int, answer: Answer, wanted: Wanted = _always, block: bool = True,
               explain: bool = False) -> None:
        """Queue one request (a NCHW numpy batch); ``answer`` gets its reply once its batch has run, unless
        ``wanted()`` is False by then. The model bounds k. ``block=False``: queue.Full where the queue is full.
        ``explain``: the answer also carries the top breed's heatmap (an eager pass of its own, after the batch)."""
        with self._counting:
            self.queued_images += len(pixels)
        try:
            self.pending.put((answer, pixels, int(top_k), wanted, bool(explain)), block=block)
        except queue.Full:
            self._taken(len(pixels))
            raise

    def _taken(self, images: int) -> None:
        with self._counting:
            self.queued_images -= images

    def load(self) -> int:
        """Images queued or in the running forward pass: where the next request waits least (a request of 1,000
        images weighs as such, not as one)."""
        return self.queued_images + self.running_images

    def run_batches(self) -> None:
        """The batch loop, forever, on the calling thread: the only thread that runs torch (see :meth:`_tensor`).
        A failing batch answers each of its requests with the error, and the loop goes on."""
        while True:
            self.run_batch()

    def _pixels(self, arrays: list):
        """The requests' images in one batch: still uint8 where every request sent pixels (the workers do; the float
        copy is then made a chunk at a time by :meth:`_tensor`), else each made a normalized float tensor."""
        arrays = [np.asarray(array) for array in arrays]  # numpy, or CPU tensors (tests, in process)
        if all(array.dtype == np.uint8 for array in arrays):
            return np.concatenate(arrays)
        return torch.cat([self._tensor(array) for array in arrays])

    def _tensor(self, array) -> torch.Tensor:
        """uint8 pixels -> float, normalized by the eval transform's own last steps (ConvertImageDtype, Normalize,
        the same arithmetic: the same input bits as in process); a float batch is taken as it is. On the batch
        thread only: torch ops on the reader threads would start OpenMP teams of their own beside the forward
        pass's, and the spinning teams cost 20x the throughput on 2 cores."""
        if isinstance(array, torch.Tensor):  # already normalized (:meth:`_pixels`)
            return array
        batch = torch.from_numpy(array if array.flags.writeable else array.copy())  # a socket frame is read-only
        if batch.dtype != torch.uint8:
            return batch
        prep = self.predictor.prep
        return F.normalize(F.convert_image_dtype(batch, torch.float), list(prep.mean), list(prep.std))

    def _next(self, timeout: float | None = None, wait: bool = True):
        """The next request still wanted (waiting for one where ``wait``): those that stopped waiting are dropped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self.pending.get(block=wait, timeout=left)
            self._taken(len(item[1]))
            if item[3]():
                return item

    def _gather(self) -> tuple[list, int]:
        """The next batch's requests: the first in the queue (waited for), then what has queued, up to max_batch images."""
        work = [self._next()]
        images = len(work[0][1])
        # Under concurrency the requests of one round do not arrive together (each is decoded first): wait a
        # few ms for as many as the recent batches held. A lone client's batches hold one: it never waits.
        expected = max(self.recent)
        deadline = time.monotonic() + FILL_WAIT_S
        while images < self.max_batch:
            try:
                if len(work) < expected:
                    item = self._next(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self._next(wait=False)
            except queue.Empty:
                break
            work.append(item)
            images += len(item[1])
        self.recent.append(len(work))
        return work, images

    def _answers(self, work: list) -> list[dict]:
        try:
            batch = self._pixels([item[1] for item in work])
            # One request may hold many images (a JSON-lines batch of Batch Transform): the forward pass never
            # takes more than max_batch at once, and only its chunk is made float, the sizes the memory plan
            # (capacity.py) counts on.
            top_k = max(item[2] for item in work)
            chunks = []
            for start in range(0, len(batch), self.max_batch):
                self.health.running_since = time.monotonic()  # "stuck" is one forward pass, not a whole request
                chunks.append(self.predictor.answer_tensors(self._tensor(batch[start : start + self.max_batch]), top_k))
            rows = [row for chunk in chunks for row in chunk["predictions"]]
            dogs = [dog for chunk in chunks for dog in chunk["dog"]]
            answers, start = [], 0
            for _, tensor, top_k, _, explain in work:
                stop = start + len(tensor)
                answer = {"predictions": [row[:top_k] for row in rows[start:stop]], "dog": dogs[start:stop]}
                if explain:  # its own eager pass with gradients, one photo at a time, after the batch's forward pass
                    answer = self._explained(answer, self._tensor(batch[start:stop]))
                answers.append(answer)
                start = stop
            self.health.succeeded()
            return answers
        except Exception as exc:  # a failure answers every request of the batch, and the engine goes on
            log.exception("batch of %d failed", len(work))
            reason = f"{exc.__class__.__name__}: {exc}"
            self.health.failed(reason)
            return [{"error": reason}] * len(work)

    def _explained(self, answer: dict, tensors: torch.Tensor) -> dict:
        """The answer with its explanations; an explanation that fails answers its own request with the error."""
        self.health.running_since = time.monotonic()  # its own passes, timed from their start
        try:
            return {**answer, "explanations": self.predictor.explain_tensors(tensors, answer["predictions"])}
        except RequestError as exc:  # a 4xx for its request (explain asked of a model it cannot explain)
            return {"error": exc.message, "status": int(exc.status_code)}
        except Exception as exc:
            log.exception("explanation failed")
            return {"error": f"explanation failed: {exc.__class__.__name__}: {exc}"}

    def run_batch(self) -> None:
        """One forward pass for what has queued (waiting for a first request), each request answered."""
        work, images = self._gather()
        self.health.running_since, self.running_images = time.monotonic(), images
        try:
            answers = self._answers(work)
        finally:
            self.health.running_since, self.running_images = None, 0
        self.batches += 1
        if len(work) > 1:
            log.debug("batch %d: %d requests, %d images", self.batches, len(work), images)
        for (answer, *_), reply in zip(work, answers, strict=True):
            try:
                answer(reply)
            except Exception:  # one request's answer that cannot be given must not stop the engine
                log.exception("an answer could not be given")
        if images > self.max_batch:  # run in chunks: its pixels and floats, freed now, go back (see heap.py)
            del work, answers
            heap.trim()


def least_busy(engines: list[Engine]) -> Engine:
    """The engine where a request waits least, among those whose batches do not all fail: a GPU with a sticky CUDA
    error fails at once, keeps an empty queue, and would otherwise draw nearly every request."""
    answering = [engine for engine in engines if engine.health.failures < FAILED_BATCHES] or engines
    return min(answering, key=Engine.load)


def engine_devices(cpu_fallback: bool) -> list[int | None]:
    """Each engine's GPU: every GPU CUDA shows, else one engine on the CPU. Where the driver shows GPUs but CUDA
    cannot start, :class:`~.hardware.NoCuda` (``/ping`` says why) unless ``cpu_fallback``."""
    if torch.cuda.is_available() and torch.cuda.device_count():
        return list(range(torch.cuda.device_count()))
    refusal = cuda_refusal(visible_gpus(), False, cpu_fallback)
    if refusal:
        raise NoCuda(refusal)
    return [None]


def start_engines(model_dir: Path, max_batch: int, threads: int, precision_cache: Path | None, max_queued: int,
                  cpu_fallback: bool = False, graph: str = "auto") -> list[tuple[Engine, threading.Thread]]:
    """One engine per GPU (else one on the CPU), each with its batch thread started; the cores shared between them."""
    devices = engine_devices(cpu_fallback)
    threads = max(1, threads // len(devices))
    started = []
    for gpu in devices:
        engine = Engine(model_dir, max_batch, threads, precision_cache, max_queued=max_queued, gpu_id=gpu, graph=graph)
        thread = threading.Thread(target=engine.run_batches, name=f"engine-batches-{gpu or 0}", daemon=True)
        thread.start()
        started.append((engine, thread))
    if len(started) > 1:
        log.info("%d engines, one per GPU: requests go to the least busy", len(started))
    return started


def serve_forever(engines: list[Engine], socket_path: Path) -> None:
    """Answer the serving workers' frames on a unix socket (:mod:`.engine` is their side), each request on the
    least busy engine; returns never (the batch threads run the engines)."""
    socket_path = Path(socket_path)
    if socket_path.exists():
        socket_path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(64)
    first = engines[0]
    log.info("engine ready on %s: %s, batches of up to %d, %d engine(s)", socket_path, first.predictor.describe(),
             first.max_batch, len(engines))
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=_read, args=(engines, connection), daemon=True).start()


def _still_there(connection: socket.socket) -> bool:
    """Whether the worker still waits on ``connection``: a worker that stopped waiting (its 503 after the wait bound)
    closed it, and its pixels are dropped before the forward pass, as the native front's are."""
    try:
        return connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:  # open, and nothing more sent: it waits
        return True
    except OSError:  # closed here already, by _read once the worker left
        return False


def _read(engines: list[Engine], connection: socket.socket) -> None:
    answer = functools.partial(_send_answer, connection, threading.Lock())
    wanted = functools.partial(_still_there, connection)
    try:
        while True:
            array, top_k, explain = decode_request(read_frame(connection))
            # torch only on the batch threads (Engine._tensor); a full queue holds this worker back
            least_busy(engines).submit(array, top_k, answer, wanted, explain=explain)
    except (ConnectionError, OSError, ValueError, RuntimeError) as exc:  # a worker went away or sent garbage: drop it
        log.debug("connection closed: %s", exc)
        connection.close()


def _send_answer(connection: socket.socket, lock: threading.Lock, reply: dict) -> None:
    """A worker's answer, one frame on its connection (the lock: a frame is never cut by another thread's)."""
    try:
        with lock:
            send_frame(connection, json.dumps(reply).encode())
    except OSError:
        log.debug("a worker left before its answer")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The model process that batches the serving workers' requests")
    parser.add_argument("--model-dir", required=True, type=Path)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--max-batch", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-queued", type=int, default=64, help="requests queued at most (the readers wait past it)")
    parser.add_argument("--cpu-fallback", action="store_true",
                        help="serve on the CPU where GPUs are installed but CUDA cannot start (else refuse, with the reason)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs every batch of more than one request")
    parser.add_argument("--precision-cache", type=Path, default=None,
                        help="a JSON file of measured precisions (default: none, measure)")
    parser.add_argument("--graph", choices=GRAPH_MODES, default="auto", help="the served graph (predictor.py)")
    args = parser.parse_args(argv)
    configure_logging(level=args.log_level.upper())
    try:
        engines = start_engines(args.model_dir, args.max_batch, args.threads, args.precision_cache, args.max_queued,
                                args.cpu_fallback, args.graph)
    except NoCuda as exc:  # the reason as it is: it says what to do
        failure_path(args.socket).write_text(str(exc)[:2000])
        raise
    except Exception as exc:  # the reason, for the server's unhealthy /ping; the traceback goes to the log
        failure_path(args.socket).write_text(f"{exc.__class__.__name__}: {exc}"[:2000])
        raise
    serve_forever([engine for engine, _ in engines], args.socket)


if __name__ == "__main__":
    main()
