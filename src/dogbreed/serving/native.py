"""``DOGBREED_SERVER=native`` (the default): ``/ping`` and ``/invocations`` served by uvicorn from the engine's own
process, through the bounded edge of :mod:`.edge`.

No JVM, no netty, no worker processes: one Python process listens at once (cold start is the model's load, not
the front's), loads the model on a thread meanwhile (:mod:`.native_engine`), and answers ``/ping`` with 503 until
a request has gone through the handler end to end, and again with the reason if the engine's thread ends or a
forward pass does not end (:meth:`~.native_engine.InProcessPredictor.unhealthy`). The SageMaker contract is
the multi-model-server front's: port 8080 or ``SAGEMAKER_BIND_TO_PORT``, 6 MB bodies
(``SAGEMAKER_MAX_REQUEST_SIZE``, or ``SAGEMAKER_MAX_PAYLOAD_IN_MB``: :mod:`.settings`), custom attributes, the same error JSON,
SIGTERM stops it (in-flight requests finish within the grace period) with exit code 0.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .. import env as envnames
from ..errors import ModelError
from . import content_types as ct
from . import handler
from .capacity import plan_request_threads
from .edge import edge_server, sample_jpeg, stop_on_signals
from .hardware import NoCuda
from .native_app import Model, NativeApp, invoke
from .native_engine import start_engine
from .settings import ServingSettings

log = logging.getLogger("dogbreed.serve")

# Requests decoding or waiting for their batch at once: enough to fill two of the engine's batches of 8; a waiting
# thread costs no CPU. Fewer where the container's memory cannot carry each decoding its largest image at once
# (capacity.plan_request_threads). The edge admits twice as many (EdgeLimits.pending).
REQUEST_THREADS = 16


def load(model: Model, model_dir: Path, state_dir: Path, settings: ServingSettings) -> None:
    """Load and warm the model, then send one request through the handler; only then is the model ready."""
    try:
        predictor = start_engine(model_dir, state_dir, settings)  # waits engine_wait_s: under the response timeout
        handler.configure(settings)
        # One model per process, as in a multi-model-server worker: the JPEG draft scale that handler.model_fn sets.
        handler.set_draft_size(predictor.draft_size)
        status, body, _ = invoke(predictor, sample_jpeg(), {"content-type": ct.JPEG}, ct.JSON)
        if status != 200:
            raise RuntimeError(f"the warm-up request got {status}: {body[:300].decode('utf-8', 'replace')}")
    except (ModelError, NoCuda) as exc:
        model.reason = str(exc)
    except Exception as exc:  # any failure to load is a reason to be unhealthy, said in the log and on /ping
        model.reason = f"{exc.__class__.__name__}: {exc}"
    if model.reason:
        log.error("cannot serve the model: %s (answering /ping with 503)", model.reason)
        return
    model.predictor = predictor
    log.info("ready: %s", predictor.describe())


def serve_native(model_dir: Path, host: str, port: int, state_dir: Path, configuration: tuple, grace_s: int) -> int:
    """``configuration``: (settings, limits), read once at start (server.configured)."""
    settings, limits = configuration
    model = Model()
    threads, why = plan_request_threads(REQUEST_THREADS, model_dir)
    log.info("%s", why)
    app = NativeApp(model, limits, threads, settings)
    server = edge_server(app, host, port, grace_s)
    stop_on_signals()
    loader = threading.Thread(target=load, args=(model, Path(model_dir), Path(state_dir), settings), name="model-load",
                              daemon=True)
    loader.start()
    log.info("native front (uvicorn) on %s:%d; %s=native", host, port, envnames.DOGBREED_SERVER)
    server.run()  # until SIGTERM/SIGINT (a port it cannot listen on: uvicorn logs why and exits 1)
    app.close()
    if loader.is_alive():  # stopped while loading: torch, torn down under a thread still loading, aborts the process
        logging.shutdown()
        os._exit(0)
    return 0  # the engine's threads wait on their queue: they stop with the process
