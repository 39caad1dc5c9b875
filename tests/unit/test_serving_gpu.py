"""Serving on GPU hosts, with CUDA mocked: the precision is training's rule, each multi-model-server worker holds
its model on the GPU the server assigned it (``gpu_id`` in the worker's context), and the launcher counts the GPUs
without torch (the driver's folders or nvidia-smi, narrowed by CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import logging

import pytest
import torch

from dogbreed import env as envnames
from dogbreed import models
from dogbreed.serving import batcher, handler, hardware, server
from dogbreed.serving import precision_cache as cache
from dogbreed.serving.handler_service import HandlerService
from dogbreed.serving.predictor import Predictor
from dogbreed.serving.settings import ServingSettings
from tests.edge_server import tiny_model
from tests.unit.test_precision_choice import GPUS, fake_gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def moves(monkeypatch):
    """Where the modules were moved: ``Module.to`` records its arguments instead of allocating on a GPU that
    is not there."""
    calls = []

    def to(self, *args, **kwargs):
        calls.append((args, kwargs))
        return self

    monkeypatch.setattr(torch.nn.Module, "to", to)
    threads = torch.get_num_threads()
    yield calls
    torch.set_num_threads(threads)  # the predictor sets the worker's share of the cores


class FakeContext:
    """What multi-model-server hands a worker's handler service (mms.context.Context's system properties)."""

    def __init__(self, model_dir, gpu_id):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": gpu_id, "batch_size": 1,
                                  "server_name": "MMS", "server_version": "1.1.11"}
        self.request_processor = None


def test_each_worker_serves_on_the_gpu_mms_assigned(monkeypatch, model_dir, moves):
    state = fake_gpu(monkeypatch, "T4", count=2)
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "dogbreed.serving.handler")
    monkeypatch.delenv(envnames.DOGBREED_ENGINE_SOCKET, raising=False)
    monkeypatch.setattr(Predictor, "warm_up", lambda self, rounds=3: None)  # no forward pass without a GPU
    service = HandlerService()
    service.initialize(FakeContext(model_dir, gpu_id=1))  # the toolkit's path: initialize -> model_fn(dir, context)
    predictor = service._service._model.model  # the worker counts its model's answers (transformer.CountedModel)
    assert isinstance(predictor, Predictor)
    assert predictor.acc.device == torch.device("cuda", 1)
    assert state["set"] == [torch.device("cuda", 1)]
    devices = [args[0] for args, _ in moves if args]
    assert devices == [torch.device("cuda", 1)]  # the model went to its worker's GPU, not cuda:0
    assert predictor.acc.precision == "fp16" and predictor.graph == "eager"


def test_gpu_id_of_the_context():
    assert handler.gpu_id_of(None) is None
    assert handler.gpu_id_of(FakeContext("/m", None)) is None  # CPU hosts: multi-model-server sends no gpu
    assert handler.gpu_id_of(FakeContext("/m", 3)) == 3


@pytest.mark.parametrize("gpu", list(GPUS))
def test_serving_precision_is_trainings_rule(monkeypatch, model_dir, moves, gpu):
    name, (major, minor), expected = GPUS[gpu]
    fake_gpu(monkeypatch, gpu)
    predictor = Predictor(model_dir)
    assert predictor.acc.precision == expected
    assert predictor.acc.autocast_dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[expected]
    autocast = "fp16 autocast" if expected == "fp16" else "bf16 autocast"
    assert predictor.acc.reason.endswith(autocast) and f"{name} (sm_{major}{minor})" in predictor.acc.reason
    assert "GradScaler" not in predictor.acc.reason  # inference scales no loss
    assert predictor.graph == "eager"  # the frozen graph is for fp32 CPUs


@pytest.fixture
def driver(monkeypatch, tmp_path):
    """A host's NVIDIA driver as the launcher finds it, without torch: ``install(n)`` gives n GPU folders like
    /proc/driver/nvidia/gpus/0000:3b:00.0; ``smi(text)`` an nvidia-smi on PATH that prints ``text`` for -L (no
    /proc folder then). Neither: no driver, no nvidia-smi."""
    folders, bin_dir = tmp_path / "gpus", tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setattr(hardware, "PROC_GPUS", folders)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(envnames.SAGEMAKER_MODEL_SERVER_WORKERS, raising=False)
    monkeypatch.delenv(envnames.DOGBREED_SERVE_ENGINE, raising=False)
    hardware.installed_gpus.cache_clear()  # counted once per process: each test is a host of its own

    def install(count: int) -> None:
        for index in range(count):
            (folders / f"0000:{0x3b + index:02x}:00.0").mkdir(parents=True)

    def smi(listing: str) -> None:
        script = bin_dir / "nvidia-smi"
        calls = tmp_path / "smi-calls"  # one line per run (echo: a builtin, as printf; PATH is bin_dir)
        script.write_text(f"#!/bin/sh\necho \"$1\" >> {calls}\n[ \"$1\" = -L ] && printf '%s' '{listing}'\n")
        script.chmod(0o755)

    yield install, smi
    hardware.installed_gpus.cache_clear()


def _number_of_gpu() -> str:
    return [line for line in server.mms_properties("127.0.0.1", 8080, 4, 1 << 20).splitlines()
            if line.startswith("number_of_gpu=")][0]


def test_a_gpu_host_gets_the_engine_and_one_worker_per_gpu_without_it(driver, monkeypatch):
    install, _ = driver
    install(4)
    assert hardware.visible_gpus() == 4
    assert _number_of_gpu() == "number_of_gpu=4"
    assert server.engine_enabled()  # one engine per GPU in the engine process: the workers only decode
    monkeypatch.setenv(envnames.DOGBREED_SERVE_ENGINE, "off")
    assert not server.engine_enabled()
    assert server.default_workers() == 4  # each worker holds its model on its own GPU


def test_a_host_without_a_driver_gets_the_engine(driver):
    assert hardware.visible_gpus() == 0
    assert _number_of_gpu() == "number_of_gpu=0"
    assert server.engine_enabled()


@pytest.mark.parametrize("mask, expected", [("1,3", 2), ("", 0), ("-1", 0), ("0,7,1", 1), ("2,2", 1),
                                            ("GPU-8f6e0a3c-aaaa-bbbb-cccc-0123456789ab", 1), ("MIG-1234", 1)])
def test_cuda_visible_devices_narrows_the_gpus_as_cuda_reads_it(driver, monkeypatch, mask, expected):
    """multi-model-server hands out gpu_id below number_of_gpu: only the GPUs CUDA will show the worker."""
    install, _ = driver
    install(4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mask)
    assert hardware.visible_gpus() == expected
    assert _number_of_gpu() == f"number_of_gpu={expected}"


def test_without_proc_folders_nvidia_smi_counts_the_gpus_not_their_mig_instances(driver):
    _, smi = driver
    smi("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
        "  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)\n")
    assert hardware.visible_gpus() == 2
    assert server.default_workers() == 2


def test_the_engine_asks_torch_itself_where_the_launcher_saw_no_gpu(driver, monkeypatch, model_dir, moves):
    """A GPU the launcher's count missed (no /proc folders, no nvidia-smi): the engine's model still goes to it."""
    assert server.engine_enabled()
    fake_gpu(monkeypatch, "A10G")
    predictor = Predictor(model_dir)  # what the engine process builds (batcher._predictor)
    assert predictor.acc.device == torch.device("cuda", 0)


def test_a_start_asks_nvidia_smi_once(driver, tmp_path):
    """The launcher asks for the GPUs three times per start (engine, workers, number_of_gpu): one nvidia-smi."""
    _, smi = driver
    smi("GPU 0: Tesla T4 (UUID: GPU-aaaa)\n")
    server.engine_enabled(), server.default_workers(), _number_of_gpu()
    assert (tmp_path / "smi-calls").read_text().splitlines() == ["-L"]


def test_the_precision_cache_keeps_a_gpu_hosts_choice_apart_from_a_cpu_hosts(driver, monkeypatch, model_dir, moves,
                                                                               tmp_path):
    """A cache shared by a CPU host and a GPU host of the same CPU model: the CPU's measured fp32 is not the GPU's."""
    meta = models.read_meta(model_dir)
    path = tmp_path / "precision.json"
    cpu_key = cache.cache_key(torch.__version__, meta["arch"], int(meta["input_size"]), 2)
    cache.remember_setup(path, cpu_key, "fp32", True)  # what the CPU host measured
    fake_gpu(monkeypatch, "T4")
    predictor = batcher._predictor(model_dir, 2, path)  # what the engine builds (Engine.__init__)
    assert predictor.acc.device == torch.device("cuda", 0) and predictor.acc.precision == "fp16"  # training's rule
    assert cache.cached_setup(path, cpu_key) == ("fp32", True)  # the CPU host's entry stays its own


def test_a_gpu_torch_cannot_use_is_said_loudly_where_the_model_is_built(driver, monkeypatch, model_dir, moves, caplog):
    """Driver older than the image's CUDA: the launcher counted 2 GPUs (no engine, a worker per GPU), torch has no
    CUDA. The worker (and an engine) say so, and how to batch on the CPU instead."""
    install, _ = driver
    install(2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(Predictor, "warm_up", lambda self, rounds=3: None)
    monkeypatch.delenv(envnames.DOGBREED_ENGINE_SOCKET, raising=False)
    with caplog.at_level(logging.ERROR, logger="dogbreed.serve"):
        handler.model_fn(str(model_dir), FakeContext(model_dir, gpu_id=1))
        batcher._predictor(model_dir, 1, None)
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR and "no usable CUDA" in r.getMessage()]
    assert len(loud) == 2 and all(f"{envnames.DOGBREED_SERVE_ENGINE}=on" in r.getMessage() for r in loud)


@pytest.mark.parametrize("count", [1, 2, 8])
def test_the_native_front_runs_one_engine_per_gpu(monkeypatch, count):
    fake_gpu(monkeypatch, "A10G", count=count)
    assert batcher.engine_devices(False) == list(range(count))


def test_a_host_without_gpus_runs_one_cpu_engine(driver, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert batcher.engine_devices(False) == [None]


def test_a_gpu_host_whose_cuda_cannot_start_refuses_to_serve_on_the_cpu_unless_allowed(driver, monkeypatch, caplog):
    install, _ = driver
    install(4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(hardware.NoCuda, match="4 GPU\\(s\\) installed but CUDA cannot start") as refused:
        batcher.engine_devices(False)
    assert "InferenceAmiVersion" in str(refused.value) and envnames.DOGBREED_SERVE_CPU_FALLBACK in str(refused.value)
    allowed = ServingSettings.from_environ({envnames.DOGBREED_SERVE_CPU_FALLBACK: "true"}, cores=2, gpus=4)
    with caplog.at_level(logging.ERROR, logger="dogbreed.serve"):
        assert batcher.engine_devices(allowed.cpu_fallback) == [None]
    assert any("serving on the CPU" in r.getMessage() for r in caplog.records)


def test_the_mms_front_without_the_engine_checks_cuda_with_the_model(driver, monkeypatch, model_dir):
    """DOGBREED_SERVE_ENGINE=off: each worker would load its model on the CPU, unbatched; the start refuses instead."""
    install, _ = driver
    install(2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "2 GPU(s) installed but CUDA cannot start" in server.check_model(model_dir)
    assert server.check_model(model_dir, cpu_fallback=True) is None


def _engine_like(queued: int, running: int = 0, failures: int = 0):
    from types import SimpleNamespace

    return SimpleNamespace(queued_images=queued, running_images=running, health=SimpleNamespace(failures=failures))


def test_requests_go_to_the_engine_with_the_fewest_images_among_those_that_answer():
    from dogbreed.serving.engine import FAILED_BATCHES

    swamped, two_photos = _engine_like(queued=1000), _engine_like(queued=1, running=1)
    assert batcher.least_busy([swamped, two_photos]) is two_photos  # one request of 1,000 images weighs 1,000
    failing = _engine_like(queued=0, failures=FAILED_BATCHES)  # a sticky CUDA error: empty queue, every batch fails
    assert batcher.least_busy([failing, swamped, two_photos]) is two_photos
    assert batcher.least_busy([failing]) is failing  # nothing else: it still gets the request (and says why)
