"""The names, roles and S3 URIs we send, against what AWS takes and what the launcher policy grants.

Names: AWS takes ``[a-zA-Z0-9](-*[a-zA-Z0-9])*`` up to 63 characters (32 for a tuning job), and the
launcher policy (iam/dogbreed-launcher-policy.json) allows only the ``dogbreed*`` resources and passing the
``dogbreed-sagemaker`` role. A name or role outside them is a one-line warning naming the policy line (the account's
own policies decide: Studio's execution role works), refused only with ``strict_policy = true`` (--strict-policy).
``validate.py`` runs these checks as rules of a request and on the raw API parameters.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    "transform-job": ("transform job", 63),
}
NAME_PATTERN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
ROLE_PATTERN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/\S+")


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
    return name_format_problem(kind, name) or name_policy_problem(kind, name)


def name_format_problem(kind: str, name: str) -> str | None:
    """Why AWS refuses this name (whatever the account's policies)."""
    label, longest = NAME_KINDS[kind]
    if not name:
        return f"empty {label} name"
    if len(name) > longest:
        return f"{label} name {name!r} has {len(name)} characters; AWS takes at most {longest}"
    if not NAME_PATTERN.fullmatch(name):
        return (f"{label} name {name!r} is not one AWS takes: letters, digits and hyphens, starting and "
                f"ending with a letter or digit ([a-zA-Z0-9](-*[a-zA-Z0-9])*)")
    return None


def name_policy_problem(kind: str, name: str) -> str | None:
    """Why our sample launcher policy would refuse this name: the account's own policies may allow it."""
    label = NAME_KINDS[kind][0]
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
    return role_format_problem(role) or role_policy_problem(role)


def role_format_problem(role: str | None) -> str | None:
    if not role:
        return None  # Config.require says what is missing
    if not ROLE_PATTERN.fullmatch(role):
        return f"role {role!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)"
    return None


def role_policy_problem(role: str | None) -> str | None:
    """Why our sample launcher policy would not pass this role: Studio's AmazonSageMaker-ExecutionRole-..., or any
    role the account lets the user pass, works all the same."""
    if not role or not ROLE_PATTERN.fullmatch(role):
        return None
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


def role_account(role: str | None) -> str | None:
    found = ROLE_PATTERN.fullmatch(role or "")
    return found[1] if found else None


_WARNED: set[str] = set()


def warn_policy(reason: str) -> None:
    """One line on stderr, once a process: the account's own policies decide; AWS answers AccessDenied if not."""
    if reason not in _WARNED:
        _WARNED.add(reason)
        print(f"dogbreed: warning: {reason} (going on: the account's policies decide; strict_policy = true, or "
              f"--strict-policy, refuses)", file=sys.stderr)

