"""The multi-model-server front behind the edge: the launcher listens on the published port itself.

multi-model-server's inference API goes to loopback on a port of its own; the launcher answers the port with the
same edge as the native front (:mod:`.edge`: the method checks, bounded heads, read timeouts, JSON errors, no
netty facing the client) and forwards each ``/invocations`` to it. ``/ping`` is answered from the launcher's view,
not multi-model-server's (which says 200 while its body says "Unhealthy", and while the engine still loads):
200 only with the engine ready (where there is one), at least one worker READY by multi-model-server's
management API on loopback, and a request answered end to end within the last few seconds. That last check is
needed: with its worker process killed, multi-model-server 1.1.11 keeps listing the workers READY (until a
request fails on them) and then never brings them back, while every request hangs to its timeout. Where no
client request was answered lately, the launcher sends a small probe image itself. Only an answer the model gave
counts (the worker marks it: ``MODEL_ANSWERED_HEADER``): a 200 the handler gives without the model proves nothing.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import content_types as ct
from .edge import Answer, Edge, EdgeLimits, busy, error, sample_jpeg
from .settings import MODEL_ANSWERED_HEADER, ServingSettings

log = logging.getLogger("dogbreed.serve")

MODEL_NAME = "model"  # the name the launcher registers the start-up model under (--models model=…)
STARTING = "multi-model-server is starting"
PROBE_EVERY_S = 5.0  # an answer older than this is confirmed by a probe request
PROBE_TIMEOUT_S = 15.0  # a probe not answered by then: the server is not answering
# The request headers the worker reads (transformer.py: the body's type and the answer's; handler.input_fn:
# SageMaker's custom attributes); no other is forwarded. netty takes a head of at most 8 KB (HttpServerCodec's
# default) and answers a longer one "400 Invalid HTTP message", where the edge takes 16 KB: a client's other
# headers, which the worker never reads, must not turn a request the edge accepts into that 400.
FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")
# The longest value of each that is forwarded: the three with their names, and the Host, Content-Length and
# Accept-Encoding http.client adds, stay under netty's 8 KB. SageMaker bounds CustomAttributes at 1,024 characters;
# a content type or an Accept list of 2 KB is none a client means. Past it a 431, as for any head too large.
FORWARDED_VALUE_BYTES = 2048
MODEL_ANSWERED = MODEL_ANSWERED_HEADER.lower()


class Health:
    """The launcher's view of the model server, set by its supervising thread, read by ``/ping``: None while a
    request sent now would be answered, else why not. ``final``: the reason will not change (the model cannot be
    served): requests get it at once instead of being forwarded."""

    def __init__(self, reason: str | None = STARTING):
        self.lock = threading.Lock()
        self.reason, self.final = reason, False

    def set(self, reason: str | None, final: bool = False) -> None:
        with self.lock:
            if not self.final:
                if reason != self.reason:
                    log.info("/ping: %s", reason or "healthy")
                self.reason, self.final = reason, final

    def answer(self) -> Answer | None:
        reason = self.reason
        if reason is None:
            return None
        return error(503, reason) if self.final else busy(reason)


def live_workers(management_port: int, timeout: float = 5) -> int:
    """Workers of the model that multi-model-server's management API (loopback) says are READY."""
    connection = http.client.HTTPConnection("127.0.0.1", management_port, timeout=timeout)
    try:
        connection.request("GET", f"/models/{MODEL_NAME}")
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    if response.status != 200:
        return 0
    described = json.loads(raw)
    models = described if isinstance(described, list) else [described]
    return sum(1 for model in models for worker in model.get("workers", []) if worker.get("status") == "READY")


class Prober:
    """When multi-model-server last answered a request through a worker (a client's or the probe's), how many
    client requests it holds now, and how long the recent ones took. While it holds some, an answer within twice the
    longest recent request is enough (at most ``busy_window_s``, the response timeout): with every worker busy on
    long requests a probe would only queue behind them and turn /ping 503 on a server that answers, while a server
    that answers nothing for that long, when its requests take milliseconds, is wedged and found in seconds."""

    def __init__(self, backend_port: int, busy_window_s: float = PROBE_EVERY_S):
        self.backend_port, self.image = backend_port, sample_jpeg()
        self.busy_window_s = max(PROBE_EVERY_S, busy_window_s)
        self.answered_at: float | None = None
        # the event loop's thread changes these (MmsProxy.answer); the watcher only reads them
        self.in_flight = 0
        self.recent_s: collections.deque[float] = collections.deque(maxlen=32)

    def begin(self) -> float:
        self.in_flight += 1
        return time.monotonic()

    def end(self, status: int, began: float, through_model: bool) -> None:
        """A client's request is answered; ``through_model``: the worker marked the answer as the model's."""
        self.in_flight -= 1
        if through_model:
            self.note(status)
            if 200 <= status < 300:
                self.recent_s.append(time.monotonic() - began)

    def window_s(self) -> float:
        """How recent an answer must be for no probe to be needed."""
        if self.in_flight <= 0:
            return PROBE_EVERY_S
        return min(self.busy_window_s, max(PROBE_EVERY_S, 2 * max(self.recent_s, default=0.0)))

    def note(self, status: int) -> None:
        """A client's answer the model gave (:meth:`end`): only a 2xx counts (a 4xx may come after the model
        answered, from output_fn, but a client sending garbage must not keep /ping green)."""
        if 200 <= status < 300:
            self.answered_at = time.monotonic()

    def why_not(self) -> str | None:
        """None where a request was answered within :meth:`window_s`, or the probe sent now is answered."""
        if self.answered_at is not None and time.monotonic() - self.answered_at < self.window_s():
            return None
        (status, raw, _), through_model = forward(self.backend_port, self.image, {"content-type": ct.JPEG},
                                                   PROBE_TIMEOUT_S)
        if status == 200 and through_model:
            self.answered_at = time.monotonic()
            return None
        if status == 200:  # a worker that is not ours (transformer.py), or one answering without its model
            return f"multi-model-server answered a probe request without its model (no {MODEL_ANSWERED_HEADER})"
        why = json.loads(raw)["error"].removesuffix("; retry shortly")
        return f"multi-model-server did not answer a probe request: {status} {why[:200]}"


