"""A failed local run leaves no model of an earlier run in its work folder to pass for its own, and its reason
names the flags as they were typed."""

from __future__ import annotations

import subprocess

import pytest

from dogbreed.local import failure_reason, local_train
from tests.conftest import QUICK_FLAGS

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_a_failed_rerun_in_the_same_work_folder_leaves_no_model(sample_dir, tmp_path):
    flags = list(QUICK_FLAGS) + ["--profile", "false", "--max-steps-per-epoch", "1"]
    flags[flags.index("--epochs") + 1] = "1"
    work = tmp_path / "work"
    code, archive = local_train(sample_dir, work, flags, stdout=subprocess.DEVNULL)
    assert code == 0 and archive.is_file(), failure_reason(work)
    code, archive = local_train(sample_dir, work, [*flags, "--lr", "1e30"], stdout=subprocess.DEVNULL)
    assert code != 0 and "refusing to resume" in failure_reason(work)
    assert "lr: 0.003 -> 1e30" in failure_reason(work)  # as typed, not 1e+30
    assert not archive.exists() and not (work / "opt_ml/model/model.pth").exists()
    diverging = [*flags, "--lr", "1e30", "--resume", "false"]
    code, archive = local_train(sample_dir, work, diverging, stdout=subprocess.DEVNULL)
    assert code != 0 and "loss became" in (failure_reason(work) or "")
    assert "lower --lr 1e30 or --weight-decay" in failure_reason(work)
    assert not archive.exists() and not (work / "opt_ml/model/model.pth").exists()
    assert not (work / "opt_ml/output/data/metrics.json").exists()
