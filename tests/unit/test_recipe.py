"""The default recipe's parts: the L-BFGS linear probe, the backbone's learning rate, frozen batch norm, the choice."""

from pathlib import Path

import pytest
import torch
from torch import nn

from dogbreed import data, models, probe, wise
from dogbreed.distributed import DistInfo
from dogbreed.env import SageMakerEnv
from dogbreed.sample import make_sample
from dogbreed.training import config as configuration
from dogbreed.training.args import parse_args
from dogbreed.training.recipe import REFIT, acc_to_beat, improved, noise, probe_summary, ship_refit_probe
from dogbreed.training.resume import FitState
from dogbreed.training.setup import make_optimizer


def blobs(n_per_class: int, classes: int = 4, dim: int = 16, seed: int = 0, offset: float = 5.0):
    """Gaussian blobs with one informative feature per class, on a large offset and uneven scales (what raw pooled
    features look like: the probe must standardize to converge, and fold the scaling back)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randn(len(labels), dim, generator=g)
    x[torch.arange(len(labels)), labels] += 3.0
    scale = torch.linspace(0.1, 10, dim)
    return x * scale + offset, labels


def test_probe_separates_blobs_and_its_weights_apply_to_the_raw_features():
    with torch.inference_mode():  # as the feature pass makes them
        train_set = blobs(50)
    valid_set = blobs(20, seed=1)
    fitted = probe.fit(train_set, valid_set, 4)
    assert fitted.l2 in probe.L2_GRID
    assert fitted.valid_acc >= 0.9
    loss, acc = probe.score(fitted.weight, fitted.bias, *valid_set)
    assert (loss, acc) == pytest.approx((fitted.valid_loss, fitted.valid_acc))
    # the same numbers from an nn.Linear holding the weights: what the model's head computes
    head = nn.Linear(16, 4)
    with torch.no_grad():
        head.weight.copy_(fitted.weight)
        head.bias.copy_(fitted.bias)
    assert torch.allclose(head(valid_set[0]), fitted.logits(valid_set[0]), atol=1e-4)


def test_stronger_l2_gives_smaller_weights():
    x, y = blobs(30)
    weak, _ = probe.fit_logistic(x, y, 4, l2=1e-4)
    strong, _ = probe.fit_logistic(x, y, 4, l2=1e-1)
    assert strong.norm() < weak.norm() / 2


def test_folds_hold_every_class_and_are_as_many_as_the_rarest_class_allows():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 3)
    fold = probe.stratified_folds(labels, folds=5, seed=1)
    assert int(fold.max()) + 1 == 3  # class 2 has 3 images: 3 folds
    for k in range(3):
        assert set(labels[fold == k].tolist()) == {0, 1, 2}
    assert torch.equal(fold, probe.stratified_folds(labels, folds=5, seed=1))
    assert not torch.equal(fold, probe.stratified_folds(labels, folds=5, seed=2))
    assert probe.stratified_folds(torch.tensor([0, 0, 1]), folds=5) is None  # one image of class 1: nothing to hold out


@pytest.mark.parametrize("cv,expected", [
    ({1e-3: (0.50, 0.05), 1e-2: (0.53, 0.05), 1e-1: (0.70, 0.05)}, 1e-2),  # within one SE: the stronger
    ({1e-3: (0.50, 0.01), 1e-2: (0.53, 0.01), 1e-1: (0.70, 0.01)}, 1e-3),  # the weaker wins by more than noise
    ({1e-3: (0.60, 0.05), 1e-2: (0.40, 0.05), 1e-1: (0.44, 0.05)}, 1e-1),
])
def test_l2_leans_to_the_stronger_strength_within_one_standard_error(cv, expected):
    assert probe.choose_l2(cv) == expected


def test_probe_l2_is_cross_validated_on_train_and_valid_and_fitted_on_train():
    train_set, valid_set = blobs(5, dim=64), blobs(2, dim=64, seed=1)  # 5 shots, 2 valid a class; 60 noise features
    fitted = probe.fit(train_set, valid_set, 4)
    choice = fitted.choice
    assert choice["folds"] == 5 and "cross-validation" in choice["by"] and fitted.valid_images == 8
    assert fitted.l2 == probe.choose_l2({float(k): (loss, choice["cv_se"][k]) for k, loss in choice["cv_loss"].items()})
    again = probe.fit_logistic(*train_set, 4, fitted.l2)  # fitted on train alone: its valid scores stay honest
    assert torch.allclose(again[0], fitted.weight, atol=1e-3)
    both = probe.fit_logistic(torch.cat([train_set[0], valid_set[0]]), torch.cat([train_set[1], valid_set[1]]), 4,
                              fitted.l2)  # the refit: the same strength on train + valid
    assert torch.allclose(both[0], fitted.refit[0], atol=1e-3) and not torch.allclose(both[0], fitted.weight, atol=1e-2)
    assert 0.25 <= fitted.refit_temperature <= 20


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = nn.Linear(3, 3), nn.Linear(3, 2)


@pytest.mark.parametrize("best_epoch,alpha,shipped", [(0, None, True), (2, None, False), (None, 0.5, False)])
def test_the_refitted_probe_ships_only_where_the_probe_is_kept(best_epoch, alpha, shipped):
    from types import SimpleNamespace

    model = _Net()
    refit = {"head": (torch.ones(2, 3), torch.full((2,), 7.0)), "temperature": 1.5}
    run = SimpleNamespace(model=model, probe={"l2": 0.1, "l2_choice": {}, REFIT: refit})
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    state = FitState(best_epoch=best_epoch, best_alpha=alpha, best_model=kept)
    ship_refit_probe(run, state)
    assert torch.equal(state.best_model["fc.bias"], torch.full((2,), 7.0)) is shipped
    assert torch.equal(state.best_model["body.weight"], model.body.weight)  # only the head changes
    assert (run.probe.get("temperature", {}).get("value") == 1.5) is shipped
    assert REFIT not in probe_summary(run.probe)


def test_probe_without_a_cross_validation_picks_on_the_valid_split():
    (x, y), valid_set = blobs(5), blobs(2, seed=1)
    keep = (y != 3) | (torch.arange(len(y)) == 15)  # class 3: one train image, none in valid
    fitted = probe.fit((x[keep], y[keep]), (valid_set[0][:6], valid_set[1][:6]), 4)
    assert fitted.choice["by"] == "valid split" and fitted.l2 in probe.L2_GRID


def test_the_valid_splits_noise_is_a_binomial_standard_error():
    assert noise(0.9, 20) == pytest.approx(0.0671, abs=1e-4)
    assert noise(1.0, 20) == 0 and noise(0.5, 0) == 0
    assert acc_to_beat(0.9, 400) == pytest.approx(0.915)


@pytest.mark.parametrize("acc,expected", [
    (0.95, False),  # one image more of 20: within noise, the probe stays
    (1.00, True),  # two more: beyond it
])
def test_fine_tuning_must_beat_the_probe_by_more_than_the_noise(acc, expected):
    state = FitState(best_valid_loss=0.5, best_valid_acc=0.9)
    assert improved(True, state, 0.3, acc, acc_to_beat(0.9, 20)) is expected


def config_of(argv, tmp_path=None) -> configuration.RunConfig:
    """The run configuration of ``argv`` on one process, with paths under ``tmp_path`` (or nowhere in particular)."""
    base = tmp_path or Path("/nonexistent")
    smenv = SageMakerEnv(base=base, model_dir=base / "model", output_data_dir=base / "out", output_dir=base / "o",
                         checkpoint_dir=base / "ckpt")
    return configuration.build(parse_args(argv), smenv, DistInfo(), use_cuda=False)


def test_the_backbone_learns_at_a_fraction_of_the_heads_rate():
    model = models.build("resnet18", 3)
    config = config_of(["--model", "resnet18", "--pretrained-weights", "none", "--lr", "0.01"])
    optimizer = make_optimizer(config, model, backbone_ratio=0.1)
    head_params = {id(p) for p in model.fc.parameters()}
    for group in optimizer.param_groups:
        in_head = {id(p) in head_params for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all backbone
        assert group["lr"] == pytest.approx(0.01 if in_head == {True} else 0.001)
    assert id(optimizer.param_groups[0]["params"][0]) in head_params  # the lr= metric line shows the head's
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_auto_is_lp_ft_only_with_pretrained_weights(tmp_path):
    weights = tmp_path / "w.pth"
    torch.save(models.build("resnet18", 3).state_dict(), weights)
    scratch = config_of(["--model", "resnet18", "--pretrained-weights", "none"])
    pretrained = config_of(["--model", "resnet18", "--pretrained-weights", str(weights)])
    explicit = config_of(["--model", "resnet18", "--pretrained-weights", str(weights), "--train-layers", "last"])
    assert (scratch.lp_ft, pretrained.lp_ft, explicit.lp_ft) == (False, True, False)
    assert (scratch.layers, pretrained.layers, explicit.layers) == ("all", "all", "last")
    assert (scratch.epochs, pretrained.epochs, explicit.epochs) == (configuration.EPOCHS, configuration.LP_FT_EPOCHS,
                                                                    configuration.EPOCHS)
    assert (scratch.label_smoothing, pretrained.label_smoothing, explicit.label_smoothing) == (0.1, 0.0, 0.1)
    assert pretrained.bn_frozen and not scratch.bn_frozen
    big = config_of(["--model", "resnet18", "--pretrained-weights", str(weights), "--batch-size", "128"])
    assert not big.bn_frozen
    assert config_of(["--model", "resnet18", "--pretrained-weights", "none", "--epochs", "4"]).epochs == 4


def test_frozen_batchnorm_keeps_its_statistics_while_its_weights_train():
    model = models.build("resnet18", 3)
    model.train()
    assert models.batchnorm_eval(model) == 20
    before = model.bn1.running_mean.clone()
    loss = model(torch.randn(4, 3, 32, 32) * 5 + 3).sum()
    loss.backward()
    assert torch.equal(model.bn1.running_mean, before)
    assert model.bn1.weight.grad is not None and model.layer1[0].conv1.training


@pytest.mark.parametrize("lp_ft,loss,acc,expected", [
    (True, 0.4, 0.80, True),  # both better
    (True, 0.4, 0.70, False),  # lower loss, lower accuracy: the probe stays
    (True, 0.6, 0.90, False),  # higher loss
    (False, 0.4, 0.70, True),  # single-stage training: the loss alone decides, as before
])
def test_fine_tuning_is_kept_only_where_validation_prefers_it(lp_ft, loss, acc, expected):
    state = FitState(best_valid_loss=0.5, best_valid_acc=0.75)
    assert improved(lp_ft, state, loss, acc) is expected


def test_few_shot_subset_draws_train_and_valid_from_train_and_links_test(tmp_path):
    source = tmp_path / "full"
    make_sample(source, classes=3, size=32, per_split={"train": 9, "valid": 2, "test": 4})
    subset = data.write_few_shot(source, tmp_path / "5shot", shots=5, valid_shots=2, seed=3)
    splits = data.load_splits({"train": subset})
    assert [len(splits.samples[s]) for s in ("train", "valid", "test")] == [15, 6, 12]
    files = {s: {p.stat().st_ino for p, _ in splits.samples[s]} for s in ("train", "valid")}  # hard links: one inode
    assert not files["train"] & files["valid"]
    assert files["train"] | files["valid"] <= {p.stat().st_ino for p in (source / "train").rglob("*.jpg")}
    again = data.write_few_shot(source, tmp_path / "again", shots=5, valid_shots=2, seed=3)
    assert sorted(p.name for p in (again / "train").rglob("*.jpg")) == sorted(p.name for p in (subset / "train").rglob("*.jpg"))
    with pytest.raises(data.DataError, match="fewer than"):
        data.write_few_shot(source, tmp_path / "too_many", shots=8, valid_shots=2)


def test_a_weight_mix_lies_between_the_probe_and_the_fine_tuned_model():
    torch.manual_seed(0)
    probe_model, tuned_model = models.build("resnet18", 3), models.build("resnet18", 3)
    tuned_model.bn1.num_batches_tracked += 7
    probe_state, tuned_state = probe_model.state_dict(), tuned_model.state_dict()
    assert all(torch.equal(a, probe_state[k]) for k, a in wise.mix(probe_state, tuned_state, 0.0).items()
               if a.is_floating_point())
    halfway = wise.mix(probe_state, tuned_state, 0.5)
    for name, value in halfway.items():
        if value.is_floating_point():
            assert torch.allclose(value, (probe_state[name] + tuned_state[name]) / 2, atol=1e-6), name
        else:  # counters are no weights: the fine-tuned model's
            assert torch.equal(value, tuned_state[name]), name
    assert halfway["bn1.num_batches_tracked"].item() == tuned_state["bn1.num_batches_tracked"].item() == 7
    with pytest.raises(ValueError, match="not one architecture"):
        wise.mix(models.build("resnet34", 3).state_dict(), tuned_state, 0.5)


def test_every_training_step_is_checked_for_a_non_finite_loss():
    """The host looks at the device every other step here (10 steps: an interval of 2), yet the failure names the
    very step whose loss was nan: each step's loss is checked on the device, and read at the next look."""
    from dogbreed import accel
    from dogbreed.checkpoint import TerminationFlag
    from dogbreed.training.config import LoopSettings
    from dogbreed.training.errors import TrainingError
    from dogbreed.training.loop import Trainer, train_one_epoch

    class NanOnThirdStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.calls, self.inner = 0, nn.CrossEntropyLoss()

        def forward(self, output, labels):
            self.calls += 1
            loss = self.inner(output, labels)
            return loss * float("nan") if self.calls == 3 else loss

    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    acc = accel.pick("fp32", use_cuda=False)
    trainer = Trainer(model, NanOnThirdStep(), optimizer, scheduler, acc.grad_scaler(), acc)
    loader = [(torch.randn(2, 4), torch.tensor([0, 1]), []) for _ in range(10)]
    with pytest.raises(TrainingError, match="the train loss became nan at epoch 1 step 3: lower --lr"):
        train_one_epoch(trainer, loader, 1, LoopSettings(), TerminationFlag())
