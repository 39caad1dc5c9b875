"""Which runner local tuning picks: cached head-only trials in this process, unless asked for a process per trial
(bench-tune measures the cache and the runner separately)."""

from dogbreed.insight.local_tuning import InProcessRunner, TrialRunner, _choose_runner

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
