"""What the hardware offers, detected at run time: device, precision, memory format, threads."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from dataclasses import dataclass

import torch

from .common import available_cores  # noqa: F401 - re-exported: the training side takes it from here
from .errors import ConfigError, GpuError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX): there bf16 autocast pays."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Accelerator:
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    reason: str = ""  # why this precision here, in words: logged, and kept with the model and its metrics
    gpu_name: str | None = None
    capability: tuple[int, int] | None = None  # the GPU's compute capability (8, 0) = sm_80

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 on CUDA: its narrow range flushes small gradients to zero unless the loss is scaled
        (bf16 has fp32's range and needs no scaling)."""
        return self.precision == "fp16" and self.device.type == "cuda"

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self):
        """A GradScaler for fp16 on CUDA (bf16 needs none); disabled elsewhere."""
        return torch.amp.GradScaler(self.device.type, enabled=self.uses_grad_scaler)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def prepare_batch(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        return f"device={self.device} precision={self.precision} channels_last={int(self.channels_last)}"

    def as_dict(self) -> dict:
        """The choice as JSON-able values (for model.json and the metrics file)."""
        return {
            "device": str(self.device),
            "gpu_name": self.gpu_name,
            "capability": None if self.capability is None else f"{self.capability[0]}.{self.capability[1]}",
            "precision": self.precision,
            "channels_last": bool(self.channels_last),
            "grad_scaler": self.uses_grad_scaler,
            "reason": self.reason,
        }


_PROBED: dict[str, tuple[str, bool, dict]] = {}


def _probe_net() -> torch.nn.Module:
    """A few ResNet-bottleneck-shaped layers: what a CNN spends its time on."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(64, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


def probe_cpu(training: bool, model: torch.nn.Module | None = None, input_size: int = 224,
              batch: int | None = None) -> tuple[str, bool, dict]:
    """Time the CPU's candidate set-ups (fp32, fp32 + channels_last, bf16 + channels_last where oneDNN
    has bf16 kernels) and return the fastest (precision, channels_last, timings).

    With ``model``, the model itself is timed (a copy, on a small batch: forward + backward when
    training, forward alone for inference); without, a few ResNet-bottleneck layers stand in. A CPU
    that advertises bf16 without making it fast keeps fp32."""

    key = ("train" if training else "infer", model.__class__.__name__ if model is not None else "proxy", input_size)
    if key in _PROBED:
        return _PROBED[key]
    with torch.random.fork_rng():  # the probe's random inputs leave the caller's RNG untouched
        return _probe(training, model, input_size, batch, key)


def _label(precision: str, channels_last: bool) -> str:
    return precision + ("+channels_last" if channels_last else "")


def _measure(net: torch.nn.Module, x: torch.Tensor, precision: str, channels_last: bool, training: bool,
             rounds: int) -> float:
    """Seconds of one step of ``net`` in this set-up: the best of ``rounds``, after an untimed one (the
    first call is where oneDNN chooses its kernels)."""
    probe = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()

    def once():
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        if training:
            probe.train()
            with autocast:
                out = probe(inputs)
            out.float().sum().backward()
            probe.zero_grad(set_to_none=True)
        else:
            probe.eval()
            with torch.inference_mode(), autocast:
                probe(inputs)

    once()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - start)
    return best


def _probe(training, model, input_size, batch, key):
    torch.manual_seed(0)
    candidates = [("fp32", False), ("fp32", True)]
    if cpu_supports_bf16():
        candidates.append(("bf16", True))
    if model is not None:
        net = copy.deepcopy(model).cpu()
        x = torch.randn(batch or (4 if training else 1), 3, input_size, input_size)
    else:
        net = _probe_net()
        x = torch.randn(batch or 8, 64, 56, 56)
    rounds = 2 if model is not None else 3
    timings = {_label(*c): _measure(net, x, c[0], c[1], training, rounds) for c in candidates}
    del net
    fastest = min(candidates, key=lambda c: timings[_label(*c)])
    _PROBED[key] = (fastest[0], fastest[1], timings)
    log.info("CPU probe %s: %s -> %s", key, {k: f"{v * 1e3:.1f} ms" for k, v in timings.items()}, _label(*fastest))
    return _PROBED[key]


def pick(precision: str = "auto", local_rank: int = 0, use_cuda: bool | None = None, training: bool = True,
         model: torch.nn.Module | None = None, input_size: int = 224) -> Accelerator:
    """Choose device and precision. ``auto``: on CUDA, bf16 autocast where the GPU has native bf16
    (compute capability 8.0+: A10G, A100, H100), else fp16 AMP (with a GradScaler when training: T4,
    V100); on CPUs the fastest of fp32, fp32 + channels_last and bf16 + channels_last, measured here
    (bf16 only where oneDNN has native bf16 kernels). An explicit precision the hardware cannot run is
    refused, not faked. The choice and its reason are logged (``Accelerator.reason``, ``as_dict()``)."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if cuda:
        acc = _pick_cuda(precision, local_rank, training)
    else:
        acc = _pick_cpu(precision, training, model, input_size)
    log.info("%s: %s", acc.describe(), acc.reason)
    return acc


