"""Small helpers that several layers share: the log format, boolean and NAME=VALUE parsing, hyperparameters as
flags, steps per epoch and the plain-text table. Imports nothing from the package but the errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import tomllib

from .errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level=logging.INFO, force: bool = False) -> None:
    """The package's one log format, on stderr (stdout carries the metric lines)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=force)


def str2bool(value) -> bool:
    """``true/false``, ``yes/no``, ``1/0``, ``on/off`` (any case) as a bool; argparse's error otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def hyperparameter_flags(hyperparameters: dict) -> list[str]:
    """``{"lr": 0.01}`` -> ``["--lr", "0.01"]``: the training program's flags for SageMaker-style hyperparameters."""
    return [text for name, value in hyperparameters.items() for text in (f"--{name}", str(value))]


def parse_value(text: str):
    """``'0.1'`` -> 0.1, ``'true'`` -> True, ``'[1,2]'`` -> [1, 2]; anything else stays text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def hp_pairs(pairs) -> dict:
    """``--hp NAME=VALUE`` (repeatable) as a dict, each value parsed as TOML where it is one."""
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--hp {pair}: expected NAME=VALUE")
        key, value = pair.split("=", 1)
        result[key.strip()] = parse_value(value.strip())
    return result


def steps_per_epoch(batches: int, cap: int) -> int:
    """Optimizer steps in one epoch: every batch, or ``--max-steps-per-epoch`` of them (0: no cap)."""
    return min(batches, cap) if cap else batches


def format_table(rows: list[dict]) -> str:
    """Rows of dicts as aligned plain-text columns (the first row's keys are the headers)."""
    if not rows:
        return "(no training jobs)"
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(f"{r.get(h, '')}") for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers)]
    lines += ["  ".join(f"{r.get(h, '')}".ljust(widths[h]) for h in headers) for r in rows]
    return "\n".join(lines)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. docker --cpuset-cpus), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
