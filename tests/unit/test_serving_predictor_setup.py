"""The serving model's set-up: no CPU probe where its answer cannot change what is served, and a layout
measured before is kept with its precision."""

from __future__ import annotations

import pytest
import torch

from dogbreed import accel, models
from dogbreed.serving.predictor import Predictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("resnet18") / "model"
    prep = models.default_preprocessing("resnet18")
    models.save_artifacts(directory, models.build("resnet18", 3).eval(), "resnet18", ["a", "b", "c"], prep)
    return directory


def _no_probe(*args, **kwargs):
    raise AssertionError("the CPU probe ran")


def test_without_native_bf16_the_frozen_fp32_graph_is_served_without_a_probe(model_dir, monkeypatch):
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(accel, "probe_cpu", _no_probe)
    predictor = Predictor(model_dir, threads=1)
    assert (predictor.acc.precision, predictor.acc.channels_last, predictor.graph) == ("fp32", False, "frozen")


def test_an_eager_model_is_still_measured(model_dir, monkeypatch):
    """Eager fp32 is where the layout matters (channels_last is faster there): the probe decides."""
    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(accel, "probe_cpu", lambda *args, **kwargs: ("fp32", True, {"fp32": 2.0, "fp32+channels_last": 1.0}))
    predictor = Predictor(model_dir, threads=1, graph="eager")
    assert (predictor.acc.precision, predictor.acc.channels_last, predictor.graph) == ("fp32", True, "eager")


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_layout_measured_before_is_the_layout_served(model_dir, channels_last):
    predictor = Predictor(model_dir, precision="fp32", threads=1, graph="eager", channels_last=channels_last)
    assert predictor.acc.channels_last is channels_last
    parameter = next(predictor.model.parameters())
    assert parameter.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_a_workers_model_takes_the_settings_snapshot(model_dir, monkeypatch, tmp_path):
    """A multi-model-server worker reads its settings once, in model_fn, and its model follows them: the graph,
    the threads, and with an engine, the engine's wait bound."""
    from dogbreed import env as envnames
    from dogbreed.serving import handler

    monkeypatch.setattr(accel, "cpu_supports_bf16", lambda: False)
    monkeypatch.setattr(accel, "probe_cpu", lambda *args, **kwargs: ("fp32", False, {"fp32": 1.0}))
    monkeypatch.delenv(envnames.DOGBREED_ENGINE_SOCKET, raising=False)
    monkeypatch.setenv(envnames.DOGBREED_SERVE_GRAPH, "eager")
    monkeypatch.setenv(envnames.DOGBREED_SERVE_THREADS, "1")
    threads = torch.get_num_threads()
    try:
        local = handler.model_fn(str(model_dir))
        assert local.graph == "eager" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setenv(envnames.DOGBREED_ENGINE_SOCKET, str(tmp_path / "engine.sock"))
    monkeypatch.setenv(envnames.DOGBREED_ENGINE_WAIT_S, "7")
    remote = handler.model_fn(str(model_dir))
    assert remote.client.wait_s == 7 and remote.socket_path == str(tmp_path / "engine.sock")
    monkeypatch.setenv(envnames.DOGBREED_SERVE_GRAPH, "jit")  # a worker refuses what the launcher would have
    with pytest.raises(ValueError, match=envnames.DOGBREED_SERVE_GRAPH):
        handler.model_fn(str(model_dir))
