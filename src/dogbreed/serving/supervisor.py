"""The model engine's life: start it, see when it is ready, restart it when it dies (backing off), and give up
on a model that cannot load at all, so that the server turns ``/ping`` unhealthy instead of looping.

A death after the engine served is restarted at once the first time; more deaths within
``RECENT_S`` wait 1, 2, 4 ... s (at most ``MAX_BACKOFF_S``). An engine that dies before it is ready
counts as a failed start: the first start failing, or ``MAX_FAILED_STARTS`` restarts in a row, is the end.
"""

from __future__ import annotations

import collections
import logging
import os
import socket as sockets
import subprocess
import sys
import time
from pathlib import Path

from .engine import failure_path
from .hardware import available_cores
from .settings import ServingSettings

log = logging.getLogger("dogbreed.serve")

MAX_FAILED_STARTS = 3
MAX_BACKOFF_S = 30.0
RECENT_S = 300.0


def engine_command(model_dir: Path, socket_path: Path, settings: ServingSettings) -> tuple[list[str], int, int]:
    batch, threads = settings.max_batch, settings.threads or available_cores()
    command = [sys.executable, "-m", "dogbreed.serving.batcher", "--model-dir", str(model_dir), "--socket", str(socket_path),
               "--max-batch", str(batch), "--threads", str(threads), "--max-queued", str(2 * settings.pending),
               *(["--cpu-fallback"] if settings.cpu_fallback else []), "--graph", settings.graph,
               "--precision-cache", settings.precision_cache or str(Path(socket_path).parent / "precision.json")]
    return command, batch, threads


def start_engine(model_dir: Path, socket_path: Path, settings: ServingSettings) -> subprocess.Popen:
    command, batch, threads = engine_command(model_dir, socket_path, settings)
    log.info("starting the model engine (batches of up to %d, %d threads)", batch, threads)
    return subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)})


def engine_listening(socket_path: Path) -> bool:
    if not Path(socket_path).exists():
        return False
    with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as probe:
        try:
            probe.connect(str(socket_path))
            return True
        except OSError:
            return False


def stop_engine(engine: subprocess.Popen | None) -> None:
    if engine is None or engine.poll() is not None:
        return
    engine.terminate()
    try:
        engine.wait(timeout=10)
    except subprocess.TimeoutExpired:
        engine.kill()
        engine.wait()


class EngineSupervisor:
    """Call :meth:`poll` every few tenths of a second; it returns the reason to give up, else None."""

    def __init__(self, model_dir: Path, socket_path: Path, settings: ServingSettings | None = None):
        self.model_dir, self.socket_path = Path(model_dir), Path(socket_path)
        self.settings = settings or ServingSettings()
        self.process: subprocess.Popen | None = None
        self.ready = self.ever_ready = False
        self.failed_starts = 0
        self.deaths: collections.deque = collections.deque()
        self.restart_at: float | None = None

    def start(self) -> None:
        for stale in (self.socket_path, failure_path(self.socket_path)):  # "ready" means the new engine listens
            stale.unlink(missing_ok=True)
        self.process, self.ready, self.restart_at = start_engine(self.model_dir, self.socket_path, self.settings), False, None

    def poll(self) -> str | None:
        if self.restart_at is not None:
            if time.monotonic() >= self.restart_at:
                self.start()
            return None
        code = self.process.poll()
        if code is None:
            if not self.ready and engine_listening(self.socket_path):
                self.ready, self.ever_ready, self.failed_starts = True, True, 0
                log.info("the model engine is ready")
            return None
        if not self.ready and self.socket_path.exists():  # it listened, then died between two polls
            self.ready, self.ever_ready, self.failed_starts = True, True, 0
        return self._died(code)

    def _died(self, code: int) -> str | None:
        now = time.monotonic()
        self.failed_starts += 0 if self.ready else 1
        # A first start that wrote why it cannot load gives up at once; one killed by a passing cause (an OOM kill
        # while everything else starts too) is retried like any failed start.
        cannot_load = not self.ever_ready and failure_path(self.socket_path).is_file()
        if cannot_load or self.failed_starts >= MAX_FAILED_STARTS:
            return self._reason(code)
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - RECENT_S:
            self.deaths.popleft()
        delay = 0.0 if len(self.deaths) <= 1 else min(MAX_BACKOFF_S, 2.0 ** (len(self.deaths) - 2))
        log.error("the model engine exited with %s: restarting it in %.0f s (%d deaths in %.0f s)", code, delay,
                  len(self.deaths), RECENT_S)
        self.restart_at, self.ready = now + delay, False
        return None

    def _reason(self, code: int) -> str:
        failure = failure_path(self.socket_path)
        why = failure.read_text().strip() if failure.is_file() else f"exit code {code}, see the log"
        if not self.ever_ready:
            return f"the model engine cannot load the model: {why}"
        return f"the model engine failed to start {self.failed_starts} times in a row; giving up: {why}"

    def stop(self) -> None:
        self.restart_at = None
        stop_engine(self.process)
