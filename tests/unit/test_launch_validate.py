"""The validation table: each rule of launch/validate.py refuses what AWS refuses, and lets the neighbouring
valid request through (moto accepts both, so only these rules stand between a user and AWS's refusal)."""

from __future__ import annotations

import pytest

from dogbreed.launch import validate
from dogbreed.launch.config import Config

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
TRAIN = "dogbreed-train-250101-120000-abcd"
HPO = "dogbreed-hpo-250101-120000-abcd"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK = "mrk-1234abcd12ab34cd56ef1234567890ab"  # a Multi-Region key's id
VPC = {"vpc.subnets": ["subnet-0123456789abcdef0"], "vpc.security_group_ids": ["sg-0123456789abcdef0"]}
GRID_RANGES = {"batch-size": {"values": [32, 64]}, "model": {"values": ["resnet18", "resnet50"]}}

# (row id, request, config overrides, names, uris, the rules that must refuse it)
TABLE = [
    ("training ok", "training", {}, {"training-job": TRAIN}, {}, set()),
    ("spot max_wait below max_run", "training", {"training.max_run_s": 7200, "training.max_wait_s": 3600},
     {"training-job": TRAIN}, {}, {"spot-max-wait"}),
    ("spot max_wait equal to max_run", "training", {"training.max_run_s": 7200, "training.max_wait_s": 7200},
     {"training-job": TRAIN}, {}, set()),
    ("on-demand ignores max_wait", "training", {"training.use_spot": False, "training.max_run_s": 7200,
                                                "training.max_wait_s": 60},
     {"training-job": TRAIN}, {}, set()),
    ("name of 64 characters", "training", {}, {"training-job": "dogbreed-" + "x" * 55}, {}, {"names"}),
    ("name of 63 characters", "training", {}, {"training-job": "dogbreed-" + "x" * 54}, {}, set()),
    ("name with an underscore", "training", {}, {"training-job": "dogbreed_train"}, {}, {"names"}),
    ("name ending in a hyphen", "training", {}, {"training-job": "dogbreed-train-"}, {}, {"names"}),
    ("name outside the policy (a warning; refused only with strict_policy)", "training", {},
     {"training-job": "mnist-train-1"}, {}, {"names-policy"}),
    ("upper case name (ARNs are lower case)", "training", {}, {"training-job": "DogBreed-Train-1"}, {}, set()),
    ("role the policy may not pass", "training", {"role": "arn:aws:iam::123456789012:role/other"}, {"training-job": TRAIN}, {},
     {"role-policy"}),
    ("train image in another region", "training", {"region": "us-east-1",
                                                   "train_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/t:1"},
     {"training-job": TRAIN}, {}, {"image-region-account"}),
    ("train image in another account", "training", {"region": "eu-west-1",
                                                    "train_image": "999999999999.dkr.ecr.eu-west-1.amazonaws.com/t:1"},
     {"training-job": TRAIN}, {}, {"image-region-account"}),
    ("vpc without security groups", "training", {"vpc.subnets": ["subnet-0123456789abcdef0"]}, {"training-job": TRAIN}, {},
     {"vpc-kms"}),
    ("kms key in another region", "training", {"region": "eu-west-1",
                                               "kms_key": "arn:aws:kms:us-east-1:123456789012:alias/x"},
     {"training-job": TRAIN}, {}, {"vpc-kms"}),
    ("vpc and kms set right", "training", {"region": "eu-west-1", "vpc.subnets": ["subnet-0123456789abcdef0"],
                                           "vpc.security_group_ids": ["sg-0123456789abcdef0"], "kms_key": "alias/dogbreed"},
     {"training-job": TRAIN}, {}, set()),
    ("training volume key as an alias (CreateTrainingJob takes a key ID or ARN)", "training",
     {"training.instance_type": "ml.m5.xlarge", "kms_key": "alias/dogbreed"}, {"training-job": TRAIN}, {}, {"vpc-kms"}),
    ("training volume key as an alias on local NVMe, where it is not sent", "training", {"kms_key": "alias/dogbreed"},
     {"training-job": TRAIN}, {}, set()),
    ("training volume key ARN, output key alias", "training",
     {"training.instance_type": "ml.m5.xlarge", "kms_key": {"volume": f"arn:aws:kms:eu-west-1:123456789012:key/{KEY_ID}",
                                                            "output": "alias/dogbreed"}}, {"training-job": TRAIN}, {}, set()),
    ("Multi-Region key ARN", "training", {"region": "eu-west-1", "training.instance_type": "ml.m5.xlarge",
                                          "kms_key": f"arn:aws:kms:eu-west-1:123456789012:key/{MRK}"},
     {"training-job": TRAIN}, {}, set()),
    ("Multi-Region key id", "training", {"training.instance_type": "ml.m5.xlarge", "kms_key": MRK}, {"training-job": TRAIN},
     {}, set()),
    ("Multi-Region key ARN in another region", "training",
     {"region": "eu-west-1", "kms_key": f"arn:aws:kms:us-east-1:123456789012:key/{MRK}"}, {"training-job": TRAIN}, {},
     {"vpc-kms"}),
    ("transform volume key as an alias", "transform", {"kms_key": "alias/dogbreed"},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"},
     {"--input": "s3://dogbreed-test/photos/", "--output": "s3://dogbreed-test/answers/"}, set()),
    ("network isolation, ImageNet weights downloaded at run time", "training", {"network_isolation": True},
     {"training-job": TRAIN}, {}, {"network-isolation-weights"}),
    ("network isolation, ImageNet weights from a 'pretrained' channel", "training", {"network_isolation": True},
     {"training-job": TRAIN}, {"--pretrained": "s3://dogbreed-test/weights/resnet50.pth"}, set()),
    ("network isolation, no pretrained weights", "training",
     {"network_isolation": True, "hyperparameters.pretrained-weights": "none"}, {"training-job": TRAIN}, {}, set()),
    ("tuning with network isolation and ImageNet weights", "tuning", {"network_isolation": True},
     {"hyper-parameter-tuning-job": HPO}, {}, {"network-isolation-weights"}),
    ("role that is no ARN", "training", {"role": "dogbreed-sagemaker"}, {"training-job": TRAIN}, {}, {"role"}),
    ("resume from a local folder", "training", {}, {"training-job": TRAIN}, {"--resume-from": "/tmp/checkpoints"}, {"s3-uris"}),
    ("resume from a bucketless URI", "training", {}, {"training-job": TRAIN}, {"--resume-from": "s3://"}, {"s3-uris"}),
    ("resume from S3", "training", {}, {"training-job": TRAIN}, {"--resume-from": "s3://dogbreed-test/runs/checkpoints/x/"},
     set()),
    ("tuning ok", "tuning", {}, {"hyper-parameter-tuning-job": HPO}, {}, set()),
    ("hyperband with early stopping Auto", "tuning", {"tuning.strategy": "Hyperband"}, {"hyper-parameter-tuning-job": HPO}, {},
     {"hyperband-early-stopping-off"}),
    ("hyperband with early stopping Off", "tuning", {"tuning.strategy": "Hyperband", "tuning.early_stopping": "Off"},
     {"hyper-parameter-tuning-job": HPO}, {}, set()),
    ("grid with a continuous range", "tuning", {"tuning.strategy": "Grid"}, {"hyper-parameter-tuning-job": HPO}, {},
     {"grid-categorical-only"}),
    ("grid with categorical ranges", "tuning", {"tuning.strategy": "Grid", "tuning.ranges": GRID_RANGES},
     {"hyper-parameter-tuning-job": HPO}, {}, set()),
    ("unknown strategy", "tuning", {"tuning.strategy": "Evolution"}, {"hyper-parameter-tuning-job": HPO}, {}, {"strategy"}),
    ("range min above max", "tuning", {"tuning.ranges": {"lr": {"min": 0.1, "max": 0.01}}}, {"hyper-parameter-tuning-job": HPO},
     {}, {"range-bounds"}),
    ("log range from 0", "tuning", {"tuning.ranges": {"lr": {"min": 0.0, "max": 0.1, "scaling": "Logarithmic"}}},
     {"hyper-parameter-tuning-job": HPO}, {}, {"range-bounds"}),
    ("tuning name of 33 characters", "tuning", {}, {"hyper-parameter-tuning-job": "dogbreed-hpo-" + "x" * 20}, {}, {"names"}),
    ("tuning name of 32 characters", "tuning", {}, {"hyper-parameter-tuning-job": "dogbreed-hpo-" + "x" * 19}, {}, set()),
    ("tuning with spot max_wait below max_run", "tuning", {"training.max_run_s": 7200, "training.max_wait_s": 3600},
     {"hyper-parameter-tuning-job": HPO}, {}, {"spot-max-wait"}),
    ("deploy ok", "deploy", {}, {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, set()),
    ("serverless with data capture", "deploy", {"serving.serverless": True, "serving.data_capture": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"serverless-no-data-capture"}),
    ("serverless without data capture", "deploy", {"serving.serverless": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"},
     {}, set()),
    ("instances with data capture", "deploy", {"serving.data_capture": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"},
     {}, set()),
    ("serverless in a VPC", "deploy", {"serving.serverless": True, **VPC}, {"model": "dogbreed-model-1", "endpoint": "dogbreed"},
     {}, {"serverless-no-network-settings"}),
    ("serverless with network isolation", "deploy", {"serving.serverless": True, "network_isolation": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"serverless-no-network-settings"}),
    ("instances in a VPC with network isolation", "deploy", {"network_isolation": True, **VPC},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, set()),
    ("serverless memory AWS does not offer", "deploy", {"serving.serverless": True, "serving.serverless_memory_mb": 3000},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"serverless-size"}),
    ("data capture of 150 percent", "deploy", {"serving.data_capture": True, "serving.data_capture_percent": 150},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"data-capture-percent"}),
    ("endpoint outside the policy", "deploy", {}, {"model": "dogbreed-model-1", "endpoint": "prod", "endpoint-config": "prod"},
     {},
     {"names-policy"}),
    ("model outside the policy", "deploy", {}, {"model": "model-1", "endpoint": "dogbreed"}, {}, {"names-policy"}),
    ("deploy to a GPU family without an AMI in the table", "deploy", {"serving.instance_type": "ml.g7.xlarge"},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"inference-ami"}),
    ("deploy to a T4 (the table's AMI)", "deploy", {"serving.instance_type": "ml.g4dn.xlarge"},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, set()),
    ("async without an output", "deploy", {"serving.async": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"async"}),
    ("async to a local folder", "deploy", {"serving.async": True, "serving.async_output": "/tmp/answers"},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"async"}),
    ("async on serverless", "deploy", {"serving.async": True, "serving.async_output": "s3://dogbreed-test/async/",
                                       "serving.serverless": True},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"async"}),
    ("async with an SNS topic in another region", "deploy", {"region": "eu-west-1", "serving.async": True,
                                                            "serving.async_output": "s3://dogbreed-test/async/",
                                                            "serving.async_sns_error": "arn:aws:sns:us-east-1:123456789012:t"},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, {"async"}),
    ("async set right", "deploy", {"region": "eu-west-1", "serving.async": True, "serving.async_output": "s3://dogbreed-test/async/",
                                   "serving.async_sns_success": "arn:aws:sns:eu-west-1:123456789012:done"},
     {"model": "dogbreed-model-1", "endpoint": "dogbreed"}, {}, set()),
    ("transform ok", "transform", {}, {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"},
     {"--input": "s3://dogbreed-test/photos/", "--output": "s3://dogbreed-test/answers/"}, set()),
    ("transform on a GPU family without an AMI", "transform", {"transform.instance_type": "ml.g7.xlarge"},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, {"transform-ami"}),
    ("transform payload of 101 MB", "transform", {"transform.max_payload_mb": 101},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, {"transform-shape"}),
    ("transform 20 MB x 6 concurrent", "transform", {"transform.max_payload_mb": 20, "transform.max_concurrent": 6},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, {"transform-shape"}),
    ("transform 20 MB x 5 concurrent", "transform", {"transform.max_payload_mb": 20, "transform.max_concurrent": 5},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, set()),
    ("transform Line split of images", "transform", {"transform.split_type": "Line"},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, {"transform-shape"}),
    ("transform Line split of JSON lines", "transform", {"transform.split_type": "Line",
                                                         "transform.content_type": "application/jsonlines",
                                                         "transform.batch_strategy": "MultiRecord"},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {}, set()),
    ("transform output to a local folder", "transform", {},
     {"model": "dogbreed-model-1", "transform-job": "dogbreed-transform-1"}, {"--output": "answers/"}, {"s3-uris"}),
    ("batch 512 for resnet50 on a T4", "tuning", {"tuning.instance_type": "ml.g4dn.xlarge",
                                                   "tuning.ranges.batch-size": {"values": [64, 512]}},
     {"hyper-parameter-tuning-job": HPO}, {}, {"batch-fits-gpu"}),
    ("batch 512 head-only on a T4", "tuning", {"tuning.instance_type": "ml.g4dn.xlarge", "hyperparameters.train-layers": "head",
                                               "tuning.ranges.batch-size": {"values": [64, 512]}},
     {"hyper-parameter-tuning-job": HPO}, {}, set()),
    ("batch 256 on a T4 with resnet101 among the tuned models", "tuning",
     {"tuning.instance_type": "ml.g4dn.xlarge", "tuning.ranges.batch-size": {"values": [64, 256]},
      "tuning.ranges.model": {"values": ["resnet18", "resnet101"]}},
     {"hyper-parameter-tuning-job": HPO}, {}, {"batch-fits-gpu"}),
    ("integer batch range up to 256 on a T4", "tuning", {"tuning.instance_type": "ml.g4dn.xlarge",
                                                         "tuning.ranges.batch-size": {"min": 16, "max": 256}},
     {"hyper-parameter-tuning-job": HPO}, {}, set()),
    ("batch 256 for resnet50 at 320 px on a T4", "tuning", {"tuning.instance_type": "ml.g4dn.xlarge",
                                                            "hyperparameters.input-size": 320,
                                                            "tuning.ranges.batch-size": {"values": [64, 256]}},
     {"hyper-parameter-tuning-job": HPO}, {}, {"batch-fits-gpu"}),
    ("batch 256 on a T4 with 320 px among the tuned sizes", "tuning",
     {"tuning.instance_type": "ml.g4dn.xlarge", "tuning.ranges.batch-size": {"values": [64, 256]},
      "tuning.ranges.input-size": {"values": [224, 320]}},
     {"hyper-parameter-tuning-job": HPO}, {}, {"batch-fits-gpu"}),
    ("batch 512 for resnet50 on an A100 80 GB", "tuning", {"tuning.instance_type": "ml.p4de.24xlarge",
                                                            "tuning.ranges.batch-size": {"values": [64, 512]}},
     {"hyper-parameter-tuning-job": HPO}, {}, set()),
]


