"""The launchers against moto (in-process; AWS is unreachable here): what reaches the SageMaker APIs.

moto stands in for S3 and the SageMaker control plane; it fakes job outcomes, so these tests assert the
requests (captured as botocore sends them) and what moto then reports back.
"""

from __future__ import annotations

import pytest

from dogbreed import metrics
from dogbreed.launch import jobs
from dogbreed.launch.config import load
from tests.integration.conftest import REGION

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
TRAIN_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:abc123"
SERVE_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:abc123"
SERVE_IMAGE_CPU = SERVE_IMAGE.replace("dogbreed-serve:", "dogbreed-serve-cpu:")


def serving_config(folder, cpu_image: bool = True):
    """A dogbreed.toml for the serving launchers (deploy, invoke, transform): the serve images, no waiting."""
    path = folder / "dogbreed.toml"
    cpu = f'serve_image_cpu = "{SERVE_IMAGE_CPU}"\n' if cpu_image else ""
    path.write_text(f'region = "{REGION}"\nrole = "{ROLE}"\nbucket = "dogbreed-test"\nprefix = "runs"\n'
                    f'serve_image = "{SERVE_IMAGE}"\n{cpu}[wait]\npoll_s = 0\n')
    return path


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
    """A SageMaker session whose boto3 session records every SageMaker request's parameters, from whichever
    client sends it (SDK v3's resources make their own clients from the boto3 session)."""
    from dogbreed.launch import session as sessions

    calls = []

    def record(params, model, **kwargs):
        calls.append((model.name, params))

    original = sessions.check_create_requests

    def check_and_record(boto, **kwargs):
        boto.events.register("provide-client-params.sagemaker.*", record)
        original(boto, **kwargs)

    sessions.check_create_requests = check_and_record
    try:
        return sessions.sagemaker_session(config), calls
    finally:
        sessions.check_create_requests = original


def _call(calls, name):
    found = [params for op, params in calls if op == name]
    assert found, f"{name} was not called; calls: {[op for op, _ in calls]}"
    return found[-1]


