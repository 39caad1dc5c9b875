"""Where a SageMaker training job left its smdebug trial and its profile, from the job's description, and
where a trial lies when the path given holds none.

Without the Debugger service the training program writes its trial to ``debug/`` beside its checkpoints
(``/opt/ml/checkpoints/<job>/debug``, see training.hooks); SageMaker syncs ``/opt/ml/checkpoints`` to the job's
``CheckpointConfig.S3Uri`` while it runs, so the trial is at ``<S3Uri>/<job>/debug/`` (a tuning trial's S3Uri is
the tuning job's prefix, and its own name is the sub-folder all the same). With the Debugger service, the trial
is at ``<DebugHookConfig.S3OutputPath>/<job>/debug-output/``. The profile (system samples, step split,
torch.profiler trace) is in ``SM_OUTPUT_DATA_DIR/profile``: the job's ``output.tar.gz``.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError
from ..training.hooks import RESTART_SUFFIX, TRIAL_FOLDER

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TRIAL_MARKS = ("index", "collections")  # the folders smdebug writes in a trial (with events/)
NEARBY_DEPTH = 4  # a work dir's opt_ml/checkpoints/<job>/debug is 4 levels down


def is_job_name(text: str) -> bool:
    """A SageMaker job name, not a path: no '/', no 's3://', and nothing of that name here."""
    return bool(JOB_NAME.match(text)) and not Path(text).exists()


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def is_trial(path: Path) -> bool:
    return all((path / mark).is_dir() for mark in TRIAL_MARKS)


def trials_under(root: Path, depth: int = NEARBY_DEPTH, limit: int = 5) -> list[Path]:
    """Trial folders at most ``depth`` levels under ``root``, nearest first."""
    found, level = [], [root]
    for _ in range(depth + 1):
        found += [p for p in level if is_trial(p)]
        if len(found) >= limit:
            break
        level = [c for p in level if p.is_dir() and not is_trial(p) for c in sorted(p.iterdir()) if c.is_dir()]
    return found[:limit]


def local_trial(path: str) -> Path:
    """``path`` when it holds a trial; otherwise a DataError at once (smdebug itself would poll for one forever)
    that says what was looked for and where trials lie nearby (under it, or beside it)."""
    target = Path(path)
    if is_trial(target):
        return target
    what = f"no smdebug trial at {path} (looked for its {' and '.join(m + '/' for m in TRIAL_MARKS)} folders)"
    if not target.exists():
        what = f"no smdebug trial at {path}: no such file or directory"
    nearby = trials_under(target) if target.is_dir() else []
    if not nearby and target.parent.is_dir():
        nearby = trials_under(target.parent, depth=2)
    where = ("; trials nearby: " + ", ".join(str(p) for p in nearby) if nearby
             else f"; none within {NEARBY_DEPTH} levels below it or 2 below its parent")
    raise DataError(what + where)


def s3_trial(uri: str, s3=None) -> str:
    """``uri`` when an S3 trial is there (its collections/ and index/ keys); otherwise a DataError at once, with
    the trials found below it (smdebug would poll an empty prefix forever)."""
    if s3 is None:
        import boto3  # the AWS SDK loads only for an S3 URI

        s3 = boto3.client("s3")
    bucket, key = split_s3(uri.rstrip("/") + "/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])  # the first 1000 keys
    marked = ["/" + item["Key"] for item in listed if "/collections/" in "/" + item["Key"]]
    trials = sorted({k[1:k.index("/collections/") + 1] for k in marked}, key=len)
    if key in trials:
        return uri
    what = f"no smdebug trial at {uri} (looked for its {' and '.join(m + '/' for m in TRIAL_MARKS)} keys)"
    nearby = ", ".join(f"s3://{bucket}/{t}" for t in trials[:5])
    raise DataError(what + (f"; trials below it: {nearby}" if nearby else "; no trial below it either"))


def trial_prefixes(described: dict) -> list[str]:
    """The S3 prefixes where the job's trial can be: beside its checkpoints, and the Debugger service's."""
    job = described["TrainingJobName"]
    prefixes = []
    checkpoints = (described.get("CheckpointConfig") or {}).get("S3Uri")
    if checkpoints:
        prefixes.append(f"{checkpoints.rstrip('/')}/{job}/debug/")
    hook = (described.get("DebugHookConfig") or {}).get("S3OutputPath")
    if hook:
        prefixes.append(f"{hook.rstrip('/')}/{job}/debug-output/")
    return prefixes


def _keys(s3, uri: str) -> list[str]:
    bucket, prefix = split_s3(uri)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def download_prefix(s3, uri: str, target: Path) -> int:
    """Every object under the S3 prefix ``uri`` into ``target`` (the same relative paths); returns the count."""
    bucket, prefix = split_s3(uri)
    keys = _keys(s3, uri)
    for key in keys:
        local = target / key[len(prefix):]
        local.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(local))
    return len(keys)


def runs_of(s3, prefix: str) -> list[str]:
    """The trial prefixes of each run of the job, newest first: ``prefix`` (``.../<job>/debug/``) and, for a spot
    job that SageMaker restarted, its ``debug-restart-N/`` siblings (see training.hooks.trial_dir)."""
    parent, _, folder = prefix.rstrip("/").rpartition("/")
    if folder != TRIAL_FOLDER:
        return [prefix]
    bucket, key = split_s3(parent + "/")
    restart = re.compile(re.escape(key + TRIAL_FOLDER + RESTART_SUFFIX) + r"([0-9]+)/$")
    numbered = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key, Delimiter="/"):
        for common in page.get("CommonPrefixes", []):
            found = restart.match(common["Prefix"])
            if found:
                numbered.append((int(found.group(1)), f"s3://{bucket}/{common['Prefix']}"))
    return [uri for _, uri in sorted(numbered, reverse=True)] + [prefix]


def fetch_trial(sagemaker, s3, job: str, target: Path) -> tuple[str, Path, list[str]]:
    """The job's newest trial, downloaded into its own folder under ``target/<job>/`` (a trial from another job
    or run is never mixed in): (its S3 prefix, the local folder, the prefixes of the job's earlier runs)."""
    described = sagemaker.describe_training_job(TrainingJobName=job)
    prefixes = [run for prefix in trial_prefixes(described) for run in runs_of(s3, prefix)]
    for index, prefix in enumerate(prefixes):
        local = target / job / prefix.rstrip("/").rsplit("/", 1)[-1]
        if download_prefix(s3, prefix, local) and is_trial(local):
            return prefix, local, [p for p in prefixes[index + 1:] if _keys(s3, p)]
    status = described.get("TrainingJobStatus")
    looked = ", ".join(prefixes) or "nowhere: the job has neither a CheckpointConfig nor a DebugHookConfig"
    raise DataError(f"training job {job} ({status}) has no smdebug trial yet: looked under {looked}")


def output_archive(described: dict) -> str:
    """The S3 URI of the job's output.tar.gz (SM_OUTPUT_DATA_DIR, with the profile)."""
    job = described["TrainingJobName"]
    root = described["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    return f"{root}/{job}/output/output.tar.gz"


def fetch_output(sagemaker, s3, job: str, target: Path) -> Path:
    """The job's output.tar.gz, downloaded into ``target``."""
    described = sagemaker.describe_training_job(TrainingJobName=job)
    uri = output_archive(described)
    bucket, key = split_s3(uri)
    if not _keys(s3, uri):
        status = described.get("TrainingJobStatus")
        raise DataError(f"training job {job} ({status}) has no {uri} yet: SageMaker uploads it when the job ends")
    target.mkdir(parents=True, exist_ok=True)
    local = target / "output.tar.gz"
    s3.download_file(bucket, key, str(local))
    return local
