"""VPC, KMS and network isolation: one typed snapshot per request kind, checked, and the fields each Create call
takes (training and tuning, models, endpoint configs, transform).

    vpc = { subnets = ["subnet-0abc..."], security_group_ids = ["sg-0abc..."] }
    kms_key = "arn:aws:kms:eu-west-1:123456789012:key/..."        # volume and output; or
    kms_key = { volume = "arn:aws:kms:...:key/...", output = "alias/dogbreed-output" }
    network_isolation = false

The SageMaker SDK's config (the admin's and the user's files, merged: ``session.sdk_config``) gives the defaults,
per resource (``SageMaker.TrainingJob.VpcConfig``, ``SageMaker.EndpointConfig.KmsKeyId``, ...), and dogbreed.toml's
settings win where they are set, as explicit arguments win over that config in the SDK itself. A domain whose IAM
conditions require them (``sagemaker:VpcSubnets``, ``sagemaker:VolumeKmsKey``, ``sagemaker:NetworkIsolation``)
refuses every Create call without them, so an admin's defaults must reach the requests we build ourselves.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from . import instances

SUBNET = re.compile(r"subnet-[0-9a-f]{8,17}")
SECURITY_GROUP = re.compile(r"sg-[0-9a-f]{8,17}")
_KEY_ID = r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}|mrk-[0-9a-f]{32}"  # single-Region, or Multi-Region (mrk-)
_ALIAS = r"alias/[a-zA-Z0-9/_-]+"
_ARN = r"arn:aws[a-z-]*:kms:(?P<region>[a-z0-9-]+):\d{12}:"
KMS_KEY = re.compile(rf"(?:{_KEY_ID})|{_ARN}key/(?:{_KEY_ID})")  # a key ID or key ARN
KMS_KEY_OR_ALIAS = re.compile(rf"(?:{_KEY_ID})|{_ALIAS}|{_ARN}(?:key/(?:{_KEY_ID})|{_ALIAS})")

RESOURCES = ("training", "model", "endpoint_config", "transform")
# Where each resource's defaults sit in the SDK's config (under "SageMaker"), per setting.
SDK_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "training": {"vpc": ("TrainingJob", "VpcConfig"), "network_isolation": ("TrainingJob", "EnableNetworkIsolation"),
                 "volume": ("TrainingJob", "ResourceConfig", "VolumeKmsKeyId"),
                 "output": ("TrainingJob", "OutputDataConfig", "KmsKeyId")},
    "model": {"vpc": ("Model", "VpcConfig"), "network_isolation": ("Model", "EnableNetworkIsolation")},
    "endpoint_config": {"volume": ("EndpointConfig", "KmsKeyId"),
                        "output": ("EndpointConfig", "AsyncInferenceConfig", "OutputConfig", "KmsKeyId")},
    "transform": {"volume": ("TransformJob", "TransformResources", "VolumeKmsKeyId"),
                  "output": ("TransformJob", "TransformOutput", "KmsKeyId")},
}
# The API field each volume key goes to; only training's takes no alias ("KMS Key ID" or "ARN of a KMS Key").
VOLUME_FIELD = {"training": "ResourceConfig.VolumeKmsKeyId", "endpoint_config": "KmsKeyId",
                "transform": "TransformResources.VolumeKmsKeyId"}


@dataclass(frozen=True)
class Security:
    """What one request kind gets: the settings it takes, where each was set (for the messages), and why a volume
    key is left out (an instance type with local storage)."""

    resource: str = "training"
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    volume_kms_key: str | None = None
    output_kms_key: str | None = None
    network_isolation: bool = False
    origins: tuple[tuple[str, str], ...] = ()  # (setting, where it was set)
    notice: str | None = None

    @property
    def vpc(self) -> dict | None:
        """The API's VpcConfig, or None when no VPC is set."""
        if not self.subnets:
            return None
        return {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_group_ids)}

    def origin(self, setting: str) -> str:
        return dict(self.origins).get(setting, setting)


def _dig(tree: dict | None, path: tuple[str, ...]):
    for key in ("SageMaker",) + path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def sdk_defaults(sdk_config: dict | None, resource: str) -> dict:
    """{setting: (value, where)} of the SDK config's values for one resource."""
    found = {}
    for setting, path in SDK_PATHS[resource].items():
        value = _dig(sdk_config, path)
        if value is not None:
            found[setting] = (value, f"SageMaker.{'.'.join(path)} in the SageMaker config")
    return found


def toml_settings(config) -> dict:
    """{setting: (value, where)} of what dogbreed.toml (or a flag) sets; a setting left out is absent."""
    found, vpc, key = {}, config.get("vpc") or {}, config.get("kms_key")
    if vpc.get("subnets") or vpc.get("security_group_ids"):
        found["vpc"] = ({"Subnets": vpc.get("subnets") or [], "SecurityGroupIds": vpc.get("security_group_ids") or []}, "vpc")
    volume, output = (key.get("volume"), key.get("output")) if isinstance(key, dict) else (key, key)
    found.update({name: (value, f"kms_key ({name})") for name, value in (("volume", volume), ("output", output)) if value})
    if config.get("network_isolation") is not None:
        found["network_isolation"] = (bool(config.get("network_isolation")), "network_isolation")
    return found


