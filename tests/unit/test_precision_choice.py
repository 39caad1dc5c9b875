"""The precision ``auto`` picks on the GPUs SageMaker rents, with CUDA's answers mocked (no GPU here).

What decides is native bf16: ``torch.cuda.is_bf16_supported(including_emulation=False)``. torch's default
(``including_emulation=True``) answers True on a T4 or V100 as well, because they can hold bf16 tensors; the
mocks below answer that way too, so a choice that goes back to the default call fails these tests.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from dogbreed import accel
from dogbreed.errors import ConfigError

# (name torch reports, compute capability, what auto picks): the instance families' GPUs
GPUS = {
    "T4": ("Tesla T4", (7, 5), "fp16"),  # ml.g4dn, the default training instance
    "V100": ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),  # ml.p3
    "A10G": ("NVIDIA A10G", (8, 6), "bf16"),  # ml.g5
    "A100": ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),  # ml.p4d
    "H100": ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),  # ml.p5
}


def fake_gpu(monkeypatch, gpu: str, count: int = 1, bf16_answer: str = "emulating") -> dict:
    """Make torch.cuda describe ``count`` GPUs of kind ``gpu``; returns what was asked of it.

    ``bf16_answer``: ``emulating`` replaces is_bf16_supported by a stand-in that answers as torch does on that
    GPU (True with emulation on any of them, natively only from sm_80); ``torch`` keeps torch's own function and
    mocks what it reads (device properties, the CUDA version, the bf16 tensor check a T4 passes)."""
    name, (major, minor), _ = GPUS[gpu]
    state = {"current": 0, "set": [], "capability_of": []}

    def set_device(device):
        state["current"] = torch.device(device).index or 0
        state["set"].append(torch.device(device))

    def capability(device=None):
        state["capability_of"].append(device)
        return (major, minor)

    properties = SimpleNamespace(name=name, major=major, minor=minor, total_memory=16 << 30, multi_processor_count=40)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored afterwards
    if bf16_answer == "emulating":
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8 or including_emulation)
    else:
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    return state


@pytest.fixture(params=["emulating", "torch"])
def bf16_answer(request):
    if request.param == "torch" and not hasattr(torch.cuda, "_check_bf16_tensor_supported"):
        pytest.skip("this torch has no _check_bf16_tensor_supported to stand in for a GPU's emulation")
    return request.param


@pytest.mark.parametrize("gpu", list(GPUS))
def test_auto_takes_bf16_only_where_the_gpu_has_it_natively(monkeypatch, gpu, bf16_answer):
    name, (major, minor), expected = GPUS[gpu]
    fake_gpu(monkeypatch, gpu, bf16_answer=bf16_answer)
    assert torch.cuda.is_bf16_supported()  # every one of them answers yes when emulation counts
    acc = accel.pick("auto")
    assert acc.precision == expected
    assert acc.autocast_dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[expected]
    assert acc.uses_grad_scaler == (expected == "fp16")
    assert acc.grad_scaler().is_enabled() == (expected == "fp16")
    assert acc.channels_last and acc.device == torch.device("cuda", 0)
    if expected == "fp16":
        assert acc.reason == f"{name} (sm_{major}{minor}) has no native bf16: fp16 AMP + GradScaler"
    else:
        assert acc.reason == f"{name} (sm_{major}{minor}) has native bf16: bf16 autocast"


@pytest.mark.parametrize("gpu", list(GPUS))
def test_the_choice_is_written_down_as_json(monkeypatch, gpu):
    name, (major, minor), expected = GPUS[gpu]
    fake_gpu(monkeypatch, gpu)
    choice = json.loads(json.dumps(accel.pick("auto").as_dict()))
    assert choice == {"device": "cuda:0", "gpu_name": name, "capability": f"{major}.{minor}", "precision": expected,
                      "channels_last": True, "grad_scaler": expected == "fp16", "reason": choice["reason"]}
    assert name in choice["reason"]


def test_inference_on_a_t4_is_fp16_autocast_without_a_scaler(monkeypatch):
    fake_gpu(monkeypatch, "T4")
    acc = accel.pick("auto", training=False)
    assert acc.precision == "fp16"
    assert acc.reason == "Tesla T4 (sm_75) has no native bf16: fp16 autocast"


@pytest.mark.parametrize("gpu", ["T4", "V100"])
def test_bf16_asked_for_without_native_bf16_is_refused(monkeypatch, gpu):
    fake_gpu(monkeypatch, gpu)
    with pytest.raises(ConfigError, match=rf"bf16 needs a GPU with native bf16.*{GPUS[gpu][0]}.*fp16"):
        accel.pick("bf16")


def test_explicit_precisions_on_a_gpu_that_runs_them(monkeypatch):
    fake_gpu(monkeypatch, "A100")
    assert accel.pick("bf16").reason == "bf16 asked for on NVIDIA A100-SXM4-40GB (sm_80)"
    fp16 = accel.pick("fp16")
    assert (fp16.precision, fp16.uses_grad_scaler) == ("fp16", True)
    assert fp16.reason == "fp16 asked for on NVIDIA A100-SXM4-40GB (sm_80): fp16 AMP + GradScaler"
    fp32 = accel.pick("fp32")
    assert (fp32.autocast_dtype, fp32.uses_grad_scaler) == (None, False)


def test_the_process_gpu_is_the_one_described(monkeypatch):
    state = fake_gpu(monkeypatch, "V100", count=4)
    acc = accel.pick("auto", local_rank=3)
    assert acc.device == torch.device("cuda", 3) and state["set"] == [torch.device("cuda", 3)]
    assert state["current"] == 3 and state["capability_of"] == [torch.device("cuda", 3)]
    with pytest.raises(ConfigError, match="cuda:4 asked for, but this process sees 4 GPU"):
        accel.pick("auto", local_rank=4)


def test_the_choice_is_logged_once_with_its_reason(monkeypatch, caplog):
    fake_gpu(monkeypatch, "T4")
    with caplog.at_level(logging.INFO, logger="dogbreed.accel"):
        accel.pick("auto")
    lines = [r.getMessage() for r in caplog.records if r.name == "dogbreed.accel"]
    assert lines == ["device=cuda:0 precision=fp16 channels_last=1: Tesla T4 (sm_75) has no native bf16: fp16 AMP + GradScaler"]


def test_cpu_choice_has_a_reason_and_no_gpu():
    choice = accel.pick("fp32", use_cuda=False).as_dict()
    assert choice == {"device": "cpu", "gpu_name": None, "capability": None, "precision": "fp32", "channels_last": True,
                      "grad_scaler": False, "reason": "fp32 asked for on the CPU"}
