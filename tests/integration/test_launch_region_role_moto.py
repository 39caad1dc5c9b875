"""Launches through the real launcher code against moto (in process), every request captured: the region's order
(the config, AWS_REGION, AWS_DEFAULT_REGION, then the AWS profile's), an image in another region than the job,
and a SageMaker Studio execution role."""

from __future__ import annotations

import pytest

from dogbreed.launch import jobs, policy
from dogbreed.launch.config import load
from dogbreed.launch.validate import ValidationError
from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import ROLE, SERVE_IMAGE, TRAIN_IMAGE, _call, _cli, _session_capturing

STUDIO_ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-20250101T000000"
ELSEWHERE = "us-east-1"


def _toml(tmp_path, region: str | None = REGION, role: str = ROLE, train_image: str = TRAIN_IMAGE,
          serve_image: str = SERVE_IMAGE) -> str:
    path = tmp_path / "dogbreed.toml"
    line = f'region = "{region}"\n' if region else ""
    path.write_text(f'{line}role = "{role}"\nbucket = "dogbreed-test"\nprefix = "runs"\n'
                    f'train_image = "{train_image}"\nserve_image = "{serve_image}"\n[wait]\npoll_s = 0\n')
    return str(path)


@pytest.fixture
def profile_region(aws, tmp_path, monkeypatch):
    """No region in the environment; the AWS profile (an AWS config file of its own) names ``REGION``."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    profile = tmp_path / "aws-config"
    profile.write_text(f"[default]\nregion = {REGION}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(profile))
    return aws


def test_the_launchers_fall_back_to_the_profiles_region(profile_region, tmp_path):
    config = load(_toml(tmp_path, region=None))
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-profile")
    assert (config["region"], config.region_source) == (REGION, "the AWS profile")
    assert session.boto_region_name == REGION
    assert _call(calls, "CreateTrainingJob")["TrainingJobName"] == "dogbreed-train-profile"
    assert profile_region.describe_training_job(TrainingJobName="dogbreed-train-profile")["TrainingJobName"]


def test_the_command_takes_the_profiles_region_too(profile_region, tmp_path, capsys):
    code, out, err = _cli(["train", "--config", _toml(tmp_path, region=None), "--detach", "--job-name",
                           "dogbreed-train-cli-profile"], capsys)
    assert code == 0, err
    assert profile_region.describe_training_job(TrainingJobName="dogbreed-train-cli-profile")


def test_the_profiles_region_is_the_one_images_are_checked_against(profile_region, tmp_path):
    image = TRAIN_IMAGE.replace(REGION, ELSEWHERE)
    config = load(_toml(tmp_path, region=None, train_image=image))
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match=f"is in {ELSEWHERE}, the job in {REGION}"):
        jobs.start_training(config, session, "dogbreed-train-elsewhere")
    assert calls == [] and profile_region.list_training_jobs()["TrainingJobSummaries"] == []


def test_no_region_anywhere_is_one_line(profile_region, tmp_path, monkeypatch, capsys):
    (tmp_path / "aws-config").write_text("[default]\n")
    code, out, err = _cli(["train", "--config", _toml(tmp_path, region=None), "--detach"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("dogbreed: error: no AWS region"), err


def test_an_image_in_another_region_than_the_job_is_refused_before_any_request(aws, tmp_path):
    config = load(_toml(tmp_path, train_image=TRAIN_IMAGE.replace(REGION, ELSEWHERE),
                        serve_image=SERVE_IMAGE.replace(REGION, ELSEWHERE)))
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match=f"train_image .* is in {ELSEWHERE}, the job in {REGION}"):
        jobs.start_training(config, session, "dogbreed-train-cross-region")
    with pytest.raises(ValidationError, match=f"serve image .* is in {ELSEWHERE}, the job in {REGION}"):
        jobs.deploy(config, jobs.build_model(config, session, "s3://dogbreed-test/m/model.tar.gz"), "dogbreed-x", wait=False)
    assert calls == []
    # a request the SDK builds itself meets the same check in the botocore hook, before it is sent
    trainer = jobs.build_trainer(config, session, checkpoint_job="dogbreed-train-sdk-built")
    with pytest.raises(ValidationError, match=f"CreateTrainingJob: image .* is in {ELSEWHERE}, the job in {REGION}"):
        trainer.train(jobs.channels(config), wait=False, logs=False)
    assert aws.list_training_jobs()["TrainingJobSummaries"] == [] and aws.list_models()["Models"] == []


def test_a_studio_execution_role_is_accepted_with_one_warning(aws, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(policy, "_WARNED", set())  # the warning is once a process: another test may have had it
    config = load(_toml(tmp_path, role=STUDIO_ROLE))
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-studio")
    assert _call(calls, "CreateTrainingJob")["RoleArn"] == STUDIO_ROLE
    assert aws.describe_training_job(TrainingJobName="dogbreed-train-studio")["RoleArn"] == STUDIO_ROLE
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dogbreed: warning: ")]
    assert len(warnings) == 1 and "AmazonSageMaker-ExecutionRole" in warnings[0]
    assert "iam/dogbreed-launcher-policy.json line 22" in warnings[0]


def test_a_studio_execution_role_is_refused_under_strict_policy(aws, tmp_path):
    config = load(_toml(tmp_path, role=STUDIO_ROLE))
    config.set_path("strict_policy", True)
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match="AmazonSageMaker-ExecutionRole"):
        jobs.start_training(config, session, "dogbreed-train-studio-strict")
    assert calls == [] and aws.list_training_jobs()["TrainingJobSummaries"] == []
