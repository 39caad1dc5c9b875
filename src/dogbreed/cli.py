"""The ``dogbreed`` command: the verbs of ``dogbreed.commands`` (local, aws, reports) assembled into one parser,
and the one edge where their errors become a line.

Imports run one way: the command calls ``launch``, ``insight``, ``serving``, ``evaluation`` and the training
program's helpers; none of them imports it. Every failure the user can act on is printed as one line
(``dogbreed: error: ...``) with a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import aws, local, reports
from .errors import DogbreedError, describe

DESCRIPTION = "Train, tune, serve and classify dog breeds, on this machine or on SageMaker through our own images."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dogbreed", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    local.add_verbs(sub)
    aws.add_verbs(sub)
    reports.add_verbs(sub)
    return parser


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
