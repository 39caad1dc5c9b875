"""The report verbs: ``debug report`` and ``profile report``, on a local run or a training job (fetched from S3)."""

from __future__ import annotations

from pathlib import Path

from ..insight import debug_report, profile_report
from ..insight.job_outputs import fetch_output, fetch_trial, is_job_name
from .options import add_report_common, job_clients


def cmd_debug_report(args) -> int:
    if is_job_name(args.path):
        sagemaker, s3 = job_clients(args)
        prefix, local, earlier = fetch_trial(sagemaker, s3, args.path, Path(args.out) / "trial")
        print(f"trial of {args.path}: {prefix} (copied to {local})")
        if earlier:  # a restarted spot job: one trial a run, the newest reported
            print(f"earlier runs of {args.path} (not in this report): {', '.join(earlier)}")
        args.path = str(local)
    return debug_report.cmd_debug_report(args)


def cmd_profile_report(args) -> int:
    if is_job_name(args.path):
        sagemaker, s3 = job_clients(args)
        args.path = str(fetch_output(sagemaker, s3, args.path, Path(args.out) / "job-output"))
        print(f"output of the job: {args.path}")
        return profile_report.cmd_profile_report(args, s3)
    return profile_report.cmd_profile_report(args)



def add_verbs(sub) -> None:
    debug = sub.add_parser("debug", help="Debugger: loss plot and rule verdicts from an smdebug trial")
    debug_sub = debug.add_subparsers(dest="debug_verb", metavar="VERB")
    debug_sub.required = True
    p = debug_sub.add_parser("report", help="plot losses and run the seed's rules on a trial (training job name, "
                                            "local dir or S3 URI)")
    p.add_argument("path", help="a training job's name (its trial is fetched from S3), a trial folder or an S3 URI")
    p.add_argument("--out", default="debug-report")
    add_report_common(p)
    p.set_defaults(func=cmd_debug_report)

    profile = sub.add_parser("profile", help="Profiler: an HTML report of a run's profile")
    profile_sub = profile.add_subparsers(dest="profile_verb", metavar="VERB")
    profile_sub.required = True
    p = profile_sub.add_parser("report", help="step split, top operators, utilisation plots, advice")
    p.add_argument("path", help="a training job's name, a work dir, output data dir, profile folder, output.tar.gz or its "
                                "S3 URI")
    p.add_argument("--out", default="profile-report")
    add_report_common(p)
    p.set_defaults(func=cmd_profile_report)

