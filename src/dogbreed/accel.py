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
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def describe(self) -> str:
        return f"device={self.device} precision={self.precision} channels_last={int(self.channels_last)}"


def pick(precision: str = "auto", local_rank: int = 0, use_cuda: bool | None = None) -> Accelerator:
    """Choose device and precision. ``auto``: AMP (bf16, else fp16) on CUDA; bf16 on CPUs with native
    bf16; fp32 otherwise. An explicit precision the hardware cannot run is refused, not faked."""
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
    bf16 = cpu_supports_bf16()
    if precision == "auto":
        precision = "bf16" if bf16 else "fp32"
    if precision == "fp16":
        raise ValueError("precision fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
    # channels_last pays with oneDNN's bf16 convolutions; in fp32 it is a wash, so follow bf16.
    return Accelerator(device, precision, channels_last=precision == "bf16")


def set_threads(num_threads: int | None) -> int:
    n = max(1, int(num_threads or os.cpu_count() or 1))
    torch.set_num_threads(n)
    return n
