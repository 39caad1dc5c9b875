"""The flags of ``dogbreed evaluate``, apart from the evaluation itself: the command builds its parser without
importing torch (seconds) for ``dogbreed --help``."""

from __future__ import annotations

import argparse

HELP = "one HTML report of a trained model over a labelled test split, run through the serving code"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--model", required=True, help="model.tar.gz, a model directory, or a folder holding model.tar.gz")
    parser.add_argument("--data", required=True, help="a dogImages layout (its test/ split) or a folder of breed folders")
    parser.add_argument("--out", default="evaluation-report", help="where report.html, confusion.csv and "
                                                                    "evaluation.json go (default: ./evaluation-report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser
