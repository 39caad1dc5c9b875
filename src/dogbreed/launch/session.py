"""boto3 / SageMaker (SDK v3) sessions from the configuration (AWS_ENDPOINT_URL points them at moto in tests)."""

from __future__ import annotations

import copy
import os

from . import validate
from .config import settle_region

# SDK v3's ModelTrainer checks the execution role itself (iam:SimulatePrincipalPolicy, iam:GetRole) unless this
# is "false". The launcher policy (iam/dogbreed-launcher-policy.json) grants no IAM reads, only iam:PassRole on
# our role, and validate.role_problem checks the role before any request: the SDK's own check is turned off.
SDK_ROLE_CHECK = "SAGEMAKER_VALIDATE_ROLE"
OUR_SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def sdk_config() -> dict:
    """The admin's and the user's SageMaker config files (/etc/xdg/sagemaker/config.yaml, then
    ~/.config/sagemaker/config.yaml, or SAGEMAKER_ADMIN_CONFIG_OVERRIDE / SAGEMAKER_USER_CONFIG_OVERRIDE: the SDK's own
    lookup and merge), with our telemetry opt-out merged in: handing the SDK a config of our own would replace theirs,
    and with it an admin's defaults (VPC, KMS, tags) for everything the SDK builds."""
    from botocore.utils import merge_dicts
    from sagemaker.core.config.config import load_sagemaker_config

    merged = load_sagemaker_config()
    merge_dicts(merged, copy.deepcopy(OUR_SDK_CONFIG))
    return merged


def boto_session(config):
    import boto3  # the AWS SDKs load when a verb talks to AWS, not for `dogbreed --help`

    session = boto3.Session(region_name=settle_region(config))  # the config's, the environment's or the profile's
    check_create_requests(session, strict=validate.strict_policy(config))
    return session


def check_create_requests(boto, strict: bool = False) -> None:
    """Refuse, before it is sent, any SageMaker Create* request whose names or role the launcher policy does
    not grant or AWS does not take (validate.check_request), or that breaks botocore's service model (its enums,
    lengths and patterns: validate.check_api_model), whoever built it: us or the SDK. Registered on the
    boto3 session, so that it holds for every client made from it (SDK v3's resources make their own)."""

    def before(params, model, **_):
        validate.check_request(model.name, params, region=boto.region_name, strict=strict)
        validate.check_api_model(model.name, params)

    boto.events.register("before-parameter-build.sagemaker", before, unique_id="dogbreed-validate")


def sdk_config_of(session) -> dict:
    """The merged SDK config a SageMaker session carries (``sagemaker_session``), whose values are the defaults of
    the requests the launchers build themselves (``security.read``); none for a session without one."""
    return getattr(session, "sagemaker_config", None) or {}


def sagemaker_session(config):
    """SDK v3's session (``sagemaker.core``) on our boto3 session: the admin's and user's SDK config, telemetry off."""
    from sagemaker.core.helper.session_helper import Session  # SDK v3 takes seconds to import: only here

    os.environ.setdefault(SDK_ROLE_CHECK, "false")
    boto = boto_session(config)
    return Session(boto_session=boto, default_bucket=config.get("bucket"), sagemaker_config=sdk_config())
