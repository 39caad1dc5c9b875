"""Training that refuses to call a broken model a success: non-finite hyperparameters are refused before any data
is read, and a run whose losses or weights stop being finite fails with its reason, leaving no model behind."""

from __future__ import annotations

import subprocess

import pytest

from dogbreed.local import local_train
from dogbreed.sample import make_sample

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory):
    """14 training images of two classes: with --batch-size 16, one step an epoch."""
    root = tmp_path_factory.mktemp("two") / "data"
    make_sample(root, classes=2, size=48, seed=3, per_split={"train": 7, "valid": 3, "test": 3})
    return root


FLAGS = ["--model", "resnet18", "--pretrained-weights", "none", "--input-size", "32", "--epochs", "2",
         "--batch-size", "16", "--num-workers", "1", "--precision", "fp32", "--profile", "false", "--patience", "0"]


@pytest.mark.parametrize("flag,value,needle", [
    ("--lr", "inf", "--lr: must be a finite number, got 'inf'"),  # refused as typed, before the data is read
    ("--lr", "1e30", "loss became"),  # finite, but the weights overflow: the losses stop being finite
    ("--weight-decay", "1e30", "loss became"),
])
def test_a_run_whose_losses_stop_being_finite_fails_and_leaves_no_model(two_classes, tmp_path, flag, value, needle):
    flags = [*FLAGS, flag, value]
    log = tmp_path / "stdout.log"
    with open(log, "w") as handle:
        code, archive = local_train(two_classes, tmp_path / "w", flags, stdout=handle, extra_env={"PYTHONUNBUFFERED": "1"})
    failure = tmp_path / "w/opt_ml/output/failure"
    assert code != 0, log.read_text()[-2000:]
    assert failure.is_file() and needle in failure.read_text(), failure.read_text()
    if needle == "loss became":  # the flags that scale the steps, as typed, not --lr alone
        assert f"{flag} {value}" in failure.read_text() and "--weight-decay" in failure.read_text()
    assert "SUCCESS" not in log.read_text()
    assert not archive.exists() and not (tmp_path / "w/opt_ml/model/model.pth").exists()


@pytest.mark.parametrize("flag,value", [("--momentum", "nan"), ("--warmup-epochs", "nan"), ("--lr", "inf"),
                                        ("--weight-decay", "nan"), ("--epochs", "1e9"), ("--lr", "1e39"),
                                        ("--momentum", "1e300"), ("--weight-decay", "1e300")])
def test_non_finite_hyperparameters_are_refused_before_the_data_is_read(tmp_path, flag, value):
    empty = tmp_path / "no-data-at-all"
    empty.mkdir()
    code, _ = local_train(empty, tmp_path / "w", ["--pretrained-weights", "none", flag, value], stdout=subprocess.DEVNULL)
    failure = (tmp_path / "w/opt_ml/output/failure").read_text()
    assert code != 0 and flag in failure and f"'{value}'" in failure, failure  # the value as it was typed
    assert "split" not in failure and "1000000000.0" not in failure
