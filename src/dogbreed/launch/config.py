"""The launcher configuration: one TOML file (see config/dogbreed.example.toml), then flag overrides."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..errors import ConfigError

DEFAULT_FILES = ("dogbreed.toml", "~/.config/dogbreed.toml")

DEFAULTS: dict = {
    "region": None,
    "role": None,
    "bucket": None,
    "prefix": "dogbreed",
    "train_image": None,
    "serve_image": None,
    "serve_image_cpu": None,
    "tags": {"project": "dogbreed"},
    # our sample launcher policy (iam/dogbreed-launcher-policy.json): a name or role outside it is a warning; true refuses
    "strict_policy": False,
    "vpc": {"subnets": [], "security_group_ids": []},
    "kms_key": None,
    "network_isolation": None,  # unset: the SageMaker config's, if any, else off; true or false here wins
    "training": {
        "instance_type": "ml.g4dn.xlarge", "instance_count": 1, "volume_size_gb": 30, "max_run_s": 14400,
        "use_spot": True, "max_wait_s": 28800,
        # SageMaker Debugger (closed to new customers since 2026-07-30) and its profiler: off; the trial is written
        # beside the checkpoints instead, and `dogbreed debug report JOB` runs the rules here
        "debugger_service": False, "profiler_service": False,
        "debug_collections": {"losses": 10, "weights": 100, "gradients": 100, "biases": 100},
    },
    # no train-layers/epochs: the training program's default recipe (linear probe, then 2 epochs of fine-tuning)
    "hyperparameters": {"model": "resnet50", "batch-size": 64, "lr": 0.001},
    "tuning": {
        "objective": "valid_loss", "strategy": "Bayesian", "max_jobs": 8, "max_parallel_jobs": 2,
        "data-fraction": 0.1, "early_stopping": "Auto", "instance_type": None,
        # the seed's search space
        "ranges": {"lr": {"min": 0.001, "max": 0.1, "scaling": "Logarithmic"},
                   "batch-size": {"values": [32, 64, 128, 256]}},
    },
    "serving": {
        "instance_type": "ml.m5.large", "instance_count": 1, "serverless": False, "serverless_memory_mb": 4096,
        "serverless_max_concurrency": 5, "data_capture": False, "data_capture_percent": 20,
        "image": "auto",  # auto: serve_image_cpu for CPU instances and serverless, serve_image for GPU; or cpu / cuda
        # async endpoints (deploy --async --output S3URI): answers to async_output, optional SNS topics
        "async": False, "async_output": None, "async_sns_success": None, "async_sns_error": None, "async_max_payload_mb": 100,
    },
    # Batch Transform (dogbreed transform): one photo per S3 object (split_type None) or JSON lines (Line)
    "transform": {
        "instance_type": "ml.m5.xlarge", "instance_count": 1, "content_type": "application/x-image",
        "split_type": "None", "batch_strategy": "SingleRecord", "max_payload_mb": 6, "max_concurrent": None,
    },
    # how often `dogbreed train/tune/deploy` (without --detach) and the notebook ask AWS whether a job is done
    "wait": {"poll_s": 30},
    "data": {"url": "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip",
             "expected_classes": 133, "expected_counts": {"train": 6680, "valid": 835, "test": 836}},
}


# Tables a config file replaces whole instead of merging into the defaults: a search space of one's own must
# not keep the default ranges (Grid, for one, takes categorical ranges only).
REPLACED = {("tuning", "ranges")}


def _merge(base: dict, override: dict, path: tuple = ()) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and path + (key,) not in REPLACED:
            result[key] = _merge(result[key], value, path + (key,))
        else:
            result[key] = value
    return result


@dataclass
class Config:
    data: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS))
    source: str | None = None
    region_source: str | None = None  # where ``region`` was read: --region, the file, AWS_REGION, ... (messages)

    def __getitem__(self, key):
        return self.data[key]

    def get(self, key, default=None):
        return self.data.get(key, default)

    def require(self, *keys: str) -> None:
        missing = [k for k in keys if not self.data.get(k)]
        if missing:
            where = self.source or "no config file (dogbreed.toml)"
            raise ConfigError(f"missing {', '.join(missing)}: set them in {where} or pass --{missing[0].replace('_', '-')}")

    def set_path(self, dotted: str, value) -> None:
        node = self.data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    @property
    def s3_root(self) -> str:
        self.require("bucket")
        prefix = (self.data.get("prefix") or "").strip("/")
        return f"s3://{self.data['bucket']}/{prefix}" if prefix else f"s3://{self.data['bucket']}"


REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


def region_and_source(config: Config) -> tuple[str, str]:
    """The region, as every verb takes it (``make push``, the launchers, ``invoke``), and where it was read:
    --region or the config file's ``region``, then AWS_REGION, then AWS_DEFAULT_REGION, then the AWS profile's
    (boto3's own lookup: AWS_PROFILE, ~/.aws/config). One order, so that the images land where the jobs run."""
    if config.get("region"):
        return config["region"], config.region_source or config.source or "the config"
    for name in REGION_VARIABLES:
        if os.environ.get(name):
            return os.environ[name], name
    import boto3  # only where no setting names the region: `dogbreed --help` does not wait for it

    region = boto3.session.Session().region_name
    if region:
        return region, "the AWS profile"
    raise ConfigError("no AWS region: set region in dogbreed.toml (or --region), AWS_REGION or AWS_DEFAULT_REGION, "
                      "or a region in the AWS profile (aws configure set region REGION)")


def settle_region(config: Config) -> str:
    """Fix the config's region once, before any request: the checks compare image and key regions with it."""
    config.data["region"], config.region_source = region_and_source(config)
    return config.data["region"]


def load(path: str | None = None, overrides: dict | None = None, region_from_environment: bool = True) -> Config:
    """The config file, then the overrides (flags). The region: --region, the file's ``region``, AWS_REGION,
    AWS_DEFAULT_REGION here; the AWS profile's where a verb talks to AWS (``settle_region``)."""
    data = copy.deepcopy(DEFAULTS)
    source = None
    candidates = [path] if path else [os.environ.get("DOGBREED_CONFIG")] + list(DEFAULT_FILES)
    for candidate in candidates:
        if not candidate:
            continue
        file = Path(candidate).expanduser()
        if file.is_file():
            try:
                data = _merge(data, tomllib.loads(file.read_text()))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{file}: not valid TOML ({exc})") from exc
            source = str(file)
            break
        if path:
            raise ConfigError(f"config file {file} not found")
    config = Config(data, source, source if data.get("region") else None)
    for key, value in (overrides or {}).items():
        if value is not None:
            config.set_path(key, value)
    if (overrides or {}).get("region"):
        config.region_source = "--region"
    if not config.data.get("region") and region_from_environment:
        found = next((name for name in REGION_VARIABLES if os.environ.get(name)), None)
        config.data["region"], config.region_source = (os.environ[found], found) if found else (None, None)
    return config
