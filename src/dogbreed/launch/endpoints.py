"""Endpoints: the model, its endpoint config and the endpoint; a redeploy that swaps them; a delete that leaves nothing.

Each deploy creates a new model and an endpoint config of the same name (``dogbreed-model-<time>-<random>``), both
tagged ``dogbreed:endpoint=<endpoint>``. To a new endpoint name it then sends CreateEndpoint; to an existing one,
UpdateEndpoint, and once the endpoint is InService on the new config, deletes the config and models it replaced
(``keep_old`` keeps them). Whatever fails on the way, what this deploy created and nothing uses is deleted again,
so a failed deploy leaves no orphan. ``delete_endpoint`` removes the endpoint and every model and config tagged
for it (those a ``keep_old`` deploy left too).

An endpoint config cannot be deleted while an UpdateEndpoint runs on it: a detached redeploy (``wait=False``)
keeps the old config and model, and says so; ``dogbreed delete`` removes them with the endpoint.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ..errors import ConfigError
from . import instances, security, validate
from .config import Config
from .session import sdk_config_of
from .waits import JobError, job_name, poll_seconds, wait_for

ENDPOINT_TAG = "dogbreed:endpoint"  # on every model and endpoint config a deploy makes: what `delete` removes
OUR_MODELS = "dogbreed"  # the names our models and configs start with (job_name): what `delete` lists

# The model server's answer timeout (SAGEMAKER_MODEL_SERVER_TIMEOUT), as each mode allows: a real-time or serverless
# invocation ends at 60 s on AWS's side, an async one may take an hour, a transform request 600 s (the default
# ModelClientConfig.InvocationsTimeoutInSeconds, which transform.py sends).
SERVER_TIMEOUT_S = {"realtime": 60, "serverless": 60, "async": 3600, "transform": 600}
SERVERLESS_WORKERS = 1  # AWS's advice for serverless: one worker; its vCPUs follow the memory size and are few
SERVERLESS_PAYLOAD_MB = 4  # serverless endpoints take at most 4 MB a request (6 MB real-time)


@dataclass
class ModelPlan:
    """A model to create (``deploy`` creates it with the endpoint config and the endpoint): its name, image,
    artifacts, role and environment, and the SDK session that sends the requests."""

    name: str
    image: str
    model_data: str
    role: str
    session: object
    env: dict = field(default_factory=lambda: {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"})


def mode(config: Config) -> str:
    """``serverless``, ``async`` (serving.async, deploy --async) or ``realtime``."""
    serving = config["serving"]
    return "serverless" if serving.get("serverless") else "async" if serving.get("async") else "realtime"


def model_environment(config: Config, how: str) -> dict[str, str]:
    """The serve container's settings for a mode: its answer timeout; serverless: one worker and the 4 MB limit;
    async: the payload the server takes (serving.async_max_payload_mb)."""
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT": str(SERVER_TIMEOUT_S[how])}
    if how == "serverless":
        env.update(SAGEMAKER_MODEL_SERVER_WORKERS=str(SERVERLESS_WORKERS), SAGEMAKER_MAX_PAYLOAD_IN_MB=str(SERVERLESS_PAYLOAD_MB))
    elif how == "async":
        env["SAGEMAKER_MAX_PAYLOAD_IN_MB"] = str(int(config["serving"].get("async_max_payload_mb", 100)))
    return env


def build_model(config: Config, session, model_data: str, name: str | None = None) -> ModelPlan:
    """The model a deploy creates: the serve image for the instance (instances.serve_image: CPU image for CPU
    instances and serverless, CUDA image for GPUs) and the mode's environment."""
    config.require("role", "serve_image")
    serving = config["serving"]
    image, _ = instances.serve_image(config, serving.get("instance_type"), bool(serving.get("serverless")))
    return ModelPlan(name=name or job_name("model"), image=image, model_data=model_data, role=config["role"],
                     session=session, env=model_environment(config, mode(config)))


def endpoint_variant(config: Config, model_name: str) -> dict:
    """The endpoint config's one variant: instances (with the AMI whose driver runs our CUDA on a GPU type), or
    serverless (memory and concurrency). Written in the API's form: SDK v3's shape serializer (sagemaker.core 2.27)
    turns ``memory_size_in_mb`` into ``MemorySizeInMb``, which botocore refuses."""
    serving = config["serving"]
    if serving.get("serverless"):
        serverless = {"MemorySizeInMB": int(serving.get("serverless_memory_mb", 4096)),
                      "MaxConcurrency": int(serving.get("serverless_max_concurrency", 5))}
        return {"VariantName": "AllTraffic", "ModelName": model_name, "ServerlessConfig": serverless}
    return {"VariantName": "AllTraffic", "ModelName": model_name, "InstanceType": serving["instance_type"],
            "InitialInstanceCount": int(serving.get("instance_count", 1)),
            **instances.inference_ami(serving["instance_type"])}


