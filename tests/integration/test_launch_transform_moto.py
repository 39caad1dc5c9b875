"""`dogbreed transform` against moto: the CreateModel and CreateTransformJob it sends, checked against botocore's
service model; what is refused before any call; the model gone once a waited job ends."""

from __future__ import annotations

import pytest

from dogbreed.launch import apimodel
from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import SERVE_IMAGE, SERVE_IMAGE_CPU, _cli, serving_config

MODEL = ["--model-data", "s3://dogbreed-test/runs/models/j/output/model.tar.gz"]
IO = ["--input", "s3://dogbreed-test/photos/", "--output", "s3://dogbreed-test/answers/"]


@pytest.fixture
def config(tmp_path) -> str:
    return str(serving_config(tmp_path))


@pytest.fixture
def photos(aws):
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    for name in ("a.jpg", "b.jpg", "sub/c.png"):
        s3.put_object(Bucket="dogbreed-test", Key=f"photos/{name}", Body=b"\xff\xd8\xff" + b"0" * 1000)
    return s3


def _printed(out: str, key: str) -> str:
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith(f"{key}="))


def _sent(aws, out: str) -> tuple[dict, dict | None]:
    job = aws.describe_transform_job(TransformJobName=_printed(out, "transform_job"))
    models = {m["ModelName"] for m in aws.list_models()["Models"]}
    model = aws.describe_model(ModelName=job["ModelName"]) if job["ModelName"] in models else None
    return job, model


def test_one_photo_per_object_on_a_cpu_instance(aws, config, photos, capsys):
    code, out, err = _cli(["transform", "--config", config, *MODEL, *IO], capsys)
    assert code == 0, err
    job, model = _sent(aws, out)
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE_CPU
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "600"}
    assert job["TransformInput"] == {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                     "S3Uri": "s3://dogbreed-test/photos/"}},
                                     "ContentType": "application/x-image", "SplitType": "None"}
    assert job["TransformOutput"] == {"S3OutputPath": "s3://dogbreed-test/answers/", "Accept": "application/json",
                                      "AssembleWith": "None"}
    assert job["TransformResources"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}  # no AMI on a CPU
    assert (job["BatchStrategy"], job["MaxPayloadInMB"]) == ("SingleRecord", 6)
    assert job["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600, "InvocationsMaxRetries": 1}
    sent = {k: job[k] for k in ("TransformJobName", "ModelName", "MaxPayloadInMB", "BatchStrategy", "ModelClientConfig",
                                "TransformInput", "TransformOutput", "TransformResources")}
    assert apimodel.problems("CreateTransformJob", sent) == []
    assert "delete-model --model-name" in out  # not waited: the model stays, and the user is told


def test_json_lines_on_a_gpu_instance_get_the_cuda_image_and_the_ami(aws, config, photos, capsys):
    code, out, err = _cli(["transform", "--config", config, *MODEL, *IO, "--instance-type", "ml.g4dn.xlarge",
                           "--instance-count", "2", "--split-type", "Line", "--batch-strategy", "MultiRecord",
                           "--content-type", "application/jsonlines", "--max-payload-mb", "20"], capsys)
    assert code == 0, err
    job, model = _sent(aws, out)
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE
    assert job["TransformResources"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2,
                                         "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535"}
    assert job["TransformInput"]["SplitType"] == "Line" and job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformOutput"]["AssembleWith"] == "Line" and job["TransformOutput"]["Accept"] == "application/jsonlines"
    assert (job["BatchStrategy"], job["MaxPayloadInMB"]) == ("MultiRecord", 20)


def test_wait_deletes_the_model_once_the_job_ends(aws, config, photos, capsys):
    code, out, err = _cli(["transform", "--config", config, *MODEL, *IO, "--wait"], capsys)
    assert code == 0, err
    job, model = _sent(aws, out)
    assert job["TransformJobStatus"] == "Completed" and model is None
    assert aws.list_models()["Models"] == []
    assert f"deleted model {_printed(out, 'model')}" in out


@pytest.mark.parametrize("argv,extra,needle", [
    (["--max-payload-mb", "1"], [("big.jpg", 2 * 1024 * 1024)], "1 of 4 input objects exceed --max-payload-mb 1: photos/big.jpg"),
    (["--max-payload-mb", "101"], [], "--max-payload-mb must be 1 to 100"),
    (["--split-type", "Line"], [], "--split-type Line sends JSON lines"),
    (["--instance-type", "ml.p3.2xlarge"], [], "no kernels for it"),
    (["--input", "s3://dogbreed-test/nothing/"], [], "no objects there"),
    (["--output", "answers/"], [], "--output 'answers/' is not an S3 URI"),
])
def test_refused_in_one_line_before_any_call(aws, config, photos, capsys, argv, extra, needle):
    for key, size in extra:
        photos.put_object(Bucket="dogbreed-test", Key=f"photos/{key}", Body=b"0" * size)
    io = IO if "--input" not in argv else IO[2:]
    code, _, err = _cli(["transform", "--config", config, *MODEL, *io, *argv], capsys)
    assert code == 1 and err.count("\n") == 1 and needle in err, err
    assert aws.list_models()["Models"] == [] and aws.list_transform_jobs()["TransformJobSummaries"] == []


def test_a_request_off_the_service_model_is_refused_before_the_model_is_made(aws, config, photos, capsys):
    """The service model check stands behind the flags' choices: a config value botocore's enum lacks."""
    with open(config, "a") as handle:
        handle.write('[transform]\nbatch_strategy = "EveryRecord"\n')
    code, _, err = _cli(["transform", "--config", config, *MODEL, *IO], capsys)
    assert code == 1 and "CreateTransformJob.BatchStrategy: 'EveryRecord' is not one of the API's values" in err, err
    assert aws.list_models()["Models"] == []