def cuda_start_failure() -> str | None:
    """Why CUDA cannot start in this process, in words; None where it can."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: the image needs torch's CUDA build"
    if torch.cuda.is_available():
        return None
    try:
        torch.cuda.init()  # raises with the driver's own reason (no driver, too old for this CUDA, no device)
    except Exception as exc:  # noqa: BLE001 - any failure: its words are the reason
        return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return "torch.cuda.is_available() is False (no device visible: check CUDA_VISIBLE_DEVICES and the driver)"


def cuda_for_training(expected_gpus: int) -> bool:
    """Whether this job trains on CUDA. ``expected_gpus``: SM_NUM_GPUS, the GPUs the instance has. Where GPUs are
    expected and CUDA cannot start, a GpuError naming the reason: falling back to the CPU would bill a GPU instance
    for a run tens of times slower, silently."""
    if expected_gpus <= 0:
        return False
    reason = cuda_start_failure()
    if reason:
        raise GpuError(f"this instance has {expected_gpus} GPU(s) (SM_NUM_GPUS) but CUDA cannot start: {reason}")
    return True


def cuda_native_bf16() -> bool:
    """bf16 in hardware on the current CUDA device (compute capability 8.0+). torch's default
    ``is_bf16_supported()`` counts emulation and answers True on a T4 or V100 too, where bf16 runs
    slower than fp16 (no bf16 tensor cores)."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def _pick_cuda(precision: str, local_rank: int, training: bool) -> Accelerator:
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise ConfigError(f"cuda:{local_rank} asked for, but this process sees {count} GPU(s)")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)  # is_bf16_supported and autocast ask about the current device
    torch.backends.cudnn.benchmark = True
    name, capability = torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))
    gpu = f"{name} (sm_{capability[0]}{capability[1]})"
    native = cuda_native_bf16()
    fp16 = "fp16 AMP + GradScaler" if training else "fp16 autocast"
    if precision == "auto":
        precision = "bf16" if native else "fp16"
        reason = f"{gpu} has native bf16: bf16 autocast" if native else f"{gpu} has no native bf16: {fp16}"
    elif precision == "bf16" and not native:
        # Refused rather than warned: a warning is one line in a log nobody reads while an emulated run is
        # billed for hours; a refusal costs the seconds before the first step and says what to use instead.
        raise ConfigError(f"precision bf16 needs a GPU with native bf16 (compute capability 8.0 or above: A10G, "
                         f"L4, A100, H100); {gpu} would only emulate it, without bf16 tensor cores, far slower "
                         f"than fp16. Use auto (fp16 AMP here) or fp32")
    else:
        reason = f"{precision} asked for on {gpu}" + (f": {fp16}" if precision == "fp16" else "")
    return Accelerator(device, precision, True, reason, name, capability)


def _pick_cpu(precision: str, training: bool, model: torch.nn.Module | None, input_size: int) -> Accelerator:
    device = torch.device("cpu")
    if precision == "fp16":
        raise ConfigError("precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    native = cpu_supports_bf16()
    if precision == "auto":
        precision, channels_last, timings = probe_cpu(training, model, input_size)
        measured = ", ".join(f"{label} {seconds * 1e3:.1f} ms" for label, seconds in timings.items())
        reason = f"fastest measured on this CPU ({measured})" + ("" if native else "; no native bf16 kernels")
        return Accelerator(device, precision, channels_last, reason)
    reason = f"{precision} asked for on the CPU"
    if precision == "bf16" and not native:
        log.warning("bf16 asked for on a CPU without native bf16 kernels: it will be slow")
        reason += " (no native bf16 kernels: slow)"
    return Accelerator(device, precision, True, reason)


def set_threads(num_threads: int | None) -> int:
    n = max(1, int(num_threads or os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n
