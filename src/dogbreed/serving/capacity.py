"""How many decoding workers a host can carry: from its cores and from the memory the container may use.

The memory is the cgroup's limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``; what ``docker run --memory``
and a SageMaker serverless size set), else the host's MemTotal. From it go the engine (torch, the weights, the
frozen graph and the activations of a batch: an estimate from the weights file), the front (multi-model-server's
JVM, capped at 10 % of the memory by its vmargs, plus its own overhead), and a reserve; what is left, divided
by what a torch-free decoding worker holds, bounds the count. Every number used is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dogbreed.serve")

MB = 1024 * 1024
CGROUP_FILES = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
MEMINFO = Path("/proc/meminfo")
NO_LIMIT = 1 << 60  # cgroup v1 writes a huge number for "no limit"; v2 writes "max"

# What decoding one image may hold at its peak: the largest (decoders.MAX_PIXELS, 40 MP) in its widest mode, e.g.
# a palette PNG with transparency as P, RGBA, the alpha and the RGB result, or 16-bit grey as its float copy: about
# 10 bytes a pixel. Measured: eight 40-MP RGBA PNGs at once killed a 4 GB container at 160 MB counted a request.
REQUEST_PEAK_MB = 400
WORKER_MB = 60 + REQUEST_PEAK_MB  # a decoding worker: 60 MB RSS idle (Python, Pillow, NumPy, the toolkit), plus that
NATIVE_BASE_MB = 100  # the native front's process beyond its engine: Python, uvicorn, Pillow, the bodies read
ENGINE_BASE_MB = 700  # the engine's torch runtime, oneDNN's buffers, a batch of activations (ResNet18: 821 MB peak)
ENGINE_PER_WEIGHT_MB = 4.0  # the weights held: the eager model, the frozen graph's folded copy, pre-packed kernels
FRONT_BASE_MB = 200  # the JVM beyond its heap: metaspace, threads, netty buffers
FRONT_HEAP_SHARE = 0.10  # -XX:MaxRAMPercentage=10.0 in server.mms_properties
RESERVE_SHARE = 0.10  # the kernel's page cache for the model files, a request's image, room to breathe


def container_memory_mb(cgroup_files=CGROUP_FILES, meminfo: Path = MEMINFO) -> tuple[int, str]:
    """(MB this container may use, where the figure came from)."""
    for path in cgroup_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text != "max" and text.isdigit() and int(text) < NO_LIMIT:
            return int(text) // MB, str(path)
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024, f"{meminfo} MemTotal"
    raise RuntimeError(f"no memory figure in {meminfo}")


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    cores: int
    memory_mb: int
    memory_source: str
    engine_mb: int
    front_mb: int
    reserve_mb: int

    def describe(self) -> str:
        by_cores = 2 * self.cores
        spare = self.memory_mb - self.engine_mb - self.front_mb - self.reserve_mb
        return (f"{self.workers} decoding worker(s): {self.cores} core(s) -> at most {by_cores}; {self.memory_mb} MB "
                f"({self.memory_source}) - engine ~{self.engine_mb} MB - front ~{self.front_mb} MB - reserve "
                f"{self.reserve_mb} MB = {spare} MB, {WORKER_MB} MB a worker -> at most {max(0, spare // WORKER_MB)}")


def engine_estimate_mb(model_dir: Path | None) -> int:
    weights = Path(model_dir) / "model.pth" if model_dir else None
    weights_mb = weights.stat().st_size / MB if weights and weights.is_file() else 100.0
    return int(ENGINE_BASE_MB + ENGINE_PER_WEIGHT_MB * weights_mb)


def plan_workers(cores: int, model_dir: Path | None = None, memory: tuple[int, str] | None = None) -> WorkerPlan:
    """Twice the cores (a worker decodes while another's request is in the engine), bounded by the memory; at least 1."""
    memory_mb, source = memory or container_memory_mb()
    engine_mb = engine_estimate_mb(model_dir)
    front_mb = int(FRONT_BASE_MB + FRONT_HEAP_SHARE * memory_mb)
    reserve_mb = int(RESERVE_SHARE * memory_mb)
    spare = memory_mb - engine_mb - front_mb - reserve_mb
    workers = max(1, min(2 * max(1, cores), spare // WORKER_MB))
    return WorkerPlan(int(workers), cores, memory_mb, source, engine_mb, front_mb, reserve_mb)


def plan_request_threads(most: int, model_dir: Path | None = None,
                         memory: tuple[int, str] | None = None) -> tuple[int, str]:
    """The native front's request threads, each of which may decode one image at its peak: ``most``, as far as the
    memory carries them (after the engine and a reserve), at least 2. (count, how it was reached)."""
    memory_mb, source = memory or container_memory_mb()
    engine_mb = engine_estimate_mb(model_dir)
    reserve_mb = int(RESERVE_SHARE * memory_mb)
    spare = memory_mb - engine_mb - NATIVE_BASE_MB - reserve_mb
    threads = max(2, min(most, spare // REQUEST_PEAK_MB))
    return int(threads), (f"{threads} request thread(s): at most {most}; {memory_mb} MB ({source}) - engine "
                          f"~{engine_mb} MB - front ~{NATIVE_BASE_MB} MB - reserve {reserve_mb} MB = {spare} MB, "
                          f"{REQUEST_PEAK_MB} MB a decoding thread at its peak -> at most {max(0, spare // REQUEST_PEAK_MB)}")
