"""The batching engine inside the native front's own process: the same :class:`~.batcher.Engine` (the same
precision cache, warm-up and batch policy), fed in memory (:meth:`~.batcher.Engine.submit`) instead of from a
unix socket.

The requests' threads decode and crop (:mod:`.pixels`, Pillow and NumPy, which release the GIL), submit uint8
pixels to the engine and wait; one thread runs the engine's batch loop, the only thread that runs torch
(the engine's own rule: torch ops elsewhere start OpenMP teams that fight the forward pass for the cores).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from .. import env as envnames
from .engine import DEFAULT_BATCH, EngineUnavailable, wait_bound
from .hardware import available_cores
from .pixels import EvalCrop, read_meta
from .precision_cache import DOGBREED_PRECISION_CACHE

log = logging.getLogger("dogbreed.serve")


class Unanswered:
    """When each request not yet answered by the engine was submitted: a request the engine has held far past
    the wait bound means a wedged forward pass (the request itself stopped waiting at the bound, with a 503)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.since: dict[int, float] = {}

    def add(self, key: int, now: float) -> None:
        with self.lock:
            self.since[key] = now

    def remove(self, key: int) -> None:
        with self.lock:
            self.since.pop(key, None)

    def oldest_age(self, now: float) -> float:
        with self.lock:
            return now - min(self.since.values(), default=now)


class _Reply:
    """One request's answer: the engine's batch thread gives it, the request's thread waits for it."""

    def __init__(self, unanswered: Unanswered):
        self.done = threading.Event()
        self.answer: dict | None = None
        self.unanswered = unanswered
        unanswered.add(id(self), time.monotonic())

    def give(self, answer: dict) -> None:
        self.unanswered.remove(id(self))
        self.answer = answer
        self.done.set()

    def wait(self, timeout: float) -> dict:
        if not self.done.wait(timeout):
            raise EngineUnavailable(f"the model engine gave no answer within {timeout:.0f} s")
        return self.answer


class InProcessPredictor:
    """What ``predict_fn`` calls: the twin of :class:`~.engine.RemotePredictor`, with the engine in this process."""

    def __init__(self, engine, model_dir: Path, thread: threading.Thread):
        self.engine, self.thread = engine, thread
        self.unanswered = Unanswered()
        self.meta = read_meta(Path(model_dir))
        self.crop = EvalCrop.from_meta(self.meta)
        self.draft_size = self.crop.resize  # JPEGs decode at the reduced scale training decoded them at
        self.wait_s = wait_bound()

    def top_k(self, images, k: int = 5) -> list[list[dict]]:
        return self.answer(images, k)["predictions"]

    def answer(self, images, k: int = 5, explain: bool = False) -> dict:
        """The engine's ``{"predictions", "dog"}`` (and ``"explanations"`` where asked)."""
        reply = _Reply(self.unanswered)
        self.engine.submit(self.crop.batch(images), int(k), reply.give, explain)  # the engine's Predictor bounds k
        answer = reply.wait(self.wait_s)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def unhealthy(self) -> str | None:
        """Why a request sent now would get no answer, or None: the engine's thread ended, or it has held a
        request for twice the wait bound (a forward pass that does not end)."""
        if not self.thread.is_alive():
            return "the model engine stopped (its batch thread ended; see the log)"
        held = self.unanswered.oldest_age(time.monotonic())
        if held > 2 * self.wait_s:
            return f"the model engine is stuck: a request has waited {held:.0f} s for its forward pass"
        return None

    def describe(self) -> str:
        return f"model in this process: {self.engine.predictor.describe()}, batches of up to {self.engine.max_batch}"


def start_engine(model_dir: Path, state_dir: Path) -> InProcessPredictor:
    """Load, warm and start the engine (torch is imported here, not before: the front listens meanwhile)."""
    from .batcher import Engine

    batch = int(os.environ.get(envnames.DOGBREED_SERVE_BATCH) or DEFAULT_BATCH)
    threads = int(os.environ.get(envnames.DOGBREED_SERVE_THREADS) or available_cores())
    cache = Path(os.environ.get(DOGBREED_PRECISION_CACHE) or Path(state_dir) / "precision.json")
    engine = Engine(model_dir, batch, threads, cache)
    warn_of_idle_gpus()
    thread = threading.Thread(target=engine.run_batches, name="engine-batches", daemon=True)
    thread.start()
    return InProcessPredictor(engine, model_dir, thread)


def warn_of_idle_gpus() -> None:
    """The native front's one engine holds its model on the first GPU; multi-model-server's front runs a worker
    per GPU. Say so where more than one is visible, so that a multi-GPU instance is not half idle unnoticed."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1:
        log.warning("%d GPUs visible, the native front serves on GPU 0 only: the other %d stay idle; the "
                    "multi-model-server front (%s=mms) runs one worker per GPU and uses them all",
                    count, count - 1, envnames.DOGBREED_SERVER)
