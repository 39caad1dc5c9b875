"""The default recipe (LP-FT) through the real train entry: the probe first, fine-tuning kept only where the valid split
prefers it, the choice in the log, metrics.json and model.json; and, on real photos, never below the linear probe."""

import dataclasses
import json

import pytest
import torch

from dogbreed import accel, data, metrics, models
from dogbreed.data import write_few_shot
from dogbreed.local import local_train
from dogbreed.training import loop as train  # evaluate
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


# "wrecking": a head rate of 5 drives fine-tuning far off, so the model kept is not the last one trained: the kept-model
# line and model.pth must then come from the probe (or a mix), not from whatever the last epoch left behind.
@pytest.mark.parametrize("course", ["default", "wrecking"])
def test_default_recipe_probes_then_fine_tunes_and_records_its_choice(sample_dir, tmp_path, course):
    # Weights of our own making stand in for pretrained ones (no download here): what matters is the recipe's course.
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(models.build("resnet18", 1000).state_dict(), weights)
    flags = ["--model", "resnet18", "--pretrained-weights", str(weights), "--input-size", "64", "--num-workers", "1",
             "--epochs", "1", "--profile", "false"] + (["--lr", "5"] if course == "wrecking" else [])
    text, summary, meta = _train(sample_dir, tmp_path / "work", flags)
    recipe = summary["recipe"]
    assert recipe["name"] == "lp-ft" and recipe["kept"] in ("probe", "fine-tuned", "mixed")
    assert recipe["backbone_lr"] == pytest.approx(recipe["head_lr"] * 0.1) and recipe["batchnorm_frozen"]
    assert recipe["probe"]["l2"] > 0 and 0 <= recipe["probe"]["test_acc"] <= 1
    # epoch 0 is the probe, then the fine-tuning epochs, then the probe/fine-tuned weight mixes on the valid split
    assert metrics.parse(text, "epoch") == [0, 1]
    assert metrics.parse(text, "valid_loss")[0] == pytest.approx(recipe["probe"]["valid_loss"], abs=1e-4)
    assert [m["alpha"] for m in recipe["mixes"]] == [0.25, 0.5, 0.75]
    kept_epoch, alpha = summary["best_epoch"], recipe["mix_alpha"]
    assert recipe["kept"] == ("mixed" if alpha is not None else "fine-tuned" if kept_epoch else "probe"), recipe
    assert ("no fine-tuned epoch or mix beat the linear probe" in recipe["reason"]) == (recipe["kept"] == "probe")
    assert meta["trained"]["recipe"]["kept"] == recipe["kept"]
    if course == "wrecking":
        assert recipe["kept"] != "fine-tuned", recipe
    # the kept model's valid scores are the last printed (SageMaker's tuner reads a metric's last value)
    assert text.count("kept model: valid_loss=") == 1
    kept = {"probe": recipe["probe"], "fine-tuned": next((h for h in summary["history"] if h["epoch"] == kept_epoch), None),
            "mixed": next((m for m in recipe["mixes"] if m["alpha"] == alpha), None)}[recipe["kept"]]
    assert metrics.last(text, "valid_loss") == pytest.approx(kept["valid_loss"], abs=1e-4)
    assert metrics.last(text, "test_acc") == pytest.approx(summary["test_acc"], abs=1e-4)
    # model.pth holds the kept weights: scored again on the valid split, it gives the kept model's numbers (a kept
    # probe ships refitted on train + valid: its own valid scores, recorded beside the train-only probe's)
    if recipe["kept"] == "probe" and recipe["probe"].get("shipped"):
        kept = {"valid_loss": recipe["probe"]["refit_valid_loss"], "valid_acc": recipe["probe"]["refit_valid_acc"]}
        assert "refitted on train + valid" in recipe["reason"] and "out-of-fold" in summary["calibration"]["temperature_source"]
    valid_loss, valid_acc = _score_saved_model(tmp_path / "work/opt_ml/model", sample_dir / "valid", summary)
    assert valid_loss == pytest.approx(kept["valid_loss"], abs=2e-3) and valid_acc == pytest.approx(kept["valid_acc"])


def _score_saved_model(model_dir, valid_dir, summary) -> tuple[float, float]:
    """(loss, accuracy) of model.pth on the valid split, at the precision and memory layout training chose."""
    model, _, prep = models.load_artifacts(model_dir)
    chosen = summary["precision"]
    acc = dataclasses.replace(accel.pick(chosen["precision"], use_cuda=False), channels_last=chosen["channels_last"])
    samples = data.load_splits({"train": valid_dir.parent / "train", "valid": valid_dir}).samples["valid"]
    loader = data.make_loader(data.ImageSamples(samples, prep.eval_transform(False), prep.resize), 32,
                              data.ShardSampler(len(samples)), 0)
    loss, accuracy, _, _ = train.evaluate(acc.prepare_model(model), torch.nn.CrossEntropyLoss(), loader, acc,
                                          len(summary["classes"]), normalize=prep.normalize_batch)
    return loss, accuracy


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
    assert summary["recipe"]["kept"] in ("probe", "fine-tuned", "mixed") and "probe" in summary["recipe"]["reason"]
