"""SageMaker jobs (SDK v3) built only from our image URIs: ModelTrainer, HyperparameterTuner; endpoints and transforms
in ``endpoints.py`` and ``transform.py`` (their entry points re-exported here for the notebook and the command).

Every job gets an explicit, unique name before anything is sent, and everything about it is checked first
(``validate.py``); waiting is ours (``waits.wait_for``), so that a notebook or a command can wait hours for a job
without the SDK's fixed polling.
"""

from __future__ import annotations

import logging
import sys

from .. import metrics
from ..errors import ConfigError
from . import security, services, validate
from .config import Config
from .endpoints import ModelPlan, build_model, delete_endpoint, deploy  # noqa: F401 - the notebook's and the command's
from .session import sdk_config_of
from .waits import WAITS, JobError, job_name, poll_seconds, wait_for  # noqa: F401 - jobs.wait_for etc. for callers

log = logging.getLogger(__name__)

# The SageMaker SDK (seconds to import) and botocore are imported inside the functions that build or read a job, so
# that `dogbreed --help` and the request checks do not wait for them.

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
RESUME_CHANNEL = "resume"  # the training program reads its newest checkpoint from /opt/ml/input/data/resume


def checkpoint_uri(config: Config, job: str) -> str:
    """The job's own checkpoint prefix. It ends in '/': S3 prefixes match as strings, and SageMaker restores
    everything under the prefix at the start, so ``.../job-1`` would also restore ``.../job-10``."""
    return f"{config.s3_root}/checkpoints/{job}/"


def hyperparameters(config: Config, extra: dict | None = None) -> dict[str, str]:
    """SageMaker takes every hyperparameter as a string; names are the training program's flags."""
    values = {**config["hyperparameters"], **(extra or {})}
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def channels(config: Config, data_uri: str | None = None, pretrained_uri: str | None = None,
             resume_from: str | None = None) -> list:
    """The job's input channels (SDK v3 ``Channel`` shapes, S3 prefixes copied in File mode)."""
    root = (data_uri or f"{config.s3_root}/data").rstrip("/")
    uris = {split: f"{root}/{split}/" for split in ("train", "valid", "test")}
    if pretrained_uri:
        uris["pretrained"] = pretrained_uri
    if resume_from:
        uris[RESUME_CHANNEL] = resume_prefix(resume_from)
    return [_channel(name, uri) for name, uri in uris.items()]


def _channel(name: str, uri: str):
    from sagemaker.core.training.configs import Channel, DataSource, S3DataSource  # SDK v3: seconds to import

    source = S3DataSource(s3_data_type="S3Prefix", s3_uri=uri, s3_data_distribution_type="FullyReplicated")
    return Channel(channel_name=name, data_source=DataSource(s3_data_source=source), input_mode="File")


def resume_prefix(uri: str) -> str:
    """A checkpoint folder gets its trailing '/' (``.../job-1`` must not also bring ``.../job-10``); a single
    checkpoint file (a name with an extension) stays as it is."""
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    return uri if "." in last and not uri.endswith("/") else uri.rstrip("/") + "/"


def tags(config: Config) -> list:
    from sagemaker.core.training.configs import Tag

    return [Tag(key=k, value=str(v)) for k, v in (config.get("tags") or {}).items()]


def build_trainer(config: Config, session, extra_hyperparameters: dict | None = None, instance_type: str | None = None,
                  base_job_name: str = "dogbreed-train", *, checkpoint_job: str):
    """The training job's ModelTrainer (SDK v3), from a config its caller has validated (``start_training``,
    ``start_tuning``). No ``SourceCode``: with it, ModelTrainer replaces our image's entrypoint with its own
    driver; without it, SageMaker runs the image as ``docker run IMAGE train``. ``checkpoint_job`` names the
    checkpoint prefix: the training job's own name or the tuning job's."""
    from sagemaker.core.training.configs import CheckpointConfig, Compute, MetricDefinition, OutputDataConfig, StoppingCondition
    from sagemaker.train import ModelTrainer

    training = config["training"]
    spot, max_run, max_wait = validate.stopping(training)
    trainer = ModelTrainer(
        training_image=config["train_image"],
        role=config["role"],
        base_job_name=base_job_name,
        sagemaker_session=session,
        compute=Compute(instance_type=instance_type or training["instance_type"],
                        instance_count=int(training.get("instance_count", 1)),
                        volume_size_in_gb=int(training.get("volume_size_gb", 30)), enable_managed_spot_training=spot),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=max_run, max_wait_time_in_seconds=max_wait),
        output_data_config=OutputDataConfig(s3_output_path=f"{config.s3_root}/models"),
        checkpoint_config=CheckpointConfig(s3_uri=checkpoint_uri(config, checkpoint_job), local_path=CHECKPOINT_LOCAL_PATH),
        hyperparameters=hyperparameters(config, extra_hyperparameters),
        environment=services.debug_environment(config),
        tags=tags(config),
    )
    return trainer.with_metric_definitions([MetricDefinition(name=d["Name"], regex=d["Regex"])
                                            for d in metrics.metric_definitions()])


