"""Where a job's trial and profile are, and the answer for a folder that holds no trial."""

from __future__ import annotations

import pytest

from dogbreed.errors import DataError
from dogbreed.insight import job_outputs
from dogbreed.insight.hooks import parse_collections, trial_config


def _trial(path):
    for mark in ("index", "collections", "events"):
        (path / mark).mkdir(parents=True)
    return path


def test_a_work_dir_names_the_trial_beside_its_checkpoints(tmp_path):
    trial = _trial(tmp_path / "opt_ml/checkpoints/dogbreed-train-1/debug")
    assert job_outputs.local_trial(str(trial)) == trial
    with pytest.raises(DataError) as raised:
        job_outputs.local_trial(str(tmp_path))
    message = str(raised.value)
    assert message.startswith(f"no smdebug trial at {tmp_path} (looked for its index/ and collections/ folders)")
    assert message.endswith(f"trials nearby: {trial}")


def test_a_sibling_trial_is_found_and_a_missing_path_said_so(tmp_path):
    trial = _trial(tmp_path / "debug")
    with pytest.raises(DataError, match=f"no such file or directory; trials nearby: {trial}"):
        job_outputs.local_trial(str(tmp_path / "debgu"))
    (tmp_path / "empty").mkdir()
    lonely = tmp_path / "empty" / "x"
    lonely.mkdir()
    with pytest.raises(DataError, match="none within 4 levels"):
        job_outputs.local_trial(str(lonely))


def test_job_names_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert job_outputs.is_job_name("dogbreed-train-251126-003000-abcde")
    assert not job_outputs.is_job_name("s3://bucket/trial") and not job_outputs.is_job_name("work/debug")
    (tmp_path / "work").mkdir()
    assert not job_outputs.is_job_name("work")  # a folder here of that name is a path


def test_the_trial_is_under_the_checkpoint_prefix_and_the_job_name():
    described = {"TrainingJobName": "dogbreed-hpo-1-001-abc", "CheckpointConfig": {"S3Uri": "s3://b/runs/checkpoints/dogbreed-hpo-1/"},
                 "OutputDataConfig": {"S3OutputPath": "s3://b/runs/models"}}
    assert job_outputs.trial_prefixes(described) == ["s3://b/runs/checkpoints/dogbreed-hpo-1/dogbreed-hpo-1-001-abc/debug/"]
    described["DebugHookConfig"] = {"S3OutputPath": "s3://b/runs/debug-output"}
    assert job_outputs.trial_prefixes(described)[1] == "s3://b/runs/debug-output/dogbreed-hpo-1-001-abc/debug-output/"
    assert job_outputs.output_archive(described) == "s3://b/runs/models/dogbreed-hpo-1-001-abc/output/output.tar.gz"


def test_the_launchers_collections_become_a_hook_config():
    collections = parse_collections("losses=10, weights=100,gradients")
    assert collections == {"losses": "10", "weights": "100", "gradients": "10"}
    config = trial_config("/opt/ml/checkpoints/j/debug", collections)
    assert config["LocalPath"] == "/opt/ml/checkpoints/j/debug"
    weights = {"CollectionName": "weights", "CollectionParameters": {"save_interval": "100"}}
    assert config["CollectionConfigurations"][1] == weights
