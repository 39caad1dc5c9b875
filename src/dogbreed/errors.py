"""The errors a user can act on: one family under ``DogbreedError`` (after the inference toolkit's
``BaseInferenceToolkitError``), and ``describe()``, the one line the command prints for any exception.

A leaf module: it imports nothing from the package, so every layer can raise these.
"""

from __future__ import annotations

import contextlib


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


class GpuError(DogbreedError):
    """A GPU the job expects that CUDA cannot start, or work that does not fit its memory."""


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
        return ("no AWS region: set region in the config (or --region), AWS_REGION or AWS_DEFAULT_REGION, or a region "
                "in the AWS profile")
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


def is_cuda_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or the RuntimeError older kernels and cuDNN raise with the same words. By name:
    this module imports nothing (serving and the launchers use it without torch)."""
    named = any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)
    return named or (isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))


def batch_that_fits(batch_size: int) -> int:
    """Half the batch, down to a power of two: activations grow with the batch, so half leaves room whatever the
    model; a power of two keeps the GPU's kernels on their fast shapes. 0 where no smaller batch exists."""
    half = batch_size // 2
    return 1 << (half.bit_length() - 1) if half >= 1 else 0


def out_of_memory_message(batch_size: int | None = None) -> str:
    if not batch_size:
        return "CUDA out of memory: lower --batch-size (or --input-size, or train fewer layers)"
    smaller = batch_that_fits(batch_size)
    if not smaller:
        return (f"CUDA out of memory at --batch-size {batch_size}: the model does not fit this GPU even so; use a "
                f"smaller --model or --input-size, or an instance type with more GPU memory")
    return (f"CUDA out of memory at --batch-size {batch_size} (images per batch and GPU): try --batch-size {smaller}, "
            f"or an instance type with more GPU memory")


@contextlib.contextmanager
def naming_a_batch_that_fits(batch_size: int):
    """Turn a CUDA out-of-memory error raised inside into a GpuError naming a batch size that fits."""
    try:
        yield
    except Exception as exc:
        if is_cuda_out_of_memory(exc):
            raise GpuError(out_of_memory_message(batch_size)) from exc
        raise


def describe(exc: BaseException, batch_size: int | None = None) -> str:
    """One line for the user: our own errors' message, AWS's code and message, a CUDA out-of-memory error with a
    batch size that fits (``batch_size``: the one that failed), the host's memory, else the class and message."""
    if is_cuda_out_of_memory(exc):
        return out_of_memory_message(batch_size)
    if isinstance(exc, MemoryError):  # the host's memory: batches, or a loader worker each
        return "out of memory: lower --batch-size or --num-workers"
    aws = _describe_aws(exc)
    if aws is not None:
        return aws
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DogbreedError) and message:
        return message
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__
