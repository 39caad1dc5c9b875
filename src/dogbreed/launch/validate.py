"""What AWS rejects, caught before the call (moto accepts anything).

Every rule is one row of ``RULES``: the request it applies to (``training``, ``tuning``, ``deploy``), and a
check that returns the reason in one line, or None. The checks read our configuration and the names we are
about to send, not SDK objects, so they outlive the SDK in use (v3 today). ``check_request`` is the same
name and role check on the raw API parameters, run by a botocore hook (``session.py``) on every Create call,
so that a name the SDK makes up itself is checked too.

What AWS takes as a name, a role or an S3 URI, and what the launcher policy grants, is ``policy.py``'s: a name or
role outside the policy is a one-line warning, refused only with ``strict_policy = true`` (--strict-policy).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import apimodel, instances, security
from .config import Config, ConfigError
from .policy import (
    DEFAULT_PASSROLE_RESOURCE,
    DEFAULT_SAGEMAKER_RESOURCE,
    NAME_KINDS,
    grants,
    name_format_problem,
    name_policy_problem,
    name_problem,
    role_account,
    role_format_problem,
    role_policy_problem,
    role_problem,
    s3_uri_problem,
    warn_policy,
)

# What callers and tests have always read here; policy.py holds them.
__all__ = ["DEFAULT_PASSROLE_RESOURCE", "DEFAULT_SAGEMAKER_RESOURCE", "NAME_KINDS", "Plan", "Rule", "RULES",
           "ValidationError", "check", "check_api_model", "check_deploy", "check_request", "check_training",
           "check_transform", "check_tuning", "grants", "name_problem", "problems", "role_problem", "stopping",
           "strict_policy"]

STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)


class ValidationError(ConfigError):
    """A request AWS would refuse; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# the rules


@dataclass
class Plan:
    """What we are about to ask for: the configuration, the names, the channels' URIs."""

    config: Config
    names: dict[str, str] = field(default_factory=dict)       # NAME_KINDS key -> name
    uris: dict[str, str | None] = field(default_factory=dict)  # "--resume-from" -> URI
    images: dict[str, str | None] = field(default_factory=dict)  # "train_image" -> URI
    # the VPC, KMS and isolation snapshots the requests are built from (security.for_request, with the SDK config's
    # defaults); left empty, ``problems`` reads them from the config alone
    security: dict[str, security.Security] = field(default_factory=dict)
    hyperparameters: dict | None = None  # the job's, where they differ from the config's (--hp, --from-tuning)


@dataclass(frozen=True)
class Rule:
    id: str
    applies_to: tuple[str, ...]
    check: Callable[[Plan], str | None]
    advisory: bool = False  # our sample policy's view: a warning, refused only with strict_policy


def stopping(training: dict) -> tuple[bool, int, int | None]:
    """(spot, max_run, max_wait) as they will be sent."""
    spot = bool(training.get("use_spot"))
    max_run = int(training.get("max_run_s", 14400))
    max_wait = int(training.get("max_wait_s", max_run * 2)) if spot else None
    return spot, max_run, max_wait


def spot_wait_problem(training: dict) -> str | None:
    spot, max_run, max_wait = stopping(training)
    if spot and max_wait < max_run:
        return f"training.max_wait_s ({max_wait}) must be at least training.max_run_s ({max_run}) with spot (use_spot = true)"
    return None


def _spot_wait(plan: Plan) -> str | None:
    return spot_wait_problem(plan.config["training"])


def _names(plan: Plan) -> str | None:
    problems = [name_format_problem(kind, name) for kind, name in plan.names.items()]
    return "; ".join(p for p in problems if p) or None


def _names_policy(plan: Plan) -> str | None:
    problems = [name_policy_problem(kind, name) for kind, name in plan.names.items()]
    return "; ".join(p for p in problems if p) or None


def _role(plan: Plan) -> str | None:
    return role_format_problem(plan.config.get("role"))


def _role_policy(plan: Plan) -> str | None:
    return role_policy_problem(plan.config.get("role"))



def _images(plan: Plan) -> str | None:
    config = plan.config
    problems = [instances.image_problem(what, uri, config.get("region"), role_account(config.get("role")))
                for what, uri in plan.images.items()]
    return "; ".join(p for p in problems if p) or None


def _security(plan: Plan) -> str | None:
    found = [security.problem(snapshot, plan.config.get("region")) for snapshot in plan.security.values()]
    return "; ".join(dict.fromkeys(p for p in found if p)) or None


