"""Where a job's trial and profile are, and the answer for a folder that holds no trial."""

from __future__ import annotations

import pytest

from dogbreed.errors import DataError
from dogbreed.insight import job_outputs
from dogbreed.training.hooks import parse_collections, trial_config


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


def _smdebug_run(checkpoints, monkeypatch):
    """One run of the training program's hook beside ``checkpoints`` (as a job without the Debugger service):
    a few steps, then close, as fit() does on SIGTERM."""
    import types

    import torch

    from dogbreed.training.hooks import make_debug_hook

    monkeypatch.setenv("DOGBREED_DEBUG_COLLECTIONS", "losses=1")
    model, criterion = torch.nn.Linear(3, 2), torch.nn.CrossEntropyLoss()
    hook = make_debug_hook(model, [criterion], types.SimpleNamespace(checkpoint_dir=checkpoints, debug_out=None),
                           checkpoints / "no-opt-ml")
    hook.set_mode("train")
    for _ in range(3):
        criterion(model(torch.randn(4, 3)), torch.tensor([0, 1, 0, 1])).backward()
    hook.close()


def test_a_restarted_spot_job_writes_its_next_run_to_its_own_trial(tmp_path, monkeypatch):
    """SageMaker gives a restarted spot job its checkpoint prefix back, debug/ included (closed on SIGTERM:
    smdebug refuses that folder; still claimed: smdebug writes nothing). The next run gets debug-restart-1/."""
    pytest.importorskip("smdebug")
    checkpoints = tmp_path / "dogbreed-train-1"
    _smdebug_run(checkpoints, monkeypatch)
    _smdebug_run(checkpoints, monkeypatch)  # before: AttributeError from smdebug's refused out_dir, the job failed
    assert sorted(p.name for p in checkpoints.iterdir()) == ["debug", "debug-restart-1"]
    assert all(job_outputs.is_trial(p) for p in checkpoints.iterdir())
    assert list((checkpoints / "debug-restart-1").rglob("*.tfevents"))


def test_a_job_report_reads_the_newest_run_and_never_mixes_trials(tmp_path, monkeypatch):
    """In S3: the first run's trial in debug/, the restarted run's in debug-restart-1/ (and a debug-old/ that
    is no run of ours); the report downloads only the newest, into a folder of its own."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    job = "dogbreed-train-2"
    described = {"TrainingJobName": job, "TrainingJobStatus": "Completed",
                 "CheckpointConfig": {"S3Uri": "s3://dogbreed-b/runs/checkpoints/dogbreed-train-2/"}}
    sagemaker = type("SageMaker", (), {"describe_training_job": lambda self, TrainingJobName: described})()
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="dogbreed-b")
        for run in ("debug", "debug-restart-1", "debug-old"):
            for mark in ("index", "collections", "events"):
                s3.put_object(Bucket="dogbreed-b", Key=f"runs/checkpoints/{job}/{job}/{run}/{mark}/{run}.json", Body=b"{}")
        prefix, local, earlier = job_outputs.fetch_trial(sagemaker, s3, job, tmp_path / "trial")
    base = f"s3://dogbreed-b/runs/checkpoints/{job}/{job}"
    assert (prefix, earlier) == (f"{base}/debug-restart-1/", [f"{base}/debug/"])
    assert local == tmp_path / "trial" / job / "debug-restart-1"
    assert sorted(p.name for p in local.rglob("*.json")) == ["debug-restart-1.json"] * 3


def test_an_s3_uri_without_a_trial_answers_at_once_with_the_trials_below_it(monkeypatch):
    """smdebug polls an S3 prefix without a trial forever; the report says what it looked for."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="dogbreed-b")
        s3.put_object(Bucket="dogbreed-b", Key="runs/job/job/debug/collections/000000000/worker_0.json", Body=b"{}")
        assert job_outputs.s3_trial("s3://dogbreed-b/runs/job/job/debug", s3) == "s3://dogbreed-b/runs/job/job/debug"
        with pytest.raises(DataError) as raised:
            job_outputs.s3_trial("s3://dogbreed-b/runs/job/", s3)
        assert str(raised.value) == ("no smdebug trial at s3://dogbreed-b/runs/job/ (looked for its index/ and collections/ "
                                     "keys); trials below it: s3://dogbreed-b/runs/job/job/debug/")
        with pytest.raises(DataError, match="no trial below it either"):
            job_outputs.s3_trial("s3://dogbreed-b/elsewhere", s3)
