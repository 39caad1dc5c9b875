"""The ``name=value`` metric lines and the regexes that read them back.

Training prints one line per epoch and one for the test split; SageMaker metric definitions,
local tuning and the tests all use the regexes below, so the two sides cannot drift apart.
"""

from __future__ import annotations

import math
import re
import sys

NUMBER = r"([0-9.eE+-]+|nan|inf)"

EPOCH_METRICS = ("epoch", "train_loss", "valid_loss", "valid_acc", "lr", "images_per_sec")
TEST_METRICS = ("test_loss", "test_acc")
ALL_METRICS = EPOCH_METRICS + TEST_METRICS

# Each metric matched where it stands as a whole word: "valid_loss=" never matches "xvalid_loss=". No lookaround:
# AWS documents no regex flavour for metric definitions; a start-or-separator group and one capture group are
# read alike by every flavour, and the value is the first (only) capture group.
REGEXES: dict[str, str] = {name: rf"(?:^|[^A-Za-z_]){name}={NUMBER}" for name in ALL_METRICS}

OBJECTIVES = {"valid_loss": "Minimize", "valid_acc": "Maximize", "test_acc": "Maximize", "test_loss": "Minimize"}


def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.4e}"
    return f"{value:.6f}".rstrip("0").rstrip(".") if abs(value) < 1 else f"{value:.4f}"


def format_line(**values) -> str:
    """``format_line(epoch=3, train_loss=0.41)`` -> ``'epoch=3 train_loss=0.41'``."""
    return " ".join(f"{name}={_fmt(value)}" for name, value in values.items())


def write_line(text: str) -> None:
    """A metric line to stdout in one write, its newline included, flushed. print() writes the text and the newline
    apart, unbuffered in a container: a log line of another thread or process (docker merges stdout and stderr)
    could land between them, and the regexes would read ``test_acc=0.18`` and the log's date as one number."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def metric_definitions(names=ALL_METRICS) -> list[dict[str, str]]:
    """SageMaker ``metric_definitions`` for the ModelTrainer and the tuner."""
    return [{"Name": name, "Regex": REGEXES[name]} for name in names]


def parse(text: str, name: str) -> list[float]:
    """Every value of one metric in a log, in order (as SageMaker's regex scraping sees them)."""
    return [float(m) for m in re.findall(REGEXES[name], text)]


def last(text: str, name: str) -> float | None:
    values = parse(text, name)
    return values[-1] if values else None


def best(text: str, name: str) -> float | None:
    values = [v for v in parse(text, name) if not math.isnan(v)]
    if not values:
        return None
    return min(values) if OBJECTIVES.get(name, "Minimize") == "Minimize" else max(values)
