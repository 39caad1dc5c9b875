"""Start multi-model-server with our handler: the ``serve`` entry of the image and of ``local-serve``.

Each server has its own config file and temp directory (MMS keys its worker sockets and pid file on
the temp directory), runs in its own process group, and stops on SIGTERM within the grace period.
A missing or corrupt model is reported in the log and by an unhealthy ``/ping`` (no crash loop).

On CPU hosts (``DOGBREED_SERVE_ENGINE=auto``) the model lives in one engine process that batches the
requests of all workers (:mod:`.engine`); the workers decode and preprocess. The server restarts the
engine if it dies; on GPU hosts each worker holds its own model, one worker per GPU.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .. import env as envnames
from ..common import configure_logging
from ..errors import ModelError
from .archive import model_dir_from
from .capacity import plan_workers
from .engine import wait_bound
from .hardware import available_cores, visible_gpus
from .supervisor import EngineSupervisor

log = logging.getLogger("dogbreed.serve")

HANDLER_SERVICE = "dogbreed.serving.handler_service"
HANDLER_MODULE = "dogbreed.serving.handler"
DEFAULT_PORT = 8080
STOP_GRACE_S = 20
RESPONSE_TIMEOUT_S = 60  # multi-model-server's answer timeout; the engine wait bound stays under it
MAX_REQUEST_BYTES = 6 * 1024 * 1024  # SageMaker real-time endpoints take at most 6 MB


def default_workers(engine: bool = False, model_dir: Path | None = None) -> int:
    """SAGEMAKER_MODEL_SERVER_WORKERS, else: with the engine, twice the cores (workers that only decode, enough to
    keep a batch in the engine) as far as the container's memory carries them (:mod:`.capacity`); one per GPU;
    half the cores otherwise."""
    configured = os.environ.get(envnames.SAGEMAKER_MODEL_SERVER_WORKERS)
    if configured:
        return max(1, int(configured))
    cores = available_cores()
    if engine:
        plan = plan_workers(cores, model_dir)
        log.info("%s", plan.describe())
        return plan.workers
    return visible_gpus() or max(1, cores // 2)


FRONTS = ("mms", "native")


def front() -> str:
    """``DOGBREED_SERVER``: ``mms`` (multi-model-server, the default the design names) or ``native`` (:mod:`.native`)."""
    name = (os.environ.get(envnames.DOGBREED_SERVER) or "mms").strip().lower()
    if name not in FRONTS:
        raise ValueError(f"{envnames.DOGBREED_SERVER}={name!r}: choose {' or '.join(FRONTS)}")
    return name


def engine_enabled() -> bool:
    """``auto``: the batching engine where no GPU is visible (found without torch: :mod:`.hardware`)."""
    mode = (os.environ.get(envnames.DOGBREED_SERVE_ENGINE) or "auto").lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"{envnames.DOGBREED_SERVE_ENGINE}={mode!r}: choose auto, on or off")
    if mode == "auto":
        return visible_gpus() == 0
    return mode == "on"


def loopback_port(inference_port: int) -> int:
    """A free port on 127.0.0.1 for multi-model-server's management API: below 32768 (MMS refuses higher ones, so no
    ephemeral port from the kernel), and never the inference port, which MMS itself binds only later."""
    import socket

    for candidate in range(29000 + os.getpid() % 3000, 32768):
        if candidate == inference_port:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return candidate
    raise OSError("no free loopback port below 32768 for multi-model-server's management API")


def mms_properties(host: str, port: int, workers: int, max_request_bytes: int, timeout_s: int = RESPONSE_TIMEOUT_S) -> str:
    """The toolkit's defaults, then ours. The management API (register a model from any URL, unload, scale
    workers) goes to loopback on a port of its own: on the inference address anyone who reaches the endpoint could
    make the server fetch an archive and run its code. Only the start-up model is served."""
    from sagemaker_inference import model_server  # in the serving image only (and its dev twin here)

    with open(model_server.DEFAULT_MMS_CONFIG_FILE) as handle:
        defaults = handle.read()
    return defaults + "\n".join(
        [
            f"inference_address=http://{host}:{port}",
            f"management_address=http://127.0.0.1:{loopback_port(port)}",
            f"default_workers_per_model={workers}",
            # multi-model-server hands its workers gpu_id round-robin below min(this, nvidia-smi's count); nvidia-smi
            # ignores CUDA_VISIBLE_DEVICES: bound it by what CUDA will show, so that every gpu_id opens in the worker
            f"number_of_gpu={visible_gpus()}",
            f"default_service_handler={HANDLER_SERVICE}",
            f"default_response_timeout={timeout_s}",
            f"max_request_size={max_request_bytes}",
            "vmargs=-XX:+UseContainerSupport -XX:InitialRAMPercentage=8.0 -XX:MaxRAMPercentage=10.0 -XX:-UseLargePages",
            "",
        ]
    )


def check_model(model_dir: Path) -> str | None:
    """None if the model loads; otherwise the reason it cannot be served. Without the engine only (GPU hosts, or
    ``DOGBREED_SERVE_ENGINE=off``): the workers import torch anyway; the engine's load is its own check."""
    from ..models import load_artifacts  # torch: not in the launcher of an engine

    try:
        load_artifacts(model_dir)
    except ModelError as exc:
        return str(exc)
    except Exception as exc:  # any failure to rebuild is a reason to be unhealthy, said in the log
        return f"{exc.__class__.__name__}: {exc}"
    return None


