"""The ``serve`` entry of the image and of ``local-serve``: the native front (the default, :mod:`.native`) or
multi-model-server with our handler behind the same edge (``DOGBREED_SERVER=mms``, :mod:`.mms_edge`).

multi-model-server listens on loopback only (its inference and management APIs on ports of their own); the
launcher answers the published port. Each server has its own config file and temp directory (MMS keys its
worker sockets and pid file on the temp directory), runs in its own process group, and stops on SIGTERM within
the grace period. A missing or corrupt model is reported in the log and by an unhealthy ``/ping`` (no crash
loop).

By default (``DOGBREED_SERVE_ENGINE=auto``) the model lives in one engine process that batches the requests of
all workers (:mod:`.engine`), with one engine per GPU in it on a GPU host; the workers decode and preprocess.
The server restarts the engine if it dies. ``off``: each worker holds its own model, one worker per GPU.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import env as envnames
from ..common import configure_logging
from ..errors import ModelError
from . import decoders
from .archive import model_dir_from
from .capacity import plan_workers
from .hardware import available_cores, visible_gpus
from .settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT, DEFAULT_TIMEOUT_S, FRONTS, ServingSettings  # noqa: F401 - FRONTS for the tests
from .supervisor import EngineSupervisor

log = logging.getLogger("dogbreed.serve")

HANDLER_SERVICE = "dogbreed.serving.handler_service"
HANDLER_MODULE = "dogbreed.serving.handler"
STOP_GRACE_S = 20
RESPONSE_TIMEOUT_S = DEFAULT_TIMEOUT_S  # the answer timeout by default (settings.py); the engine waits half of it


def default_workers(engine: bool = False, model_dir: Path | None = None, configured: int | None = None) -> int:
    """``configured`` (SAGEMAKER_MODEL_SERVER_WORKERS), else: with the engine, twice the cores (workers that only
    decode, enough to keep a batch in the engine) as far as the container's memory carries them
    (:mod:`.capacity`); one per GPU; half the cores otherwise."""
    if configured:
        return configured
    cores = available_cores()
    if engine:
        plan = plan_workers(cores, model_dir)
        log.info("%s", plan.describe())
        return plan.workers
    return visible_gpus() or max(1, cores // 2)


def _start_settings() -> ServingSettings:
    """The settings without the hardware's count (what the start's choices need)."""
    return ServingSettings.from_environ(cores=1, gpus=0)


def front() -> str:
    """``DOGBREED_SERVER``: ``native`` (the default: :mod:`.native`, no JVM, no netty) or ``mms``
    (multi-model-server behind the same edge: :mod:`.mms_edge`)."""
    return _start_settings().front


def engine_enabled(settings: ServingSettings | None = None) -> bool:
    """``auto`` and ``on``: the batching engine process (one engine per GPU in it, else one on the CPU), its
    workers only decode; ``off``: each worker holds its own model and answers one request at a time."""
    return (settings or _start_settings()).engine_mode != "off"


def loopback_port(*taken: int) -> int:
    """A free port on 127.0.0.1 for multi-model-server's inference or management API: below 32768 (MMS refuses
    higher ones, so no ephemeral port from the kernel), and none of ``taken`` (ports chosen but not bound yet)."""
    import socket

    for candidate in range(29000 + os.getpid() % 3000, 32768):
        if candidate in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise OSError("no free loopback port below 32768 for multi-model-server's management API")


def _model_server():
    """The toolkit's model_server module (in the serving image only, and its dev twin here). It imports
    pkg_resources, whose deprecation warning would open every ``mms`` start's log: we pin setuptools < 82 for it
    knowingly (requirements/constraints.txt), so that one warning is silenced here, and only it."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from sagemaker_inference import model_server
    return model_server


# One JSON-lines answer line at most: top_k up to 1,000 breeds at ~70 bytes each, the dog verdict, its frame
ANSWER_LINE_BYTES = 100_000


