"""The launchers against moto (in-process; AWS is unreachable here): what reaches the SageMaker APIs.

moto stands in for S3 and the SageMaker control plane; it fakes job outcomes, so these tests assert the
requests (captured as botocore sends them) and what moto then reports back.
"""

from __future__ import annotations

import pytest
from moto import mock_aws

from dogbreed import metrics
from dogbreed.launch import jobs
from dogbreed.launch.config import load

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
TRAIN_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:abc123"
SERVE_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:abc123"


@pytest.fixture
def aws(monkeypatch):
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        import boto3

        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="dogbreed-test", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "dogbreed.toml"
    path.write_text(f'''
region = "{REGION}"
role = "{ROLE}"
bucket = "dogbreed-test"
prefix = "runs"
train_image = "{TRAIN_IMAGE}"
serve_image = "{SERVE_IMAGE}"
[hyperparameters]
model = "resnet50"
epochs = 3
lr = 0.01
''')
    return load(str(path))


def _session_capturing(config):
    """A SageMaker session whose botocore client records every request's parameters."""
    from dogbreed.launch.session import sagemaker_session

    session = sagemaker_session(config)
    calls = []

    def record(params, model, **kwargs):
        calls.append((model.name, params))

    session.sagemaker_client.meta.events.register("provide-client-params.sagemaker.*", record)
    return session, calls


def _call(calls, name):
    found = [params for op, params in calls if op == name]
    assert found, f"{name} was not called; calls: {[op for op, _ in calls]}"
    return found[-1]


def test_create_training_job_carries_everything(aws, config):
    session, calls = _session_capturing(config)
    estimator = jobs.build_estimator(config, session, {"train-layers": "last"})
    estimator.fit(jobs.channels(config), job_name="dogbreed-train-test", wait=False)
    request = _call(calls, "CreateTrainingJob")
    assert request["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    hps = request["HyperParameters"]
    assert hps["model"] == "resnet50" and hps["lr"] == "0.01" and hps["train-layers"] == "last" and hps["epochs"] == "3"
    definitions = request["AlgorithmSpecification"]["MetricDefinitions"]
    assert {d["Name"]: d["Regex"] for d in definitions} == metrics.REGEXES
    assert request["CheckpointConfig"]["S3Uri"].startswith("s3://dogbreed-test/runs/checkpoints/")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    hook = request["DebugHookConfig"]
    assert {c["CollectionName"] for c in hook["CollectionConfigurations"]} >= {"losses", "weights", "gradients", "biases"}
    rules = {r["RuleConfigurationName"] for r in request["DebugRuleConfigurations"]}
    assert {"VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization", "LossNotDecreasing"} <= rules
    assert any(r["RuleConfigurationName"].startswith("ProfilerReport") for r in request["ProfilerRuleConfigurations"])
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "valid", "test"}
    assert request["RoleArn"] == ROLE
    described = session.sagemaker_client.describe_training_job(TrainingJobName="dogbreed-train-test")
    assert described["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE


def test_create_tuning_job_carries_ranges_objective_and_strategy(aws, config):
    session, calls = _session_capturing(config)
    tuner = jobs.build_tuner(config, session)
    tuner.fit(jobs.channels(config), job_name="dogbreed-hpo-test", wait=False)
    request = _call(calls, "CreateHyperParameterTuningJob")
    tuning = request["HyperParameterTuningJobConfig"]
    assert tuning["Strategy"] == "Bayesian"
    assert tuning["HyperParameterTuningJobObjective"] == {"Type": "Minimize", "MetricName": "valid_loss"}
    assert tuning["TrainingJobEarlyStoppingType"] == "Auto"
    assert tuning["ResourceLimits"]["MaxNumberOfTrainingJobs"] == 8
    ranges = tuning["ParameterRanges"]
    lr = ranges["ContinuousParameterRanges"][0]
    assert (lr["Name"], float(lr["MinValue"]), float(lr["MaxValue"]), lr["ScalingType"]) == ("lr", 0.001, 0.1, "Logarithmic")
    batch = ranges["CategoricalParameterRanges"][0]
    assert batch["Name"] == "batch-size" and batch["Values"] == ["32", "64", "128", "256", "512"]
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    static = definition["StaticHyperParameters"]
    assert static["data-fraction"] == "0.1" and "lr" not in static
    assert session.sagemaker_client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="dogbreed-hpo-test")["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"


def test_deploy_creates_model_config_and_endpoint_then_delete_removes_them(aws, config):
    session, calls = _session_capturing(config)
    model = jobs.build_model(config, session, "s3://dogbreed-test/runs/models/job/output/model.tar.gz")
    jobs.deploy(config, model, "dogbreed-test-endpoint", wait=False)
    create_model = _call(calls, "CreateModel")
    assert create_model["PrimaryContainer"]["Image"] == SERVE_IMAGE
    assert create_model["PrimaryContainer"]["ModelDataUrl"] == "s3://dogbreed-test/runs/models/job/output/model.tar.gz"
    endpoint_config = _call(calls, "CreateEndpointConfig")
    variant = endpoint_config["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 1
    assert variant["ModelName"] == create_model["ModelName"]
    endpoint = _call(calls, "CreateEndpoint")
    assert endpoint["EndpointName"] == "dogbreed-test-endpoint"
    deleted = jobs.delete_endpoint(session.sagemaker_client, "dogbreed-test-endpoint")
    assert len(deleted) == 3
    assert session.sagemaker_client.list_endpoints()["Endpoints"] == []
    assert session.sagemaker_client.list_models()["Models"] == []


def test_serverless_deploy_with_data_capture(aws, config):
    config.set_path("serving.serverless", True)
    config.set_path("serving.data_capture", True)
    session, calls = _session_capturing(config)
    model = jobs.build_model(config, session, "s3://dogbreed-test/m/model.tar.gz")
    jobs.deploy(config, model, "dogbreed-serverless", wait=False)
    endpoint_config = _call(calls, "CreateEndpointConfig")
    assert endpoint_config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}
    assert endpoint_config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20


def test_train_from_tuning_sends_the_tuning_jobs_best_hyperparameters(aws, config, monkeypatch, capsys):
    """`dogbreed train --from-tuning JOB`: whatever the tuning job reports as best reaches CreateTrainingJob
    (moto reports a made-up best job; AWS reports the real one)."""
    import boto3

    from dogbreed import cli

    session, _ = _session_capturing(config)
    jobs.build_tuner(config, session).fit(jobs.channels(config), job_name="dogbreed-hpo-best", wait=False)
    reported = jobs.best_hyperparameters(boto3.client("sagemaker", region_name=REGION), "dogbreed-hpo-best")
    calls = []
    original = boto3.Session.client

    def client(self, name, *args, **kwargs):
        made = original(self, name, *args, **kwargs)
        if name == "sagemaker":
            made.meta.events.register("provide-client-params.sagemaker.CreateTrainingJob",
                                      lambda params, **kw: calls.append(params))
        return made

    monkeypatch.setattr(boto3.Session, "client", client)
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--config", config.source, "--from-tuning", "dogbreed-hpo-best", "--detach",
                  "--job-name", "dogbreed-train-best"])
    assert done.value.code == 0
    assert calls, "CreateTrainingJob was not sent"
    sent = calls[-1]["HyperParameters"]
    for key, value in reported.items():
        assert sent[key] == value
    assert "training_job=dogbreed-train-best" in capsys.readouterr().out


