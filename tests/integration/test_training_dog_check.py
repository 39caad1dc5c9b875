"""Training sets the not-a-dog check from data (dogbreed.training.notdog): the pretrained file's ImageNet head kept
beside the artifacts where there is one, the breed energy where not, and a threshold flagging at most 2 % of the
valid split, which serving then applies."""

from __future__ import annotations

import json

import pytest
import torch

from dogbreed import dogness, models
from dogbreed.local import local_train
from dogbreed.serving.predictor import Predictor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _valid_scores(model_dir, sample_dir) -> list[float]:
    from PIL import Image

    predictor = Predictor(model_dir, precision="fp32", graph="eager", threads=1)
    paths = sorted((sample_dir / "valid").rglob("*.jpg"))
    return [predictor.answer([Image.open(p)], 1)["dog"][0] for p in paths]


def _flagged(verdicts, threshold) -> float:
    """The share served under the threshold, past a margin: the photo the threshold sits on, scored again in
    another process, may land a rounding error either side of it."""
    return sum(v["score"] < threshold - 1e-3 for v in verdicts) / len(verdicts)


def test_without_an_imagenet_head_training_sets_the_energy_threshold(trained, sample_dir):
    meta = json.loads((trained["model_dir"] / "model.json").read_text())
    dog = meta["dog"]
    assert dog["method"] == dogness.ENERGY_METHOD and not (trained["model_dir"] / dogness.HEAD_FILE).exists()
    assert dog["valid_flagged"] <= dogness.DOG_RATE and dog["fitted_on"] == "valid"
    verdicts = _valid_scores(trained["model_dir"], sample_dir)
    assert len(verdicts) == dog["valid_images"]
    assert _flagged(verdicts, dog["threshold"]) <= dogness.DOG_RATE


def test_with_a_pretrained_imagenet_head_training_keeps_it_for_the_served_dog_score(sample_dir, tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    state = models.build("resnet18", 1000).state_dict()
    torch.save(state, weights)
    work = tmp_path / "work"
    work.mkdir()
    flags = ["--model", "resnet18", "--pretrained-weights", str(weights), "--input-size", "64", "--num-workers", "1",
             "--train-layers", "head", "--epochs", "1", "--profile", "false", "--precision", "fp32"]
    with open(work / "stdout.log", "w") as handle:
        code, _ = local_train(sample_dir, work, flags, stdout=handle)
    assert code == 0, (work / "stdout.log").read_text()[-3000:]
    model_dir = work / "opt_ml/model"
    head = torch.load(model_dir / dogness.HEAD_FILE, weights_only=True)
    assert torch.equal(head["weight"], state["fc.weight"]) and torch.equal(head["bias"], state["fc.bias"])
    dog = json.loads((model_dir / "model.json").read_text())["dog"]
    assert dog["method"] == dogness.IMAGENET_METHOD and dog["valid_flagged"] <= dogness.DOG_RATE
    summary = json.loads((work / "opt_ml/output/data/metrics.json").read_text())
    assert summary["dog"] == dog
    verdicts = _valid_scores(model_dir, sample_dir)
    assert {v["threshold"] for v in verdicts} == {round(dog["threshold"], 4)}
    assert _flagged(verdicts, dog["threshold"]) <= dogness.DOG_RATE
