"""The native front's ASGI application: ``GET /ping`` and ``POST /invocations`` with the handler's own
``input_fn``, ``predict_fn`` and ``output_fn``, and the multi-model-server front's error JSON.

The event loop only reads bodies and writes answers; each request's decode, crop and wait for its batch run on
a thread pool (Pillow and NumPy release the GIL, and so does the forward pass on the engine's thread), so that
decoding overlaps inference. ``/ping`` is 503 until the model is loaded, warmed and has answered a request
through the whole path: a 200 means a correct answer is possible.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

from sagemaker_inference.environment import Environment
from sagemaker_inference.errors import BaseInferenceToolkitError, GenericInferenceToolkitError

from . import content_types as ct
from . import handler
from .engine import RETRY_AFTER_S
from .transformer import JsonErrorTransformer

log = logging.getLogger("dogbreed.serve")

LOADING = "the model is loading"


class _RequestContext:
    """The part of the toolkit's context that ``input_fn`` reads: the request's headers."""

    def __init__(self, headers: dict):
        self.request_processor = [self]
        self.headers = headers

    def get_request_properties(self) -> dict:
        return self.headers


class _ErrorContext:
    """The part of the toolkit's context that the front's error answer writes: status and headers."""

    def __init__(self):
        self.status, self.headers = 500, {}

    def set_response_status(self, code, phrase=None) -> None:
        self.status = int(code)

    def set_response_content_type(self, index, kind) -> None:
        self.headers["content-type"] = kind

    def set_response_header(self, index, name, value) -> None:
        self.headers[name.lower()] = value


def error_answer(exc: BaseException, trace: str) -> tuple[int, bytes, dict]:
    """(status, body, headers): the multi-model-server front's answer to the same exception (transformer.py)."""
    if isinstance(exc, BaseInferenceToolkitError):
        error = exc
    elif isinstance(exc, MemoryError):
        error = GenericInferenceToolkitError(507, "out of memory")
    else:  # a bug of ours: a 500 with the reason, the traceback in the log
        error = GenericInferenceToolkitError(int(HTTPStatus.INTERNAL_SERVER_ERROR), f"{exc.__class__.__name__}: {exc}")
    context = _ErrorContext()
    body = JsonErrorTransformer.handle_error(context, error, trace)[0]
    return context.status, body.encode(), context.headers


def _json(status: int, payload: dict, headers: dict | None = None) -> tuple[int, bytes, dict]:
    return status, json.dumps(payload).encode(), {"content-type": ct.JSON, **(headers or {})}


class Model:
    """The front's view of the model: loading, ready (the predictor) or failed (the reason)."""

    def __init__(self):
        self.predictor = None
        self.reason: str | None = None

    def not_ready(self) -> tuple[int, bytes, dict] | None:
        """The 503 to answer while there is no model to answer with; None once there is."""
        if self.predictor is not None:
            return None
        if self.reason is not None:
            return _json(503, {"error": self.reason, "status": 503})
        return _json(503, {"error": f"{LOADING}; retry shortly", "status": 503}, {"retry-after": str(RETRY_AFTER_S)})


def invoke(predictor, body: bytes, headers: dict, default_accept: str) -> tuple[int, bytes, dict]:
    """One request through the handler, on a pool thread: (status, body, headers)."""
    try:
        data = handler.input_fn(body, headers.get("content-type"), _RequestContext(headers))
        prediction = handler.predict_fn(data, predictor)
        accept = headers.get("accept")
        if not accept or accept == ct.ANY:  # as the toolkit's transformer: SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT
            accept = default_accept
        response, kind = handler.output_fn(prediction, accept)
        return 200, response.encode(), {"content-type": kind}
    except Exception as exc:  # every failure (MemoryError among them: a 507) becomes its JSON answer; the server goes on
        return error_answer(exc, traceback.format_exc())


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


class NativeApp:
    """The ASGI application (raw ASGI: two routes need no framework)."""

    def __init__(self, model: Model, max_request_bytes: int, threads: int, pending: int):
        self.model, self.limit = model, max_request_bytes
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")
        self.default_accept = Environment().default_accept
        # Requests admitted (reading their body, queued or running): multi-model-server refuses work past its job
        # queue too. Without a bound a burst of 6 MB bodies fills the one process's memory, and queued requests
        # outlive the client's 60 s. A counter suffices: only the event loop's thread touches it.
        self.pending, self.admitted = max(1, pending), 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping" and method in ("GET", "HEAD"):
            answer = self.model.not_ready() or _json(200, {"status": "Healthy"})
        elif path == "/invocations" and method == "POST":
            try:
                answer = await self._admitted(scope, receive)
            except ClientGone:
                return
        elif path in ("/ping", "/invocations"):
            answer = _json(405, {"error": f"{method} is not allowed on {path}", "status": 405})
        else:
            answer = _json(404, {"error": f"no such resource: {path[:100]}; this server answers /ping and /invocations",
                                 "status": 404})
        await _respond(send, *answer)

    async def _admitted(self, scope, receive) -> tuple[int, bytes, dict]:
        """The request's answer, or a 503 to retry where ``pending`` requests are in already: refused before its
        body is read, so that refusing costs no memory."""
        if self.admitted >= self.pending:
            return _json(503, {"error": f"the server is busy ({self.pending} requests in progress); retry shortly",
                               "status": 503}, {"retry-after": str(RETRY_AFTER_S)})
        self.admitted += 1
        try:
            return await self._invocation(scope, receive)
        finally:
            self.admitted -= 1

    def close(self) -> None:
        """Drop the queued requests (their clients are gone with the server): the interpreter's exit would run
        each of them, past the stop's grace period. Those running finish."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _invocation(self, scope, receive) -> tuple[int, bytes, dict]:
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        body = await self._body(headers, receive)
        if body is None:
            return _json(413, {"error": f"the request body is over the {self.limit:,}-byte limit (Request Entity Too "
                                        "Large)", "status": 413})
        not_ready = self.model.not_ready()
        if not_ready:
            return not_ready
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, invoke, self.model.predictor, body, headers, self.default_accept)

    async def _body(self, headers: dict, receive) -> bytes | None:
        """The body, or None where it is over the limit (refused by its Content-Length before it is read)."""
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:  # chunked, with no length to refuse it by
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


async def _respond(send, status: int, body: bytes, headers: dict) -> None:
    raw = [(name.encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