def test_metric_definitions_sent_to_sagemaker_match_the_real_training_log(aws, config, trained):
    import re

    session, calls = _session_capturing(config)
    jobs.build_estimator(config, session).fit(jobs.channels(config), job_name="dogbreed-train-regex", wait=False)
    definitions = _call(calls, "CreateTrainingJob")["AlgorithmSpecification"]["MetricDefinitions"]
    log = trained["stdout"]
    for definition in definitions:
        values = re.findall(definition["Regex"], log)
        assert values, f"{definition['Name']}: {definition['Regex']} matches nothing in the real log"
        float(values[-1])


@pytest.mark.parametrize("argv,needle", [
    (["train", "--region", "eu-west-1"], "missing role"),
    (["deploy", "--region", "eu-west-1", "--role", ROLE, "--bucket", "b", "--image", "x"], "give --model-data"),
    (["train", "--config", "/no/such.toml"], "not found"),
    (["delete", "no-such-endpoint", "--region", "eu-west-1"], "no-such-endpoint"),
    (["tune", "--region", "eu-west-1", "--role", ROLE, "--bucket", "dogbreed-test", "--image", "x", "--objective", "bogus"], "invalid choice"),
])
def test_cli_errors_are_one_line_and_non_zero(moto_endpoint, tmp_path, argv, needle):
    import subprocess
    import sys

    from tests.conftest import moto_env

    result = subprocess.run([sys.executable, "-m", "dogbreed.cli", *argv], capture_output=True, text=True, timeout=120,
                            env=moto_env(moto_endpoint), cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip() and "sagemaker.config" not in line]
    assert lines and needle in lines[-1], result.stderr
    if "invalid choice" not in needle:
        assert len(lines) == 1 and lines[0].startswith("dogbreed: error: "), result.stderr