def data_capture(config: Config) -> dict | None:
    serving = config["serving"]
    if not serving.get("data_capture"):
        return None
    return {"EnableCapture": True, "InitialSamplingPercentage": int(serving.get("data_capture_percent", 20)),
            "DestinationS3Uri": f"{config.s3_root}/data-capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}


def async_config(config: Config, settings: security.Security | None = None) -> dict | None:
    """AsyncInferenceConfig: where answers go (serving.async_output), the SNS topics told of each, the KMS key
    (the endpoint config's snapshot: ``security.for_request``)."""
    serving = config["serving"]
    if not serving.get("async") or not serving.get("async_output"):
        return None
    output = {"S3OutputPath": serving["async_output"].rstrip("/") + "/",
              "S3FailurePath": serving["async_output"].rstrip("/") + "/failures/"}
    topics = {"SuccessTopic": serving.get("async_sns_success"), "ErrorTopic": serving.get("async_sns_error")}
    if any(topics.values()):
        output["NotificationConfig"] = {k: v for k, v in topics.items() if v}
    key = (settings or security.for_request(config, "deploy")["endpoint_config"]).output_kms_key
    return {"OutputConfig": {**output, **({"KmsKeyId": key} if key else {})}}


def _tags(config: Config, endpoint_name: str) -> list[dict]:
    tags = {**(config.get("tags") or {}), ENDPOINT_TAG: endpoint_name}
    return [{"Key": str(k), "Value": str(v)} for k, v in tags.items()]


def _create_model_and_config(config: Config, model: ModelPlan, endpoint_name: str, created: list,
                             snapshots: dict[str, security.Security]) -> None:
    client, settings = model.session.sagemaker_client, snapshots["endpoint_config"]
    container = {"Image": model.image, "ModelDataUrl": model.model_data, "Environment": dict(model.env)}
    client.create_model(ModelName=model.name, ExecutionRoleArn=model.role, PrimaryContainer=container,
                        Tags=_tags(config, endpoint_name), **security.model_fields(snapshots["model"]))
    created.append(("model", model.name))
    extra = {"DataCaptureConfig": data_capture(config), "AsyncInferenceConfig": async_config(config, settings)}
    client.create_endpoint_config(EndpointConfigName=model.name, Tags=_tags(config, endpoint_name),
                                  ProductionVariants=[endpoint_variant(config, model.name)],
                                  **{k: v for k, v in extra.items() if v}, **security.endpoint_config_fields(settings))
    created.append(("endpoint config", model.name))


def deploy(config: Config, model: ModelPlan, endpoint_name: str, wait: bool = True, poll_s: float | None = None,
           keep_old: bool = False, out=None):
    """Deploy ``model`` to ``endpoint_name`` (checked first): CreateEndpoint for a new endpoint, UpdateEndpoint for
    an existing one (see the module's doc). With ``wait``, return the endpoint's description once it is InService
    on the new config (``wait_for``, every ``poll_s`` seconds, default the config's wait.poll_s); without, None."""
    snapshots = security.for_request(config, "deploy", sdk_config_of(model.session))
    validate.check_deploy(config, model.name, endpoint_name, model.image, snapshots)
    security.tell(snapshots["endpoint_config"])
    out = out or (lambda line: print(line, file=sys.stdout, flush=True))
    client = model.session.sagemaker_client
    old = current(client, endpoint_name)  # (config, models, last modified) of an existing endpoint
    created: list[tuple[str, str]] = []
    try:
        _create_model_and_config(config, model, endpoint_name, created, snapshots)
        if old is None:
            client.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=model.name,
                                   Tags=_tags(config, endpoint_name))
            created.append(("endpoint", endpoint_name))
        else:
            client.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=model.name)
    except Exception:
        remove(client, created, out)
        raise
    if not wait:
        if old is not None:
            out(f"kept, in use until the update ends: endpoint config {old[0]}, models {', '.join(old[1])} (delete "
                f"them then, or `dogbreed delete {endpoint_name}` removes them with the endpoint)")
        return None
    described = _wait_deployed(client, config, endpoint_name, model.name, created, poll_s, out,
                               old[2] if old else None)
    if old is not None and not keep_old:
        remove(client, [("endpoint config", old[0])] + [("model", m) for m in old[1] if m != model.name], out)
    return described


def _settled(config_name: str, modified_before) -> object:
    """When a waited update is over: InService on the new config; or InService on the old one once the endpoint
    was seen Updating or modified since (AWS's rollback). InService on the old config straight after the call,
    before the update shows, is not the end."""
    seen = {"updating": False}

    def settled(described: dict) -> bool:
        if described.get("EndpointStatus") != "InService":
            seen["updating"] = True
            return False
        return (described.get("EndpointConfigName") == config_name or seen["updating"]
                or described.get("LastModifiedTime") != modified_before)

    return settled