def mms_properties(host: str, port: int, workers: int, max_request_bytes: int, timeout_s: int = RESPONSE_TIMEOUT_S,
                   management_port: int | None = None, max_response_bytes: int = DEFAULT_MAX_BODY_BYTES) -> str:
    """The toolkit's defaults, then ours. The management API (register a model from any URL, unload, scale
    workers) goes to loopback on a port of its own: on the inference address anyone who reaches the endpoint could
    make the server fetch an archive and run its code. Only the start-up model is served."""
    management_port = management_port or loopback_port(port)
    with open(_model_server().DEFAULT_MMS_CONFIG_FILE) as handle:
        defaults = handle.read()
    return defaults + "\n".join(
        [
            f"inference_address=http://{host}:{port}",
            f"management_address=http://127.0.0.1:{management_port}",
            f"default_workers_per_model={workers}",
            # multi-model-server hands its workers gpu_id round-robin below min(this, nvidia-smi's count); nvidia-smi
            # ignores CUDA_VISIBLE_DEVICES: bound it by what CUDA will show, so that every gpu_id opens in the worker
            f"number_of_gpu={visible_gpus()}",
            f"default_service_handler={HANDLER_SERVICE}",
            f"default_response_timeout={timeout_s}",
            f"max_request_size={max_request_bytes}",
            f"max_response_size={max(max_request_bytes, max_response_bytes)}",  # a batch's answer lines
            "vmargs=-XX:+UseContainerSupport -XX:InitialRAMPercentage=8.0 -XX:MaxRAMPercentage=10.0 -XX:-UseLargePages",
            "",
        ]
    )


def mms_config(settings: ServingSettings, port: int, workers: int, management_port: int) -> str:
    """multi-model-server's config on loopback under the serving settings: its body limit and response timeout."""
    # a JSON-lines answer grows with its records, not its body: 1,024 one-pixel records at top_k 133 are ~13 MB
    answers = decoders.json_lines_records(settings.scale, settings.batch) * ANSWER_LINE_BYTES
    return mms_properties("127.0.0.1", port, workers, settings.max_body_bytes, settings.response_timeout_s,
                          management_port=management_port, max_response_bytes=max(answers, DEFAULT_MAX_BODY_BYTES))


def forward_timeout(settings: ServingSettings) -> float:
    """How long the edge waits for multi-model-server's answer: its own response timeout, and a margin for its
    504 to arrive first."""
    return settings.response_timeout_s + 5


def check_model(model_dir: Path, cpu_fallback: bool = False) -> str | None:
    """None if the model loads and the host can run it; otherwise the reason it cannot be served. Without the
    engine only (``DOGBREED_SERVE_ENGINE=off``): the workers import torch anyway; the engine's load is its own
    check (a GPU host whose CUDA cannot start among them)."""
    import torch

    from ..models import load_artifacts  # torch: not in the launcher of an engine
    from .hardware import cuda_refusal

    refusal = cuda_refusal(visible_gpus(), torch.cuda.is_available(), cpu_fallback)
    if refusal:
        return refusal
    try:
        load_artifacts(model_dir)
    except ModelError as exc:
        return str(exc)
    except Exception as exc:  # any failure to rebuild is a reason to be unhealthy, said in the log
        return f"{exc.__class__.__name__}: {exc}"
    return None


