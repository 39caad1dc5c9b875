"""Batch Transform (``dogbreed transform``): a bucket of photos classified by SageMaker's own engine.

A model (our serve image for the instance: CPU image on CPU types, CUDA image with TransformAmiVersion on GPU
types) and a transform job over an S3 prefix:

- one photo per S3 object (``split_type = "None"``, an image content type): each output object
  ``<output>/<input key>.out`` holds that photo's answer;
- JSON lines (``split_type = "Line"``, ``application/jsonlines``, ``MultiRecord``): one answer line per input line,
  in order (``AssembleWith = Line``).

Everything is checked before the first call: our rules (validate.check_transform), the request against botocore's
service model, and, for one photo per object, every object's size against MaxPayloadInMB. The model exists for
the job only: with ``wait`` it is deleted when the job ends, whatever the outcome; otherwise its name is printed.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import ConfigError
from . import endpoints, instances, security, validate
from .config import Config
from .session import sdk_config_of
from .waits import job_name, poll_seconds, wait_for

MB = 1024 * 1024
INVOCATION_TIMEOUT_S = endpoints.SERVER_TIMEOUT_S["transform"]  # ModelClientConfig's, and the server's own
TRANSFORM_TAG = "dogbreed:transform"


@dataclass
class TransformPlan:
    job: str
    model: endpoints.ModelPlan
    input_uri: str
    output_uri: str


def plan(config: Config, session, model_data: str, input_uri: str, output_uri: str, name: str | None = None) -> TransformPlan:
    config.require("role", "serve_image")
    image, _ = instances.serve_image(config, config["transform"]["instance_type"], False)
    model = endpoints.ModelPlan(name=job_name("model"), image=image, model_data=model_data, role=config["role"],
                                session=session, env=endpoints.model_environment(config, "transform"))
    return TransformPlan(name or job_name("transform"), model, input_uri, output_uri)


def request(config: Config, job: TransformPlan, settings: security.Security | None = None) -> dict:
    """CreateTransformJob's parameters, in the API's form; ``settings`` the job's snapshot (``security.for_request``,
    with the SDK config's defaults), else the config's alone."""
    settings, transform = settings or security.for_request(config, "transform")["transform"], config["transform"]
    lines = transform.get("split_type") == "Line"
    output = {"S3OutputPath": job.output_uri, "Accept": "application/jsonlines" if lines else "application/json",
              "AssembleWith": "Line" if lines else "None"}
    resources = {"InstanceType": transform["instance_type"], "InstanceCount": int(transform.get("instance_count", 1)),
                 **instances.transform_ami(transform["instance_type"])}
    if settings.output_kms_key:
        output["KmsKeyId"] = settings.output_kms_key
    if settings.volume_kms_key:
        resources["VolumeKmsKeyId"] = settings.volume_kms_key
    made = {
        "TransformJobName": job.job, "ModelName": job.model.name,
        "MaxPayloadInMB": int(transform.get("max_payload_mb") or 6), "BatchStrategy": transform["batch_strategy"],
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": INVOCATION_TIMEOUT_S, "InvocationsMaxRetries": 1},
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": job.input_uri}},
                           "ContentType": transform["content_type"], "SplitType": transform.get("split_type") or "None"},
        "TransformOutput": output, "TransformResources": resources,
        "Tags": [{"Key": str(k), "Value": str(v)} for k, v in {**(config.get("tags") or {}), TRANSFORM_TAG: job.job}.items()],
    }
    if transform.get("max_concurrent"):
        made["MaxConcurrentTransforms"] = int(transform["max_concurrent"])
    return made


def check_inputs(s3, config: Config, input_uri: str) -> int:
    """The input prefix holds objects, and, one photo per object, none over MaxPayloadInMB; returns their count."""
    bucket, _, prefix = input_uri.removeprefix("s3://").partition("/")
    limit = int(config["transform"].get("max_payload_mb") or 6)
    count, too_big = 0, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            count += 1
            if item["Size"] > limit * MB:
                too_big.append(f"{item['Key']} ({item['Size'] / MB:.1f} MB)")
    if not count:
        raise ConfigError(f"--input {input_uri}: no objects there")
    if too_big and config["transform"].get("split_type", "None") == "None":
        raise ConfigError(f"{len(too_big)} of {count} input objects exceed --max-payload-mb {limit}: "
                          f"{', '.join(too_big[:3])}{' ...' if len(too_big) > 3 else ''}")
    return count


def start(config: Config, job: TransformPlan, s3=None) -> dict:
    """Check everything, then CreateModel and CreateTransformJob; a refused transform job deletes the model again."""
    snapshots = security.for_request(config, "transform", sdk_config_of(job.model.session))
    validate.check_transform(config, job.model.name, job.job, job.model.image,
                             {"--input": job.input_uri, "--output": job.output_uri, "--model-data": job.model.model_data},
                             snapshots)
    made = request(config, job, snapshots["transform"])
    validate.check_api_model("CreateTransformJob", made)
    if s3 is not None:
        check_inputs(s3, config, job.input_uri)
    security.tell(snapshots["transform"])
    client, settings = job.model.session.sagemaker_client, snapshots["model"]
    tags = [{"Key": str(k), "Value": str(v)} for k, v in {**(config.get("tags") or {}), TRANSFORM_TAG: job.job}.items()]
    client.create_model(ModelName=job.model.name, ExecutionRoleArn=job.model.role, Tags=tags,
                        PrimaryContainer={"Image": job.model.image, "ModelDataUrl": job.model.model_data,
                                          "Environment": dict(job.model.env)}, **security.model_fields(settings))
    try:
        client.create_transform_job(**made)
    except Exception:
        endpoints.remove(client, [("model", job.model.name)])
        raise
    return made


def run(config: Config, job: TransformPlan, s3=None, wait: bool = False, out=None) -> dict | None:
    """Start the job; with ``wait``, wait for it, then delete its model (the job's outcome is raised or returned)."""
    out = out or (lambda line: print(line, file=sys.stdout, flush=True))
    start(config, job, s3)
    if not wait:
        return None
    client = job.model.session.sagemaker_client
    try:
        return wait_for(client, "transform", job.job, poll_s=poll_seconds(config), out=out)
    finally:
        endpoints.remove(client, [("model", job.model.name)], out)