def _serverless_network(plan: Plan) -> str | None:
    """AWS lists VPC configuration and network isolation among the features Serverless Inference does not support
    (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html, feature exclusions)."""
    model = plan.security.get("model")
    if not plan.config["serving"].get("serverless") or model is None:
        return None
    found = [model.origin(name) for name, on in (("vpc", model.vpc), ("network_isolation", model.network_isolation)) if on]
    if found:
        return (f"serverless endpoints take no VPC or network isolation (AWS does not support them there): "
                f"{' and '.join(found)} set them; deploy to instances (drop --serverless), or remove them where they are "
                f"set (network_isolation = false in dogbreed.toml overrides the SageMaker config's)")
    return None


def _isolated_weights(plan: Plan) -> str | None:
    """The training program downloads the ImageNet weights at run time (models.build, ``pretrained-weights =
    imagenet``, the default), which a network-isolated container cannot; a 'pretrained' channel (train
    --pretrained S3URI) or other weights do not need the network."""
    training = plan.security.get("training")
    hps = plan.config["hyperparameters"] if plan.hyperparameters is None else plan.hyperparameters
    weights = str(hps.get("pretrained-weights", "imagenet")).lower()
    if training is None or not training.network_isolation or weights != "imagenet" or plan.uris.get("--pretrained"):
        return None
    return (f"{training.origin('network_isolation')}: the training container cannot download the ImageNet weights "
            f"(pretrained-weights = imagenet, the default) without a network: give them as a 'pretrained' channel "
            f"(train --pretrained S3URI) or set pretrained-weights = \"none\" ([hyperparameters] or --hp)")


def _largest_offered(spec: dict | None, fixed) -> int:
    """The largest value a tuning range offers (categorical or integer), else the fixed hyperparameter's."""
    if not spec:
        return int(fixed)
    return max(int(v) for v in spec["values"]) if "values" in spec else int(spec["max"])


def _batch_fits(plan: Plan) -> str | None:
    """Tuning never offers a batch the trial's GPU cannot hold for the model trained in full (a CUDA OOM would fail
    the trial and waste a tuning slot). ``--batch-size`` is per process, one process per GPU: one GPU's memory
    counts. Smaller batches with gradient accumulation would keep the effective batch but change the optimisation
    the tuner explores, so the range is refused, with the largest batch that fits named. Every model a tuned
    ``model`` range offers is checked; a head-only run (``train-layers = "head"``, not tuned) keeps no backbone
    activations for a backward pass and is not checked."""
    config = plan.config
    ranges, fixed = config["tuning"].get("ranges", {}), config["hyperparameters"]
    spec = ranges.get("batch-size")
    if not spec or ("train-layers" not in ranges and fixed.get("train-layers") == "head"):
        return None
    instance = config["tuning"].get("instance_type") or config["training"]["instance_type"]
    model_names = [str(v) for v in ranges["model"]["values"]] if "values" in ranges.get("model", {}) else \
        [str(fixed.get("model", "resnet50"))]
    input_size = _largest_offered(ranges.get("input-size"), fixed.get("input-size") or 224)
    fits = {name: instances.largest_batch(name, instance, input_size) for name in model_names}
    fits = {name: largest for name, largest in fits.items() if largest is not None}
    if not fits:
        return None
    model, largest = min(fits.items(), key=lambda item: item[1])
    offered = [int(v) for v in spec["values"]] if "values" in spec else [int(spec.get("max", 0))]
    too_big = [v for v in offered if v > largest]
    if too_big:
        family = instances.gpu_family(instance)
        return (f"tuning.ranges.batch-size offers {', '.join(map(str, too_big))}, which does not fit {instance}'s "
                f"{family.gpu} ({family.gpu_memory_gb} GB) for {model} trained in full at {input_size} px: at most "
                f"{largest}")
    return None


def _uris(plan: Plan) -> str | None:
    problems = [s3_uri_problem(what, uri) for what, uri in plan.uris.items()]
    return "; ".join(p for p in problems if p) or None


def _strategy(plan: Plan) -> str | None:
    strategy = plan.config["tuning"].get("strategy", "Bayesian")
    if strategy not in STRATEGIES:
        return f"tuning.strategy {strategy!r} is not one of {', '.join(STRATEGIES)}"
    return None