def test_create_training_job_carries_everything(aws, config):
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-test", {"train-layers": "last"})
    request = _call(calls, "CreateTrainingJob")
    assert request["TrainingJobName"] == "dogbreed-train-test"
    assert request["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    hps = request["HyperParameters"]
    assert hps["model"] == "resnet50" and hps["lr"] == "0.01" and hps["train-layers"] == "last" and hps["epochs"] == "3"
    definitions = request["AlgorithmSpecification"]["MetricDefinitions"]
    assert {d["Name"]: d["Regex"] for d in definitions} == metrics.REGEXES
    assert request["CheckpointConfig"] == {"S3Uri": "s3://dogbreed-test/runs/checkpoints/dogbreed-train-test/",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    # no Debugger or Profiler service by default (Debugger is closed to new accounts): the training program
    # writes its trial beside its checkpoints, asked for through the environment
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"} & set(request)
    assert "ProfilerConfig" not in request
    assert request["Environment"] == {"DOGBREED_DEBUG_COLLECTIONS": "losses=10,weights=100,gradients=100,biases=100"}
    assert {c["ChannelName"] for c in request["InputDataConfig"]} == {"train", "valid", "test"}
    assert request["RoleArn"] == ROLE
    described = session.sagemaker_client.describe_training_job(TrainingJobName="dogbreed-train-test")
    assert described["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE


def test_debugger_and_profiler_services_only_when_asked(aws, config):
    config.set_path("training.debugger_service", True)
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-debugger")
    request = _call(calls, "CreateTrainingJob")
    hook = request["DebugHookConfig"]
    assert hook["S3OutputPath"] == "s3://dogbreed-test/runs/debug-output"
    assert {c["CollectionName"]: c["CollectionParameters"]["save_interval"] for c in hook["CollectionConfigurations"]} == {
        "losses": "10", "weights": "100", "gradients": "100", "biases": "100"}
    # the region's own rule image (eu-west-1: account 929884845733), every rule parameter a string
    assert {r["RuleEvaluatorImage"] for r in request["DebugRuleConfigurations"]} == {
        f"929884845733.dkr.ecr.{REGION}.amazonaws.com/sagemaker-debugger-rules:latest"}
    assert all(isinstance(v, str) for r in request["DebugRuleConfigurations"] for v in r["RuleParameters"].values())
    rules = {r["RuleConfigurationName"] for r in request["DebugRuleConfigurations"]}
    assert rules == {"VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization", "LossNotDecreasing"}
    assert "ProfilerRuleConfigurations" not in request and "ProfilerConfig" not in request
    assert "DOGBREED_DEBUG_COLLECTIONS" not in request.get("Environment", {})  # the service's hook config drives the hook

    config.set_path("training.profiler_service", True)
    jobs.start_training(config, session, "dogbreed-train-profiler")
    request = _call(calls, "CreateTrainingJob")
    assert request["ProfilerConfig"]["ProfilingIntervalInMilliseconds"] == 500
    assert any(r["RuleConfigurationName"].startswith("ProfilerReport") for r in request["ProfilerRuleConfigurations"])


def test_train_flags_ask_for_the_services(aws, config, capsys):
    """`dogbreed train` sends no Debugger rules unless --debugger-service asks (moto keeps what it was sent)."""
    import boto3

    sm = boto3.client("sagemaker", region_name=REGION)
    for name, flags in (("dogbreed-train-plain", []), ("dogbreed-train-service", ["--debugger-service", "--profiler-service"])):
        code, _, err = _cli(["train", "--config", config.source, "--detach", "--job-name", name, *flags], capsys)
        assert code == 0, err
    assert "DebugRuleConfigurations" not in sm.describe_training_job(TrainingJobName="dogbreed-train-plain")
    rules = sm.describe_training_job(TrainingJobName="dogbreed-train-service")["DebugRuleConfigurations"]
    assert {r["RuleConfigurationName"] for r in rules} >= {"LossNotDecreasing", "VanishingGradient"}


def test_create_tuning_job_carries_ranges_objective_and_strategy(aws, config):
    session, calls = _session_capturing(config)
    jobs.start_tuning(config, session, "dogbreed-hpo-test")
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
    assert batch["Name"] == "batch-size" and batch["Values"] == ["32", "64", "128", "256"]  # 512 does not fit a T4
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == TRAIN_IMAGE
    assert definition["Environment"] == {"DOGBREED_DEBUG_COLLECTIONS": "losses=10,weights=100,gradients=100,biases=100"}
    static = definition["StaticHyperParameters"]
    assert static["data-fraction"] == "0.1" and "lr" not in static
    # one prefix per tuning job; each trial writes in its $TRAINING_JOB_NAME sub-folder (see jobs.build_tuner)
    assert definition["CheckpointConfig"]["S3Uri"] == "s3://dogbreed-test/runs/checkpoints/dogbreed-hpo-test/"
    assert session.sagemaker_client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="dogbreed-hpo-test")["HyperParameterTuningJobConfig"]["Strategy"] == "Bayesian"


def test_deploy_creates_model_config_and_endpoint_then_delete_removes_them(aws, config):
    session, calls = _session_capturing(config)
    model = jobs.build_model(config, session, "s3://dogbreed-test/runs/models/job/output/model.tar.gz")
    jobs.deploy(config, model, "dogbreed-test-endpoint", wait=False)
    create_model = _call(calls, "CreateModel")
    assert create_model["ModelName"].startswith("dogbreed-model-")  # ours, inside the policy's dogbreed* resources
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


def test_serverless_deploy(aws, config):
    config.set_path("serving.serverless", True)
    session, calls = _session_capturing(config)
    model = jobs.build_model(config, session, "s3://dogbreed-test/m/model.tar.gz")
    jobs.deploy(config, model, "dogbreed-serverless", wait=False)
    endpoint_config = _call(calls, "CreateEndpointConfig")
    assert endpoint_config["ProductionVariants"][0]["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}
    assert "DataCaptureConfig" not in endpoint_config


def test_serverless_deploy_with_data_capture_is_refused_before_any_call(aws, config):
    """AWS refuses data capture on serverless endpoints; moto takes it. Nothing is created."""
    from dogbreed.launch.validate import ValidationError

    config.set_path("serving.serverless", True)
    config.set_path("serving.data_capture", True)
    session, calls = _session_capturing(config)
    model = jobs.build_model(config, session, "s3://dogbreed-test/m/model.tar.gz")
    with pytest.raises(ValidationError, match="serverless endpoints take no data capture"):
        jobs.deploy(config, model, "dogbreed-serverless-capture", wait=False)
    assert calls == []
    assert session.sagemaker_client.list_models()["Models"] == []


def test_instance_deploy_with_data_capture(aws, config):
    config.set_path("serving.data_capture", True)
    session, calls = _session_capturing(config)
    jobs.deploy(config, jobs.build_model(config, session, "s3://dogbreed-test/m/model.tar.gz"), "dogbreed-capture", wait=False)
    capture = _call(calls, "CreateEndpointConfig")["DataCaptureConfig"]
    assert capture["InitialSamplingPercentage"] == 20
    assert capture["DestinationS3Uri"] == "s3://dogbreed-test/runs/data-capture"


def test_names_the_sdk_makes_up_are_checked_too(aws, config):
    """The botocore hook of launch/session.py refuses a Create* call whose name the policy does not grant,
    whoever built the request (here the SDK, from a name given to it directly)."""
    from dogbreed.launch.validate import ValidationError

    config.set_path("strict_policy", True)
    session, _ = _session_capturing(config)
    trainer = jobs.build_trainer(config, session, checkpoint_job="dogbreed-train-x")
    trainer.base_job_name = "mnist-train"
    with pytest.raises(ValidationError, match=r"CreateTrainingJob: training job name 'mnist-train-[-0-9]+' is outside .*"
                                              r"dogbreed-launcher-policy.json line \d+"):
        trainer.train(jobs.channels(config), wait=False, logs=False)
    assert session.sagemaker_client.list_training_jobs()["TrainingJobSummaries"] == []


def _cli(argv, capsys) -> tuple[int, str, str]:
    from dogbreed import cli

    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def _printed(out: str, key: str) -> str:
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith(f"{key}="))


def test_two_train_commands_get_two_checkpoint_prefixes(aws, config, capsys):
    """Each `dogbreed train` checkpoints under its own job's prefix, so a second job never restores the
    first one's epochs (before: checkpoints/dogbreed-train, shared by every job)."""
    import boto3

    names = []
    for _ in range(2):
        code, out, err = _cli(["train", "--config", config.source, "--detach"], capsys)
        assert code == 0, err
        names.append(_printed(out, "training_job"))
        assert _printed(out, "checkpoints") == f"s3://dogbreed-test/runs/checkpoints/{names[-1]}/"
    assert names[0] != names[1]
    sm = boto3.client("sagemaker", region_name=REGION)
    prefixes = [sm.describe_training_job(TrainingJobName=name)["CheckpointConfig"]["S3Uri"] for name in names]
    assert prefixes == [f"s3://dogbreed-test/runs/checkpoints/{name}/" for name in names]
    assert not prefixes[0].startswith(prefixes[1]) and not prefixes[1].startswith(prefixes[0])
    for name in names:
        channels = {c["ChannelName"] for c in sm.describe_training_job(TrainingJobName=name)["InputDataConfig"]}
        assert channels == {"train", "valid", "test"}  # no resume unless asked


def test_two_tuning_jobs_get_their_own_checkpoint_prefixes(aws, config, capsys):
    import boto3

    names = []
    for _ in range(2):
        code, out, err = _cli(["tune", "--config", config.source, "--detach"], capsys)
        assert code == 0, err
        names.append(_printed(out, "tuning_job"))
        assert len(names[-1]) <= 32
    sm = boto3.client("sagemaker", region_name=REGION)
    prefixes = [sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["TrainingJobDefinition"]
                ["CheckpointConfig"]["S3Uri"] for name in names]
    assert prefixes == [f"s3://dogbreed-test/runs/checkpoints/{name}/" for name in names]
    assert prefixes[0] != prefixes[1]


def test_resume_from_adds_the_resume_channel(aws, config, capsys):
    import boto3

    source = "s3://dogbreed-test/runs/checkpoints/dogbreed-train-earlier/dogbreed-train-earlier"
    code, out, err = _cli(["train", "--config", config.source, "--detach", "--job-name", "dogbreed-train-resumed",
                           "--resume-from", source], capsys)
    assert code == 0, err
    described = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="dogbreed-train-resumed")
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in described["InputDataConfig"]}
    assert channels["resume"] == source + "/"
    assert set(channels) == {"train", "valid", "test", "resume"}
    # it still checkpoints under its own prefix, never into the one it resumes from
    assert described["CheckpointConfig"]["S3Uri"] == "s3://dogbreed-test/runs/checkpoints/dogbreed-train-resumed/"
    assert f"resume_from={source}" in out