def start_mms(model_dir: Path, port: int, management_port: int, workers: int, temp_dir: Path,
              config_path: Path, settings: ServingSettings) -> subprocess.Popen:
    """multi-model-server on loopback only: its inference API on ``port`` (the edge forwards to it), its management
    API on ``management_port``."""
    model_server = _model_server()
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(mms_config(settings, port, workers, management_port))
    temp_dir.mkdir(parents=True, exist_ok=True)
    environ = dict(os.environ)
    environ.update(
        {
            "TEMP": str(temp_dir),
            "TMPDIR": str(temp_dir),
            "SAGEMAKER_PROGRAM": HANDLER_MODULE,
            envnames.SAGEMAKER_MODEL_SERVER_WORKERS: str(workers),
            envnames.DOGBREED_ENGINE_WAIT_S: str(settings.engine_wait_s),  # the workers' wait: under the response timeout
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS", "1"),
        }
    )
    command = [
        "multi-model-server", "--start", "--foreground",
        "--mms-config", str(config_path),
        "--model-store", str(model_dir.parent),
        "--models", f"model={model_dir.name}",
        "--log-config", model_server.DEFAULT_MMS_LOG_FILE,
    ]
    bindir = Path(sys.executable).parent
    if (bindir / "multi-model-server").exists():
        command[0] = str(bindir / "multi-model-server")
    log.info("starting multi-model-server on 127.0.0.1:%d with %d worker(s)", port, workers)
    return subprocess.Popen(command, env=environ, start_new_session=True, cwd=str(temp_dir))