def _hyperband_early_stopping(plan: Plan) -> str | None:
    tuning = plan.config["tuning"]
    early = tuning.get("early_stopping", "Auto")
    if tuning.get("strategy") == "Hyperband" and early != "Off":
        return (f"tuning.strategy Hyperband stops trials itself: set tuning.early_stopping = \"Off\" "
                f"(it is {early!r}; AWS refuses any other value with Hyperband)")
    return None


def _grid_categorical(plan: Plan) -> str | None:
    tuning = plan.config["tuning"]
    if tuning.get("strategy") != "Grid":
        return None
    numeric = [name for name, spec in tuning.get("ranges", {}).items() if "values" not in spec]
    if numeric:
        return (f"tuning.strategy Grid takes only categorical ranges (values = [...]); "
                f"{', '.join(numeric)} {'is' if len(numeric) == 1 else 'are'} min/max")
    return None


def _range_bounds(plan: Plan) -> str | None:
    problems = []
    for name, spec in plan.config["tuning"].get("ranges", {}).items():
        if "values" in spec:
            if not spec["values"]:
                problems.append(f"tuning.ranges.{name} has no values")
            continue
        low, high = spec.get("min"), spec.get("max")
        if low is None or high is None:
            problems.append(f"tuning.ranges.{name} needs min and max, or values")
        elif low >= high:
            problems.append(f"tuning.ranges.{name}: min ({low}) must be below max ({high})")
        elif spec.get("scaling") in ("Logarithmic", "ReverseLogarithmic") and low <= 0:
            problems.append(f"tuning.ranges.{name}: {spec['scaling']} scaling needs min > 0 (it is {low})")
    return "; ".join(problems) or None


def _serverless_capture(plan: Plan) -> str | None:
    serving = plan.config["serving"]
    if serving.get("serverless") and serving.get("data_capture"):
        return ("serverless endpoints take no data capture: drop --data-capture (serving.data_capture) "
                "or deploy to instances (serving.serverless = false)")
    return None


def _serverless_size(plan: Plan) -> str | None:
    serving = plan.config["serving"]
    if not serving.get("serverless"):
        return None
    memory = int(serving.get("serverless_memory_mb", 4096))
    concurrency = int(serving.get("serverless_max_concurrency", 5))
    if memory not in SERVERLESS_MEMORY_MB:
        return f"serving.serverless_memory_mb must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} (it is {memory})"
    if not 1 <= concurrency <= 200:
        return f"serving.serverless_max_concurrency must be 1 to 200 (it is {concurrency})"
    return None


def _capture_percent(plan: Plan) -> str | None:
    serving = plan.config["serving"]
    percent = serving.get("data_capture_percent", 20)
    if serving.get("data_capture") and not (isinstance(percent, int) and 0 <= percent <= 100):
        return f"serving.data_capture_percent must be a whole number from 0 to 100 (it is {percent!r})"
    return None


SNS_TOPIC = re.compile(r"arn:aws[a-z-]*:sns:(?P<region>[a-z0-9-]+):\d{12}:[A-Za-z0-9_-]{1,256}")


def _inference_ami(plan: Plan) -> str | None:
    """A GPU instance gets the AMI whose driver runs our CUDA (instances.py's table); a GPU family not in the table
    would serve on AWS's default driver (CUDA 11.4): refused."""
    serving = plan.config["serving"]
    if serving.get("serverless"):
        return None
    instance = serving.get("instance_type")
    return instances.ami_problem(instance, instances.inference_ami(instance).get("InferenceAmiVersion"),
                                 "InferenceAmiVersion")


def _transform_ami(plan: Plan) -> str | None:
    instance = plan.config["transform"].get("instance_type")
    return instances.ami_problem(instance, instances.transform_ami(instance).get("TransformAmiVersion"), "TransformAmiVersion")


def _async(plan: Plan) -> str | None:
    """Async endpoints: an S3 output, no serverless (AWS has no serverless async), SNS topics in the job's region."""
    serving, region = plan.config["serving"], plan.config.get("region")
    if not serving.get("async"):
        return None
    output = serving.get("async_output")
    found = [s3_uri_problem("--output (serving.async_output)", output) if output else
             "an async endpoint needs --output s3://... (serving.async_output): where its answers go"]
    if serving.get("serverless"):
        found.append("async inference runs on instances, not serverless: drop --serverless or --async")
    for flag, key in (("--sns-success", "async_sns_success"), ("--sns-error", "async_sns_error")):
        topic = serving.get(key)
        match = SNS_TOPIC.fullmatch(topic) if topic else None
        if topic and not match:
            found.append(f"{flag} {topic!r} is not an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)")
        elif match and region and match["region"] != region:
            found.append(f"{flag} topic is in {match['region']}, the endpoint in {region}")
    return "; ".join(p for p in found if p) or None


