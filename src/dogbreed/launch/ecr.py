"""ECR for scripts/build_and_push.sh: the account (STS), the repository (created if missing), the login.

    python -m dogbreed.launch.ecr account
    python -m dogbreed.launch.ecr ensure-repo NAME      -> prints the repository URI
    python -m dogbreed.launch.ecr login-password        -> prints the docker password (stdout only)

    python -m dogbreed.launch.ecr region                -> prints the region (and where it came from, on stderr)

The region, as the launchers take it: `region` in the config file (DOGBREED_CONFIG, or ./dogbreed.toml, or
~/.config/dogbreed.toml: the file the launchers read), then AWS_REGION, then AWS_DEFAULT_REGION, then the AWS profile's.
AWS_ENDPOINT_URL points boto3 elsewhere (the tests use moto). Every failure is one line on stderr and exit code 1.
"""

from __future__ import annotations

import base64
import sys

import boto3

from ..errors import ConfigError, describe
from .config import load
from .config import region_and_source as config_region_and_source


def region_and_source(region: str | None = None) -> tuple[str, str]:
    """The region the images go to, and where it was read: the launchers' one order (config.region_and_source),
    so that the images land where the jobs run."""
    if region:
        return region, "the caller"
    try:
        return config_region_and_source(load(region_from_environment=False))
    except ConfigError as exc:
        raise SystemExit(f"ecr: {exc}") from exc


def _region(region: str | None = None) -> str:
    return region_and_source(region)[0]


def account_id() -> str:
    return boto3.client("sts", region_name=_region()).get_caller_identity()["Account"]


def ensure_repository(name: str) -> str:
    client = boto3.client("ecr", region_name=_region())
    try:
        found = client.describe_repositories(repositoryNames=[name])["repositories"][0]
    except client.exceptions.RepositoryNotFoundException:
        found = client.create_repository(
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}, imageTagMutability="IMMUTABLE"
        )["repository"]
        print(f"created ECR repository {name}", file=sys.stderr)
    if found.get("imageTagMutability", "IMMUTABLE").startswith("MUTABLE"):
        print(f"ECR repository {name} has MUTABLE tags: a job could run another image than it was launched with "
              f"(aws ecr put-image-tag-mutability --repository-name {name} --image-tag-mutability IMMUTABLE)", file=sys.stderr)
    return found["repositoryUri"]


def login_password() -> str:
    client = boto3.client("ecr", region_name=_region())
    token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return password


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv == ["account"]:
            print(account_id())
        elif len(argv) == 2 and argv[0] == "ensure-repo":
            print(ensure_repository(argv[1]))
        elif argv == ["login-password"]:
            print(login_password())
        elif argv == ["region"]:
            region, source = region_and_source()
            print(f"region {region} (from {source})", file=sys.stderr)
            print(region)
        else:
            print("usage: python -m dogbreed.launch.ecr account | region | ensure-repo NAME | login-password", file=sys.stderr)
            return 2
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # the edge: one clear line
        print(f"ecr: {describe(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
