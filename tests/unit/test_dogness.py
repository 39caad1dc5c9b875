"""The "not a dog" score and threshold (dogbreed.dogness), and what the in-process predictor answers with them."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from dogbreed import dogness, models
from dogbreed.errors import ModelError
from dogbreed.serving.predictor import Predictor


def _logits_peaking_at(index: int, height: float = 12.0) -> torch.Tensor:
    logits = torch.zeros(1, dogness.IMAGENET_CLASSES)
    logits[0, index] = height
    return logits


@pytest.mark.parametrize("index, dog", [(151, True), (207, True), (268, True),  # Chihuahua, golden retriever, hairless
                                        (273, True),  # dingo: a dog (and a breed of dogs10), filed by ImageNet as wild
                                        (269, False), (272, False), (274, False),  # timber wolf, coyote, dhole
                                        (277, False), (281, False),  # red fox, tabby cat
                                        (150, False), (817, False)])  # sea lion, sports car
def test_the_imagenet_score_is_positive_for_dog_classes_only(index, dog):
    assert (float(dogness.imagenet_dog_score(_logits_peaking_at(index))[0]) > 0) == dog


def test_the_imagenet_score_is_the_log_odds_of_the_dog_classes():
    logits = torch.randn(4, dogness.IMAGENET_CLASSES, generator=torch.Generator().manual_seed(0))
    p_dog = torch.softmax(logits, 1)[:, list(range(151, 269)) + [273]].sum(1)
    assert torch.allclose(dogness.imagenet_dog_score(logits), torch.log(p_dog / (1 - p_dog)), atol=1e-5)


def test_the_threshold_flags_at_most_the_stated_rate_of_the_photos_it_was_set_on():
    scores = torch.randn(400, generator=torch.Generator().manual_seed(1))
    threshold = dogness.threshold_for(scores, 0.02)
    assert float((scores < threshold).float().mean()) <= 0.02
    assert float((scores < threshold + 0.05).float().mean()) > 0.015  # and not far below it: a quantile, not a floor
    with pytest.raises(ValueError):
        dogness.threshold_for([], 0.02)


def test_the_served_head_adds_one_column_and_keeps_the_breed_logits():
    torch.manual_seed(0)
    model = models.build("resnet18", 3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        imagenet = {"weight": torch.randn(1000, 512), "bias": torch.zeros(1000)}
        served = dogness.attach(model, imagenet)
        logits, scores = dogness.split(served(x))
    assert torch.equal(logits, before)
    assert scores.shape == (2,) and not torch.allclose(scores, dogness.energy_score(logits))


def test_without_an_imagenet_head_the_score_is_the_breed_energy():
    torch.manual_seed(0)
    served = dogness.attach(models.build("resnet18", 3).eval(), None)
    with torch.no_grad():
        logits, scores = dogness.split(served(torch.randn(2, 3, 64, 64)))
    assert torch.allclose(scores, torch.logsumexp(logits, 1))


def test_the_imagenet_head_is_taken_only_where_it_fits():
    model = models.build("resnet18", 3)
    fits = {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    assert dogness.imagenet_head_of(fits, model)["weight"].shape == (1000, 512)
    assert dogness.imagenet_head_of({"fc.weight": torch.zeros(1000, 256), "fc.bias": torch.zeros(1000)}, model) is None
    assert dogness.imagenet_head_of({}, model) is None


def test_verdicts_compare_with_the_threshold_and_old_models_call_everything_a_dog():
    check = dogness.DogCheck.from_meta({"dog": {"method": "imagenet-dog-classes", "threshold": 1.5}})
    assert [v["is_dog"] for v in check.verdicts([2.0, 1.5, -3.0])] == [True, True, False]
    assert check.verdicts([2.0])[0] == {"is_dog": True, "score": 2.0, "threshold": 1.5}
    assert dogness.DogCheck.from_meta({}).verdicts([-99.0]) == [{"is_dog": True, "score": -99.0, "threshold": None}]


def _model_dir(root, dog=None, head=True):
    torch.manual_seed(0)
    prep = models.default_preprocessing("resnet18")
    models.save_artifacts(root, models.build("resnet18", 4).eval(), "resnet18", ["a", "b", "c", "d"], prep,
                          extra={"dog": dog} if dog else None)
    if head:
        torch.save({"weight": torch.randn(1000, 512) * 0.05, "bias": torch.zeros(1000)}, root / dogness.HEAD_FILE)
    return root


def test_the_predictor_answers_the_dog_verdicts_with_unchanged_probabilities(tmp_path):
    dog = {"method": dogness.IMAGENET_METHOD, "threshold": 0.0}
    predictor = Predictor(_model_dir(tmp_path / "m", dog), precision="fp32", graph="eager", threads=1)
    plain, _, _ = models.load_artifacts(tmp_path / "m")
    images = [Image.new("RGB", (120, 90), (200, 40 * i, 10)) for i in range(3)]
    batch = predictor.tensor(images)
    answer = predictor.answer(images, 2)
    with torch.no_grad():
        expected = torch.softmax(plain(batch), 1)
    got = [[row["probability"] for row in rows] for rows in answer["predictions"]]
    assert got == [pytest.approx(sorted(p.tolist(), reverse=True)[:2], abs=1e-5) for p in expected]
    scores = dogness.split(predictor.model(batch))[1]
    assert [v["is_dog"] for v in answer["dog"]] == [bool(s >= 0) for s in scores]
    assert "explanations" not in answer


def test_a_dog_check_that_needs_the_missing_head_is_refused(tmp_path):
    model_dir = _model_dir(tmp_path / "m", {"method": dogness.IMAGENET_METHOD, "threshold": 0.0}, head=False)
    with pytest.raises(ModelError, match="imagenet_head.pth"):
        dogness.load_served(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["dog"]["method"] == dogness.IMAGENET_METHOD