def _config(overrides: dict):
    config = Config(source="the table")
    for key, value in {"role": ROLE, "bucket": "dogbreed-test", "train_image": "x", "serve_image": "y"}.items():
        config.set_path(key, value)
    for key, value in overrides.items():
        config.set_path(key, value)
    return config


@pytest.mark.parametrize("row,request_kind,overrides,names,uris,refused", TABLE, ids=[row[0] for row in TABLE])
def test_the_validation_table(row, request_kind, overrides, names, uris, refused):
    config = _config(overrides)
    found = validate.problems(request_kind, validate.Plan(config, names, uris, {"train_image": config.get("train_image")}))
    assert {rule for rule, _ in found} == refused, found
    for _, reason in found:
        assert "\n" not in reason and reason


def test_every_rule_has_a_row_that_it_refuses():
    refused = set().union(*(row[-1] for row in TABLE))
    assert refused == {rule.id for rule in validate.RULES}


def test_reasons_name_the_policy_line_to_change():
    reason = validate.name_problem("endpoint", "prod")
    assert 'iam/dogbreed-launcher-policy.json line 16: "Resource": "arn:aws:sagemaker:REGION:ACCOUNT:*/dogbreed*"' in reason
    assert "start the name with 'dogbreed'" in reason
    reason = validate.role_problem("arn:aws:iam::123456789012:role/other")
    assert 'iam/dogbreed-launcher-policy.json line 22: "Resource": "arn:aws:iam::ACCOUNT:role/dogbreed-sagemaker"' in reason


