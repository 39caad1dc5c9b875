"""What AWS rejects, caught before the call (moto accepts anything).

Every rule is one row of ``RULES``: the request it applies to (``training``, ``tuning``, ``deploy``), and a
check that returns the reason in one line, or None. The checks read our configuration and the names we are
about to send, not SDK objects, so they outlive the SDK in use (v2 today). ``check_request`` is the same
name and role check on the raw API parameters, run by a botocore hook (``session.py``) on every Create call,
so that a name the SDK makes up itself is checked too.

Names: AWS takes ``[a-zA-Z0-9](-*[a-zA-Z0-9])*`` up to 63 characters (32 for a tuning job), and the
launcher policy (iam/dogbreed-launcher-policy.json) allows only the ``dogbreed*`` resources and passing the
``dogbreed-sagemaker`` role. A name outside them is refused here, with the policy line to change.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .config import Config, ConfigError

POLICY_FILE = "iam/dogbreed-launcher-policy.json"
# What that file grants, for installs that do not carry iam/ (tests/unit/test_launch_iam.py keeps them equal).
DEFAULT_SAGEMAKER_RESOURCE = "arn:aws:sagemaker:REGION:ACCOUNT:*/dogbreed*"
DEFAULT_PASSROLE_RESOURCE = "arn:aws:iam::ACCOUNT:role/dogbreed-sagemaker"

# resource type in the ARN -> (what the user reads, longest name AWS takes)
NAME_KINDS = {
    "training-job": ("training job", 63),
    "hyper-parameter-tuning-job": ("tuning job", 32),
    "model": ("model", 63),
    "endpoint-config": ("endpoint config", 63),
    "endpoint": ("endpoint", 63),
}
NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")

STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)


class ValidationError(ConfigError):
    """A request AWS would refuse; the message says what to change."""


# --------------------------------------------------------------------------------------------------
# the launcher policy


@dataclass(frozen=True)
class Grant:
    resource: str          # as written in the policy, REGION/ACCOUNT placeholders and all
    where: str             # "iam/dogbreed-launcher-policy.json line 16"

    def allows(self, arn: str) -> bool:
        pattern = re.sub(r"\b(REGION|ACCOUNT)\b", "*", self.resource)
        return fnmatch.fnmatchcase(arn, pattern)


def policy_path() -> Path:
    return Path(__file__).resolve().parents[3] / POLICY_FILE


@lru_cache(maxsize=4)
def _grants(path: str | None) -> dict[str, list[Grant]]:
    """The resources the launcher policy grants for sagemaker:Create* and iam:PassRole, with their lines."""
    grants: dict[str, list[Grant]] = {"sagemaker": [], "passrole": []}
    file = Path(path) if path else None
    if file is None or not file.is_file():
        grants["sagemaker"].append(Grant(DEFAULT_SAGEMAKER_RESOURCE, POLICY_FILE))
        grants["passrole"].append(Grant(DEFAULT_PASSROLE_RESOURCE, POLICY_FILE))
        return grants
    text = file.read_text()
    lines = text.splitlines()
    for statement in json.loads(text)["Statement"]:
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        key = ("sagemaker" if "sagemaker:CreateTrainingJob" in actions else
               "passrole" if "iam:PassRole" in actions else None)
        if not key:
            continue
        for resource in resources:
            number = next((i + 1 for i, line in enumerate(lines) if json.dumps(resource) in line), None)
            grants[key].append(Grant(resource, f"{POLICY_FILE} line {number}" if number else POLICY_FILE))
    return grants


def grants() -> dict[str, list[Grant]]:
    return _grants(str(policy_path()))


def _prefix_hint(resource: str) -> str:
    tail = resource.split(":", 5)[-1]            # "*/dogbreed*" or "role/dogbreed-sagemaker"
    tail = tail.split("/", 1)[-1]
    return tail.split("*", 1)[0]


# --------------------------------------------------------------------------------------------------
# names and roles


def name_problem(kind: str, name: str) -> str | None:
    """Why AWS, or the launcher policy, refuses this name; None when it is fine."""
    label, longest = NAME_KINDS[kind]
    if not name:
        return f"empty {label} name"
    if len(name) > longest:
        return f"{label} name {name!r} has {len(name)} characters; AWS takes at most {longest}"
    if not NAME_PATTERN.fullmatch(name):
        return (f"{label} name {name!r} is not one AWS takes: letters, digits and hyphens, starting and "
                f"ending with a letter or digit ([a-zA-Z0-9](-*[a-zA-Z0-9])*)")
    # SageMaker ARNs carry the name in lower case; IAM matches them as written.
    arn = f"arn:aws:sagemaker:REGION:ACCOUNT:{kind}/{name.lower()}"
    allowed = grants()["sagemaker"]
    if not any(grant.allows(arn) for grant in allowed):
        grant = allowed[0] if allowed else Grant(DEFAULT_SAGEMAKER_RESOURCE, POLICY_FILE)
        return (f"{label} name {name!r} is outside what the launcher policy grants ({grant.where}: "
                f"\"Resource\": \"{grant.resource}\"): start the name with {_prefix_hint(grant.resource)!r}, "
                f"or change that line and the policy in IAM")
    return None


def role_problem(role: str | None) -> str | None:
    if not role:
        return None  # Config.require says what is missing
    if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/\S+", role):
        return f"role {role!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
    allowed = grants()["passrole"]
    if not any(grant.allows(role) for grant in allowed):
        grant = allowed[0] if allowed else Grant(DEFAULT_PASSROLE_RESOURCE, POLICY_FILE)
        return (f"role {role!r} is not one the launcher policy may pass to SageMaker ({grant.where}: "
                f"\"Resource\": \"{grant.resource}\"): use that role, or change that line and the policy in IAM")
    return None


def s3_uri_problem(what: str, uri: str | None) -> str | None:
    if uri is None:
        return None
    if not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?", uri):
        return f"{what} {uri!r} is not an S3 URI (s3://bucket/prefix)"
    return None


# --------------------------------------------------------------------------------------------------
# the rules


@dataclass
class Plan:
    """What we are about to ask for: the configuration, the names, the channels' URIs."""

    config: Config
    names: dict[str, str] = field(default_factory=dict)       # NAME_KINDS key -> name
    uris: dict[str, str | None] = field(default_factory=dict)  # "--resume-from" -> URI


