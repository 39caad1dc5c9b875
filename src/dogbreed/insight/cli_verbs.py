"""The insight verbs of the ``dogbreed`` command: debug report, profile report."""

from __future__ import annotations


def add_verbs(sub) -> None:
    from .debug_report import cmd_debug_report
    from .profile_report import cmd_profile_report

    debug = sub.add_parser("debug", help="Debugger: loss plot and rule verdicts from an smdebug trial")
    debug_sub = debug.add_subparsers(dest="debug_verb", metavar="VERB")
    debug_sub.required = True
    p = debug_sub.add_parser("report", help="plot losses and run the seed's rules on a trial (local dir or S3 URI)")
    p.add_argument("path")
    p.add_argument("--out", default="debug-report")
    p.set_defaults(func=cmd_debug_report)

    profile = sub.add_parser("profile", help="Profiler: an HTML report of a run's profile")
    profile_sub = profile.add_subparsers(dest="profile_verb", metavar="VERB")
    profile_sub.required = True
    p = profile_sub.add_parser("report", help="step split, top operators, utilisation plots, advice")
    p.add_argument("path", help="a work dir, output data dir, profile folder, output.tar.gz or its S3 URI")
    p.add_argument("--out", default="profile-report")
    p.set_defaults(func=cmd_profile_report)
