"""The shared helpers: boolean and NAME=VALUE parsing, hyperparameters as flags, steps per epoch."""

from __future__ import annotations

import argparse

import pytest

from dogbreed import common
from dogbreed.errors import ConfigError


def test_str2bool_takes_the_usual_spellings_and_refuses_others():
    assert [common.str2bool(v) for v in ("true", "Yes", "1", "on", True)] == [True] * 5
    assert [common.str2bool(v) for v in ("false", "NO", "0", "off", False)] == [False] * 5
    with pytest.raises(argparse.ArgumentTypeError, match="expected a boolean"):
        common.str2bool("maybe")


def test_hp_pairs_parse_values_and_refuse_a_pair_without_a_value():
    assert common.hp_pairs(["lr=0.01", "augment=false", "model=resnet18"]) == {"lr": 0.01, "augment": False,
                                                                              "model": "resnet18"}
    with pytest.raises(ConfigError, match="expected NAME=VALUE"):
        common.hp_pairs(["lr"])


def test_hyperparameters_become_the_training_flags():
    assert common.hyperparameter_flags({"lr": 0.01, "train-layers": "head"}) == ["--lr", "0.01", "--train-layers", "head"]


def test_steps_per_epoch_is_every_batch_or_the_cap():
    assert (common.steps_per_epoch(10, 0), common.steps_per_epoch(10, 3), common.steps_per_epoch(2, 3)) == (10, 3, 2)
