"""The batching engines inside the native front's own process: the same :class:`~.batcher.Engine` (the same
precision cache, warm-up and batch policy), fed in memory (:meth:`~.batcher.Engine.submit`) instead of from a
unix socket. One engine per GPU (its own model copy and batch thread), else one on the CPU; each request goes to
the engine with the least work queued.

The requests' threads decode and crop (:mod:`.pixels`, Pillow and NumPy, which release the GIL), submit uint8
pixels to an engine and wait; each engine's batch thread is the only thread that runs torch for it (the
engine's own rule: torch ops elsewhere start OpenMP teams that fight the forward pass for the cores).

A request that stops waiting (its 503 after the wait bound) tells its engine so: its pixels are dropped before the
forward pass instead of holding the queue, which is bounded (a 503 to retry past it).
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from pathlib import Path

from .engine import FAILED_BATCHES, EngineUnavailable
from .hardware import available_cores
from .interface import EngineFed
from .settings import ServingSettings

log = logging.getLogger("dogbreed.serve")

# How long the request on this thread waited for the thread, where its front says (the native front): that wait
# counts against the engine's bound, so that the 503 still comes before the client's own timeout. Its decode does
# not: a big body's decode is the request's own work, as on the mms front.
THREAD_WAIT_S: contextvars.ContextVar[float] = contextvars.ContextVar("thread_wait_s", default=0.0)
MIN_WAIT_S = 0.05  # less left than this: a 503 at once, not a queue place taken for an answer nobody waits for


class _Reply:
    """One request's answer: an engine's batch thread gives it, the request's thread waits for it."""

    def __init__(self):
        self.done = threading.Event()
        self.answer: dict | None = None
        self.waiting = True

    def give(self, answer: dict) -> None:
        self.answer = answer
        self.done.set()

    def wanted(self) -> bool:
        return self.waiting

    def wait(self, timeout: float) -> dict | None:
        """The answer, or None after ``timeout``."""
        if not self.done.wait(timeout):
            self.waiting = False  # its engine drops the pixels rather than run them for nobody
            return None
        return self.answer


def why_unhealthy(engine, thread: threading.Thread, wait_s: float, now: float, failures: bool = True) -> str | None:
    """Why one engine would not answer a request sent now, or None. A long queue on a busy engine is no reason:
    only a forward pass running past twice the wait bound, or (``failures``) batches that all fail."""
    if not thread.is_alive():
        return "the model engine stopped (its batch thread ended; see the log)"
    health = engine.health
    running = health.running_since
    if running is not None and now - running > 2 * wait_s:
        return f"the model engine is stuck: its forward pass has run for {now - running:.0f} s"
    if failures and health.failures >= FAILED_BATCHES:
        return f"the model engine's last {health.failures} batches failed, none answered since: {health.last_error}"
    return None


class InProcessPredictor(EngineFed):
    """What ``predict_fn`` calls on the native front: ``engines`` are (engine, its batch thread) pairs."""

    def __init__(self, engines: list, model_dir: Path, wait_s: float = ServingSettings.engine_wait_s):
        super().__init__(model_dir)
        self.engines, self.wait_s = list(engines), wait_s

    def _deadline(self) -> float:
        return time.monotonic() + self.wait_s - THREAD_WAIT_S.get()

    def _ask(self, pixels, k: int, explain: bool, deadline: float) -> dict:
        timeout = self._time_left(deadline)
        engine = self._least_busy()
        reply = _Reply()
        try:
            engine.submit(pixels, k, reply.give, reply.wanted, block=False, explain=explain)
        except queue.Full:
            raise EngineUnavailable("the model engine's queue is full") from None
        answer = reply.wait(timeout)
        if answer is None:
            raise self._no_answer()
        return answer

    def _time_left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left < MIN_WAIT_S:
            raise self._no_answer()
        return left

    def _no_answer(self) -> EngineUnavailable:
        """The 503 of a request whose wait bound is spent, saying how much of it went waiting for a thread."""
        queued = min(THREAD_WAIT_S.get(), self.wait_s)
        share = ("all of it" if queued >= self.wait_s - MIN_WAIT_S else f"{queued:.1f} s of it") if queued >= 0.1 else ""
        return EngineUnavailable(f"the model engine gave no answer within {self.wait_s:g} s"
                                 + (f" ({share} waiting for a request thread)" if share else ""))

    def unhealthy(self, failures: bool = True) -> str | None:
        """Why a request sent now would get no answer, or None (any engine's reason: a request may go to it).
        ``failures=False``: not for failing batches (a request is still let through: the next batch may succeed)."""
        now = time.monotonic()
        for index, (engine, thread) in enumerate(self.engines):
            why = why_unhealthy(engine, thread, self.wait_s, now, failures)
            if why:
                return why if len(self.engines) == 1 else f"engine {index}: {why}"
        return None

    def describe(self) -> str:
        first = self.engines[0][0]
        return (f"model in this process: {len(self.engines)} engine(s), {first.predictor.describe()}, "
                f"batches of up to {first.max_batch}")

    def _least_busy(self):
        from .batcher import least_busy  # imported already: it built the engines (torch is not imported for it)

        return least_busy([engine for engine, _ in self.engines])


def start_engine(model_dir: Path, state_dir: Path, settings: ServingSettings) -> InProcessPredictor:
    """Load, warm and start the engines (torch is imported here, not before: the front listens meanwhile)."""
    from .batcher import start_engines

    cache = Path(settings.precision_cache or Path(state_dir) / "precision.json")
    # A queue of its own per engine, as long as the requests the edge admits: those that stopped waiting (the
    # engine is slower than the wait bound) hold places until the engine drops them, and a 503 to retry then
    # tells the client at once rather than after another wait bound.
    engines = start_engines(model_dir, settings.max_batch, settings.threads or available_cores(), cache,
                            settings.pending, settings.cpu_fallback, settings.graph)
    return InProcessPredictor(engines, model_dir, settings.engine_wait_s)