RULES: tuple[Rule, ...] = (
    Rule("names", ("training", "tuning", "deploy", "transform"), _names),
    Rule("names-policy", ("training", "tuning", "deploy", "transform"), _names_policy, advisory=True),
    Rule("role", ("training", "tuning", "deploy", "transform"), _role),
    Rule("role-policy", ("training", "tuning", "deploy", "transform"), _role_policy, advisory=True),
    Rule("image-region-account", ("training", "tuning", "deploy", "transform"), _images),
    Rule("vpc-kms", ("training", "tuning", "deploy", "transform"), _security),
    Rule("network-isolation-weights", ("training", "tuning"), _isolated_weights),
    Rule("batch-fits-gpu", ("tuning",), _batch_fits),
    Rule("s3-uris", ("training", "tuning", "transform"), _uris),
    Rule("spot-max-wait", ("training", "tuning"), _spot_wait),
    Rule("strategy", ("tuning",), _strategy),
    Rule("hyperband-early-stopping-off", ("tuning",), _hyperband_early_stopping),
    Rule("grid-categorical-only", ("tuning",), _grid_categorical),
    Rule("range-bounds", ("tuning",), _range_bounds),
    Rule("serverless-no-data-capture", ("deploy",), _serverless_capture),
    Rule("serverless-size", ("deploy",), _serverless_size),
    Rule("serverless-no-network-settings", ("deploy",), _serverless_network),
    Rule("data-capture-percent", ("deploy",), _capture_percent),
    Rule("inference-ami", ("deploy",), _inference_ami),
    Rule("async", ("deploy",), _async),
    Rule("transform-ami", ("transform",), _transform_ami),
    Rule("transform-shape", ("transform",), lambda plan: transform_problem(plan.config["transform"])),
)


TRANSFORM_MAX_PAYLOAD_MB = 100  # AWS: MaxPayloadInMB at most 100, and MaxConcurrentTransforms x MaxPayloadInMB too
LINE_TYPES = ("application/jsonlines", "application/json")


def transform_problem(transform: dict) -> str | None:
    """What CreateTransformJob refuses, or what our server cannot answer: payload and concurrency bounds, one photo
    per object (SplitType None) with an image type, JSON lines (SplitType Line) with a JSON type."""
    found = []
    payload, concurrent = int(transform.get("max_payload_mb") or 6), transform.get("max_concurrent")
    if not 1 <= payload <= TRANSFORM_MAX_PAYLOAD_MB:
        found.append(f"--max-payload-mb must be 1 to {TRANSFORM_MAX_PAYLOAD_MB} (it is {payload})")
    elif concurrent and int(concurrent) * payload > TRANSFORM_MAX_PAYLOAD_MB:
        found.append(f"max_concurrent ({concurrent}) x --max-payload-mb ({payload}) must be at most "
                     f"{TRANSFORM_MAX_PAYLOAD_MB} MB")
    if not 1 <= int(transform.get("instance_count") or 1) <= 100:
        found.append(f"--instance-count must be 1 to 100 (it is {transform.get('instance_count')})")
    split, kind = transform.get("split_type") or "None", transform.get("content_type") or ""
    if split == "Line" and kind not in LINE_TYPES:
        found.append(f"--split-type Line sends JSON lines: --content-type {' or '.join(LINE_TYPES)}, not {kind!r}")
    if split == "None" and kind in LINE_TYPES[:1]:
        found.append("--content-type application/jsonlines needs --split-type Line (one record a line)")
    return "; ".join(found) or None


def problems(request: str, plan: Plan, strict: bool = True) -> list[tuple[str, str]]:
    """[(rule id, reason)] of every rule that refuses this request; the advisory ones (our sample policy's view)
    only when ``strict``."""
    if not plan.security:
        plan = replace(plan, security=security.for_request(plan.config, request))
    found = []
    for rule in RULES:
        if request in rule.applies_to and (strict or not rule.advisory):
            reason = rule.check(plan)
            if reason:
                found.append((rule.id, reason))
    return found


def strict_policy(config: Config) -> bool:
    return bool(config.get("strict_policy"))