@dataclass(frozen=True)
class Rule:
    id: str
    applies_to: tuple[str, ...]
    check: Callable[[Plan], str | None]


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
    problems = [name_problem(kind, name) for kind, name in plan.names.items()]
    return "; ".join(p for p in problems if p) or None


def _role(plan: Plan) -> str | None:
    return role_problem(plan.config.get("role"))


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


RULES: tuple[Rule, ...] = (
    Rule("names", ("training", "tuning", "deploy"), _names),
    Rule("role", ("training", "tuning", "deploy"), _role),
    Rule("s3-uris", ("training", "tuning"), _uris),
    Rule("spot-max-wait", ("training", "tuning"), _spot_wait),
    Rule("strategy", ("tuning",), _strategy),
    Rule("hyperband-early-stopping-off", ("tuning",), _hyperband_early_stopping),
    Rule("grid-categorical-only", ("tuning",), _grid_categorical),
    Rule("range-bounds", ("tuning",), _range_bounds),
    Rule("serverless-no-data-capture", ("deploy",), _serverless_capture),
    Rule("serverless-size", ("deploy",), _serverless_size),
    Rule("data-capture-percent", ("deploy",), _capture_percent),
)


def problems(request: str, plan: Plan) -> list[tuple[str, str]]:
    """[(rule id, reason)] of every rule that refuses this request."""
    found = []
    for rule in RULES:
        if request in rule.applies_to:
            reason = rule.check(plan)
            if reason:
                found.append((rule.id, reason))
    return found


def check(request: str, plan: Plan) -> None:
    """Raise ValidationError (one line, every reason) if AWS would refuse the request."""
    found = problems(request, plan)
    if found:
        raise ValidationError("; ".join(reason for _, reason in found))


def check_training(config: Config, job_name: str, uris: dict[str, str | None] | None = None) -> None:
    check("training", Plan(config, {"training-job": job_name}, dict(uris or {})))


def check_tuning(config: Config, job_name: str, uris: dict[str, str | None] | None = None) -> None:
    check("tuning", Plan(config, {"hyper-parameter-tuning-job": job_name}, dict(uris or {})))


def check_deploy(config: Config, model_name: str, endpoint_name: str) -> None:
    # The SDK names the endpoint config after the endpoint.
    names = {"model": model_name, "endpoint-config": endpoint_name, "endpoint": endpoint_name}
    check("deploy", Plan(config, names))


# --------------------------------------------------------------------------------------------------
# the last line: the raw API parameters, whoever built them

REQUEST_NAMES = {
    "CreateTrainingJob": ("training-job", "TrainingJobName"),
    "CreateHyperParameterTuningJob": ("hyper-parameter-tuning-job", "HyperParameterTuningJobName"),
    "CreateModel": ("model", "ModelName"),
    "CreateEndpointConfig": ("endpoint-config", "EndpointConfigName"),
    "CreateEndpoint": ("endpoint", "EndpointName"),
}


def check_request(operation: str, params: dict) -> None:
    """Names and roles of a SageMaker Create* request, as botocore is about to send it."""
    if operation not in REQUEST_NAMES:
        return
    kind, key = REQUEST_NAMES[operation]
    found = [name_problem(kind, params.get(key, ""))]
    roles = [params.get("RoleArn"), params.get("ExecutionRoleArn"), (params.get("TrainingJobDefinition") or {}).get("RoleArn")]
    roles += [d.get("RoleArn") for d in params.get("TrainingJobDefinitions") or []]
    found += [role_problem(role) for role in roles if role]
    reasons = [p for p in found if p]
    if reasons:
        raise ValidationError(f"{operation}: " + "; ".join(dict.fromkeys(reasons)))
