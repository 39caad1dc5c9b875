"""The HTTP edge both fronts listen with: uvicorn + httptools, bounded, and only the serving contract.

On the published port there is ``GET``/``HEAD /ping``, ``POST /invocations`` and ``GET /execution-parameters``
(what Batch Transform asks before a job: :mod:`.settings`); any other method on them is a 405, any other path
a 404, and every error, down to a request the parser refuses, is the JSON ``{"error": …, "status": …}``. What
a client may hold is bounded: the request head (request line and headers) in bytes and in header count (431),
the time its head and then its body take to arrive (408), and the number of ``/invocations`` admitted at once
(503 to retry past it, before the body is read).

httptools (llhttp) has no bound on a head's size: it keeps a header value it has not seen the end of, however
long. :class:`EdgeProtocol` therefore feeds the parser no more than the head's budget until the head is
complete, and answers 431 and closes the connection past it, so that an 8 MiB header costs at most the budget.
uvicorn has no timer on a head that never completes either (its keep-alive timer runs only between requests):
the protocol keeps one from the head's first byte.

A front is an :class:`Edge` with its own ``ping`` and ``answer`` (the native front runs the handler in process,
the multi-model-server front forwards to it on loopback). ``GET``/``HEAD /`` answers a page to try a photo on
(:mod:`.homepage`), for local use.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import content_types as ct
from . import heap, homepage
from .engine import RETRY_AFTER_S
from .settings import ServingSettings

log = logging.getLogger("dogbreed.serve")

ROUTES = {"/": ("GET", "HEAD"), "/ping": ("GET", "HEAD"), "/invocations": ("POST",), "/execution-parameters": ("GET",)}

Answer = tuple[int, bytes, dict]


@dataclass(frozen=True)
class EdgeLimits:
    """What one client may hold (the defaults and the checks are :class:`~.settings.ServingSettings`')."""

    max_body_bytes: int
    max_head_bytes: int = ServingSettings.max_head_bytes
    max_headers: int = ServingSettings.max_headers
    read_timeout_s: float = ServingSettings.read_timeout_s
    # /invocations admitted at once (reading their body, queued or running), each up to a body in memory: the native
    # front's request threads twice over (a full pool and as many queued behind it); past it, a 503 to retry
    pending: int = ServingSettings.pending
    max_connections: int = ServingSettings.max_connections  # past it a new connection gets a 503 and is closed
    keep_alive_s: float = ServingSettings.keep_alive_s

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> EdgeLimits:
        return cls(max_body_bytes=settings.max_body_bytes, max_head_bytes=settings.max_head_bytes,
                   max_headers=settings.max_headers, read_timeout_s=settings.read_timeout_s, pending=settings.pending,
                   max_connections=settings.max_connections, keep_alive_s=settings.keep_alive_s)


def error(status: int, reason: str, headers: dict | None = None) -> Answer:
    """The documented error answer: ``{"error": reason, "status": status}``."""
    return status, json.dumps({"error": reason, "status": status}).encode(), {"content-type": ct.JSON, **(headers or {})}


def busy(what: str) -> Answer:
    return error(503, f"{what}; retry shortly", {"retry-after": str(RETRY_AFTER_S)})


CLOSE = {"connection": "close"}  # the rest of this request's bytes are not read: the connection cannot go on


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a head past its bounds."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head, a head read timeout and JSON errors. ``limits`` is set
    on a subclass made per server (:func:`protocol_for`)."""

    limits: EdgeLimits

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_left, self.in_head, self.refusal = self.limits.max_head_bytes, True, None
        self.head_timer = self.loop.call_later(self.timeout_keep_alive, self._idle)  # connected, never sent a byte
        if len(self.connections) > self.limits.max_connections:  # this one is counted in already
            self._refuse(503, f"the server holds {self.limits.max_connections} connections already")

    def connection_lost(self, exc) -> None:
        self.head_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        while data and not self.transport.is_closing():
            if self.in_head and self.head_left <= 0:
                self._refuse(431, f"the request head is over {self.limits.max_head_bytes:,} bytes")
                return
            size = self.head_left if self.in_head else len(data)
            piece, data = data[:size], data[size:]
            if self.in_head:
                self.head_left -= len(piece)
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:  # no upgrade on this server: a request without a body is served as
                return  # it is (one with a body was refused at its head: the parser stops before the body)
            except httptools.HttpParserError as exc:
                self._refuse(*(self.refusal or (400, f"malformed HTTP request: {exc}")))
                return
            except Exception as exc:  # a callback's own failure on a hostile head (a path it cannot decode)
                self._refuse(400, f"malformed HTTP request: {exc.__class__.__name__}")
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # head_left is not reset here: the piece that began this message was already counted against it (set anew
        # at connection_made and on_message_complete)
        self.in_head = True
        self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_timed_out)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.limits.max_headers:
            self.refusal = (431, f"more than {self.limits.max_headers} request headers")
            raise _Refused()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_timer.cancel()
        if self.parser.should_upgrade() and declares_body(self.headers):  # still in_head: this head is refused
            # The parser would hand the app an empty body and drop the real one (an h2c or websocket Upgrade, or
            # a CONNECT)
            self.refusal = (400, "Upgrade (and CONNECT) is not supported here: send the request as plain HTTP/1.1, "
                                 "without Upgrade and Connection: upgrade")
            raise _Refused()
        self.in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_left, self.in_head = self.limits.max_head_bytes, True

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, msg)

    def _idle(self) -> None:
        if self.in_head and not self.transport.is_closing():
            self.transport.close()

    def _head_timed_out(self) -> None:
        if self.in_head and not self.transport.is_closing():
            self._refuse(408, f"the request head did not arrive within {self.limits.read_timeout_s:g} s")

    def _refuse(self, status: int, reason: str) -> None:
        """Answer with the error JSON and close: what follows in the stream cannot be told from this request. Where
        an earlier request's answer is still due (a head refused while it runs, or a pipelined one), or this
        request's answer has begun, just close: an error written now would be read as that answer."""
        cycle = self.cycle
        own_body = not self.in_head and cycle is not None and not cycle.response_started and not self.pipeline
        if cycle is None or cycle.response_complete or own_body:
            headers = {**CLOSE, "retry-after": str(RETRY_AFTER_S)} if status == 503 else CLOSE
            self.transport.write(raw_answer(*error(status, reason, headers)))
            if cycle is not None and not cycle.response_complete:  # its app, reading the body or answering, is
                cycle.disconnected = True  # told the client is gone: this was its answer
                cycle.message_event.set()
        log.info("refused a request: %d %s", status, reason)
        self.transport.close()


def declares_body(headers) -> bool:
    """Whether a request's head (name, value pairs, names in any case) says a body follows."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip().strip(b"0") != b""):
            return True  # any length but zero ("0", "00"): a malformed one is the parser's to refuse
    return False


def raw_answer(status: int, body: bytes, headers: dict) -> bytes:
    from http import HTTPStatus

    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    head += [f"{name}: {value}" for name, value in {**headers, "content-length": len(body)}.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def protocol_for(limits: EdgeLimits) -> type[EdgeProtocol]:
    return type("BoundedHttpToolsProtocol", (EdgeProtocol,), {"limits": limits})


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


class Edge:
    """The ASGI application of a front: routes, the admission bound, the body's size and read timeout. A front
    says ``ping()`` (None where a request would be answered now, else its 503) and ``answer(body, headers)``."""

    def __init__(self, limits: EdgeLimits, settings: ServingSettings | None = None):
        self.limits = limits
        self.settings = settings or ServingSettings(max_body_bytes=limits.max_body_bytes)
        # Requests admitted (reading their body, queued or running). Without a bound a burst of 6 MB bodies fills the
        # process's memory, and queued requests outlive the client's 60 s. A counter suffices: only the event loop's
        # thread touches it.
        self.admitted = 0
        self.idle_trim = heap.IdleTrim()

    def ping(self) -> Answer | None:
        raise NotImplementedError

    async def answer(self, body: bytes, headers: dict) -> Answer:
        raise NotImplementedError

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        allowed = ROUTES.get(path)
        if allowed is None:
            answer = error(404, f"no such resource: {path[:100]}; this server answers {', '.join(ROUTES)}")
        elif method not in allowed:
            answer = error(405, f"{method[:20]} is not allowed on {path}", {"allow": ", ".join(allowed)})
        elif path == "/ping":
            answer = self.ping() or (200, json.dumps({"status": "Healthy"}).encode(), {"content-type": ct.JSON})
        elif path == "/":
            answer = homepage.page()
        elif path == "/execution-parameters":
            answer = 200, json.dumps(self.settings.execution_parameters()).encode(), {"content-type": ct.JSON}
        else:
            try:
                answer = await self._admitted(scope, receive)
            except ClientGone:
                return
            await respond(send, *answer)
            return
        if declares_body(scope["headers"]):  # a body nobody reads: the head's timer is over, and a client that
            answer = answer[0], answer[1], {**answer[2], **CLOSE}  # trickled it would hold the connection forever
        await respond(send, *answer)

    async def _admitted(self, scope, receive) -> Answer:
        """The request's answer, or a 503 to retry where ``pending`` requests are in already: refused before its
        body is read, so that refusing costs no memory. A slow client holds its place until its read timeout."""
        if self.admitted >= self.limits.pending:  # its body is not read: the connection closes after the answer
            status, body, headers = busy(f"the server is busy ({self.limits.pending} requests in progress)")
            return status, body, {**headers, **CLOSE} if declares_body(scope["headers"]) else headers
        self.admitted += 1
        self.idle_trim.begin()
        try:
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            body = await self._body(headers, receive)
            if isinstance(body, tuple):
                return body
            return await self.answer(body, headers)
        finally:
            self.admitted -= 1
            self.idle_trim.end(self.admitted)

    async def _body(self, headers: dict, receive) -> bytes | Answer:
        """The body, or the error answer: over the limit (refused by its Content-Length before it is read), or not
        all there within the read timeout."""
        limit = self.limits.max_body_bytes
        too_large = error(413, f"the request body is over the {limit:,}-byte limit (Request Entity Too Large)", CLOSE)
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:  # chunked, with no length to refuse it by
                        return too_large
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return b"".join(chunks)
        except TimeoutError:
            return error(408, f"the request body did not arrive within {self.limits.read_timeout_s:g} s", CLOSE)


async def respond(send, status: int, body: bytes, headers: dict) -> None:
    raw = [(name.encode("latin-1"), str(value).encode("latin-1")) for name, value in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def edge_server(app: Edge, host: str, port: int, grace_s: int):
    """The uvicorn server of ``app``: ``run()`` listens until SIGTERM/SIGINT or ``should_exit`` (a port it cannot
    listen on: uvicorn logs why and exits 1)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, http=protocol_for(app.limits), ws="none", lifespan="off",
                            log_config=None, access_log=True, timeout_keep_alive=app.limits.keep_alive_s,
                            timeout_graceful_shutdown=grace_s)
    return uvicorn.Server(config)


def sample_jpeg() -> bytes:
    """A small grey JPEG: the request a front warms its model with, or probes it with."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (127, 127, 127)).save(buffer, "JPEG")
    return buffer.getvalue()


def _logged_signal(signum, frame) -> None:
    log.info("signal %d: stopped", signum)


def stop_on_signals() -> None:
    """uvicorn stops on SIGTERM/SIGINT, then raises the signal again for the handler it found: this one, so that a
    stop asked for by a signal returns (and the process exits 0) instead of dying by the signal."""
    import signal

    signal.signal(signal.SIGTERM, _logged_signal)
    signal.signal(signal.SIGINT, _logged_signal)
