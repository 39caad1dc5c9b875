"""Real transfer learning on real photos: ../shared/data/dogs10 with the offline tf_efficientnet_lite0 weights."""

import json

import pytest

from dogbreed import metrics
from dogbreed.local import local_train
from tests.conftest import DOGS10, LITE0_WEIGHTS, needs_shared

pytestmark = [pytest.mark.slow, pytest.mark.shared, needs_shared()]


def test_fine_tuning_reaches_085_test_accuracy(tmp_path):
    flags = ["--model", "tf_efficientnet_lite0", "--pretrained-weights", str(LITE0_WEIGHTS),
             "--train-layers", "last", "--epochs", "2", "--batch-size", "32", "--lr", "0.002",
             "--warmup-epochs", "0.3"]
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        code, archive = local_train(DOGS10, tmp_path / "work", flags, stdout=handle)
    assert code == 0, log.read_text()[-2000:]
    summary = json.loads((tmp_path / "work/opt_ml/output/data/metrics.json").read_text())
    assert summary["images"] == {"train": 1500, "valid": 400, "test": 600}
    assert summary["test_acc"] >= 0.85, summary
    assert metrics.last(log.read_text(), "test_acc") == pytest.approx(summary["test_acc"], abs=1e-4)
    meta = json.loads((tmp_path / "work/opt_ml/model/model.json").read_text())
    assert "Golden retriever" in meta["class_names"] and meta["mean"] == [0.5, 0.5, 0.5]
