"""A training set one image past a whole number of batches trains: its last batch of one would stop batch norm
("Expected more than 1 value per channel when training": a ResNet's last stage at 32 px is 1x1)."""

from __future__ import annotations

import pytest
import torch

from dogbreed import gpu_decode
from dogbreed.checkpoint import TerminationFlag
from dogbreed.sample import make_sample
from dogbreed.training import setup
from dogbreed.training.loop import train_one_epoch
from tests.unit.test_recipe import config_of


@pytest.fixture(scope="module")
def ten_train_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("last") / "dogImages"
    make_sample(root, classes=2, size=48, seed=0, per_split={"train": 5, "valid": 2, "test": 1})
    return root


def _run(root, tmp_path, monkeypatch, on_device: bool, batch_size: str = "3"):
    """Training's loaders and trainer as the entry builds them; the GPU path's choice injected (device=cpu)."""
    monkeypatch.setattr(gpu_decode, "decodes_on_gpu", lambda device: on_device)
    config = config_of(["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "32", "--batch-size",
                        batch_size, "--num-workers", "0", "--precision", "fp32", "--data-dir", str(root)], tmp_path)
    inputs = setup.load_data(config)
    chosen = setup.Chosen(setup.build_model(config, inputs.num_classes), setup.accel.pick("fp32", use_cuda=False),
                          False, False)
    feed = setup.make_loaders(config, inputs, chosen)
    return config, feed, setup.make_trainer(config, inputs, feed, lp_ft=False)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("on_device", [False, True])
def test_a_last_training_batch_of_one_image_does_not_stop_training(ten_train_images, tmp_path, monkeypatch, on_device):
    config, feed, trainer = _run(ten_train_images, tmp_path, monkeypatch, on_device)
    loss, seen, unreadable, _ = train_one_epoch(trainer, feed.loaders["train"], 1, config.loop, TerminationFlag())
    assert seen == 9 and unreadable == [] and torch.isfinite(torch.tensor(loss))  # 10 images: 3 batches of 3
    assert len(feed.loaders["train"]) == 3
    assert sum(labels.numel() for _, labels, _ in feed.loaders["valid"]) == 4  # evaluation keeps every image


@pytest.mark.parametrize("shard,batch_size,dropped", [(10, 3, True), (9, 3, False), (11, 3, False), (1, 3, False),
                                                     (4, 3, True), (5, 4, True), (3, 2, True), (2, 1, False)])
def test_only_a_last_batch_of_one_is_dropped(shard, batch_size, dropped):
    assert setup.drops_last_batch("train", shard, batch_size) is dropped
    assert not setup.drops_last_batch("valid", shard, batch_size)


@pytest.mark.timeout(300)
def test_a_batch_that_unreadable_images_cut_to_one_still_trains(ten_train_images, tmp_path, monkeypatch):
    """The loader's batch of 3 lost two images (unreadable): one image reaches the model, and counts once."""
    config, feed, trainer = _run(ten_train_images, tmp_path, monkeypatch, on_device=False)
    images, labels, _ = next(iter(feed.loaders["train"]))
    cut = [(images[:1], labels[:1], (7, 8))]
    loss, seen, unreadable, _ = train_one_epoch(trainer, cut, 1, config.loop, TerminationFlag())
    assert seen == 1 and unreadable == [7, 8] and torch.isfinite(torch.tensor(loss))
