"""``dogbreed evaluate`` as the user runs it: a model here, or a training job's model.tar.gz fetched from S3 (moto)."""

from __future__ import annotations

import json

import pytest

from dogbreed.data import IMAGE_EXTENSIONS
from tests.conftest import run_cli
from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import ROLE, TRAIN_IMAGE, _cli

pytestmark = pytest.mark.slow


def _test_photos(sample_dir) -> int:
    return sum(1 for p in (sample_dir / "test").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def test_evaluate_a_model_dir_writes_the_report(trained, sample_dir, tmp_path):
    out = tmp_path / "report"
    done = run_cli("evaluate", "--model", str(trained["model_dir"]), "--data", str(sample_dir), "--out", str(out),
                   "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "report.html").is_file() and "top1=" in done.stdout
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["images"] == _test_photos(sample_dir)
    assert f"report: {out / 'report.html'}" in done.stdout


def test_evaluate_a_training_jobs_model_fetched_from_s3(aws, trained, sample_dir, tmp_path, capsys):
    name = "dogbreed-train-evaluated"
    aws.create_training_job(
        TrainingJobName=name, RoleArn=ROLE, AlgorithmSpecification={"TrainingImage": TRAIN_IMAGE, "TrainingInputMode": "File"},
        OutputDataConfig={"S3OutputPath": "s3://dogbreed-test/runs/models"}, StoppingCondition={"MaxRuntimeInSeconds": 60},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10})
    uri = aws.describe_training_job(TrainingJobName=name)["ModelArtifacts"]["S3ModelArtifacts"]
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    boto3.client("s3", region_name=REGION).upload_file(str(trained["archive"]), bucket, key)
    out = tmp_path / "report"
    code, printed, err = _cli(["evaluate", "--training-job", name, "--region", REGION, "--data", str(sample_dir),
                               "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert f"model of {name}: {uri}" in printed
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["images"] == _test_photos(sample_dir) and (out / "report.html").is_file()


def test_evaluate_a_job_without_a_model_is_one_line(aws, sample_dir, tmp_path, capsys):
    code, _, err = _cli(["evaluate", "--training-job", "dogbreed-train-nowhere", "--region", REGION, "--data",
                         str(sample_dir), "--out", str(tmp_path / "none")], capsys)
    assert code != 0 and err.startswith("dogbreed: error:") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "none").exists()
