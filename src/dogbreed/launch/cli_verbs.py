"""The SageMaker verbs of the ``dogbreed`` command: data prepare, train, tune, deploy, delete."""

from __future__ import annotations

import json
from pathlib import Path

from .config import ConfigError, load, parse_value


def _common(parser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--role", default=None, help="SageMaker execution role ARN")
    parser.add_argument("--bucket", default=None)
    parser.add_argument("--prefix", default=None)


def _config(args, **more):
    overrides = {"region": args.region, "role": getattr(args, "role", None), "bucket": args.bucket, "prefix": args.prefix}
    overrides.update(more)
    return load(args.config, overrides)


def _hp_pairs(pairs) -> dict:
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--hp {pair}: expected NAME=VALUE")
        key, value = pair.split("=", 1)
        result[key.strip()] = parse_value(value.strip())
    return result


def cmd_data_prepare(args) -> int:
    from .data_prepare import prepare

    config = _config(args, **{"data.url": args.url})
    result = prepare(config, Path(args.work_dir), fraction=args.fraction, seed=args.seed, upload_to_s3=not args.no_upload)
    layout = result["layout"]
    print(f"checked: {layout['classes']} classes; train {layout['train']}, valid {layout['valid']}, test {layout['test']}")
    if "upload" in result:
        up = result["upload"]
        print(f"uploaded {up['uploaded']}, already there {up['skipped']}, of {up['total']}")
        for split, uri in result["channels"].items():
            print(f"{split}={uri}")
    return 0


def cmd_train(args) -> int:
    from .jobs import best_hyperparameters, checkpoint_uri, job_name, poll_seconds, start_training, training_log_printer, wait_for
    from .session import sagemaker_session

    config = _config(args, train_image=args.image, **{"training.instance_type": args.instance_type,
                                                       "training.instance_count": args.instance_count,
                                                       "training.use_spot": False if args.no_spot else None})
    session = sagemaker_session(config)
    extra = {}
    if args.from_tuning and Path(args.from_tuning).is_file():  # a local tuning's best_hyperparameters.json
        extra.update(json.loads(Path(args.from_tuning).read_text())["hyperparameters"])
        print(f"hyperparameters from {args.from_tuning}: {json.dumps(extra)}")
    elif args.from_tuning:
        extra.update(best_hyperparameters(session.sagemaker_client, args.from_tuning))
        print(f"hyperparameters from {args.from_tuning}: {json.dumps(extra)}")
    extra.update(_hp_pairs(args.hp))
    name = args.job_name or job_name("train")
    start_training(config, session, name, extra, data_uri=args.data, pretrained_uri=args.pretrained, resume_from=args.resume_from)
    print(f"training_job={name}")
    print(f"checkpoints={checkpoint_uri(config, name)}")
    if args.resume_from:
        print(f"resume_from={args.resume_from}")
    if args.detach:
        return 0
    logs = training_log_printer(session.boto_session.client("logs"), name)
    described = wait_for(session.sagemaker_client, "training", name, poll_s=poll_seconds(config), on_poll=logs)
    print(f"model_data={described['ModelArtifacts']['S3ModelArtifacts']}")
    return 0


def cmd_tune(args) -> int:
    if args.local:
        from ..insight.local_tuning import cmd_tune_local

        return cmd_tune_local(args)
    from .jobs import best_hyperparameters, format_table, job_name, leaderboard, poll_seconds, start_tuning, wait_for
    from .session import sagemaker_session

    config = _config(args, train_image=args.image, **{"tuning.max_jobs": args.max_jobs,
                                                       "tuning.max_parallel_jobs": args.max_parallel_jobs,
                                                       "tuning.objective": args.objective,
                                                       "tuning.strategy": args.strategy,
                                                       "tuning.early_stopping": args.early_stopping})
    session = sagemaker_session(config)
    name = args.job_name or job_name("hpo")
    start_tuning(config, session, name, data_uri=args.data)
    print(f"tuning_job={name}")
    if args.detach:
        return 0
    wait_for(session.sagemaker_client, "tuning", name, poll_s=poll_seconds(config))
    rows = leaderboard(session.sagemaker_client, name)
    print(format_table(rows))
    best = best_hyperparameters(session.sagemaker_client, name)
    print(f"best_hyperparameters={json.dumps(best)}")
    print(f"train with them: dogbreed train --from-tuning {name}")
    return 0


def cmd_deploy(args) -> int:
    from .jobs import build_model, deploy, model_data_of
    from .session import sagemaker_session

    config = _config(args, serve_image=args.image, **{"serving.instance_type": args.instance_type,
                                                       "serving.instance_count": args.instance_count,
                                                       "serving.serverless": True if args.serverless else None,
                                                       "serving.data_capture": True if args.data_capture else None})
    session = sagemaker_session(config)
    model_data = args.model_data or (model_data_of(session.sagemaker_client, args.training_job) if args.training_job else None)
    if not model_data:
        raise ConfigError("give --model-data S3_URI or --training-job NAME")
    model = build_model(config, session, model_data)
    endpoint = args.endpoint_name or "dogbreed"
    deploy(config, model, endpoint, wait=not args.detach)
    print(f"model={model.name}")
    print(f"endpoint={endpoint}")
    return 0


def cmd_delete(args) -> int:
    from .session import boto_session

    config = _config(args)
    client = boto_session(config).client("sagemaker")
    from .jobs import delete_endpoint

    for item in delete_endpoint(client, args.endpoint_name):
        print(f"deleted {item}")
    return 0


def add_verbs(sub) -> None:
    data = sub.add_parser("data", help="data preparation")
    data_sub = data.add_subparsers(dest="data_verb", metavar="VERB")
    data_sub.required = True
    p = data_sub.add_parser("prepare", help="download dogImages.zip, check it, take a fraction, upload to S3")
    _common(p)
    p.add_argument("--url", default=None, help="the zip's URL (or a local path)")
    p.add_argument("--work-dir", default=".work/data")
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-upload", action="store_true")
    p.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("train", help="a SageMaker training job from the training image")
    _common(p)
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
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="a SageMaker hyperparameter tuning job (or --local: trials here)")
    _common(p)
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

    p = sub.add_parser("deploy", help="a real-time or serverless endpoint from the serving image")
    _common(p)
    p.add_argument("--image", default=None, help="serving image URI (default: serve_image in the config)")
    p.add_argument("--model-data", default=None, help="S3 URI of model.tar.gz")
    p.add_argument("--training-job", default=None, help="take model.tar.gz from this training job")
    p.add_argument("--endpoint-name", default=None)
    p.add_argument("--instance-type", default=None)
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--serverless", action="store_true")
    p.add_argument("--data-capture", action="store_true")
    p.add_argument("--detach", action="store_true")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("delete", help="remove an endpoint, its config and its model")
    _common(p)
    p.add_argument("endpoint_name")
    p.set_defaults(func=cmd_delete)