def test_resume_from_one_checkpoint_file_keeps_its_uri():
    assert jobs.resume_prefix("s3://b/runs/checkpoints/j/j/checkpoint_0003.pt") == "s3://b/runs/checkpoints/j/j/checkpoint_0003.pt"
    assert jobs.resume_prefix("s3://b/runs/checkpoints/j") == "s3://b/runs/checkpoints/j/"
    assert jobs.resume_prefix("s3://b/runs/checkpoints/j/") == "s3://b/runs/checkpoints/j/"


def test_train_from_tuning_sends_the_tuning_jobs_best_hyperparameters(aws, config, monkeypatch, capsys):
    """`dogbreed train --from-tuning JOB`: whatever the tuning job reports as best reaches CreateTrainingJob
    (moto reports a made-up best job; AWS reports the real one)."""
    import boto3

    from dogbreed import cli

    session, _ = _session_capturing(config)
    jobs.start_tuning(config, session, "dogbreed-hpo-best")
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
    jobs.start_training(config, session, "dogbreed-train-regex")
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
    (["tune", "--region", "eu-west-1", "--role", ROLE, "--bucket", "dogbreed-test", "--image", "x", "--objective", "bogus"],
     "invalid choice"),
    (["train", "--region", "eu-west-1", "--role", ROLE, "--bucket", "dogbreed-test", "--image", "x", "--job-name", "mnist-1",
      "--strict-policy"], "iam/dogbreed-launcher-policy.json line 16"),
    (["tune", "--region", "eu-west-1", "--role", ROLE, "--bucket", "dogbreed-test", "--image", "x", "--strategy", "Hyperband"],
     "set tuning.early_stopping = \"Off\""),
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


