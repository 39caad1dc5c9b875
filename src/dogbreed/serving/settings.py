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
- **MaxConcurrentTransforms**: the cores (at least two a GPU), at most the edge's admission bound. Each request's
  decode runs on one thread (a native request thread, an mms worker) while the engine batches the images of all
  the requests in flight: with one request a core every core decodes while the forward pass runs; more requests
  would only queue, each holding its body (up to 100 MB) in memory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .. import env as envnames

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 6 * MIB  # SageMaker real-time endpoints take at most 6 MB
MAX_PAYLOAD_MB = 100  # Batch Transform's largest MaxPayloadInMB
DEFAULT_TIMEOUT_S = 60  # multi-model-server's and SageMaker's real-time default
BATCH_TIMEOUT_S = 600  # Batch Transform's default InvocationsTimeoutInSeconds
ENGINE_WAIT_S = "DOGBREED_ENGINE_WAIT_S"  # engine.DOGBREED_ENGINE_WAIT_S (not imported: engine pulls in the toolkit)


def _int(environ, name: str, low: int, high: int | None = None) -> int | None:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw[:40]!r}: expected a whole number") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value}: expected {low} to {high}" if high else f"{name}={value}: at least {low}")
    return value


def max_concurrent_transforms(cores: int, gpus: int, pending: int) -> int:
    return max(1, min(pending, max(cores, 2 * gpus)))


@dataclass(frozen=True)
class ServingSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch: bool = False  # SAGEMAKER_BATCH=true: a Batch Transform job's container
    response_timeout_s: int = DEFAULT_TIMEOUT_S
    engine_wait_s: float = DEFAULT_TIMEOUT_S / 2
    concurrent_transforms: int = 1

    @classmethod
    def from_environ(cls, environ=None, cores: int | None = None, gpus: int | None = None,
                     pending: int = 32) -> ServingSettings:
        """Raises ValueError with the variable's name for a value out of its range (the server exits on it)."""
        environ = os.environ if environ is None else environ
        payload_mb = _int(environ, envnames.SAGEMAKER_MAX_PAYLOAD_IN_MB, 0, MAX_PAYLOAD_MB)
        if payload_mb == 0:  # MaxPayloadInMB=0: chunked bodies of no stated bound; 100 MB is still ours
            payload_mb = MAX_PAYLOAD_MB
        request_size = _int(environ, envnames.SAGEMAKER_MAX_REQUEST_SIZE, 1)
        max_body = payload_mb * MIB if payload_mb else (request_size or DEFAULT_MAX_BODY_BYTES)
        batch = (environ.get(envnames.SAGEMAKER_BATCH) or "").strip().lower() in ("1", "true", "yes")
        timeout = _int(environ, envnames.SAGEMAKER_MODEL_SERVER_TIMEOUT, 1) or (BATCH_TIMEOUT_S if batch
                                                                                 else DEFAULT_TIMEOUT_S)
        wait = float(environ.get(ENGINE_WAIT_S) or timeout / 2)
        if cores is None or gpus is None:
            from .hardware import available_cores, visible_gpus

            cores = available_cores() if cores is None else cores
            gpus = visible_gpus() if gpus is None else gpus
        return cls(max_body_bytes=max_body, batch=batch, response_timeout_s=timeout, engine_wait_s=wait,
                   concurrent_transforms=max_concurrent_transforms(cores, gpus, pending))

    @property
    def payload_mb(self) -> int:
        return max(1, math.ceil(self.max_body_bytes / MIB))

    @property
    def scale(self) -> float:
        """How many 6 MB requests one body may hold (1 at or under 6 MB): the decoders' budgets scale by it."""
        return max(1.0, self.max_body_bytes / DEFAULT_MAX_BODY_BYTES)

    def execution_parameters(self) -> dict:
        """``GET /execution-parameters``: what Batch Transform uses where the job does not say."""
        return {"MaxConcurrentTransforms": self.concurrent_transforms, "BatchStrategy": "MultiRecord",
                "MaxPayloadInMB": self.payload_mb}