def stop_group(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the server's process group, SIGKILL what is left after the grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return process.wait()
    finally:
        try:  # workers that outlived the frontend
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def configured() -> tuple[ServingSettings, object]:
    """The serving settings and the edge's limits, read once at start (ValueError for a value out of range)."""
    from .edge import EdgeLimits

    settings = ServingSettings.from_environ()
    return settings, EdgeLimits.from_settings(settings)


def serve_unhealthy(host: str, port: int, reason: str, configuration: tuple) -> int:
    """Answer /ping and /invocations with 503 and the reason (the same edge as a serving front), until SIGTERM.
    ``configuration``: (settings, limits), read once at start (:func:`configured`)."""
    from .edge import edge_server, stop_on_signals
    from .mms_edge import Refusing

    log.error("cannot serve the model: %s (answering /ping with 503)", reason)
    stop_on_signals()
    settings, limits = configuration
    edge_server(Refusing(limits, reason, settings), host, port, STOP_GRACE_S).run()
    return 1


def serve(model_dir: Path, host: str = "0.0.0.0", port: int | None = None, workers: int | None = None,  # nosec B104 - a container must listen on all interfaces
          state_dir: Path | None = None, configuration: tuple | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. ``DOGBREED_SERVER=native`` (the default): one process,
    the engine and the front (:mod:`.native`). ``mms``: multi-model-server on loopback behind the same edge
    (:mod:`.mms_edge`); with the engine, the front and its workers start while the engine loads the model (the
    engine's load is the check); without it, the model is checked first."""
    try:
        settings, limits = configuration or configured()
    except ValueError as exc:  # a setting out of range: refuse to start, rather than refuse every request
        log.error("refusing to start: %s", exc)
        return 2
    port = int(port or settings.port)
    state_dir = Path(state_dir or settings.state_dir or tempfile.mkdtemp(prefix="dogbreed-serve-"))
    if settings.front == "native":  # one process: the engine and the front together; it checks the model as it loads it
        from .native import serve_native

        return serve_native(model_dir, host, port, state_dir, (settings, limits), STOP_GRACE_S)
    use_engine = engine_enabled(settings)
    reason = None if use_engine else check_model(model_dir, settings.cpu_fallback)
    if reason:
        return serve_unhealthy(host, port, reason, (settings, limits))
    workers = workers or default_workers(use_engine, model_dir, settings.workers)
    return _serve_mms(model_dir, host, port, workers, state_dir, use_engine, (settings, limits))


def _serve_mms(model_dir: Path, host: str, port: int, workers: int, state_dir: Path, use_engine: bool,
               configuration: tuple) -> int:
    from .edge import edge_server, stop_on_signals
    from .mms_edge import Health, MmsProxy, Prober

    config_path = Path(configuration[0].mms_config or state_dir / "mms.properties")
    supervisor = None
    if use_engine:
        supervisor = EngineSupervisor(model_dir, state_dir / "engine.sock", configuration[0])
        supervisor.start()
        os.environ[envnames.DOGBREED_ENGINE_SOCKET] = str(supervisor.socket_path)
    else:
        os.environ.pop(envnames.DOGBREED_ENGINE_SOCKET, None)
    backend = loopback_port(port)
    management = loopback_port(port, backend)
    settings, limits = configuration
    process = start_mms(model_dir, backend, management, workers, state_dir / "tmp", config_path, settings)
    health, prober = Health(), Prober(backend, busy_window_s=settings.response_timeout_s)
    app = MmsProxy(limits, health, prober, forward_timeout(settings), settings)
    server = edge_server(app, host, port, STOP_GRACE_S)
    stop_on_signals()
    watcher = _Watcher(process, supervisor, health, (management, prober), server)
    watcher.wait_s = settings.engine_wait_s
    thread = threading.Thread(target=watcher.run, name="supervise", daemon=True)
    thread.start()
    log.info("edge on %s:%d in front of multi-model-server (127.0.0.1:%d); %s=mms", host, port, backend,
             envnames.DOGBREED_SERVER)
    server.run()  # until SIGTERM/SIGINT, or the watcher's should_exit when multi-model-server itself exits
    watcher.stopping = True
    app.close()
    thread.join(timeout=5)
    if supervisor is not None:
        supervisor.stop()
    stop_group(process)  # also the workers of a multi-model-server that exited on its own
    return watcher.exit_code or 0


class _Watcher:
    """The supervising thread: restarts the engine (through its supervisor), keeps ``/ping``'s health current, and
    stops the edge where multi-model-server itself exits (exit code 1: the container is replaced)."""

    def __init__(self, process, supervisor: EngineSupervisor | None, health, checks: tuple, server):
        self.process, self.supervisor, self.health = process, supervisor, health
        self.checks, self.server = checks, server  # (management port, prober): mms_edge.why_not_ready
        self.stopping, self.exit_code = False, None
        self.wait_s = DEFAULT_TIMEOUT_S / 2  # the engine's wait bound (settings.engine_wait_s)

    def run(self) -> None:
        from .mms_edge import why_not_ready

        started = time.monotonic()
        while not self.stopping:
            if self.process.poll() is not None:
                if not self.stopping:  # it exited on its own, not stopped by the edge's SIGTERM
                    self.health.set(f"multi-model-server exited with {self.process.returncode}", final=True)
                    log.error("multi-model-server exited with %s: stopping", self.process.returncode)
                    self.exit_code, self.server.should_exit = self.process.returncode or 1, True
                return
            reason = self.supervisor.poll() if self.supervisor is not None else None
            if reason:  # the engine cannot come back: let waiting requests have their 503, then free the memory
                log.error("cannot serve the model: %s (answering /ping with 503)", reason)
                self.health.set(reason, final=True)
                self.exit_code = 1  # as a model that never loaded: the instance cannot serve
                time.sleep(min(self.wait_s, time.monotonic() - started) + 1)
                self.stopping = True
                stop_group(self.process)
                return
            ready = None if self.supervisor is None else self.supervisor.ready
            try:
                self.health.set(why_not_ready(ready, *self.checks))
            except Exception as exc:  # an unexpected management answer must not end the watch with /ping frozen
                log.exception("health check failed")
                self.health.set(f"health check failed: {exc.__class__.__name__}: {exc}")
            time.sleep(1)


def main(argv: list[str] | None = None) -> None:
    """``container/serve``: serve ``/opt/ml/model`` (a model.tar.gz there is extracted safely first)."""
    configure_logging(force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        argv = argv[1:]
    try:
        configuration = configured()  # first: a setting out of range refuses the start, whatever the model
    except ValueError as exc:
        log.error("refusing to start: %s", exc)
        sys.exit(2)
    state = Path(tempfile.mkdtemp(prefix="dogbreed-serve-"))
    try:
        model_dir = model_dir_from(envnames.base_dir() / "model", state)
    except ModelError as exc:
        sys.exit(serve_unhealthy("0.0.0.0", configuration[0].port, str(exc), configuration))  # nosec B104
    sys.exit(serve(model_dir, state_dir=state, configuration=configuration))


if __name__ == "__main__":
    main()
