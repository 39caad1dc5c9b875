"""What the serving host offers, found without torch: its cores and its NVIDIA GPUs.

The multi-model-server front's launcher only decides the layout (a batching engine on CPU hosts, one worker per
GPU otherwise); importing torch for that cost it ~450 MB and ~3 s of every cold start. The processes that hold
the model (the engine, a GPU host's workers) still ask torch for CUDA themselves (:func:`dogbreed.accel.pick`):
where this count says no GPU and torch finds one, the engine runs on it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess  # nosec B404 - nvidia-smi, found on PATH, with fixed arguments
from pathlib import Path

from .. import env as envnames
from ..common import available_cores  # noqa: F401 - re-exported for the launcher and the native front

log = logging.getLogger("dogbreed.serve")

PROC_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver gives this container
NVIDIA_SMI = "nvidia-smi"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@functools.lru_cache(maxsize=1)
def installed_gpus() -> int:
    """The NVIDIA GPUs the driver shows here: its /proc folders, else ``nvidia-smi -L``'s lines; 0 without a driver.
    Once per process: the launcher asks several times per start, and each nvidia-smi may take up to 20 s."""
    try:
        found = sum(1 for _ in PROC_GPUS.iterdir())
    except OSError:  # no driver loaded here (or /proc hidden): ask nvidia-smi
        found = 0
    return found or _smi_gpus()


def _smi_gpus() -> int:
    smi = shutil.which(NVIDIA_SMI)
    if not smi:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)  # nosec B603
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi -L failed (%s): counting no GPU", exc)
        return 0
    # "GPU 0: NVIDIA H100 (UUID: GPU-...)"; MIG instances are indented lines below their GPU
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def visible_gpus() -> int:
    """The GPUs CUDA will give this process: the installed ones, narrowed by ``CUDA_VISIBLE_DEVICES`` as CUDA reads
    it (indices or UUIDs, up to the first entry that names no device; empty hides them all). multi-model-server's
    own count (nvidia-smi's) ignores the variable."""
    installed = installed_gpus()
    mask = os.environ.get(CUDA_VISIBLE_DEVICES)
    if not installed or mask is None:
        return installed
    seen: list[str] = []
    for entry in (part.strip() for part in mask.split(",")):
        if entry.isdigit() and int(entry) < installed or entry.startswith(("GPU-", "MIG-")):
            if entry in seen:
                break
            seen.append(entry)
        else:
            break
    return min(len(seen), installed)


def warn_if_cuda_is_missing(cuda_available: bool) -> None:
    """Say loudly where the driver shows GPUs but torch's CUDA cannot use them (a driver older than the image's
    CUDA, say): the launcher counted GPUs, so it turned the engine off and started one model per GPU, each now on
    the CPU and unbatched. ``cuda_available``: torch's answer (this module stays torch-free)."""
    gpus = visible_gpus()
    if gpus and not cuda_available:
        log.error("%d GPU(s) installed here but torch finds no usable CUDA (is the NVIDIA driver older than the "
                  "image's CUDA?): serving on the CPU; set %s=on to batch on the CPU with one engine", gpus,
                  envnames.DOGBREED_SERVE_ENGINE)


class NoCuda(Exception):
    """GPUs installed, CUDA cannot start, and the CPU fallback not allowed: the front answers ``/ping`` with it."""


def cuda_refusal(gpus: int, cuda_available: bool, cpu_fallback: bool) -> str | None:
    """Why a GPU host must not serve (None where it may): its driver shows ``gpus`` but torch's CUDA cannot start,
    and ``DOGBREED_SERVE_CPU_FALLBACK`` does not allow the CPU. Serving silently on the CPU would answer 10 to 50
    times slower than the instance was chosen for; SageMaker replaces an instance whose /ping is 503."""
    if not gpus or cuda_available:
        return None
    if cpu_fallback:
        log.error("%d GPU(s) installed but torch finds no usable CUDA: serving on the CPU, as %s allows", gpus,
                  envnames.DOGBREED_SERVE_CPU_FALLBACK)
        return None
    return (f"{gpus} GPU(s) installed but CUDA cannot start (an NVIDIA driver older than the image's CUDA? deploy "
            f"with an InferenceAmiVersion whose driver runs it); set {envnames.DOGBREED_SERVE_CPU_FALLBACK}=true to "
            "serve on the CPU instead")