def check(request: str, plan: Plan) -> None:
    """Raise ValidationError (one line, every reason) if AWS would refuse the request; what only our sample
    launcher policy would refuse is a one-line warning, unless strict_policy (--strict-policy) asks to refuse."""
    strict = strict_policy(plan.config)
    found = problems(request, plan, strict)
    if found:
        raise ValidationError("; ".join(reason for _, reason in found))
    for rule in RULES:
        if request in rule.applies_to and rule.advisory:
            reason = rule.check(plan)
            if reason:
                warn_policy(reason)



def check_training(config: Config, job_name: str, uris: dict[str, str | None] | None = None,
                   snapshots: dict | None = None, hyperparameters: dict | None = None) -> None:
    check("training", Plan(config, {"training-job": job_name}, dict(uris or {}), {"train_image": config.get("train_image")},
                           dict(snapshots or {}), hyperparameters))


def check_tuning(config: Config, job_name: str, uris: dict[str, str | None] | None = None,
                 snapshots: dict | None = None) -> None:
    check("tuning", Plan(config, {"hyper-parameter-tuning-job": job_name}, dict(uris or {}),
                         {"train_image": config.get("train_image")}, dict(snapshots or {})))


def check_deploy(config: Config, model_name: str, endpoint_name: str, image: str | None = None,
                 snapshots: dict | None = None) -> None:
    # endpoints.deploy names the endpoint config after the model: the name checked is the name sent.
    names = {"model": model_name, "endpoint-config": model_name, "endpoint": endpoint_name}
    check("deploy", Plan(config, names, images={"serve image": image or config.get("serve_image")},
                         security=dict(snapshots or {})))


def check_transform(config: Config, model_name: str, job_name: str, image: str | None,
                    uris: dict[str, str | None], snapshots: dict | None = None) -> None:
    check("transform", Plan(config, {"model": model_name, "transform-job": job_name}, dict(uris),
                            {"serve image": image}, dict(snapshots or {})))


# --------------------------------------------------------------------------------------------------
# the last line: the raw API parameters, whoever built them

REQUEST_NAMES = {
    "CreateTrainingJob": ("training-job", "TrainingJobName"),
    "CreateHyperParameterTuningJob": ("hyper-parameter-tuning-job", "HyperParameterTuningJobName"),
    "CreateModel": ("model", "ModelName"),
    "CreateEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "CreateEndpoint": ("endpoint", "EndpointName"),
    "CreateTransformJob": ("transform-job", "TransformJobName"),
}
# where each Create request carries its image URIs
REQUEST_IMAGES = (("AlgorithmSpecification", "TrainingImage"), ("PrimaryContainer", "Image"),
                  ("TrainingJobDefinition", "AlgorithmSpecification", "TrainingImage"))


def _dig(params: dict, path: tuple) -> str | None:
    for key in path:
        params = params.get(key) if isinstance(params, dict) else None
    return params if isinstance(params, str) else None


def check_request(operation: str, params: dict, region: str | None = None, strict: bool = False) -> None:
    """Names, roles and image URIs of a SageMaker Create* request, as botocore is about to send it (to ``region``).
    What only our sample policy refuses is a warning unless ``strict``."""
    if operation not in REQUEST_NAMES:
        return
    kind, key = REQUEST_NAMES[operation]
    roles = [params.get("RoleArn"), params.get("ExecutionRoleArn"), (params.get("TrainingJobDefinition") or {}).get("RoleArn")]
    roles = [role for role in roles + [d.get("RoleArn") for d in params.get("TrainingJobDefinitions") or []] if role]
    images = [_dig(params, path) for path in REQUEST_IMAGES]
    found = [name_format_problem(kind, params.get(key, ""))] + [role_format_problem(role) for role in roles]
    found += [instances.image_problem("image", image, region, role_account(roles[0] if roles else None))
              for image in images if image]
    advisory = [name_policy_problem(kind, params.get(key, ""))] + [role_policy_problem(role) for role in roles]
    reasons = [p for p in found + (advisory if strict else []) if p]
    if reasons:
        raise ValidationError(f"{operation}: " + "; ".join(dict.fromkeys(reasons)))
    for reason in filter(None, advisory):
        warn_policy(reason)


def check_api_model(operation: str, params: dict) -> None:
    """The request against botocore's service model (apimodel.py): enums, lengths, ranges, patterns, members."""
    if operation in apimodel.CHECKED:
        found = apimodel.problems(operation, params)
        if found:
            raise ValidationError("; ".join(dict.fromkeys(found)))
