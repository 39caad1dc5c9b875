"""What the hardware offers, detected at run time: device, precision, memory format, threads."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

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

    @property
    def autocast_dtype(self):
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self):
        """A GradScaler for fp16 on CUDA (bf16 needs none); disabled elsewhere."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16" and self.device.type == "cuda")

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


def _probe(training, model, input_size, batch, key):
    import copy
    import time

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
    timings = {}
    for precision, channels_last in candidates:
        probe = net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        inputs = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

        def once(probe=probe, inputs=inputs, autocast=autocast):
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
        for _ in range(2 if model is not None else 3):
            start = time.perf_counter()
            once()
            best = min(best, time.perf_counter() - start)
        timings[f"{precision}{'+channels_last' if channels_last else ''}"] = best
    del net
    fastest = min(candidates, key=lambda c: timings[f"{c[0]}{'+channels_last' if c[1] else ''}"])
    _PROBED[key] = (fastest[0], fastest[1], timings)
    log.info("CPU probe %s: %s -> %s%s", key, {k: f"{v * 1e3:.1f} ms" for k, v in timings.items()},
             fastest[0], " + channels_last" if fastest[1] else "")
    return _PROBED[key]


def pick(precision: str = "auto", local_rank: int = 0, use_cuda: bool | None = None, training: bool = True,
         model: torch.nn.Module | None = None, input_size: int = 224) -> Accelerator:
    """Choose device and precision. ``auto``: AMP (bf16, else fp16) on CUDA; on CPUs the fastest of
    fp32, fp32 + channels_last and bf16 + channels_last, measured here (bf16 only where oneDNN has
    native bf16 kernels). An explicit precision the hardware cannot run is refused, not faked."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return Accelerator(device, precision, channels_last=True)
    device = torch.device("cpu")
    if precision == "fp16":
        raise ValueError("precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    if precision == "auto":
        precision, channels_last, _ = probe_cpu(training, model, input_size)
        return Accelerator(device, precision, channels_last)
    if precision == "bf16" and not cpu_supports_bf16():
        log.warning("bf16 asked for on a CPU without native bf16 kernels: it will be slow")
    return Accelerator(device, precision, channels_last=True)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. docker --cpuset-cpus), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(num_threads: int | None) -> int:
    n = max(1, int(num_threads or os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n
