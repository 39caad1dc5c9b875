"""The verbs that run on this machine: make-sample, local-train, local-serve, invoke (a local server, or an
endpoint by name), evaluate (a model here, or a training job's), and ``transform --local`` (the serve image here, on
a folder of photos; its flags are the AWS transform's, in aws.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..errors import ConfigError, DataError, DogbreedError
from ..evaluation import arguments as evaluation_arguments
from ..launch.config import load
from ..sample import make_sample
from ..serving.client import invoke_and_print
from .options import add_report_common, config_of, fetch_job_model

LOCAL_SERVE_IMAGE = "dogbreed-serve:latest"  # what `make images` tags here

# Some verbs import torch (seconds): each imports it when it runs, not for `dogbreed --help`. Those modules import
# nothing from the command, so these imports are for start-up time, not to break a cycle.


def cmd_make_sample(args) -> int:
    counts = make_sample(Path(args.dir), classes=args.classes, size=args.size, seed=args.seed)
    print(f"sample written to {args.dir}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_local_train(args, training_flags: list[str]) -> int:
    from ..local import failure_reason, local_train  # torch: see the note at the top

    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such directory")
    code, archive = local_train(Path(args.data), Path(args.work_dir), training_flags)
    if code != 0:
        reason = failure_reason(Path(args.work_dir)) or f"the train entry exited with code {code}"
        raise DogbreedError(f"training failed: {reason.splitlines()[0] if reason else code}")
    print(f"model: {archive}")
    return 0


def cmd_local_serve(args) -> int:
    from ..serving.local import serve_forever  # torch: see the note at the top

    return serve_forever(Path(args.model), port=args.port, workers=args.workers)


def cmd_invoke(args) -> int:
    if not args.endpoint:
        if args.async_:
            raise ConfigError("--async needs --endpoint NAME (an endpoint deployed with --async)")
        return invoke_and_print(args)
    import boto3  # the AWS SDK loads when a verb talks to AWS

    from ..launch import invocations

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



def cmd_evaluate(args) -> int:
    from ..evaluation.evaluate import run  # torch: see the note at the top

    if bool(args.model) == bool(args.training_job):
        raise ConfigError("give --model model.tar.gz|DIR or --training-job NAME (one of them)")
    if not args.training_job:
        return run(args)
    with tempfile.TemporaryDirectory(prefix="dogbreed-evaluate-job-") as scratch:
        args.model = str(fetch_job_model(args, Path(scratch)))
        return run(args)


def _local_model(args, scratch: Path) -> Path:
    """``--model`` or ``--model-data`` as a path here, or ``--training-job``'s archive fetched into ``scratch``."""
    if args.training_job:
        return fetch_job_model(args, scratch)
    given = args.model or args.model_data
    if not given:
        raise ConfigError("transform --local needs --model model.tar.gz|DIR (or --training-job NAME)")
    if given.startswith("s3://"):
        raise ConfigError(f"transform --local takes a model here, not {given}: --model model.tar.gz|DIR")
    if not Path(given).exists():
        raise DataError(f"--model {given}: no such file or directory")
    return Path(given)


def local_transform_job(args, config, model: Path):
    """The LocalTransform the flags ask for; a flag left out takes the config's [transform] value."""
    from ..launch.local_transform import LocalTransform

    settings = config["transform"]
    split = args.split_type or settings.get("split_type") or "None"
    image = args.image or config.get("serve_image_cpu") or config.get("serve_image") or LOCAL_SERVE_IMAGE
    return LocalTransform(
        image=image, model=model, input_dir=Path(args.input), output_dir=Path(args.output),
        content_type=args.content_type or settings.get("content_type") or "application/x-image", split_type=split,
        batch_strategy=args.batch_strategy or settings.get("batch_strategy") or "SingleRecord",
        max_payload_mb=int(args.max_payload_mb or settings.get("max_payload_mb") or 6),
        accept="application/jsonlines" if split == "Line" else "application/json")


def cmd_transform_local(args) -> int:
    from ..launch import local_transform  # the SDK's local mode loads when the job runs

    if not Path(args.input).is_dir():
        raise DataError(f"--input {args.input}: no such folder (transform --local reads the files of a folder)")
    with tempfile.TemporaryDirectory(prefix="dogbreed-transform-model-") as scratch:
        job = local_transform_job(args, config_of(args), _local_model(args, Path(scratch)))
        print(f"image={job.image}")
        outputs = local_transform.run_local_transform(job, args.job_name)
    print(f"outputs={len(outputs)}")
    print(f"output={job.output_dir}")
    return 0


def _add_evaluate_verb(sub) -> None:
    p = evaluation_arguments.add_arguments(sub.add_parser("evaluate", help=evaluation_arguments.HELP))
    # --training-job stands in for --model: argparse has no public way to relax a flag another module added
    next(a for a in p._actions if "--model" in a.option_strings).required = False
    p.add_argument("--training-job", default=None, metavar="JOB",
                   help="evaluate this SageMaker training job's model.tar.gz (instead of --model)")
    add_report_common(p)
    p.set_defaults(func=cmd_evaluate)


def add_verbs(sub) -> None:
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

    _add_evaluate_verb(sub)