# --- the commands' own waits, against jobs that take several describes (tests/conftest.py SlowJobs)


def _slow_config(tmp_path, moto_endpoint) -> str:
    import boto3

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    try:
        s3.create_bucket(Bucket="dogbreed-waits", CreateBucketConfiguration={"LocationConstraint": REGION})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    path = tmp_path / "dogbreed.toml"
    path.write_text(f'''region = "{REGION}"
role = "{ROLE}"
bucket = "dogbreed-waits"
prefix = "runs"
train_image = "{TRAIN_IMAGE}"
serve_image = "{SERVE_IMAGE}"
[wait]
poll_s = 0.05
''')
    return str(path)


def _run_cli(slow_moto, tmp_path, *argv):
    import subprocess
    import sys

    from tests.conftest import moto_env

    return subprocess.run([sys.executable, "-m", "dogbreed.cli", *argv], capture_output=True, text=True, timeout=300,
                          env=moto_env(slow_moto.url), cwd=tmp_path)


def _unique(kind: str) -> str:
    import uuid

    return f"dogbreed-{kind}-{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
def test_train_waits_for_the_job_prints_its_log_and_then_its_model(moto_endpoint, slow_moto, tmp_path):
    import time

    import boto3

    config = _slow_config(tmp_path, moto_endpoint)
    name = _unique("train")
    logs = boto3.client("logs", region_name=REGION, endpoint_url=moto_endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")
    try:
        logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1700000000")
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{name}/algo-1-1700000000",
                        logEvents=[{"timestamp": int(time.time() * 1000),
                                    "message": "epoch=1 train_loss=0.9 valid_loss=0.8 valid_acc=0.5"}])
    result = _run_cli(slow_moto, tmp_path, "train", "--config", config, "--job-name", name)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert f"training {name}: InProgress (Starting)" in out and f"training {name}: InProgress (Training)" in out
    assert out.count("epoch=1 train_loss=0.9 valid_loss=0.8 valid_acc=0.5") == 1  # printed once, not once per poll
    assert out[-1] == f"model_data=s3://dogbreed-waits/runs/models/{name}/output/model.tar.gz"
    assert out.index(f"training {name}: Completed (Completed)") < len(out) - 1
    assert slow_moto.describes[("training", name)] == slow_moto.steps + 1