def _wait_deployed(client, config: Config, endpoint_name: str, config_name: str, created: list, poll_s, out,
                   modified_before=None) -> dict:
    """Wait for the endpoint; if it did not come up on the new config, delete what this deploy made that nothing
    uses (a failed update rolls the endpoint back to its old config) and raise AWS's reason."""
    updating = ("endpoint", endpoint_name) not in created
    try:
        described = wait_for(client, "endpoint", endpoint_name, poll_s=poll_s if poll_s is not None else poll_seconds(config),
                             out=out, until=_settled(config_name, modified_before) if updating else None)
        failure = None
    except JobError as exc:
        described, failure = client.describe_endpoint(EndpointName=endpoint_name), str(exc)
    on_new = described.get("EndpointConfigName") == config_name
    if on_new and failure is None:
        return described
    reason = failure or (f"endpoint {endpoint_name} stayed on {described.get('EndpointConfigName')}: "
                         f"{described.get('FailureReason') or 'no reason given'}")
    if ("endpoint", endpoint_name) in created or not on_new:  # a new endpoint that failed goes with its config and model
        remove(client, created, out)
        raise JobError(f"{reason} (what this deploy created is deleted)")
    raise JobError(f"{reason} (the endpoint is on the new config: `dogbreed delete {endpoint_name}` removes it)")


def is_gone(exc) -> bool:
    """Whether a ClientError says the resource does not exist. SageMaker answers a missing endpoint, config or model
    with a ValidationException "Could not find ..."; other ValidationExceptions (a bad name, an endpoint still
    creating or updating, which cannot be deleted yet) are real refusals and must not pass for "already gone"."""
    error = exc.response.get("Error", {})
    code, message = error.get("Code"), error.get("Message", "")
    return code == "ResourceNotFound" or (code == "ValidationException" and "could not find" in message.lower())


def current(client, endpoint_name: str) -> tuple[str, list[str], object] | None:
    """(endpoint config, its models, when it was last modified) of an existing endpoint; None where there is none."""
    from botocore.exceptions import ClientError

    try:
        described = client.describe_endpoint(EndpointName=endpoint_name)
    except ClientError as exc:
        if is_gone(exc):
            return None
        raise
    config_name = described["EndpointConfigName"]
    variants = client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    return config_name, [v["ModelName"] for v in variants], described.get("LastModifiedTime")


DELETE = {"endpoint": ("delete_endpoint", "EndpointName"), "endpoint config": ("delete_endpoint_config", "EndpointConfigName"),
          "model": ("delete_model", "ModelName")}


def remove(client, resources: list[tuple[str, str]], out=None) -> list[str]:
    """Delete each (kind, name), the endpoint first; returns what was deleted. A resource already gone is skipped."""
    from botocore.exceptions import ClientError

    order = {"endpoint": 0, "endpoint config": 1, "model": 2}
    deleted = []
    for kind, name in sorted(dict.fromkeys(resources), key=lambda r: order[r[0]]):
        method, key = DELETE[kind]
        try:
            getattr(client, method)(**{key: name})
        except ClientError as exc:
            if not is_gone(exc):
                raise
            continue
        deleted.append(f"{kind} {name}")
        if out:
            out(f"deleted {kind} {name}")
    return deleted


def tagged_for(client, endpoint_name: str) -> list[tuple[str, str]]:
    """Our models and endpoint configs tagged for ``endpoint_name``."""
    found = []
    for kind, lister, key, name_key, arn_key in (
            ("endpoint config", "list_endpoint_configs", "EndpointConfigs", "EndpointConfigName", "EndpointConfigArn"),
            ("model", "list_models", "Models", "ModelName", "ModelArn")):
        for page in client.get_paginator(lister).paginate(NameContains=OUR_MODELS):
            for item in page[key]:
                tags = client.list_tags(ResourceArn=item[arn_key]).get("Tags", [])
                if {"Key": ENDPOINT_TAG, "Value": endpoint_name} in tags:
                    found.append((kind, item[name_key]))
    return found


def delete_endpoint(client, endpoint_name: str) -> list[str]:
    """Remove the endpoint, its config and its models, and every model and config a deploy tagged for it; returns
    what was deleted."""
    now = current(client, endpoint_name)
    resources = [("endpoint", endpoint_name), ("endpoint config", now[0])] + [("model", m) for m in now[1]] if now else []
    resources += tagged_for(client, endpoint_name)
    if not resources:
        raise ConfigError(f"no endpoint {endpoint_name}, and no model or endpoint config tagged for it")
    return remove(client, resources)
