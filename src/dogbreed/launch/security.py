"""VPC, KMS and network isolation: one typed snapshot of the config's settings, checked, and the request fields
each Create call takes (training, tuning, models, endpoint configs, transform).

    vpc = { subnets = ["subnet-0abc..."], security_group_ids = ["sg-0abc..."] }
    kms_key = "arn:aws:kms:eu-west-1:123456789012:key/..."        # volume and output; or
    kms_key = { volume = "alias/dogbreed-volume", output = "alias/dogbreed-output" }
    network_isolation = false

A domain whose IAM conditions require them (``sagemaker:VpcSubnets``, ``sagemaker:VolumeKmsKey``,
``sagemaker:NetworkIsolation``) refuses every Create call without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
KMS_KEY = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|alias/[a-zA-Z0-9/_-]+|"
                     r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:(key/[0-9a-f-]{36}|alias/[a-zA-Z0-9/_-]+)")


@dataclass(frozen=True)
class Security:
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    network_isolation: bool = False

    @property
    def vpc(self) -> dict | None:
        """The API's VpcConfig, or None when no VPC is set."""
        if not self.subnets:
            return None
        return {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}


def read(config) -> Security:
    vpc = config.get("vpc") or {}
    key = config.get("kms_key")
    volume, output = (key.get("volume"), key.get("output")) if isinstance(key, dict) else (key, key)
    return Security(tuple(vpc.get("subnets") or ()), tuple(vpc.get("security_group_ids") or ()),
                    volume or None, output or None, bool(config.get("network_isolation")))


def problem(config) -> str | None:
    """What AWS would refuse in the settings: ids it does not take, a VPC half set, a key in another region."""
    found, security = [], read(config)
    if bool(security.subnets) != bool(security.security_group_ids):
        found.append("vpc needs both subnets and security_group_ids (or neither)")
    if len(security.subnets) > 16 or len(security.security_group_ids) > 5:
        found.append("vpc takes at most 16 subnets and 5 security groups")
    found += [f"vpc.subnets: {s!r} is not a subnet id (subnet-...)" for s in security.subnets if not SUBNET.fullmatch(s)]
    found += [f"vpc.security_group_ids: {g!r} is not a security group id (sg-...)"
              for g in security.security_group_ids if not SECURITY_GROUP.fullmatch(g)]
    for what, key in (("volume", security.volume_kms_key), ("output", security.output_kms_key)):
        match = KMS_KEY.fullmatch(key) if key else None
        if key and not match:
            found.append(f"kms_key ({what}) {key!r} is not a KMS key id, alias, or ARN")
        elif match and match["region"] and config.get("region") and match["region"] != config["region"]:
            found.append(f"kms_key ({what}) is in {match['region']}, the jobs in {config['region']}")
    return "; ".join(dict.fromkeys(found)) or None


def model_fields(security: Security) -> dict:
    """CreateModel's: the VPC the container runs in, and network isolation."""
    fields = {"VpcConfig": security.vpc} if security.vpc else {}
    return {**fields, **({"EnableNetworkIsolation": True} if security.network_isolation else {})}


def endpoint_config_fields(security: Security) -> dict:
    return {"KmsKeyId": security.volume_kms_key} if security.volume_kms_key else {}


def apply_to_training(request: dict, security: Security) -> dict:
    """A CreateTrainingJob request, or a tuning job's TrainingJobDefinition (the same members), with the VPC, the
    network isolation and both KMS keys set. SDK v3's tuner drops the volume key and network isolation from the
    trainer it is given, so the tuning request gets them here too (``jobs.start_tuning``)."""
    if security.vpc:
        request["VpcConfig"] = security.vpc
    if security.network_isolation:
        request["EnableNetworkIsolation"] = True
    if security.output_kms_key:
        request.setdefault("OutputDataConfig", {})["KmsKeyId"] = security.output_kms_key
    if security.volume_kms_key:
        request.setdefault("ResourceConfig", {})["VolumeKmsKeyId"] = security.volume_kms_key
    return request