def start_training(config: Config, session, name: str, extra_hyperparameters: dict | None = None, *,
                   data_uri: str | None = None, pretrained_uri: str | None = None, resume_from: str | None = None):
    """Create training job ``name`` (checked first) and return at once; its checkpoints go under its own prefix
    (``checkpoint_uri(config, name)``), so a second job never restores the first one's epochs. A spot job that
    SageMaker restarts keeps its name, and so its checkpoints. ``resume_from`` (an S3 prefix of another job's
    checkpoints) becomes the ``resume`` channel.

    The request is the ModelTrainer's own, in the API's form (``_create_training_job_args(boto3=True)``, which
    SDK v3's pipelines send too) under our name: ModelTrainer draws a name of its own, and has no Debugger or
    Profiler fields, which only the low-level CreateTrainingJob (``TrainingJob.create``) takes
    (``services.debugger_request``, only when the config asks). ``TrainingJob.create`` itself would also
    describe the new job once, before our own wait does."""
    config.require("role", "train_image", "bucket")
    snapshots = security.for_request(config, "training", sdk_config_of(session))
    validate.check_training(config, name, {"--data": data_uri, "--pretrained": pretrained_uri, "--resume-from": resume_from},
                            snapshots, {**config["hyperparameters"], **(extra_hyperparameters or {})})
    trainer = build_trainer(config, session, extra_hyperparameters, checkpoint_job=name)
    request = training_request(trainer, channels(config, data_uri, pretrained_uri, resume_from))
    request.update(TrainingJobName=name, **services.debugger_request(config))
    security.apply_to_training(request, snapshots["training"])
    security.tell(snapshots["training"])
    session.sagemaker_client.create_training_job(**{k: v for k, v in request.items() if v is not None})
    return trainer


SDK_REQUEST_FIELDS = ("AlgorithmSpecification", "RoleArn", "ResourceConfig", "StoppingCondition", "OutputDataConfig")
# The SDK release the private call below is tested with: requirements/constraints.txt's pin (a unit test keeps them
# equal, so that a bump of the pin brings this guard's word with it).
TESTED_SDK = "3.27.0"


def training_request(trainer, input_data_config: list) -> dict:
    """The trainer's CreateTrainingJob request in the API's form, from SDK v3's private
    ``ModelTrainer._create_training_job_args(boto3=True)`` (checked on ``TESTED_SDK``; the same signature and form
    on the SDK's main branch of 2026-08). A release that renames it, changes its
    arguments or returns another form is refused here in one line, before anything is sent."""
    make = getattr(trainer, "_create_training_job_args", None)
    try:
        request = make(input_data_config=input_data_config, boto3=True) if make else None
        found = ("no such method" if make is None else f"keys {sorted(request)[:6]}" if isinstance(request, dict)
                 else repr(request)[:60])
    except TypeError as exc:  # its arguments changed
        request, found = None, f"TypeError: {exc}"
    if not isinstance(request, dict) or not set(SDK_REQUEST_FIELDS) <= set(request):
        import importlib.metadata

        version = importlib.metadata.version("sagemaker")
        raise ConfigError(f"sagemaker {version}: ModelTrainer._create_training_job_args(boto3=True) no longer gives a "
                          f"CreateTrainingJob request ({found}); dogbreed's launcher is tested with sagemaker "
                          f"{TESTED_SDK} (requirements/constraints.txt): install that release")
    return request


def tuning_ranges(config: Config) -> dict:
    from sagemaker.core.parameter import CategoricalParameter, ContinuousParameter, IntegerParameter

    ranges = {}
    for name, spec in config["tuning"]["ranges"].items():
        if "values" in spec:
            ranges[name] = CategoricalParameter([str(v) for v in spec["values"]])
        elif isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
            ranges[name] = IntegerParameter(spec["min"], spec["max"], scaling_type=spec.get("scaling", "Auto"))
        else:
            ranges[name] = ContinuousParameter(float(spec["min"]), float(spec["max"]), scaling_type=spec.get("scaling", "Auto"))
    return ranges