def test_check_raises_one_line_with_every_reason():
    config = _config({"tuning.strategy": "Grid", "training.max_run_s": 7200, "training.max_wait_s": 3600,
                      "strict_policy": True})
    with pytest.raises(validate.ValidationError) as refused:
        validate.check_tuning(config, "mnist-hpo")
    message = str(refused.value)
    assert "\n" not in message
    assert "outside what the launcher policy grants" in message and "Grid" in message and "max_wait_s (3600)" in message


@pytest.mark.parametrize("operation,params,needle", [
    ("CreateTrainingJob", {"TrainingJobName": "mnist", "RoleArn": ROLE}, "training job name 'mnist'"),
    ("CreateHyperParameterTuningJob", {"HyperParameterTuningJobName": "dogbreed-hpo",
                                       "TrainingJobDefinition": {"RoleArn": "arn:aws:iam::123456789012:role/x"}}, "role/x"),
    ("CreateModel", {"ModelName": "dogbreed-serve-2025", "ExecutionRoleArn": "arn:aws:iam::123456789012:role/x"}, "role/x"),
    ("CreateEndpointConfig", {"EndpointConfigName": "a" * 64}, "at most 63"),
    ("CreateEndpoint", {"EndpointName": "prod", "EndpointConfigName": "dogbreed"}, "endpoint name 'prod'"),
])
def test_check_request_refuses_raw_create_calls(operation, params, needle):
    with pytest.raises(validate.ValidationError, match=needle):
        validate.check_request(operation, params, strict=True)


