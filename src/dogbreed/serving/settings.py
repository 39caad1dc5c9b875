"""The serving settings both fronts share, read once at start (:meth:`ServingSettings.from_environ`) and passed
down: the body limit, the response timeout, Batch Transform's mode and what ``GET /execution-parameters`` says.

- **Body limit.** ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (Batch Transform sets it from the job's MaxPayloadInMB, up to
  100, or 0 for chunked bodies of no stated bound: 100 here; ``dogbreed deploy`` sets 4 for serverless) wins
  where set; else ``SAGEMAKER_MAX_REQUEST_SIZE`` in bytes; else 6 MB, a real-time endpoint's limit. MB are MiB
  here, as the 6 MB default always was.
- **Pixel budget.** A request's decoded pixels (decoders.MAX_REQUEST_PIXELS) and images (decoders.MAX_BATCH) scale
  with the body limit above 6 MB: a 20 MB JSON-lines batch holds about 3.3 times the photos of a 6 MB request, and
  refusing it for their pixels would fail a job whose every record is a plain photo. Per byte of body the bound
  is the same, so a decompression bomb is refused as before.
- **Response timeout.** ``SAGEMAKER_MODEL_SERVER_TIMEOUT`` (async deploys set 3600), else 600 s under
  ``SAGEMAKER_BATCH=true`` (Batch Transform's own default invocation timeout: a 100 MB batch of photos takes
  longer than a real-time request), else 60. The engine's wait bound is half of it, so that a client gets a 503
  it can retry before the front's own timeout (``DOGBREED_ENGINE_WAIT_S`` still overrides it).
- **The edge's bounds** (:class:`~.edge.EdgeLimits` is made from them): the request head in bytes and headers, the
  read timeout, the ``/invocations`` admitted at once, the connections open at once and how long an idle one stays.
- **The engine**: the most images in one forward pass and its compute threads.

Every value is checked here, at start: a value out of range stops the server with the variable's name, rather
than serving with a bound of 0 that refuses every request.
- **MaxConcurrentTransforms**: the cores (at least two a GPU), at most the edge's admission bound. Each request's
  decode runs on one thread (a native request thread, an mms worker) while the engine batches the images of all
  the requests in flight: with one request a core every core decodes while the forward pass runs; more requests
  would only queue, each holding its body (up to 100 MB) in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import env as envnames
from . import content_types as ct

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 6 * MIB  # SageMaker real-time endpoints take at most 6 MB
MAX_PAYLOAD_MB = 100  # Batch Transform's largest MaxPayloadInMB
DEFAULT_TIMEOUT_S = 60  # multi-model-server's and SageMaker's real-time default
BATCH_TIMEOUT_S = 600  # Batch Transform's default InvocationsTimeoutInSeconds
DEFAULT_BATCH = 8  # images in one forward pass of the engine
DEFAULT_PORT = 8080  # SageMaker's; SAGEMAKER_BIND_TO_PORT where it asks for another
FRONTS = ("native", "mms")
ENGINE_MODES = ("auto", "on", "off")
GRAPH_MODES = ("auto", "eager", "frozen")  # graph.MODES (not imported: graph imports torch)
# Not a setting: the response header an mms worker (transformer.py) sets on an answer its model gave, which the
# edge (mms_edge.py) counts as a sign of life and strips. Here because both import this module and neither the other.
MODEL_ANSWERED_HEADER = "X-Dogbreed-Model-Answered"


def _number(environ, name: str, low: float, high: float | None, kind=int):
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r}: expected a {'whole ' if kind is int else ''}number") from None
    if not value >= low or (high is not None and value > high):  # `not >=`: NaN is out of range too
        raise ValueError(f"{name}={value}: expected {low} to {high}" if high else f"{name}={value}: at least {low}")
    return value


def _int(environ, name: str, low: int, high: int | None = None) -> int | None:
    return _number(environ, name, low, high, int)


def _seconds(environ, name: str, low: float = 0.1, high: float = 86400.0) -> float | None:
    return _number(environ, name, low, high, float)


def max_concurrent_transforms(cores: int, gpus: int, pending: int) -> int:
    return max(1, min(pending, max(cores, 2 * gpus)))


@dataclass(frozen=True)
class ServingSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch: bool = False  # SAGEMAKER_BATCH=true: a Batch Transform job's container
    response_timeout_s: int = DEFAULT_TIMEOUT_S
    engine_wait_s: float = DEFAULT_TIMEOUT_S / 2
    concurrent_transforms: int = 1
    # the edge (EdgeLimits.from_settings)
    max_head_bytes: int = 16 * 1024  # request line and headers; SageMaker's own requests carry well under 4 KiB
    max_headers: int = 100
    read_timeout_s: float = 30.0  # from a head's first byte to its end, and for the whole body
    pending: int = 32  # /invocations admitted at once: the native front's request threads twice over
    # Connections open at once, idle or not: each costs a socket and a protocol object; past it a 503 and close.
    # Well over `pending`: SageMaker's front keeps a pool of connections to each instance.
    max_connections: int = 256
    # An idle connection is closed after it: a client that opens connections and sends nothing holds one of
    # `max_connections` this long at most. SageMaker reuses its connections within seconds under load.
    keep_alive_s: float = 20.0
    # the engine
    max_batch: int = DEFAULT_BATCH
    threads: int | None = None  # the engine's compute threads; None: the cores in the affinity mask
    cpu_fallback: bool = False  # serve on the CPU where GPUs are installed but CUDA cannot start (hardware.py)
    # the start: which front, where, with what
    front: str = "native"
    engine_mode: str = "auto"  # the mms front's batching engine process: auto and on (one engine per GPU), off
    graph: str = "auto"  # DOGBREED_SERVE_GRAPH: the served graph (predictor.py), passed to each model process
    port: int = DEFAULT_PORT
    workers: int | None = None  # SAGEMAKER_MODEL_SERVER_WORKERS: the mms front's workers; None: planned
    state_dir: str | None = None  # DOGBREED_SERVE_TEMP; None: a new temp folder
    mms_config: str | None = None  # DOGBREED_MMS_CONFIG; None: mms.properties in the state folder
    precision_cache: str | None = None  # DOGBREED_PRECISION_CACHE; None: precision.json in the state folder
    default_accept: str = "application/json"  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT: the answer where Accept is */*
    engine_socket: str | None = None  # DOGBREED_ENGINE_SOCKET: set by the mms front for its workers, never by a user

    @classmethod
    def from_environ(cls, environ=None, cores: int | None = None, gpus: int | None = None) -> ServingSettings:
        """Raises ValueError with the variable's name for a value out of its range (the server refuses to start)."""
        environ = os.environ if environ is None else environ
        payload_mb = _int(environ, envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB, 0, MAX_PAYLOAD_MB)
        if payload_mb == 0:  # MaxPayloadInMB=0: chunked bodies of no stated bound; 100 MB is still ours
            payload_mb = MAX_PAYLOAD_MB
        request_size = _int(environ, envnames.SAGEMAKER_MAX_REQUEST_SIZE, 1, MAX_PAYLOAD_MB * MIB)
        max_body = payload_mb * MIB if payload_mb else (request_size or DEFAULT_MAX_BODY_BYTES)
        batch = _flag(environ, envnames.SAGEMAKER_BATCH)
        timeout = _int(environ, envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT, 1) or (BATCH_TIMEOUT_S if batch
                                                                                 else DEFAULT_TIMEOUT_S)
        wait = _seconds(environ, envnames.DOGBREED_ENGINE_WAIT_S) or timeout / 2
        if wait >= timeout:  # the engine's 503 must come before the front's own timeout answers for it
            raise ValueError(f"{envnames.DOGBREED_ENGINE_WAIT_S}={wait:g} must be under the response timeout "
                             f"({timeout} s, {envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT})")
        pending = _int(environ, envnames.DOGBREED_NATIVE_PENDING, 1, 100_000) or cls.pending
        if cores is None or gpus is None:
            from .hardware import available_cores, visible_gpus

            cores = available_cores() if cores is None else cores
            gpus = visible_gpus() if gpus is None else gpus
        return cls(max_body_bytes=max_body, batch=batch, response_timeout_s=timeout, engine_wait_s=wait,
                   concurrent_transforms=max_concurrent_transforms(cores, gpus, pending), pending=pending,
                   **_edge_and_engine(environ, pending))

    @property
    def payload_mb(self) -> int:
        """The body limit in whole MB, rounded down: Batch Transform sends bodies up to what this says, so it must
        never say more than the edge takes (6,500,000 bytes is 6 MB, not 7). Under 1 MB no whole figure is true;
        1 is the least wrong (0 would tell SageMaker there is no bound at all)."""
        return max(1, self.max_body_bytes // MIB)

    @property
    def scale(self) -> float:
        """How many 6 MB requests one body may hold (1 at or under 6 MB): the decoders' budgets scale by it."""
        return max(1.0, self.max_body_bytes / DEFAULT_MAX_BODY_BYTES)

    def execution_parameters(self) -> dict:
        """``GET /execution-parameters``: what Batch Transform uses where the job does not say."""
        return {"MaxConcurrentTransforms": self.concurrent_transforms, "BatchStrategy": "MultiRecord",
                "MaxPayloadInMB": self.payload_mb}


YES, NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def yes_or_no(text: str) -> bool:
    """A yes/no word, in any case: the same words in a setting and in a request's option. ValueError for others,
    so that a misspelt flag is refused, not read as "no"."""
    word = text.strip().lower()
    if word not in YES and word not in NO:
        raise ValueError(f"expected true or false, got {text[:40]!r}")
    return word in YES


def _flag(environ, name: str) -> bool:
    try:
        return yes_or_no(environ.get(name) or "")
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _edge_and_engine(environ, pending: int) -> dict:
    """The edge's bounds and the engine's size; each unset one keeps its default. A head under 1 KiB could not
    hold SageMaker's own headers; fewer connections than admitted requests would refuse what the edge admits."""
    found = {
        "max_head_bytes": _int(environ, envnames.DOGBREED_MAX_HEAD_BYTES, 1024, 1 << 20),
        "max_headers": _int(environ, envnames.DOGBREED_MAX_HEADERS, 8, 10_000),
        "read_timeout_s": _seconds(environ, envnames.DOGBREED_READ_TIMEOUT_S),
        # unset: the default, or the admitted requests where more are admitted than that
        "max_connections": (_int(environ, envnames.DOGBREED_MAX_CONNECTIONS, pending, 1_000_000)
                            or max(ServingSettings.max_connections, pending)),
        "keep_alive_s": _seconds(environ, envnames.DOGBREED_KEEP_ALIVE_S),
        "max_batch": _int(environ, envnames.DOGBREED_SERVE_BATCH, 1, 4096),
        "threads": _int(environ, envnames.DOGBREED_SERVE_THREADS, 1, 4096),
        "cpu_fallback": _flag(environ, envnames.DOGBREED_SERVE_CPU_FALLBACK),
        "front": _choice(environ, envnames.DOGBREED_SERVER, FRONTS),
        "engine_mode": _choice(environ, envnames.DOGBREED_SERVE_ENGINE, ENGINE_MODES),
        "graph": _choice(environ, envnames.DOGBREED_SERVE_GRAPH, GRAPH_MODES),
        "port": _int(environ, envnames.SAGEMAKER_BIND_TO_PORT, 1, 65535),
        "workers": _int(environ, envnames.SAGEMAKER_MODEL_SERVER_WORKERS, 1, 4096),
        "state_dir": (environ.get(envnames.DOGBREED_SERVE_TEMP) or "").strip() or None,
        "mms_config": (environ.get(envnames.DOGBREED_MMS_CONFIG) or "").strip() or None,
        "precision_cache": (environ.get(envnames.DOGBREED_PRECISION_CACHE) or "").strip() or None,
        "engine_socket": (environ.get(envnames.DOGBREED_ENGINE_SOCKET) or "").strip() or None,
        "default_accept": _answer_type(environ, envnames.SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT),
    }
    return {name: value for name, value in found.items() if value is not None}


def _answer_type(environ, name: str) -> str | None:
    """A type the server can answer with (JSON or JSON lines), as the toolkit reads it; None where unset."""
    raw = (environ.get(name) or "").strip()
    if raw and ct.pick_response(raw) is None:
        raise ValueError(f"{name}={raw[:40]!r}: the server answers {ct.JSON} or {ct.JSONLINES}")
    return raw or None


def _choice(environ, name: str, choices: tuple[str, ...]) -> str | None:
    raw = (environ.get(name) or "").strip().lower()
    if raw and raw not in choices:
        raise ValueError(f"{name}={raw[:40]!r}: choose {', '.join(choices)}")
    return raw or None
