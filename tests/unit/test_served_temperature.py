"""Served probabilities use the temperature that training stored in model.json: softmax(logits / T)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dogbreed import models
from dogbreed.serving.predictor import Predictor


def _model_dir(root, temperature):
    torch.manual_seed(0)
    prep = models.default_preprocessing("resnet18")
    extra = None if temperature is None else {"temperature": temperature}
    models.save_artifacts(root, models.build("resnet18", 4).eval(), "resnet18", ["a", "b", "c", "d"], prep, extra=extra)
    return root


@pytest.mark.parametrize("temperature", [None, 0.5, 2.0])
def test_probabilities_are_the_softmax_of_the_logits_over_the_stored_temperature(tmp_path, temperature):
    predictor = Predictor(_model_dir(tmp_path / "model", temperature), precision="fp32", graph="eager", threads=1)
    images = [Image.new("RGB", (120, 90), (200, 40 * i, 10)) for i in range(3)]
    batch = predictor.tensor(images)
    logits = predictor.tensor_logits(batch)
    expected = torch.softmax(logits / (temperature or 1.0), dim=1)
    assert torch.allclose(predictor.tensor_probabilities(batch), expected, atol=1e-6)
    rows = predictor.top_k(images, 4)
    assert [row[0]["probability"] for row in rows] == pytest.approx(expected.max(dim=1).values.tolist(), abs=1e-5)
    if temperature == 2.0:  # a temperature above 1 softens: the top probability falls
        assert (expected.max(dim=1).values < torch.softmax(logits, dim=1).max(dim=1).values).all()