def build_tuner(config: Config, session, name: str | None = None):
    """The tuner of tuning job ``name`` (SDK v3's ``HyperparameterTuner(model_trainer=...)``; 3.9 and later pass
    the trainer's channels, environment, spot settings, output and checkpoint config on). Its trials checkpoint
    under the tuning job's prefix, each in its own sub-folder:

    What AWS does: CreateHyperParameterTuningJob takes one ``TrainingJobDefinition.CheckpointConfig`` for all the
    training jobs it launches (API reference, HyperParameterTrainingJobDefinition:
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HyperParameterTrainingJobDefinition.html),
    and the checkpoint guide documents no per-job suffix: "The high-level SageMaker checkpoint configuration
    specifies a single Amazon S3 location without additional suffixes or prefixes", and "Existing checkpoints
    in S3 are written to the SageMaker container at the start of the job"
    (https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints.html). Only the model artifacts get the
    training job's name appended (OutputDataConfig: ``<S3OutputPath>/<training job>/output/model.tar.gz``).
    So every trial of one tuning job shares ``checkpoints/<tuning job>/``; the training program writes and reads
    its checkpoints in the ``$TRAINING_JOB_NAME`` sub-folder of /opt/ml/checkpoints, which makes each trial's
    S3 prefix ``checkpoints/<tuning job>/<trial>/``. That holds whether or not AWS appends anything, and a
    spot-interrupted trial, restarted under its own name, finds its own folder. Trials of another tuning job
    never see this prefix. A tuning job takes no Debugger or Profiler configs: its trials write their smdebug
    trials beside their checkpoints."""
    from sagemaker.train.tuner import HyperparameterTuner

    tuning = config["tuning"]
    objective = tuning.get("objective", "valid_loss")
    if objective not in metrics.OBJECTIVES:
        raise ConfigError(f"tuning.objective must be one of {', '.join(metrics.OBJECTIVES)}, not {objective!r}")
    name = name or job_name("hpo")
    fixed = {"data-fraction": tuning.get("data-fraction", 0.1)}
    trainer = build_trainer(config, session, fixed, instance_type=tuning.get("instance_type"), base_job_name="dogbreed-hpo",
                            checkpoint_job=name)
    ranges = tuning_ranges(config)
    for range_name in ranges:  # tuned names must not also be fixed
        trainer.hyperparameters.pop(range_name, None)
    trainer.environment = services.trial_environment(config)  # a tuning job cannot ask for the Debugger service
    return HyperparameterTuner(
        model_trainer=trainer,
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


def start_tuning(config: Config, session, name: str, data_uri: str | None = None):
    """Create tuning job ``name`` (checked first) and return at once."""
    config.require("role", "train_image", "bucket")
    snapshots = security.for_request(config, "tuning", sdk_config_of(session))
    validate.check_tuning(config, name, {"--data": data_uri}, snapshots)
    tuner = build_tuner(config, session, name)
    settings = snapshots["training"]
    security.tell(settings)

    def secure(params, **_):  # the tuner builds and sends the request itself
        security.apply_to_training(params.setdefault("TrainingJobDefinition", {}), settings)

    events = session.boto_session.events
    events.register("before-parameter-build.sagemaker.CreateHyperParameterTuningJob", secure, unique_id="dogbreed-secure")
    try:
        tuner.tune(inputs=channels(config, data_uri), job_name=name, wait=False)
    finally:
        events.unregister("before-parameter-build.sagemaker.CreateHyperParameterTuningJob", unique_id="dogbreed-secure")
    return tuner


TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def training_log_printer(logs_client, name: str, out=None):
    """A callable that prints the training job's new CloudWatch log lines each time it is called."""
    out = out or (lambda line: print(line, file=sys.stdout, flush=True))
    tokens: dict[str, str] = {}

    def poll() -> None:
        from botocore.exceptions import ClientError

        try:
            streams = logs_client.describe_log_streams(logGroupName=TRAINING_LOG_GROUP,
                                                       logStreamNamePrefix=f"{name}/")["logStreams"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return  # no log group or stream yet
            raise
        for stream in sorted(streams, key=lambda s: s["logStreamName"]):
            stream_name = stream["logStreamName"]
            request = {"logGroupName": TRAINING_LOG_GROUP, "logStreamName": stream_name, "startFromHead": True}
            if stream_name in tokens:
                request["nextToken"] = tokens[stream_name]
            answer = logs_client.get_log_events(**request)
            for event in answer.get("events", []):
                out(event["message"])
            tokens[stream_name] = answer.get("nextForwardToken", tokens.get(stream_name))

    return poll


def best_hyperparameters(client, tuning_job: str) -> dict[str, str]:
    described = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning_job)
    best = described.get("BestTrainingJob")
    if not best:
        status = described.get("HyperParameterTuningJobStatus")
        raise ConfigError(f"tuning job {tuning_job} has no best training job yet (status {status})")
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


def model_data_of(client, training_job: str) -> str:
    described = client.describe_training_job(TrainingJobName=training_job)
    uri = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not uri:
        raise ConfigError(f"training job {training_job} has no model artifacts (status {described.get('TrainingJobStatus')}): "
                          f"wait for it to complete")
    return uri
