"""SageMaker jobs built only from our image URIs: training Estimator, HyperparameterTuner, Model, clean-up."""

from __future__ import annotations

import datetime as dt
import logging

from .. import metrics
from .config import Config, ConfigError

log = logging.getLogger(__name__)

# The seed's Debugger rules.
DEBUGGER_RULES = ("vanishing_gradient", "overfit", "overtraining", "poor_weight_initialization", "loss_not_decreasing")
COLLECTIONS = {"losses": "10", "weights": "100", "gradients": "100", "biases": "100"}


def job_name(kind: str) -> str:
    return f"dogbreed-{kind}-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def hyperparameters(config: Config, extra: dict | None = None) -> dict[str, str]:
    """SageMaker takes every hyperparameter as a string; names are the training program's flags."""
    values = {**config["hyperparameters"], **(extra or {})}
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def channels(config: Config, data_uri: str | None = None, pretrained_uri: str | None = None) -> dict:
    from sagemaker.inputs import TrainingInput

    root = (data_uri or f"{config.s3_root}/data").rstrip("/")
    inputs = {split: TrainingInput(f"{root}/{split}/", input_mode="File") for split in ("train", "valid", "test")}
    if pretrained_uri:
        inputs["pretrained"] = TrainingInput(pretrained_uri, input_mode="File")
    return inputs


def debugger_configs(config: Config):
    from sagemaker.debugger import (
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    hook = DebuggerHookConfig(
        s3_output_path=f"{config.s3_root}/debug-output",
        collection_configs=[CollectionConfig(name, parameters={"save_interval": every}) for name, every in COLLECTIONS.items()],
    )
    rules = [Rule.sagemaker(getattr(rule_configs, name)()) for name in DEBUGGER_RULES]
    rules.append(ProfilerRule.sagemaker(rule_configs.ProfilerReport()))
    profiler = ProfilerConfig(s3_output_path=f"{config.s3_root}/profiler-output", system_monitor_interval_millis=500)
    return hook, rules, profiler


def build_estimator(config: Config, session, extra_hyperparameters: dict | None = None, instance_type: str | None = None,
                    base_job_name: str = "dogbreed-train"):
    from sagemaker.estimator import Estimator

    config.require("role", "train_image", "bucket")
    training = config["training"]
    spot = bool(training.get("use_spot"))
    max_run = int(training.get("max_run_s", 14400))
    max_wait = int(training.get("max_wait_s", max_run * 2)) if spot else None
    if spot and max_wait < max_run:
        raise ConfigError(f"training.max_wait_s ({max_wait}) must be at least training.max_run_s ({max_run}) with spot")
    hook, rules, profiler = debugger_configs(config)
    return Estimator(
        image_uri=config["train_image"],
        role=config["role"],
        instance_count=int(training.get("instance_count", 1)),
        instance_type=instance_type or training["instance_type"],
        volume_size=int(training.get("volume_size_gb", 30)),
        max_run=max_run,
        use_spot_instances=spot,
        max_wait=max_wait,
        checkpoint_s3_uri=f"{config.s3_root}/checkpoints/{base_job_name}",
        checkpoint_local_path="/opt/ml/checkpoints",
        output_path=f"{config.s3_root}/models",
        base_job_name=base_job_name,
        hyperparameters=hyperparameters(config, extra_hyperparameters),
        metric_definitions=metrics.metric_definitions(),
        debugger_hook_config=hook,
        rules=rules,
        profiler_config=profiler,
        tags=[{"Key": k, "Value": str(v)} for k, v in (config.get("tags") or {}).items()],
        sagemaker_session=session,
        disable_profiler=False,
    )


def tuning_ranges(config: Config) -> dict:
    from sagemaker.tuner import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges = {}
    for name, spec in config["tuning"]["ranges"].items():
        if "values" in spec:
            ranges[name] = CategoricalParameter([str(v) for v in spec["values"]])
        elif isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
            ranges[name] = IntegerParameter(spec["min"], spec["max"], scaling_type=spec.get("scaling", "Auto"))
        else:
            ranges[name] = ContinuousParameter(float(spec["min"]), float(spec["max"]), scaling_type=spec.get("scaling", "Auto"))
    return ranges


def build_tuner(config: Config, session):
    from sagemaker.tuner import HyperparameterTuner

    tuning = config["tuning"]
    objective = tuning.get("objective", "valid_loss")
    if objective not in metrics.OBJECTIVES:
        raise ConfigError(f"tuning.objective must be one of {', '.join(metrics.OBJECTIVES)}, not {objective!r}")
    fixed = {"data-fraction": tuning.get("data-fraction", 0.1)}
    estimator = build_estimator(config, session, fixed, instance_type=tuning.get("instance_type"), base_job_name="dogbreed-hpo")
    ranges = tuning_ranges(config)
    for name in ranges:  # tuned names must not also be fixed
        estimator._hyperparameters.pop(name, None)
    return HyperparameterTuner(
        estimator=estimator,
        objective_metric_name=objective,
        objective_type=metrics.OBJECTIVES[objective],
        hyperparameter_ranges=ranges,
        metric_definitions=metrics.metric_definitions(),
        strategy=tuning.get("strategy", "Bayesian"),
        max_jobs=int(tuning.get("max_jobs", 8)),
        max_parallel_jobs=int(tuning.get("max_parallel_jobs", 2)),
        early_stopping_type=tuning.get("early_stopping", "Auto"),
        base_tuning_job_name="dogbreed-hpo",
        tags=[{"Key": k, "Value": str(v)} for k, v in (config.get("tags") or {}).items()],
    )


def best_hyperparameters(client, tuning_job: str) -> dict[str, str]:
    described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)
    best = described.get("BestTrainingJob")
    if not best:
        raise ConfigError(f"tuning job {tuning_job} has no best training job yet (status {described.get('HyperParameterTuningJobStatus')})")
    return {k: str(v).strip('"') for k, v in best["TunedHyperParameters"].items()}


