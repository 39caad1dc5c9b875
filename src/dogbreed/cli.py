"""The ``dogbreed`` command: argparse sub-commands calling the modules that do the work.

Every failure the user can act on is printed as one line (``dogbreed: error: ...``) with a non-zero exit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CLIError(Exception):
    """One line for the user, exit code 1 (2 for usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------
# verbs


def cmd_make_sample(args) -> int:
    from .sample import make_sample

    counts = make_sample(Path(args.dir), classes=args.classes, size=args.size, seed=args.seed)
    print(f"sample written to {args.dir}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_local_train(args, training_flags: list[str]) -> int:
    from .local import failure_reason, local_train

    if not Path(args.data).is_dir():
        raise CLIError(f"--data {args.data}: no such directory")
    code, archive = local_train(Path(args.data), Path(args.work_dir), training_flags)
    if code != 0:
        reason = failure_reason(Path(args.work_dir)) or f"the train entry exited with code {code}"
        raise CLIError(f"training failed: {reason.splitlines()[0] if reason else code}")
    print(f"model: {archive}")
    return 0


def cmd_local_serve(args) -> int:
    from .serving.local import serve_forever

    return serve_forever(Path(args.model), port=args.port, workers=args.workers)


def cmd_invoke(args) -> int:
    from .serving.client import invoke_and_print

    return invoke_and_print(args)


# --------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dogbreed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

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
    p.add_argument("--json", action="store_true", help="print the raw JSON answers")
    p.set_defaults(func=cmd_invoke)

    _add_optional_verbs(sub)
    return parser


def _add_optional_verbs(sub) -> None:
    """Verbs of the launch and insight libraries (imported lazily: they pull in the SageMaker SDK)."""
    try:
        from .launch.cli_verbs import add_verbs
    except ImportError:
        add_verbs = None
    if add_verbs:
        add_verbs(sub)
    try:
        from .insight.cli_verbs import add_verbs as add_insight_verbs
    except ImportError:
        add_insight_verbs = None
    if add_insight_verbs:
        add_insight_verbs(sub)


def main(argv: list[str] | None = None) -> None:
    import logging

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
    except CLIError as exc:
        print(f"dogbreed: error: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        print("dogbreed: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # the edge: one clear line, not a traceback
        from .launch.errors import describe
        print(f"dogbreed: error: {describe(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