@pytest.mark.slow
def test_tune_waits_for_the_tuning_job_before_its_leaderboard_and_best(moto_endpoint, slow_moto, tmp_path):
    config = _slow_config(tmp_path, moto_endpoint)
    name = _unique("hpo")
    result = _run_cli(slow_moto, tmp_path, "tune", "--config", config, "--job-name", name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"tuning {name}: InProgress" in out and f"tuning {name}: Completed" in out
    assert out.index(f"tuning {name}: Completed") < out.index(f"{name}-002-00000002") < out.index("best_hyperparameters=")
    board = out[out.index(f"{name}-002"):out.index("best_hyperparameters=")]
    assert "0.37" in board and "Completed" in board
    assert board.index(f"{name}-002") < board.index(f"{name}-001")  # best (lowest valid_loss, 0.37) first
    assert slow_moto.describes[("tuning", name)] >= slow_moto.steps + 1


@pytest.mark.slow
def test_deploy_waits_until_the_endpoint_is_in_service(moto_endpoint, slow_moto, tmp_path):
    config = _slow_config(tmp_path, moto_endpoint)
    endpoint = _unique("endpoint")
    result = _run_cli(slow_moto, tmp_path, "deploy", "--config", config, "--model-data", "s3://dogbreed-waits/m/model.tar.gz",
                      "--endpoint-name", endpoint)
    assert result.returncode == 0, result.stderr
    assert f"endpoint {endpoint}: Creating" in result.stdout and f"endpoint {endpoint}: InService" in result.stdout
    assert slow_moto.describes[("endpoint", endpoint)] == slow_moto.steps + 1
    assert _run_cli(slow_moto, tmp_path, "delete", endpoint, "--config", config).returncode == 0


@pytest.mark.slow
def test_deploy_from_an_unfinished_training_job_is_one_line(moto_endpoint, slow_moto, tmp_path):
    config = _slow_config(tmp_path, moto_endpoint)
    name = _unique("train")
    assert _run_cli(slow_moto, tmp_path, "train", "--config", config, "--job-name", name, "--detach").returncode == 0
    result = _run_cli(slow_moto, tmp_path, "deploy", "--config", config, "--training-job", name, "--endpoint-name", _unique("ep"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines == [f"dogbreed: error: training job {name} has no model artifacts (status InProgress): wait for it to complete"]
