"""The errors a user can act on: one family under ``DogbreedError`` (after the inference toolkit's
``BaseInferenceToolkitError``), and ``describe()``, the one line the command prints for any exception.

A leaf module: it imports nothing from the package, so every layer can raise these.
"""

from __future__ import annotations


class DogbreedError(Exception):
    """A failure whose message alone says what happened and what to do; the command exits with ``code``."""

    def __init__(self, message: str = "", code: int = 1):
        super().__init__(message)
        self.code = code


class ConfigError(DogbreedError):
    """A configuration, flag or request that cannot work."""


class DataError(DogbreedError):
    """A data set that is missing, empty or not in the dogImages layout."""


class ModelError(DogbreedError):
    """A model name, weights file or model artifact that cannot be used."""


class InvokeError(DogbreedError):
    """A classification request that the server or endpoint did not answer."""


AWS_HINTS = {
    "AccessDenied": "the credentials lack a permission (see iam/dogbreed-launcher-policy.json; the job's role: "
                    "iam/dogbreed-policy.json)",
    "ResourceLimitExceeded": "an AWS quota is exhausted: ask for more in Service Quotas or pick another instance type",
    "ValidationException": "AWS refused the request",
    "ResourceNotFound": "no such resource",
    "ExpiredToken": "the AWS session expired: log in again",
}
AWS_HINTS["AccessDeniedException"] = AWS_HINTS["AccessDenied"]


def _describe_aws(exc: BaseException) -> str | None:
    """botocore's errors as one line, or None for any other exception."""
    try:  # botocore: only where the launchers are installed (not in the serving image)
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: run `aws configure` or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
    if isinstance(exc, NoRegionError):
        return "no AWS region: set region in the config, --region or AWS_DEFAULT_REGION"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code = error.get("Code", "Error")
    message = error.get("Message", str(exc))
    operation = getattr(exc, "operation_name", "")
    hint = AWS_HINTS.get(code)
    text = f"{operation}: {code}: {message}" if operation else f"{code}: {message}"
    return f"{text} ({hint})" if hint and hint not in message else text


def describe(exc: BaseException) -> str:
    """One line for the user: our own errors' message, AWS's code and message, else the class and message."""
    aws = _describe_aws(exc)
    if aws is not None:
        return aws
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DogbreedError) and message:
        return message
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__
