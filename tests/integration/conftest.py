"""Fixtures of the integration tests: docker (images, compose) and moto's in-process AWS (``aws``)."""

import shutil

import pytest
from moto import mock_aws

from tests.conftest import IN_CI
from tests.docker_support import build_images, remove_containers, sh

REGION = "eu-west-1"  # the region of the moto tests' configs and clients


@pytest.fixture(scope="session")
def images(docker):
    built = build_images()
    yield built
    remove_containers()


@pytest.fixture(scope="session")
def compose():
    if not (shutil.which("docker-compose") or sh("docker", "compose", "version", check=False).returncode == 0):
        if IN_CI:
            pytest.fail("docker compose is required for SageMaker local mode in CI")
        pytest.skip("no docker compose here (apt-get install docker-compose)")


@pytest.fixture
def aws(monkeypatch):
    """moto's AWS in process, with the "dogbreed-test" bucket; yields a SageMaker client on it."""
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        import boto3

        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="dogbreed-test", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield boto3.client("sagemaker", region_name=REGION)
