"""Explanations (dogbreed.explain): Grad-CAM of the top breed over the photo, a PNG; the predictor's eager twin."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from dogbreed import explain, models
from dogbreed.serving.predictor import Predictor


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain") / "model"
    torch.manual_seed(0)
    prep = models.default_preprocessing("resnet18", 96)
    models.save_artifacts(root, models.build("resnet18", 3).eval(), "resnet18", ["a", "b", "c"], prep)
    return root


def _png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_the_overlay_keeps_the_photo_where_there_is_no_heat_and_colours_it_where_there_is():
    photo = np.full((8, 8, 3), 128, np.uint8)
    heat = np.zeros((8, 8))
    heat[:4] = 1.0
    image = np.asarray(explain.overlay(photo, heat))
    assert (image[4:] == 128).all()
    assert (np.abs(image[:4].astype(int) - 128).max(axis=2) > 20).all()


def test_a_frozen_graph_predictor_explains_with_its_eager_twin(model_dir):
    predictor = Predictor(model_dir, precision="fp32", graph="frozen", threads=1)
    assert predictor.graph == "frozen"
    images = [Image.new("RGB", (140, 100), (200, 30 * i, 10)) for i in range(2)]
    answer = predictor.answer(images, 2, explain=True)
    top = [rows[0] for rows in answer["predictions"]]
    assert [(e["breed"], e["index"]) for e in answer["explanations"]] == [(t["breed"], t["index"]) for t in top]
    for explanation in answer["explanations"]:
        image = _png(explanation["heatmap_png"])
        assert image.format == "PNG" and image.size == (96, 96)


def test_the_heatmap_follows_the_class_it_explains(model_dir):
    explainer = explain.Explainer(model_dir)
    x = torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(0))
    heats = [explainer.heatmap(x, target) for target in range(3)]
    assert all(h.shape == (96, 96) and 0 <= h.min() and h.max() <= 1 for h in heats)
    assert not np.allclose(heats[0], heats[1])  # another breed, other evidence
