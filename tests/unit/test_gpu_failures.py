"""GPUs the job pays for (issue 21 section 6): CUDA that cannot start fails fast with its reason; a CUDA out-of-memory
error names a batch size that fits. CUDA is mocked: these run on CPU machines."""

from __future__ import annotations

import pytest
import torch

from dogbreed import accel, errors
from dogbreed.training import entry as train


def _broken_cuda(monkeypatch, reason="Found no NVIDIA driver on your system."):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)

    def init():
        raise RuntimeError(reason + "\nPlease check that you have an NVIDIA GPU and installed a driver")

    monkeypatch.setattr(torch.cuda, "init", init)


def test_gpus_expected_and_cuda_broken_is_an_error_with_the_drivers_reason(monkeypatch):
    _broken_cuda(monkeypatch)
    with pytest.raises(errors.GpuError) as raised:
        accel.cuda_for_training(4)
    assert str(raised.value) == ("this instance has 4 GPU(s) (SM_NUM_GPUS) but CUDA cannot start: RuntimeError: "
                                 "Found no NVIDIA driver on your system.")
    assert accel.cuda_for_training(0) is False  # no GPU expected: the CPU, as before


def test_a_cpu_only_torch_on_a_gpu_instance_is_named(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(errors.GpuError, match="CPU-only build"):
        accel.cuda_for_training(1)


def test_working_cuda_trains_on_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert accel.cuda_for_training(1) is True


def test_the_training_program_fails_fast_with_the_reason_in_the_failure_file(tmp_path, monkeypatch):
    _broken_cuda(monkeypatch, "CUDA driver version is insufficient for CUDA runtime version")
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "opt_ml"))
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    for name in ("SM_MODEL_DIR", "SM_OUTPUT_DIR", "SM_OUTPUT_DATA_DIR", "SM_HOSTS", "SM_CURRENT_HOST", "RANK"):
        monkeypatch.delenv(name, raising=False)
    code, reason = train.run(["--pretrained-weights", "none", "--data-dir", str(tmp_path / "no-data")])
    assert code == 1
    assert "CUDA cannot start: RuntimeError: CUDA driver version is insufficient" in reason
    assert (tmp_path / "opt_ml/output/failure").read_text().strip() == reason  # before any data is looked for


@pytest.mark.parametrize("batch,smaller", [(512, 256), (96, 32), (32, 16), (3, 1), (2, 1)])
def test_a_batch_that_fits_is_half_down_to_a_power_of_two(batch, smaller):
    assert errors.batch_that_fits(batch) == smaller


def test_cuda_out_of_memory_is_described_with_a_batch_size_that_fits():
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                      "14.58 GiB of which 1.2 GiB is free.")
    assert errors.describe(oom, batch_size=512) == ("CUDA out of memory at --batch-size 512 (images per batch and GPU): "
                                                    "try --batch-size 256, or an instance type with more GPU memory")
    legacy = RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity)")
    assert "try --batch-size 16" in errors.describe(legacy, batch_size=48)
    assert errors.describe(oom).startswith("CUDA out of memory: lower --batch-size")
    assert "does not fit this GPU even so" in errors.describe(oom, batch_size=1)
    assert errors.describe(RuntimeError("shape mismatch")) == "RuntimeError: shape mismatch"  # other errors unchanged


def test_an_out_of_memory_error_inside_training_becomes_a_gpu_error_naming_the_batch():
    with pytest.raises(errors.GpuError, match="try --batch-size 64") as raised:
        with errors.naming_a_batch_that_fits(128):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
    assert isinstance(raised.value.__cause__, torch.cuda.OutOfMemoryError)
    assert errors.describe(raised.value).startswith("CUDA out of memory at --batch-size 128")
    with pytest.raises(ValueError):  # anything else passes through untouched
        with errors.naming_a_batch_that_fits(128):
            raise ValueError("x")
