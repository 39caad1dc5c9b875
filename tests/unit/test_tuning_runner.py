"""Which runner local tuning picks: cached head-only trials in this process, unless asked for a process per trial
(bench-tune measures the cache and the runner separately)."""

import pytest

from dogbreed import metrics
from dogbreed.launch.local_tuning import InProcessRunner, TrialRunner, _choose_runner

HEAD_ONLY = {"train-layers": "head", "augment": "false"}


def test_cached_head_only_trials_run_in_process_by_default(tmp_path):
    fixed = dict(HEAD_ONLY)
    runner, parallel = _choose_runner(tmp_path / "data", tmp_path, fixed, 4, 2, "no", "unused", "yes")
    assert isinstance(runner, InProcessRunner) and parallel == 1
    assert fixed["feature-cache"] == str(tmp_path / "feature-cache")


def test_a_process_per_trial_when_asked_with_the_same_cache(tmp_path):
    fixed = dict(HEAD_ONLY)
    runner, _ = _choose_runner(tmp_path / "data", tmp_path, fixed, 4, 2, "no", "unused", "yes", in_process="no")
    assert type(runner) is TrialRunner
    assert fixed["feature-cache"] == str(tmp_path / "feature-cache")  # the same cache, another runner


def test_an_in_process_trial_reports_through_the_summary_and_stops_through_a_hook(tmp_path):
    """The in-process runner reads no stdout: the pruner sees each epoch's record through a training hook and stops
    the trial by the hook's answer (abandoned: no test split, no model); a finished trial's objective comes from
    training's returned summary."""
    from dogbreed.sample import make_sample

    data = tmp_path / "data"
    make_sample(data, classes=2, size=40, seed=1, per_split={"train": 6, "valid": 3, "test": 2})
    runner = InProcessRunner(data, tmp_path / "work", None, 1)
    hps = {**HEAD_ONLY, "model": "resnet18", "pretrained-weights": "none", "input-size": "32", "epochs": "4",
           "batch-size": "4", "num-workers": "0", "profile": "false", "precision": "fp32",
           "feature-cache": str(tmp_path / "cache")}
    seen = []

    def on_epoch(epoch, values):
        seen.append((epoch, values["valid_loss"]))
        return epoch == 2  # the pruner gives up after the second epoch

    result = runner.run(0, hps, on_epoch)
    assert result.code == 0 and result.stopped and result.epochs == 2 and result.values == {}
    assert [epoch for epoch, _ in seen] == [1, 2]
    log = (tmp_path / "work/trial-000/trial.log").read_text()
    assert "epoch=2 " in log and "epoch=3 " not in log and "test_acc" not in log  # the metric lines reach the log
    assert not (tmp_path / "work/trial-000/model/model.pth").exists()
    finished = runner.run(1, hps, lambda epoch, values: False)
    assert finished.code == 0 and not finished.stopped and finished.epochs == 4
    assert finished.values["valid_loss"] == pytest.approx(metrics.last(
        (tmp_path / "work/trial-001/trial.log").read_text(), "valid_loss"), rel=1e-3)  # the kept model's, printed last
    assert 0.0 <= finished.values["valid_acc"] <= 1.0 and finished.values["test_acc"] is not None
