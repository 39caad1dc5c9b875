"""Flags and settings several verbs share: the config, region, role and bucket, read into one snapshot."""

from __future__ import annotations

from pathlib import Path

from ..insight.job_outputs import split_s3
from ..launch.config import load
from ..launch.jobs import model_data_of
from ..launch.session import boto_session


def config_of(args, **more):
    """The config file with the flags given laid over it (a flag left out keeps the file's value)."""
    overrides = {"region": args.region, "role": getattr(args, "role", None), "bucket": args.bucket, "prefix": args.prefix,
                 "strict_policy": True if getattr(args, "strict_policy", False) else None}
    overrides.update(more)
    return load(args.config, overrides)


def job_clients(args):
    """SageMaker and S3 clients for a report on a job (region from --region, the config or AWS_REGION)."""
    boto = boto_session(config_of(args))
    return boto.client("sagemaker"), boto.client("s3")


def fetch_job_model(args, target: Path) -> Path:
    """``--training-job JOB``: the job's model.tar.gz (its ModelArtifacts) downloaded into ``target``."""
    sagemaker, s3 = job_clients(args)
    uri = model_data_of(sagemaker, args.training_job)
    bucket, key = split_s3(uri)
    target.mkdir(parents=True, exist_ok=True)
    local = target / "model.tar.gz"
    s3.download_file(bucket, key, str(local))
    print(f"model of {args.training_job}: {uri}")
    return local


def add_common(parser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--role", default=None, help="SageMaker execution role ARN")
    parser.add_argument("--bucket", default=None)
    parser.add_argument("--prefix", default=None)
    parser.add_argument("--strict-policy", action="store_true",
                        help="refuse a role or name outside iam/dogbreed-launcher-policy.json (default: a warning)")


def add_report_common(parser) -> None:
    """A report on a job reads its description and S3: the same config and region flags as the launchers."""
    parser.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml)")
    parser.add_argument("--region", default=None)
    parser.set_defaults(bucket=None, prefix=None)