def read(config, sdk_config: dict | None = None, resource: str = "training", instance_type: str | None = None) -> Security:
    """The snapshot one request kind is built and checked from: the SDK config's defaults for ``resource``, then
    dogbreed.toml's settings. On an instance type with local storage the volume key is left out (``notice`` says so)."""
    merged = {name: item for name, item in {**sdk_defaults(sdk_config, resource), **toml_settings(config)}.items()
              if name in SDK_PATHS[resource]}  # only what this resource's request takes
    value = {name: item[0] for name, item in merged.items()}
    vpc, volume, notice = value.get("vpc") or {}, value.get("volume"), None
    if volume and resource in VOLUME_FIELD and instances.has_local_storage(instance_type):
        notice = (f"{instance_type} keeps its storage on local NVMe disks that its hardware encrypts: no "
                  f"{VOLUME_FIELD[resource]} sent for {merged['volume'][1]} (AWS refuses one on such types)")
        volume = None
    return Security(resource, tuple(vpc.get("Subnets") or ()), tuple(vpc.get("SecurityGroupIds") or ()),
                    volume, value.get("output"),
                    bool(value.get("network_isolation")), tuple((k, v[1]) for k, v in merged.items()), notice)


def for_request(config, request: str, sdk_config: dict | None = None) -> dict[str, Security]:
    """The snapshots a request kind is built and checked from, on the instance types it runs on: training and
    tuning, the training job's; deploy, the model's and the endpoint config's; transform, the model's and the job's."""
    if request in ("training", "tuning"):
        instance = (config["tuning"].get("instance_type") if request == "tuning" else None) or config["training"]["instance_type"]
        return {"training": read(config, sdk_config, "training", instance)}
    if request == "deploy":
        serving = config["serving"]
        instance = None if serving.get("serverless") else serving.get("instance_type")
        return {"model": read(config, sdk_config, "model"),
                "endpoint_config": read(config, sdk_config, "endpoint_config", instance)}
    return {"model": read(config, sdk_config, "model"),
            "transform": read(config, sdk_config, "transform", config["transform"]["instance_type"])}


def tell(security: Security, out=None) -> None:
    """The snapshot's notice, one line on stderr."""
    if security.notice:
        (out or (lambda line: print(line, file=sys.stderr)))(f"dogbreed: notice: {security.notice}")


def _key_problem(security: Security, setting: str, key: str | None, region: str | None) -> str | None:
    takes_alias = not (setting == "volume" and security.resource == "training")
    match = (KMS_KEY_OR_ALIAS if takes_alias else KMS_KEY).fullmatch(key) if key else None
    where = security.origin(setting)
    if key and not match:
        what = ("a KMS key ID, alias, or ARN" if takes_alias
                else f"a KMS key ID or key ARN ({VOLUME_FIELD['training']} takes no alias)")
        return f"{where} {key!r} is not {what}"
    if match and match["region"] and region and match["region"] != region:
        return f"{where} is in {match['region']}, the jobs in {region}"
    return None


def problem(security: Security, region: str | None) -> str | None:
    """What AWS would refuse in one snapshot: ids it does not take, a VPC half set, a key in another region or of a
    form the field does not take."""
    found, vpc = [], security.origin("vpc")
    if bool(security.subnets) != bool(security.security_group_ids):
        found.append(f"{vpc} needs both subnets and security_group_ids (or neither)")
    if len(security.subnets) > 16 or len(security.security_group_ids) > 5:
        found.append(f"{vpc} takes at most 16 subnets and 5 security groups")
    found += [f"{vpc}: {s!r} is not a subnet id (subnet-...)" for s in security.subnets if not SUBNET.fullmatch(s)]
    found += [f"{vpc}: {g!r} is not a security group id (sg-...)"
              for g in security.security_group_ids if not SECURITY_GROUP.fullmatch(g)]
    found += [_key_problem(security, "volume", security.volume_kms_key, region),
              _key_problem(security, "output", security.output_kms_key, region)]
    return "; ".join(dict.fromkeys(p for p in found if p)) or None


def model_fields(security: Security) -> dict:
    """CreateModel's: the VPC the container runs in, and network isolation."""
    fields = {"VpcConfig": security.vpc} if security.vpc else {}
    return {**fields, **({"EnableNetworkIsolation": True} if security.network_isolation else {})}


def endpoint_config_fields(security: Security) -> dict:
    return {"KmsKeyId": security.volume_kms_key} if security.volume_kms_key else {}


def apply_to_training(request: dict, security: Security) -> dict:
    """A CreateTrainingJob request, or a tuning job's TrainingJobDefinition (the same members), set to the snapshot:
    the VPC, network isolation and both KMS keys, whatever the SDK put there (ModelTrainer takes the SDK config's
    VPC and isolation itself but drops its KMS keys when given its own output and compute; SDK v3's tuner drops the
    volume key and isolation from the trainer it is given: ``jobs.start_tuning``)."""
    request.pop("VpcConfig", None)
    if security.vpc:
        request["VpcConfig"] = security.vpc
    request["EnableNetworkIsolation"] = security.network_isolation
    if security.output_kms_key:
        request.setdefault("OutputDataConfig", {})["KmsKeyId"] = security.output_kms_key
    resources = request.get("ResourceConfig") or {}
    resources.pop("VolumeKmsKeyId", None)
    if security.volume_kms_key:
        request["ResourceConfig"] = {**resources, "VolumeKmsKeyId": security.volume_kms_key}
    return request