def why_not_ready(engine_ready: bool | None, management_port: int, prober: Prober) -> str | None:
    """None where a request sent now would be answered. ``engine_ready``: None where there is no engine (each
    worker holds the model: a READY worker has loaded it)."""
    if engine_ready is False:
        return "the model engine is loading (or restarting)"
    try:
        workers = live_workers(management_port)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return f"multi-model-server does not answer its management API ({exc.__class__.__name__})"
    return prober.why_not() if workers else "no live multi-model-server worker"


def as_error_json(status: int, raw: bytes) -> bytes:
    """multi-model-server's own errors ({"code", "type", "message"}) in the documented shape; ours pass as they are."""
    try:
        answer = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        answer = None
    if isinstance(answer, dict) and set(answer) == {"error", "status"}:
        return raw
    message = answer.get("message") if isinstance(answer, dict) else None
    reason = str(message or raw[:300].decode("utf-8", "replace").strip() or f"HTTP {status} from the model server")
    return json.dumps({"error": reason, "status": status}).encode()


def forwarded(headers: dict) -> dict | Answer:
    """The request headers the worker reads (``FORWARDED``), or the 431 for one too long to forward."""
    kept = {name: headers[name] for name in FORWARDED if name in headers}
    for name, value in kept.items():
        if len(value) > FORWARDED_VALUE_BYTES:
            return error(431, f"the {name} header is {len(value):,} characters, over the {FORWARDED_VALUE_BYTES:,} "
                              "this server takes (Request Header Fields Too Large)")
    return kept


def forward(port: int, body: bytes, headers: dict, timeout: float) -> tuple[Answer, bool]:
    """POST the request to multi-model-server on loopback, with ``headers`` (:func:`forwarded`): its answer
    (status, body, headers), and whether the model gave it (the worker's ``MODEL_ANSWERED_HEADER``, which, as any
    header but the content type and Retry-After, never reaches the client)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        status, raw = response.status, response.read()
        answered = {name.lower(): value for name, value in response.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        return busy(f"the model server did not answer ({exc.__class__.__name__})"), False
    finally:
        connection.close()
    kept = {name: answered[name] for name in ("content-type", "retry-after") if name in answered}
    through_model = MODEL_ANSWERED in answered
    if status >= 400:
        return (status, as_error_json(status, raw), {**kept, "content-type": "application/json"}), through_model
    return (status, raw, kept), through_model


class MmsProxy(Edge):
    """The edge of the multi-model-server front: ``/ping`` from :class:`Health`, ``/invocations`` forwarded."""

    def __init__(self, limits: EdgeLimits, health: Health, prober: Prober, timeout_s: float,
                 settings: ServingSettings | None = None):
        super().__init__(limits, settings)
        self.health, self.prober, self.timeout_s = health, prober, timeout_s
        # a thread per admitted request: each waits on multi-model-server's answer, no more are admitted
        self.pool = ThreadPoolExecutor(max_workers=limits.pending, thread_name_prefix="forward")

    def ping(self) -> Answer | None:
        return self.health.answer()

    async def answer(self, body: bytes, headers: dict) -> Answer:
        if self.health.final:
            return self.health.answer()
        outgoing = forwarded(headers)
        if isinstance(outgoing, tuple):  # a header too long to forward: its 431
            return outgoing
        loop = asyncio.get_running_loop()
        began, status, through_model = self.prober.begin(), 0, False
        try:
            answer, through_model = await loop.run_in_executor(self.pool, forward, self.prober.backend_port, body,
                                                               outgoing, self.timeout_s)
            status = answer[0]
        finally:
            self.prober.end(status, began, through_model)
        return answer

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Refusing(Edge):
    """A front for a model that cannot be served: ``/ping`` and ``/invocations`` get 503 with the reason."""

    def __init__(self, limits: EdgeLimits, reason: str, settings: ServingSettings | None = None):
        super().__init__(limits, settings)
        self.reason = reason

    def ping(self) -> Answer | None:
        return error(503, self.reason)

    async def answer(self, body: bytes, headers: dict) -> Answer:
        return error(503, self.reason)
