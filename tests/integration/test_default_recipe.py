"""The default recipe (LP-FT) through the real train entry: the probe first, fine-tuning kept only where the valid split
prefers it, the choice in the log, metrics.json and model.json; and, on real photos, never below the linear probe."""

import json

import pytest
import torch

from dogbreed import metrics, models
from dogbreed.data import write_few_shot
from dogbreed.local import local_train
from tests.conftest import DOGS10, LITE0_WEIGHTS, needs_shared


def _train(data, work, flags):
    log = work / "stdout.log"
    work.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code, _ = local_train(data, work, flags, stdout=handle)
    failure = work / "opt_ml/output/failure"
    assert code == 0, failure.read_text() if failure.exists() else log.read_text()[-3000:]
    summary = json.loads((work / "opt_ml/output/data/metrics.json").read_text())
    meta = json.loads((work / "opt_ml/model/model.json").read_text())
    return log.read_text(), summary, meta


def test_default_recipe_probes_then_fine_tunes_and_records_its_choice(sample_dir, tmp_path):
    # Weights of our own making stand in for pretrained ones (no download here): what matters is the recipe's course.
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    flags = ["--model", "resnet18", "--pretrained-weights", str(weights), "--input-size", "64", "--num-workers", "1",
             "--epochs", "1", "--profile", "false"]
    text, summary, meta = _train(sample_dir, tmp_path / "work", flags)
    recipe = summary["recipe"]
    assert recipe["name"] == "lp-ft" and recipe["kept"] in ("probe", "fine-tuned")
    assert recipe["backbone_lr"] == pytest.approx(recipe["head_lr"] * 0.1) and recipe["batchnorm_frozen"]
    assert recipe["probe"]["l2"] > 0 and 0 <= recipe["probe"]["test_acc"] <= 1
    # epoch 0 is the probe, then the fine-tuning epochs; the kept one is the best on the valid split
    assert metrics.parse(text, "epoch") == [0, 1]
    assert metrics.parse(text, "valid_loss")[0] == pytest.approx(recipe["probe"]["valid_loss"], abs=1e-4)
    kept_epoch = summary["best_epoch"]
    assert (kept_epoch == 0) == (recipe["kept"] == "probe")
    assert ("no fine-tuning epoch beat the linear probe" in recipe["reason"]) == (kept_epoch == 0), recipe["reason"]
    assert meta["trained"]["recipe"]["kept"] == recipe["kept"]
    assert metrics.last(text, "test_acc") == pytest.approx(summary["test_acc"], abs=1e-4)


def test_without_weights_the_default_trains_every_layer_from_scratch(trained):
    summary = json.loads((trained["output"] / "metrics.json").read_text())
    assert summary["recipe"] == {"name": "single-stage", "train_layers": "all", "kept": "trained"}
    assert 0 not in metrics.parse(trained["stdout"], "epoch")


@pytest.mark.slow
@pytest.mark.shared
@needs_shared()
def test_five_shot_default_recipe_is_not_below_the_linear_probe(tmp_path):
    """5 train and 2 valid photos per breed from dogs10's train split, the full test split: fine-tuning must never
    leave the model below the probe it started from (it is kept only where validation prefers it)."""
    subset = write_few_shot(DOGS10, tmp_path / "5shot", shots=5, valid_shots=2, seed=0)
    flags = ["--model", "tf_efficientnet_lite0", "--pretrained-weights", str(LITE0_WEIGHTS), "--profile", "false"]
    text, summary, _ = _train(subset, tmp_path / "work", flags)
    assert summary["images"] == {"train": 50, "valid": 20, "test": 600}
    probe = summary["recipe"]["probe"]
    assert probe["test_acc"] > 0.5, probe  # the probe itself works: pretrained features, not chance (0.1)
    # counted in images: the probe's score comes from cached features, the model's from images, in the same precision
    test_images = summary["images"]["test"]
    assert round(summary["test_acc"] * test_images) >= round(probe["test_acc"] * test_images), summary["recipe"]
    assert summary["recipe"]["kept"] in ("probe", "fine-tuned") and "linear probe" in summary["recipe"]["reason"]
