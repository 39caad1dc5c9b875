"""The native front's ASGI application: ``GET /ping`` and ``POST /invocations`` with the handler's own
``input_fn``, ``predict_fn`` and ``output_fn``, and the multi-model-server front's error JSON.

The event loop only reads bodies and writes answers; each request's decode, crop and wait for its batch run on
a thread pool (Pillow and NumPy release the GIL, and so does the forward pass on the engine's thread), so that
decoding overlaps inference. ``/ping`` is 503 until the model is loaded, warmed and has answered a request
through the whole path: a 200 means a correct answer is possible.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from . import content_types as ct
from . import handler
from .edge import Answer, Edge, EdgeLimits, busy, error
from .errors import http_error
from .native_engine import THREAD_WAIT_S
from .settings import ServingSettings

log = logging.getLogger("dogbreed.serve")

LOADING = "the model is loading"


class _Headers:
    """What ``input_fn`` reads of the toolkit's context: the request's headers (the one adapter the native front
    needs to call the handler directly)."""

    def __init__(self, headers: dict):
        self.request_processor = [self]
        self.headers = headers

    def get_request_properties(self) -> dict:
        return self.headers


def error_answer(exc: BaseException, trace: str) -> tuple[int, bytes, dict]:
    """(status, body, headers): the one mapping both fronts use (errors.http_error)."""
    status, message, retry_after = http_error(exc, trace)
    return error(status, message, {"retry-after": str(retry_after)} if retry_after else None)


class Model:
    """The front's view of the model: loading, ready (the predictor) or failed (the reason)."""

    def __init__(self):
        self.predictor = None
        self.reason: str | None = None

    def not_ready(self, request: bool = False) -> Answer | None:
        """The 503 to answer where a request sent now would not be answered: loading, failed to load, or the
        engine dead, wedged or failing every batch since; None while it would be. For a ``request``, failing
        batches are no reason to refuse it: the next batch may succeed (and say so on /ping)."""
        if self.predictor is not None:
            why = self.predictor.unhealthy(failures=not request)
            return None if why is None else error(503, why)
        if self.reason is not None:
            return error(503, self.reason)
        return busy(LOADING)


def invoke(predictor, body: bytes, headers: dict, default_accept: str,
           read_at: float | None = None) -> tuple[int, bytes, dict]:
    """One request through the handler, on a pool thread: (status, body, headers). ``read_at``: when its body was
    read (time.monotonic()): the wait for this thread since counts against the engine's wait bound."""
    token = THREAD_WAIT_S.set(0.0 if read_at is None else max(0.0, time.monotonic() - read_at))
    try:
        data = handler.input_fn(body, headers.get("content-type"), _Headers(headers))
        prediction = handler.predict_fn(data, predictor)
        accept = headers.get("accept")
        if not accept or accept == ct.ANY:  # as the toolkit's transformer: SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
            accept = default_accept
        response, kind = handler.output_fn(prediction, accept)
        return 200, response.encode(), {"content-type": kind}
    except Exception as exc:  # every failure (MemoryError among them: a 507) becomes its JSON answer; the server goes on
        return error_answer(exc, traceback.format_exc())
    finally:
        THREAD_WAIT_S.reset(token)


class NativeApp(Edge):
    """The native front: the edge, with the handler run in this process on a thread pool."""

    def __init__(self, model: Model, limits: EdgeLimits, threads: int, settings: ServingSettings | None = None):
        super().__init__(limits, settings)
        self.model = model
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")

    def ping(self) -> Answer | None:
        return self.model.not_ready()

    async def answer(self, body: bytes, headers: dict) -> Answer:
        not_ready = self.model.not_ready(request=True)
        if not_ready:
            return not_ready
        predictor, accept, read_at = self.model.predictor, self.settings.default_accept, time.monotonic()
        bodies = [body]  # emptied on a cancel: the pool keeps a cancelled job queued until a thread reaches it
        job = self.pool.submit(lambda: invoke(predictor, bodies.pop(), headers, accept, read_at))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job)), self.settings.engine_wait_s)
        except TimeoutError:
            # No thread took it within the wait bound (the threads are all decoding others' big bodies): a 503 to
            # retry now, before the client's own timeout. One a thread took goes on: the engine's wait bounds it.
            if job.cancel():
                bodies.clear()
                return busy(f"no request thread was free within {self.settings.engine_wait_s:g} s")
            return await asyncio.wrap_future(job)

    def close(self) -> None:
        """Drop the queued requests (their clients are gone with the server): the interpreter's exit would run
        each of them, past the stop's grace period. Those running finish."""
        self.pool.shutdown(wait=False, cancel_futures=True)