def leaderboard(client, tuning_job: str, top: int = 20) -> list[dict]:
    """The tuning job's training jobs, best objective first."""
    rows = []
    paginator_args = {"HyperParameterTuningJobName": tuning_job, "SortBy": "FinalObjectiveMetricValue", "SortOrder": "Descending",
                      "MaxResults": 100}
    described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)
    objective = described["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    if objective["Type"] == "Minimize":
        paginator_args["SortOrder"] = "Ascending"
    for job in client.list_training_jobs_for_hyper_parameter_tuning_job(**paginator_args)["TrainingJobSummaries"]:
        value = job.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
        rows.append({"job": job["TrainingJobName"], "status": job["TrainingJobStatus"], objective["MetricName"]: value,
                     **{k: str(v).strip('"') for k, v in job.get("TunedHyperParameters", {}).items()}})
    return rows[:top]


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no training jobs)"
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(f"{r.get(h, '')}") for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines += ["  ".join(f"{r.get(h, '')}".ljust(widths[h]) for h in headers) for r in rows]
    return "\n".join(lines)


def model_data_of(client, training_job: str) -> str:
    described = client.describe_training_job(TrainingJobName=training_job)
    uri = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not uri:
        raise ConfigError(f"training job {training_job} has no model artifacts (status {described.get('TrainingJobStatus')})")
    return uri


def build_model(config: Config, session, model_data: str, name: str | None = None):
    from sagemaker.model import Model

    config.require("role", "serve_image")
    return Model(image_uri=config["serve_image"], model_data=model_data, role=config["role"], sagemaker_session=session,
                 name=name, env={"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"})


def deploy(config: Config, model, endpoint_name: str, wait: bool = True):
    from sagemaker.model_monitor import DataCaptureConfig
    from sagemaker.serverless import ServerlessInferenceConfig

    serving = config["serving"]
    capture = None
    if serving.get("data_capture"):
        capture = DataCaptureConfig(enable_capture=True, sampling_percentage=int(serving.get("data_capture_percent", 20)),
                                    destination_s3_uri=f"{config.s3_root}/data-capture")
    tags = [{"Key": k, "Value": str(v)} for k, v in (config.get("tags") or {}).items()]
    if serving.get("serverless"):
        serverless = ServerlessInferenceConfig(memory_size_in_mb=int(serving.get("serverless_memory_mb", 4096)),
                                               max_concurrency=int(serving.get("serverless_max_concurrency", 5)))
        return model.deploy(serverless_inference_config=serverless, endpoint_name=endpoint_name, data_capture_config=capture,
                            wait=wait, tags=tags)
    return model.deploy(initial_instance_count=int(serving.get("instance_count", 1)), instance_type=serving["instance_type"],
                        endpoint_name=endpoint_name, data_capture_config=capture, wait=wait, tags=tags)


def delete_endpoint(client, endpoint_name: str) -> list[str]:
    """Remove the endpoint, its config and its models; returns what was deleted."""
    deleted = []
    described = client.describe_endpoint(EndpointName=endpoint_name)
    config_name = described["EndpointConfigName"]
    models = [v["ModelName"] for v in client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]]
    client.delete_endpoint(EndpointName=endpoint_name)
    deleted.append(f"endpoint {endpoint_name}")
    client.delete_endpoint_config(EndpointConfigName=config_name)
    deleted.append(f"endpoint config {config_name}")
    for model in models:
        client.delete_model(ModelName=model)
        deleted.append(f"model {model}")
    return deleted
