"""Async endpoints against moto: deploy --async sends AsyncInferenceConfig and the hour-long server timeout;
invoke --async uploads each photo, calls InvokeEndpointAsync and prints the answer AWS writes to S3; every
mode's payload limit is checked before any call."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import _cli, serving_config

ANSWER = {"predictions": [[{"index": 3, "breed": "Beagle", "probability": 0.9}]]}


@pytest.fixture
def config(tmp_path) -> str:
    return str(serving_config(tmp_path, cpu_image=False))


def _photo(tmp_path, name: str = "dog.jpg", size: int = 2000):
    path = tmp_path / name
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8\xff")
        handle.truncate(size)  # sparse: the size is all that is checked before the call
    return path


def test_deploy_async_sends_async_inference_config_and_the_hour_timeout(aws, config, capsys):
    code, out, err = _cli(["deploy", "--config", config, "--model-data", "s3://dogbreed-test/m/model.tar.gz", "--async",
                           "--output", "s3://dogbreed-test/async-out", "--sns-error",
                           f"arn:aws:sns:{REGION}:123456789012:dogbreed-errors", "--endpoint-name", "dogbreed-async"], capsys)
    assert code == 0, err
    name = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("endpoint_config="))
    described = aws.describe_endpoint_config(EndpointConfigName=name)
    assert described["AsyncInferenceConfig"]["OutputConfig"] == {
        "S3OutputPath": "s3://dogbreed-test/async-out/", "S3FailurePath": "s3://dogbreed-test/async-out/failures/",
        "NotificationConfig": {"ErrorTopic": f"arn:aws:sns:{REGION}:123456789012:dogbreed-errors"}}
    environment = aws.describe_model(ModelName=name)["PrimaryContainer"]["Environment"]
    assert environment["SAGEMAKER_MODEL_SERVER_TIMEOUT"] == "3600"


@pytest.mark.parametrize("argv,needle", [
    (["--async"], "an async endpoint needs --output s3://"),
    (["--async", "--output", "s3://dogbreed-test/o/", "--serverless"], "async inference runs on instances"),
    (["--output", "s3://dogbreed-test/o/"], "add --async"),
])
def test_async_deploys_aws_refuses_are_one_line_before_any_call(aws, config, capsys, argv, needle):
    code, _, err = _cli(["deploy", "--config", config, "--model-data", "s3://dogbreed-test/m/model.tar.gz", *argv], capsys)
    assert code == 1 and err.count("\n") == 1 and needle in err, err
    assert aws.list_models()["Models"] == [] and aws.list_endpoint_configs()["EndpointConfigs"] == []


def test_invoke_async_uploads_invokes_and_prints_the_answer(aws, config, tmp_path, capsys):
    import boto3
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    backend = sagemakerruntime_backends["123456789012"][REGION]
    backend.async_results_queue += [(False, json.dumps(ANSWER)), (True, "the photo could not be decoded")]
    photos = [_photo(tmp_path, "a.jpg"), _photo(tmp_path, "b.jpg")]
    code, out, err = _cli(["invoke", "--config", config, "--endpoint", "dogbreed-async", "--async", "--poll-s", "0",
                           *map(str, photos)], capsys)
    assert code == 1, err  # one of the two failed
    assert f"{photos[0]}: Beagle 90.0%" in out.splitlines()
    assert f"{photos[1]}: error: the photo could not be decoded" in out.splitlines()
    # each photo went to S3 first, and InvokeEndpointAsync was given its location
    keys = [o["Key"] for o in boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket="dogbreed-test", Prefix="runs/async-input/dogbreed-async/")["Contents"]]
    assert sorted(k.rsplit("-", 1)[-1] for k in keys) == ["a.jpg", "b.jpg"]
    assert set(backend.async_results["dogbreed-async"]) == {f"s3://dogbreed-test/{k}" for k in keys}


@pytest.mark.parametrize("serverless,size_mb,needle", [
    (False, 7, "is 7.0 MB; a real-time endpoint takes at most 6 MB a request: deploy with --async"),
    (True, 5, "is 5.0 MB; a serverless endpoint takes at most 4 MB a request"),
])
def test_invoke_refuses_a_photo_over_the_endpoints_limit_before_the_call(aws, config, tmp_path, capsys, serverless,
                                                                         size_mb, needle):
    flags = ["--serverless"] if serverless else []
    code, _, err = _cli(["deploy", "--config", config, "--model-data", "s3://dogbreed-test/m/model.tar.gz",
                         "--endpoint-name", "dogbreed-limits", *flags], capsys)
    assert code == 0, err
    big = _photo(tmp_path, size=size_mb * 1024 * 1024)
    code, out, err = _cli(["invoke", "--config", config, "--endpoint", "dogbreed-limits", str(big)], capsys)
    assert code == 1 and err.count("\n") == 1 and needle in err, err


def test_invoke_async_refuses_over_a_gigabyte_before_any_upload(aws, config, tmp_path, capsys):
    import boto3

    big = _photo(tmp_path, size=1025 * 1024 * 1024)
    code, _, err = _cli(["invoke", "--config", config, "--endpoint", "dogbreed-async", "--async", str(big)], capsys)
    assert code == 1 and "an async endpoint takes at most 1024 MB a request" in err, err
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="dogbreed-test")
