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


def test_a_model_without_feature_maps_is_a_400_remembered_not_a_500_each_time(tmp_path):
    """A vision transformer's last stage gives tokens (N x T x C): Grad-CAM cannot draw them. The request gets a
    4xx that says so, and the explainer is not rebuilt (a model load) for every request that asks."""
    from dogbreed.serving.errors import BadRequest

    root = tmp_path / "vit"
    torch.manual_seed(0)
    prep = models.default_preprocessing("vit_tiny_patch16_224", 224)
    models.save_artifacts(root, models.build("vit_tiny_patch16_224", 2).eval(), "vit_tiny_patch16_224", ["a", "b"],
                          prep)
    predictor = Predictor(root, precision="fp32", graph="eager", threads=1)
    photo = Image.new("RGB", (240, 240), (90, 60, 30))
    assert predictor.answer([photo], 2)["predictions"][0][0]["breed"] in ("a", "b")  # without explain: served
    with pytest.raises(BadRequest, match="not available for this model"):
        predictor.answer([photo], 2, explain=True)
    remembered = predictor._explainer
    with pytest.raises(BadRequest, match="not available for this model"):
        predictor.answer([photo], 2, explain=True)
    assert predictor._explainer is remembered
