"""boto3 / SageMaker sessions from the configuration (AWS_ENDPOINT_URL points them at moto in tests)."""

from __future__ import annotations

SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def boto_session(config):
    import boto3

    from .config import ConfigError

    if not config.get("region"):
        raise ConfigError("no AWS region: set region in the config, --region, or AWS_REGION")
    return boto3.Session(region_name=config["region"])


def sagemaker_session(config):
    import sagemaker

    boto = boto_session(config)
    return sagemaker.Session(boto_session=boto, default_bucket=config.get("bucket"), sagemaker_config=SDK_CONFIG)