def test_a_studio_role_is_a_warning_not_a_refusal(capsys):
    studio = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole-20250101T000000"
    validate.check_request("CreateTrainingJob", {"TrainingJobName": TRAIN, "RoleArn": studio})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dogbreed: warning: ") and "iam/dogbreed-launcher-policy.json line 22" in err[0]
    with pytest.raises(validate.ValidationError, match="AmazonSageMaker-ExecutionRole"):
        validate.check_request("CreateTrainingJob", {"TrainingJobName": TRAIN, "RoleArn": studio}, strict=True)


def test_an_image_in_another_region_is_refused_in_one_line():
    params = {"TrainingJobName": TRAIN, "RoleArn": ROLE,
              "AlgorithmSpecification": {"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dogbreed-train:a"}}
    with pytest.raises(validate.ValidationError, match="is in us-east-1, the job in eu-west-1"):
        validate.check_request("CreateTrainingJob", params, region="eu-west-1")
    validate.check_request("CreateTrainingJob", params, region="us-east-1")


def test_check_request_lets_good_and_other_calls_through():
    validate.check_request("CreateTrainingJob", {"TrainingJobName": TRAIN, "RoleArn": ROLE})
    validate.check_request("CreateEndpoint", {"EndpointName": "dogbreed", "EndpointConfigName": "dogbreed"})
    validate.check_request("DescribeTrainingJob", {"TrainingJobName": "anything at all"})


