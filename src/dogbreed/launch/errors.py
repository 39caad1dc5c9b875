"""Turn any exception at the CLI's edge into one line a user can act on."""

from __future__ import annotations

HINTS = {
    "AccessDenied": "the credentials lack a permission (see iam/dogbreed-launcher-policy.json; the job's role: iam/dogbreed-policy.json)",
    "AccessDeniedException": "the credentials lack a permission (see iam/dogbreed-launcher-policy.json; the job's role: iam/dogbreed-policy.json)",
    "ResourceLimitExceeded": "an AWS quota is exhausted: ask for more in Service Quotas or pick another instance type",
    "ValidationException": "AWS refused the request",
    "ResourceNotFound": "no such resource",
    "ExpiredToken": "the AWS session expired: log in again",
}


# Our own errors already say what to do: their message alone (subclasses too, e.g. ValidationError, JobError).
USER_ERRORS = {"ConfigError", "PrepareError", "ModelError", "DataError", "InvokeError", "TrainingError", "CLIError"}


def is_user_error(exc: BaseException) -> bool:
    return any(cls.__name__ in USER_ERRORS for cls in type(exc).__mro__)


def describe(exc: BaseException) -> str:
    try:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, NoRegionError
    except ImportError:  # pragma: no cover - botocore is a dependency of the launchers
        ClientError = NoCredentialsError = NoRegionError = EndpointConnectionError = ()
    if NoCredentialsError and isinstance(exc, NoCredentialsError):
        return "no AWS credentials: run `aws configure` or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
    if NoRegionError and isinstance(exc, NoRegionError):
        return "no AWS region: set region in the config, --region or AWS_DEFAULT_REGION"
    if EndpointConnectionError and isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if ClientError and isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "Error")
        message = error.get("Message", str(exc))
        operation = getattr(exc, "operation_name", "")
        hint = HINTS.get(code)
        text = f"{operation}: {code}: {message}" if operation else f"{code}: {message}"
        return f"{text} ({hint})" if hint and hint not in message else text
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if is_user_error(exc) and message:
        return message
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__
