"""Serving on GPU hosts, with CUDA mocked: the precision is training's rule, and each multi-model-server
worker holds its model on the GPU the server assigned it (``gpu_id`` in the worker's context)."""

from __future__ import annotations

import pytest
import torch

from dogbreed import env as envnames
from dogbreed import models
from dogbreed.serving import handler, server
from dogbreed.serving.handler_service import HandlerService
from dogbreed.serving.predictor import Predictor
from tests.unit.test_precision_choice import GPUS, fake_gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    prep = models.default_preprocessing("resnet18", 64)
    models.save_artifacts(directory, models.build("resnet18", 3), "resnet18", ["akita", "beagle", "corgi"], prep)
    return directory


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
    predictor = service._service._model
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


def test_the_server_bounds_mms_gpu_ids_by_the_gpus_torch_sees(monkeypatch):
    fake_gpu(monkeypatch, "A10G", count=4)
    assert "number_of_gpu=4" in server.mms_properties("127.0.0.1", 8080, 4, 1 << 20).splitlines()
    monkeypatch.delenv(envnames.SAGEMAKER_MODEL_SERVER_WORKERS, raising=False)
    assert server.default_workers() == 4  # one worker per GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "number_of_gpu=0" in server.mms_properties("127.0.0.1", 8080, 1, 1 << 20).splitlines()