def test_generated_job_names_fit_what_aws_and_the_policy_take():
    from dogbreed.launch.jobs import job_name

    for kind, resource in [("train", "training-job"), ("hpo", "hyper-parameter-tuning-job"), ("model", "model")]:
        names = [job_name(kind) for _ in range(20)]
        assert names[0] != names[1]  # two launches in the same second
        for name in names:
            assert validate.name_problem(resource, name) is None, name
    # a tuning job's trials are named <tuning job>-NNN-xxxxxxxx by AWS: they must still fit a training job name
    assert validate.name_problem("training-job", f"{job_name('hpo')}-001-1a2b3c4d") is None


def test_deploy_checks_the_endpoint_config_name_it_sends():
    """endpoints.deploy names the endpoint config after the model (a redeploy makes a new one): the config is
    checked under the model's name, never the endpoint's."""
    config = _config({"strict_policy": True})
    with pytest.raises(validate.ValidationError) as info:
        validate.check_deploy(config, "mnist-model", "dogbreed-endpoint")
    assert "model name 'mnist-model'" in str(info.value) and "endpoint config name 'mnist-model'" in str(info.value)
    with pytest.raises(validate.ValidationError) as info:
        validate.check_deploy(config, "dogbreed-model", "prod")
    assert "endpoint name 'prod'" in str(info.value) and "endpoint config" not in str(info.value)