def start_mms(model_dir: Path, host: str, port: int, workers: int, temp_dir: Path, config_path: Path) -> subprocess.Popen:
    from sagemaker_inference import model_server  # in the serving image only (and its dev twin here)

    max_bytes = int(os.environ.get(envnames.SAGEMAKER_MAX_REQUEST_SIZE, MAX_REQUEST_BYTES))
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(mms_properties(host, port, workers, max_bytes))
    temp_dir.mkdir(parents=True, exist_ok=True)
    environ = dict(os.environ)
    environ.update(
        {
            "TEMP": str(temp_dir),
            "TMPDIR": str(temp_dir),
            "SAGEMAKER_PROGRAM": HANDLER_MODULE,
            envnames.SAGEMAKER_MODEL_SERVER_WORKERS: str(workers),
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
    log.info("starting multi-model-server on %s:%d with %d worker(s)", host, port, workers)
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


class _Unhealthy(BaseHTTPRequestHandler):
    reason = "model not loaded"

    def _answer(self, status: int) -> None:
        body = json.dumps({"status": "Unhealthy", "error": self.reason}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer(503)

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, MAX_REQUEST_BYTES))
        self._answer(503)

    def log_message(self, fmt, *args):
        log.info("unhealthy server: " + fmt, *args)


def _bind(host: str, port: int, handler, wait_s: float = 30) -> ThreadingHTTPServer:
    """The port, once the front that held it is gone (its JVM may take a moment to let go)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ThreadingHTTPServer((host, port), handler)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def serve_unhealthy(host: str, port: int, reason: str) -> int:
    """Answer /ping (and everything else) with 503 and the reason, until SIGTERM."""
    handler = type("Unhealthy", (_Unhealthy,), {"reason": reason})
    server = _bind(host, port, handler)
    log.error("cannot serve the model: %s (answering /ping with 503)", reason)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    while not stop.wait(0.5):
        pass
    server.shutdown()
    return 1


def serve(model_dir: Path, host: str = "0.0.0.0", port: int | None = None, workers: int | None = None,  # nosec B104 - a container must listen on all interfaces
          state_dir: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. With the engine, the front and its workers start
    while the engine loads the model (the engine's load is the check); without it, the model is checked first.
    ``DOGBREED_SERVER=native``: the native front instead of multi-model-server (:mod:`.native`)."""
    port = int(port or os.environ.get(envnames.SAGEMAKER_BIND_TO_PORT, DEFAULT_PORT))
    state_dir = Path(state_dir or os.environ.get(envnames.DOGBREED_SERVE_TEMP) or tempfile.mkdtemp(prefix="dogbreed-serve-"))
    if front() == "native":  # one process: the engine and the front together; it checks the model as it loads it
        from .native import serve_native

        max_bytes = int(os.environ.get(envnames.SAGEMAKER_MAX_REQUEST_SIZE, MAX_REQUEST_BYTES))
        return serve_native(model_dir, host, port, state_dir, max_bytes, STOP_GRACE_S)
    use_engine = engine_enabled()
    reason = None if use_engine else check_model(model_dir)
    if reason:
        return serve_unhealthy(host, port, reason)
    config_path = Path(os.environ.get(envnames.DOGBREED_MMS_CONFIG) or state_dir / "mms.properties")
    workers = workers or default_workers(use_engine, model_dir)
    supervisor = None
    if use_engine:
        supervisor = EngineSupervisor(model_dir, state_dir / "engine.sock")
        supervisor.start()
        os.environ[envnames.DOGBREED_ENGINE_SOCKET] = str(supervisor.socket_path)
    else:
        os.environ.pop(envnames.DOGBREED_ENGINE_SOCKET, None)
    process = start_mms(model_dir, host, port, workers, state_dir / "tmp", config_path)
    started = time.monotonic()
    code, reason = _supervise(process, supervisor)
    if reason:  # the engine cannot come back: let the waiting requests have their 503, then say why on /ping
        time.sleep(min(wait_bound(), time.monotonic() - started) + 1)
        if process.poll() is not None:  # a signal stopped it meanwhile
            return 0
        stop_group(process)
        return serve_unhealthy(host, port, reason)
    return code


def _supervise(process: subprocess.Popen, supervisor: EngineSupervisor | None) -> tuple[int, str | None]:
    """Run until the front exits or a signal stops it (exit code, None), or the engine gives up (1, reason)."""
    stopping = {"signal": None}

    def _stop(signum, frame):
        stopping["signal"] = signum
        log.info("signal %d: stopping the model server", signum)
        threading.Thread(target=stop_group, args=(process,), daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    reason = None
    while process.poll() is None and reason is None:
        if supervisor is not None and not stopping["signal"]:
            reason = supervisor.poll()
        time.sleep(0.2)
    if supervisor is not None:
        supervisor.stop()
    if reason:
        return 1, reason
    try:  # the frontend is gone: make sure no worker is left behind
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return (0 if stopping["signal"] else (process.returncode or 1)), None


def main(argv: list[str] | None = None) -> None:
    """``container/serve``: serve ``/opt/ml/model`` (a model.tar.gz there is extracted safely first)."""
    configure_logging(force=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        argv = argv[1:]
    base = envnames.base_dir()
    state = Path(tempfile.mkdtemp(prefix="dogbreed-serve-"))
    try:
        model_dir = model_dir_from(base / "model", state)
    except ModelError as exc:
        sys.exit(serve_unhealthy("0.0.0.0", int(os.environ.get(envnames.SAGEMAKER_BIND_TO_PORT, DEFAULT_PORT)), str(exc)))  # nosec B104
    sys.exit(serve(model_dir, state_dir=state))


if __name__ == "__main__":
    main()
