"""boto3 / SageMaker sessions from the configuration (AWS_ENDPOINT_URL points them at moto in tests)."""

from __future__ import annotations

from ..errors import ConfigError
from . import validate

SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def boto_session(config):
    import boto3  # the AWS SDKs load when a verb talks to AWS, not for `dogbreed --help`

    if not config.get("region"):
        raise ConfigError("no AWS region: set region in the config, --region, or AWS_REGION")
    return boto3.Session(region_name=config["region"])


def check_create_requests(client) -> None:
    """Refuse, before it is sent, any SageMaker Create* request whose names or role the launcher policy does
    not grant or AWS does not take (validate.check_request), whoever built it: us or the SDK."""

    def before(params, model, **_):
        validate.check_request(model.name, params)

    client.meta.events.register("before-parameter-build.sagemaker", before, unique_id="dogbreed-validate")


def sagemaker_session(config):
    import sagemaker  # the SageMaker SDK takes seconds to import: only where a session is made

    boto = boto_session(config)
    session = sagemaker.Session(boto_session=boto, default_bucket=config.get("bucket"), sagemaker_config=SDK_CONFIG)
    check_create_requests(session.sagemaker_client)
    return session
