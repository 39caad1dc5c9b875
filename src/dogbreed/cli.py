"""The ``dogbreed`` command: every verb's parser and handler, wired here and only here.

Imports run one way: this module calls ``launch``, ``insight``, ``serving`` and the training program's
helpers; none of them imports it. Every failure the user can act on is printed as one line
(``dogbreed: error: ...``) with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .common import format_table, hp_pairs
from .errors import ConfigError, DataError, DogbreedError, describe
from .insight import debug_report, profile_report
from .insight.job_outputs import fetch_output, fetch_trial, is_job_name
from .launch import jobs
from .launch.config import load
from .launch.session import boto_session, sagemaker_session
from .sample import make_sample
from .serving.client import invoke_and_print

DESCRIPTION = "Train, tune, serve and classify dog breeds, on this machine or on SageMaker through our own images."

# The modules below import torch (seconds): each is imported by the verb that needs it, not for `dogbreed --help`.
# They import nothing from the command, so these imports are for start-up time, not to break a cycle.


# --------------------------------------------------------------------------------------------------
# local verbs


def cmd_make_sample(args) -> int:
    counts = make_sample(Path(args.dir), classes=args.classes, size=args.size, seed=args.seed)
    print(f"sample written to {args.dir}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_local_train(args, training_flags: list[str]) -> int:
    from .local import failure_reason, local_train  # torch: see above

    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such directory")
    code, archive = local_train(Path(args.data), Path(args.work_dir), training_flags)
    if code != 0:
        reason = failure_reason(Path(args.work_dir)) or f"the train entry exited with code {code}"
        raise DogbreedError(f"training failed: {reason.splitlines()[0] if reason else code}")
    print(f"model: {archive}")
    return 0


def cmd_local_serve(args) -> int:
    from .serving.local import serve_forever  # torch: see above

    return serve_forever(Path(args.model), port=args.port, workers=args.workers)


def cmd_invoke(args) -> int:
    if not args.endpoint:
        if args.async_:
            raise ConfigError("--async needs --endpoint NAME (an endpoint deployed with --async)")
        return invoke_and_print(args)
    import boto3  # the AWS SDK loads when a verb talks to AWS

    from .launch import invocations

    # the endpoint's region as the launchers take it: --region, the config, AWS_REGION
    config = load(args.config, {"region": args.region, "bucket": args.bucket, "prefix": args.prefix})
    boto = boto3.Session(region_name=config["region"])  # none set: the AWS profile's, as before
    args.region = boto.region_name
    paths = [Path(name) for name in args.images]
    if args.async_:
        return invocations.invoke_async(boto, config, args.endpoint, paths, args.top_k, poll_s=args.poll_s,
                                        timeout_s=args.wait_s, as_json=args.json)
    invocations.check_sizes(paths, invocations.endpoint_mode(boto.client("sagemaker"), args.endpoint))
    return invoke_and_print(args)


# --------------------------------------------------------------------------------------------------
# SageMaker verbs


def _config(args, **more):
    overrides = {"region": args.region, "role": getattr(args, "role", None), "bucket": args.bucket, "prefix": args.prefix,
                 "strict_policy": True if getattr(args, "strict_policy", False) else None}
    overrides.update(more)
    return load(args.config, overrides)


def cmd_data_prepare(args) -> int:
    from .launch.data_prepare import prepare  # torch (the data checks): see above

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
    config = _config(args, train_image=args.image, **{"training.instance_type": args.instance_type,
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
    config = _config(args, train_image=args.image, **{"tuning.max_jobs": args.max_jobs,
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
    from .launch.local_tuning import tune  # torch: see above

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
    config = _config(args, serve_image=args.image, serve_image_cpu=args.image, **{"serving.instance_type": args.instance_type,
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
    from .launch import transform

    config = _config(args, serve_image=args.image, serve_image_cpu=args.image, **{
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
    client = boto_session(_config(args)).client("sagemaker")
    for item in jobs.delete_endpoint(client, args.endpoint_name):
        print(f"deleted {item}")
    return 0


def _job_clients(args):
    """SageMaker and S3 clients for a report on a job (region from --region, the config or AWS_REGION)."""
    boto = boto_session(_config(args))
    return boto.client("sagemaker"), boto.client("s3")


def cmd_debug_report(args) -> int:
    if is_job_name(args.path):
        sagemaker, s3 = _job_clients(args)
        prefix, local, earlier = fetch_trial(sagemaker, s3, args.path, Path(args.out) / "trial")
        print(f"trial of {args.path}: {prefix} (copied to {local})")
        if earlier:  # a restarted spot job: one trial a run, the newest reported
            print(f"earlier runs of {args.path} (not in this report): {', '.join(earlier)}")
        args.path = str(local)
    return debug_report.cmd_debug_report(args)


def cmd_profile_report(args) -> int:
    if is_job_name(args.path):
        sagemaker, s3 = _job_clients(args)
        args.path = str(fetch_output(sagemaker, s3, args.path, Path(args.out) / "job-output"))
        print(f"output of the job: {args.path}")
        return profile_report.cmd_profile_report(args, s3)
    return profile_report.cmd_profile_report(args)


# --------------------------------------------------------------------------------------------------
# parsers


def _add_local_verbs(sub) -> None:
    p = sub.add_parser("make-sample", help="generate the synthetic sample set (dogImages layout)")
    p.add_argument("dir")
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_sample)

    p = sub.add_parser(
        "local-train",
        help="SageMaker-style training run here; other flags are training flags (see `python -m dogbreed.train -h`)",
    )
    p.add_argument("--data", required=True, help="a folder holding train/ valid/ test/")
    p.add_argument("--work-dir", required=True, help="where the /opt/ml tree and model.tar.gz go")
    p.set_defaults(func=cmd_local_train, passes_training_flags=True)

    p = sub.add_parser("local-serve", help="the serving stack on loopback")
    p.add_argument("--model", required=True, help="model.tar.gz or a model directory")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=cmd_local_serve)

    p = sub.add_parser("invoke", help="classify images with a local server or a SageMaker endpoint")
    p.add_argument("images", nargs="+")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--url", default=None, help="server base URL (default http://127.0.0.1:8080)")
    target.add_argument("--endpoint", default=None, help="SageMaker endpoint name")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--region", default=None)
    p.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml): --endpoint's region")
    p.add_argument("--json", action="store_true", help="print the raw JSON answers")
    p.add_argument("--async", dest="async_", action="store_true",
                   help="an async endpoint: upload each image to S3 (the config's bucket), InvokeEndpointAsync, wait for "
                        "the answers")
    p.add_argument("--bucket", default=None, help="--async: the bucket the images go to (default: the config's)")
    p.add_argument("--prefix", default=None)
    p.add_argument("--wait-s", type=float, default=3600.0, help="--async: how long to wait for the answers")
    p.add_argument("--poll-s", type=float, default=5.0, help="--async: how often to look for them")
    p.set_defaults(func=cmd_invoke)


def _common(parser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml)")
    parser.add_argument("--region", default=None)
    parser.add_argument("--role", default=None, help="SageMaker execution role ARN")
    parser.add_argument("--bucket", default=None)
    parser.add_argument("--prefix", default=None)
    parser.add_argument("--strict-policy", action="store_true",
                        help="refuse a role or name outside iam/dogbreed-launcher-policy.json (default: a warning)")


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
    _add_service_flags(p)
    p.set_defaults(func=cmd_train)


def _add_tune_verb(sub) -> None:
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


def _add_endpoint_verbs(sub) -> None:
    p = sub.add_parser("deploy", help="a real-time or serverless endpoint from the serving image")
    _common(p)
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
    _common(p)
    p.add_argument("endpoint_name")
    p.set_defaults(func=cmd_delete)


def _add_transform_verb(sub) -> None:
    p = sub.add_parser("transform", help="a Batch Transform job: classify every photo under an S3 prefix")
    _common(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--training-job", default=None, help="take model.tar.gz from this training job")
    source.add_argument("--model-data", default=None, metavar="S3URI", help="S3 URI of model.tar.gz")
    p.add_argument("--input", required=True, metavar="S3URI", help="the prefix of the photos (or JSON-lines files)")
    p.add_argument("--output", required=True, metavar="S3URI", help="where the answers go (<input key>.out each)")
    p.add_argument("--image", default=None, help="serving image URI (default: by instance type, as deploy)")
    p.add_argument("--instance-type", default=None)
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--content-type", default=None, help="default application/x-image; JSON lines: application/jsonlines")
    p.add_argument("--split-type", default=None, choices=("None", "Line"), help="None: one photo per object; Line: JSON lines")
    p.add_argument("--batch-strategy", default=None, choices=("SingleRecord", "MultiRecord"))
    p.add_argument("--max-payload-mb", type=int, default=None, help="the largest request (1 to 100 MB; default 6)")
    p.add_argument("--job-name", default=None, help="default: dogbreed-transform-<time>-<random>")
    p.add_argument("--wait", action="store_true", help="wait for the job, then delete its model")
    p.set_defaults(func=cmd_transform)


def _add_insight_verbs(sub) -> None:
    debug = sub.add_parser("debug", help="Debugger: loss plot and rule verdicts from an smdebug trial")
    debug_sub = debug.add_subparsers(dest="debug_verb", metavar="VERB")
    debug_sub.required = True
    p = debug_sub.add_parser("report", help="plot losses and run the seed's rules on a trial (training job name, "
                                            "local dir or S3 URI)")
    p.add_argument("path", help="a training job's name (its trial is fetched from S3), a trial folder or an S3 URI")
    p.add_argument("--out", default="debug-report")
    _report_common(p)
    p.set_defaults(func=cmd_debug_report)

    profile = sub.add_parser("profile", help="Profiler: an HTML report of a run's profile")
    profile_sub = profile.add_subparsers(dest="profile_verb", metavar="VERB")
    profile_sub.required = True
    p = profile_sub.add_parser("report", help="step split, top operators, utilisation plots, advice")
    p.add_argument("path", help="a training job's name, a work dir, output data dir, profile folder, output.tar.gz or its "
                                "S3 URI")
    p.add_argument("--out", default="profile-report")
    _report_common(p)
    p.set_defaults(func=cmd_profile_report)


def _report_common(parser) -> None:
    """A report on a job reads its description and S3: the same config and region flags as the launchers."""
    parser.add_argument("--config", default=None, help="TOML config (default ./dogbreed.toml)")
    parser.add_argument("--region", default=None)
    parser.set_defaults(bucket=None, prefix=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dogbreed", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    _add_local_verbs(sub)
    _add_data_and_train_verbs(sub)
    _add_tune_verb(sub)
    _add_endpoint_verbs(sub)
    _add_transform_verb(sub)
    _add_insight_verbs(sub)
    return parser


# --------------------------------------------------------------------------------------------------
# entry


def main(argv: list[str] | None = None) -> None:
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)  # "Not applying SDK defaults" noise
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if getattr(args, "passes_training_flags", False):
            code = args.func(args, extra)
        else:
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            code = args.func(args)
    except DogbreedError as exc:
        print(f"dogbreed: error: {describe(exc)}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        print("dogbreed: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # the edge: AWS's and anything else's errors as one clear line, not a traceback
        print(f"dogbreed: error: {describe(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
