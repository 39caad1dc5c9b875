"""The SageMaker verbs: data prepare, train, tune (or tune --local), deploy, delete, transform (or transform
--local, in local.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ..common import format_table, hp_pairs
from ..errors import ConfigError, DataError
from ..launch import jobs
from ..launch.config import load
from ..launch.session import boto_session, sagemaker_session
from .local import cmd_transform_local
from .options import add_common, config_of

# Some verbs import torch (seconds): each imports it when it runs, not for `dogbreed --help`. Those modules import
# nothing from the command, so these imports are for start-up time, not to break a cycle.


def cmd_data_prepare(args) -> int:
    from ..launch.data_prepare import prepare  # torch (the data checks): see the note at the top

    config = config_of(args, **{"data.url": args.url})
    result = prepare(config, Path(args.work_dir), fraction=args.fraction, seed=args.seed, upload_to_s3=not args.no_upload)
    layout = result["layout"]
    print(f"checked: {layout['classes']} classes; train {layout['train']}, valid {layout['valid']}, test {layout['test']}")
    if "upload" in result:
        up = result["upload"]
        print(f"uploaded {up['uploaded']}, already there {up['skipped']}, of {up['total']}")
        for split, uri in result["channels"].items():
            print(f"{split}={uri}")
    return 0


def _tuned_hyperparameters(session, source: str | None) -> dict:
    """``--from-tuning``: a local tuning's best_hyperparameters.json, or a SageMaker tuning job's best."""
    if not source:
        return {}
    if Path(source).is_file():
        found = json.loads(Path(source).read_text())["hyperparameters"]
    else:
        found = jobs.best_hyperparameters(session.sagemaker_client, source)
    print(f"hyperparameters from {source}: {json.dumps(found)}")
    return dict(found)


def _services(args) -> dict:
    """--debugger-service / --profiler-service: only a flag given overrides the config."""
    return {"training.debugger_service": True if args.debugger_service else None,
            "training.profiler_service": True if args.profiler_service else None}


def cmd_train(args) -> int:
    config = config_of(args, train_image=args.image, **{"training.instance_type": args.instance_type,
                                                       "training.instance_count": args.instance_count,
                                                       "training.use_spot": False if args.no_spot else None,
                                                       **_services(args)})
    session = sagemaker_session(config)
    extra = _tuned_hyperparameters(session, args.from_tuning)
    extra.update(hp_pairs(args.hp))
    name = args.job_name or jobs.job_name("train")
    jobs.start_training(config, session, name, extra, data_uri=args.data, pretrained_uri=args.pretrained,
                        resume_from=args.resume_from)
    print(f"training_job={name}")
    print(f"checkpoints={jobs.checkpoint_uri(config, name)}")
    if args.resume_from:
        print(f"resume_from={args.resume_from}")
    if args.detach:
        return 0
    logs = jobs.training_log_printer(session.boto_session.client("logs"), name)
    described = jobs.wait_for(session.sagemaker_client, "training", name, poll_s=jobs.poll_seconds(config), on_poll=logs)
    print(f"model_data={described['ModelArtifacts']['S3ModelArtifacts']}")
    return 0


def cmd_tune(args) -> int:
    if args.local:
        return cmd_tune_local(args)
    config = config_of(args, train_image=args.image, **{"tuning.max_jobs": args.max_jobs,
                                                       "tuning.max_parallel_jobs": args.max_parallel_jobs,
                                                       "tuning.objective": args.objective,
                                                       "tuning.strategy": args.strategy,
                                                       "tuning.early_stopping": args.early_stopping})
    session = sagemaker_session(config)
    name = args.job_name or jobs.job_name("hpo")
    jobs.start_tuning(config, session, name, data_uri=args.data)
    print(f"tuning_job={name}")
    if args.detach:
        return 0
    jobs.wait_for(session.sagemaker_client, "tuning", name, poll_s=jobs.poll_seconds(config))
    print(format_table(jobs.leaderboard(session.sagemaker_client, name)))
    best = jobs.best_hyperparameters(session.sagemaker_client, name)
    print(f"best_hyperparameters={json.dumps(best)}")
    print(f"train with them: dogbreed train --from-tuning {name}")
    return 0


def cmd_tune_local(args) -> int:
    from ..launch.local_tuning import tune  # torch: see the note at the top

    config = load(args.config, {"tuning.max_jobs": args.max_jobs, "tuning.max_parallel_jobs": args.max_parallel_jobs,
                                "tuning.objective": args.objective, "tuning.strategy": args.strategy,
                                "train_image": args.image})
    if not args.data or not Path(args.data).is_dir():
        raise DataError("tune --local needs --data DIR (a folder holding train/ valid/ test/)")
    tuning = config["tuning"]
    fixed = {**config["hyperparameters"], "data-fraction": tuning.get("data-fraction", 1.0), **hp_pairs(args.hp)}
    result = tune(
        data=Path(args.data), work=Path(args.work_dir), ranges=tuning["ranges"], fixed=fixed,
        objective=tuning.get("objective", "valid_loss"), max_trials=int(tuning.get("max_jobs", 8)),
        parallel=int(tuning.get("max_parallel_jobs", 2)), strategy=tuning.get("strategy", "Bayesian"),
        use_docker=args.use_docker, image=config.get("train_image") or "dogbreed-train:latest",
        feature_cache=args.feature_cache, seed=args.seed,
    )
    print(result["table"])
    print(f"best_hyperparameters={json.dumps(result['best'])}")
    print(f"saved: {result['best_file']} (dogbreed train --from-tuning {result['best_file']}); plot: {result['plot']}")
    return 0 if result["best"] else 1


def cmd_deploy(args) -> int:
    config = config_of(args, serve_image=args.image, serve_image_cpu=args.image, **{"serving.instance_type": args.instance_type,
                                                       "serving.instance_count": args.instance_count,
                                                       "serving.serverless": True if args.serverless else None,
                                                       "serving.data_capture": True if args.data_capture else None,
                                                       **_async_settings(args)})
    session = sagemaker_session(config)
    model_data = args.model_data or (jobs.model_data_of(session.sagemaker_client, args.training_job)
                                     if args.training_job else None)
    if not model_data:
        raise ConfigError("give --model-data S3_URI or --training-job NAME")
    model = jobs.build_model(config, session, model_data)
    endpoint = args.endpoint_name or "dogbreed"
    print(f"image={model.image}")
    jobs.deploy(config, model, endpoint, wait=not args.detach, keep_old=args.keep_old)
    print(f"model={model.name}")
    print(f"endpoint_config={model.name}")
    print(f"endpoint={endpoint}")
    return 0


def _async_settings(args) -> dict:
    """--async and its S3 output and SNS topics (validate.py checks them); --output alone means nothing."""
    if not args.async_:
        if args.output or args.sns_success or args.sns_error:
            raise ConfigError("--output, --sns-success and --sns-error are for an async endpoint: add --async")
        return {}
    return {"serving.async": True, "serving.async_output": args.output, "serving.async_sns_success": args.sns_success,
            "serving.async_sns_error": args.sns_error}


def cmd_transform(args) -> int:
    from ..launch import transform

    if args.local:
        return cmd_transform_local(args)
    if args.model:
        raise ConfigError("--model is for --local (a model.tar.gz or folder here): on SageMaker give --model-data "
                          "S3_URI or --training-job NAME")
    config = config_of(args, serve_image=args.image, serve_image_cpu=args.image, **{
        f"transform.{key}": getattr(args, key) for key in ("instance_type", "instance_count", "content_type", "split_type",
                                                            "batch_strategy", "max_payload_mb")})
    session = sagemaker_session(config)
    model_data = args.model_data or (jobs.model_data_of(session.sagemaker_client, args.training_job)
                                     if args.training_job else None)
    if not model_data:
        raise ConfigError("give --model-data S3_URI or --training-job NAME")
    job = transform.plan(config, session, model_data, args.input, args.output, args.job_name)
    print(f"transform_job={job.job}")
    print(f"model={job.model.name}")
    print(f"image={job.model.image}")
    described = transform.run(config, job, session.boto_session.client("s3"), wait=args.wait)
    print(f"output={(described or {}).get('TransformOutput', {}).get('S3OutputPath', args.output)}")
    if not args.wait:
        print(f"the model serves this job only: once it ends, delete it (aws sagemaker delete-model --model-name "
              f"{job.model.name}), or run with --wait")
    return 0


def cmd_delete(args) -> int:
    client = boto_session(config_of(args)).client("sagemaker")
    for item in jobs.delete_endpoint(client, args.endpoint_name):
        print(f"deleted {item}")
    return 0



def _add_service_flags(parser) -> None:
    parser.add_argument("--debugger-service", action="store_true",
                        help="also send the Debugger hook and rule configs (accounts that still have SageMaker Debugger); "
                             "without it the smdebug trial goes to debug/ beside the checkpoints: dogbreed debug report JOB")
    parser.add_argument("--profiler-service", action="store_true",
                        help="also send a SageMaker Profiler config (discontinued 2027-06-30); without it: "
                             "dogbreed profile report JOB (torch.profiler traces and system samples in the job's output)")


def _add_data_and_train_verbs(sub) -> None:
    data = sub.add_parser("data", help="data preparation")
    data_sub = data.add_subparsers(dest="data_verb", metavar="VERB")
    data_sub.required = True
    p = data_sub.add_parser("prepare", help="download dogImages.zip, check it, take a fraction, upload to S3")
    add_common(p)
    p.add_argument("--url", default=None, help="the zip's URL (or a local path)")
    p.add_argument("--work-dir", default=".work/data")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-upload", action="store_true")
    p.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("train", help="a SageMaker training job from the training image")
    add_common(p)
    p.add_argument("--image", default=None, help="training image URI (default: train_image in the config)")
    p.add_argument("--instance-type", default=None)
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--no-spot", action="store_true", help="on-demand instead of managed spot training")
    p.add_argument("--data", default=None, help="S3 prefix holding train/ valid/ test/ (default: the prepared data)")
    p.add_argument("--pretrained", default=None, help="S3 URI of a weights file (the 'pretrained' channel)")
    p.add_argument("--hp", action="append", metavar="NAME=VALUE", help="a hyperparameter (repeatable)")
    p.add_argument("--from-tuning", default=None, metavar="JOB_OR_FILE",
                   help="train with a tuning job's best hyperparameters (or a local tuning's best_hyperparameters.json)")
    p.add_argument("--resume-from", default=None, metavar="S3URI",
                   help="start from the newest checkpoint under this S3 prefix (another job's checkpoints), as channel 'resume'")
    p.add_argument("--job-name", default=None, help="default: dogbreed-train-<time>-<random>; also names the checkpoint prefix")
    p.add_argument("--detach", action="store_true", help="return once the job is created")
    _add_service_flags(p)
    p.set_defaults(func=cmd_train)


def _add_tune_verb(sub) -> None:
    p = sub.add_parser("tune", help="a SageMaker hyperparameter tuning job (or --local: trials here)")
    add_common(p)
    p.add_argument("--local", action="store_true", help="run the trials here (docker image or local runs)")
    p.add_argument("--image", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--max-jobs", type=int, default=None)
    p.add_argument("--max-parallel-jobs", type=int, default=None)
    p.add_argument("--objective", default=None, choices=("valid_loss", "valid_acc"))
    p.add_argument("--strategy", default=None, choices=("Bayesian", "Random", "Hyperband", "Grid"))
    p.add_argument("--early-stopping", default=None, choices=("Auto", "Off"), help="Hyperband needs Off")
    p.add_argument("--job-name", default=None)
    p.add_argument("--detach", action="store_true")
    p.add_argument("--work-dir", default=".work/tune", help="--local: where trials run")
    p.add_argument("--hp", action="append", metavar="NAME=VALUE", help="--local: a fixed hyperparameter (repeatable)")
    p.add_argument("--use-docker", default="auto", choices=("auto", "yes", "no"), help="--local: trials in the training image")
    p.add_argument("--feature-cache", default="auto", choices=("auto", "yes", "no"), help="--local: reuse frozen features")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tune)


def _add_endpoint_verbs(sub) -> None:
    p = sub.add_parser("deploy", help="a real-time or serverless endpoint from the serving image")
    add_common(p)
    p.add_argument("--image", default=None, help="serving image URI (default: serve_image_cpu for CPU instances and "
                                                 "serverless, serve_image for GPU instances, from the config)")
    p.add_argument("--model-data", default=None, help="S3 URI of model.tar.gz")
    p.add_argument("--training-job", default=None, help="take model.tar.gz from this training job")
    p.add_argument("--endpoint-name", default=None)
    p.add_argument("--instance-type", default=None)
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--serverless", action="store_true")
    p.add_argument("--data-capture", action="store_true")
    p.add_argument("--detach", action="store_true", help="return once the endpoint is created or its update started "
                                                          "(a redeploy then keeps the old config and model)")
    p.add_argument("--keep-old", action="store_true", help="redeploy: keep the endpoint config and model it replaced")
    p.add_argument("--async", dest="async_", action="store_true",
                   help="an async endpoint (requests queued, answers written to --output; up to 1 GB and an hour each)")
    p.add_argument("--output", default=None, metavar="S3URI", help="--async: where the answers go")
    p.add_argument("--sns-success", default=None, metavar="TOPIC_ARN", help="--async: an SNS topic told of each answer")
    p.add_argument("--sns-error", default=None, metavar="TOPIC_ARN", help="--async: an SNS topic told of each failure")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("delete", help="remove an endpoint, its config and every model and config deploy made for it")
    add_common(p)
    p.add_argument("endpoint_name")
    p.set_defaults(func=cmd_delete)


def _add_transform_verb(sub) -> None:
    p = sub.add_parser("transform", help="a Batch Transform job: classify every photo under an S3 prefix "
                                         "(--local: a folder, in the serve image here)")
    add_common(p)
    p.add_argument("--local", action="store_true",
                   help="run the job here with the SageMaker SDK's local mode and docker: --input and --output are "
                        "folders, the model --model model.tar.gz|DIR")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--training-job", default=None, help="take model.tar.gz from this training job")
    source.add_argument("--model-data", default=None, metavar="S3URI", help="S3 URI of model.tar.gz (--local: its path)")
    source.add_argument("--model", default=None, metavar="PATH", help="--local: model.tar.gz or a model directory")
    p.add_argument("--input", required=True, metavar="S3URI|DIR", help="the prefix of the photos (or JSON-lines "
                                                                       "files); --local: a folder (not its subfolders)")
    p.add_argument("--output", required=True, metavar="S3URI|DIR", help="where the answers go (<input key>.out each)")
    p.add_argument("--image", default=None, help="serving image URI (default: by instance type, as deploy; --local: "
                                                 "serve_image_cpu, serve_image, or dogbreed-serve:latest)")
    p.add_argument("--instance-type", default=None)
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--content-type", default=None, help="default application/x-image; JSON lines: application/jsonlines")
    p.add_argument("--split-type", default=None, choices=("None", "Line"), help="None: one photo per object; Line: JSON lines")
    p.add_argument("--batch-strategy", default=None, choices=("SingleRecord", "MultiRecord"))
    p.add_argument("--max-payload-mb", type=int, default=None, help="the largest request (1 to 100 MB; default 6)")
    p.add_argument("--job-name", default=None, help="default: dogbreed-transform-<time>-<random>")
    p.add_argument("--wait", action="store_true", help="wait for the job, then delete its model")
    p.set_defaults(func=cmd_transform)



def add_verbs(sub) -> None:
    _add_data_and_train_verbs(sub)
    _add_tune_verb(sub)
    _add_endpoint_verbs(sub)
    _add_transform_verb(sub)
